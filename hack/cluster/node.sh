#!/usr/bin/env bash
# Break or mend a fake node of the running test cluster, for failure drills by hand.
# The Python equivalents (tests/integration/cluster/simcluster.py) are what tests use.
#   node.sh not-ready NAME   kwok stops managing NAME and its Ready condition turns False
#   node.sh ready NAME       hand NAME back to kwok, which marks it Ready again
#   node.sh delete NAME      delete the Node object (its pods are left to the pod GC)
#   node.sh restore          re-create every node of the current profile that is missing
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
kubectl=("$STATE_DIR/bin/kubectl" --kubeconfig "$STATE_DIR/kubeconfig")
usage() { sed -n '3,6s/^# */  /p' "$0" >&2; exit 2; }

case ${1:-} in
    not-ready)
        node=${2:?$(usage)}
        "${kubectl[@]}" annotate node "$node" kwok.x-k8s.io/node-
        now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
        "${kubectl[@]}" patch node "$node" --subresource=status --type=strategic -p \
            "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"KubeletNotReady\",\"message\":\"simulated by hack/cluster/node.sh\",\"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}"
        ;;
    ready)
        node=${2:?$(usage)}
        "${kubectl[@]}" annotate --overwrite node "$node" kwok.x-k8s.io/node=fake
        ;;
    delete)
        node=${2:?$(usage)}
        "${kubectl[@]}" delete node "$node"
        ;;
    restore)
        "${kubectl[@]}" apply -f "$STATE_DIR/nodes.json"
        ;;
    *) usage ;;
esac
