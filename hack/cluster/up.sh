#!/usr/bin/env bash
# `make cluster-up`: a real Kubernetes control plane on 127.0.0.1 for the tests.
#
# etcd, kube-apiserver, kube-controller-manager and kwok (fake nodes and kubelets)
# are built once from their Go modules (build.sh, cached in ~/.cache/trainyard/k8s),
# started as plain processes with their state under .cluster/, and waited on until
# the apiserver is ready and every fake node of the profile is Ready. The admin
# kubeconfig is .cluster/kubeconfig; kubectl and helm are in .cluster/bin/.
#
# Idempotent: when everything is already up it returns at once.
# Environment:
#   TRAINYARD_NODE_PROFILE=default|bench   fake nodes (hack/cluster/profiles/<name>.yaml)
#   TRAINYARD_WITH_SCHEDULER=1             also run kube-scheduler (Trainyard binds its
#                                          own pods, so it is off by default)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
take_cluster_lock

profile=${TRAINYARD_NODE_PROFILE:-default}
profile_file="$CLUSTER_HACK_DIR/profiles/$profile.yaml"
[ -f "$profile_file" ] || { echo "up.sh: no node profile $profile_file" >&2; exit 2; }
with_scheduler=${TRAINYARD_WITH_SCHEDULER:-0}
started_at=$(date +%s)
KUBECTL=("$STATE_DIR/bin/kubectl" --kubeconfig "$STATE_DIR/kubeconfig")

log() { echo "cluster: $*" >&2; }

# --- tools this script needs besides Go --------------------------------------
ensure_tools() {
    local missing=() tool
    for tool in openssl curl; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} with apt-get"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

apiserver_ready() {
    curl -sf --max-time 5 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
        --key "$PKI_DIR/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null
}

components_wanted() {
    echo etcd kube-apiserver kube-controller-manager kwok
    [ "$with_scheduler" = 1 ] && echo kube-scheduler
    return 0
}

all_running() {
    local name
    for name in $(components_wanted); do
        [ -n "$(pid_of "$name")" ] || return 1
    done
}

# --- certificates and kubeconfigs ---------------------------------------------
# One throwaway CA per checkout signs the apiserver's serving certificate and a
# client certificate per component; RBAC sees the CN as user and O as group.
make_pki() {
    [ -f "$PKI_DIR/.complete" ] && return 0
    rm -rf "$PKI_DIR"
    mkdir -p "$PKI_DIR"
    chmod 700 "$PKI_DIR"
    local cnf="$PKI_DIR/openssl.cnf"
    cat >"$cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
CNF
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 -new "${ec[@]}" -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" \
        -days 3650 -subj "/CN=trainyard-test-ca" -config "$cnf" -extensions v3_ca 2>/dev/null
    # sign NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
    sign() {
        local name=$1 subject=$2 usage=$3 sans=${4:-}
        openssl req -new "${ec[@]}" -keyout "$PKI_DIR/$name.key" -out "$PKI_DIR/$name.csr" \
            -subj "$subject" -config "$cnf" 2>/dev/null
        {
            echo "basicConstraints = critical,CA:FALSE"
            echo "keyUsage = critical,digitalSignature,keyEncipherment"
            echo "extendedKeyUsage = $usage"
            echo "authorityKeyIdentifier = keyid"
            [ -z "$sans" ] || echo "subjectAltName = $sans"
        } >"$PKI_DIR/$name.ext"
        openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$PKI_DIR/$name.ext" \
            -out "$PKI_DIR/$name.crt" 2>/dev/null
        rm -f "$PKI_DIR/$name.csr" "$PKI_DIR/$name.ext"
    }
    sign apiserver "/CN=kube-apiserver" serverAuth \
        "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=trainyard-admin" clientAuth
    sign kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
    sign kube-scheduler "/CN=system:kube-scheduler" clientAuth
    # kwok plays every kubelet (node status, leases, pod status, deletes, events).
    sign kwok "/O=system:masters/CN=kwok-controller" clientAuth
    # Service-account token signing key (kube-apiserver verifies, the
    # controller-manager's token controller signs).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null
    openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
    touch "$PKI_DIR/.complete"
}

# write_kubeconfig PATH CERT_NAME: a self-contained kubeconfig (data embedded).
write_kubeconfig() {
    local path=$1 name=$2
    umask 077
    cat >"$path" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: trainyard-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$name.key")
contexts:
- name: trainyard-test
  context:
    cluster: trainyard-test
    user: $name
current-context: trainyard-test
KUBECONFIG
    umask 022
}

# --- processes ------------------------------------------------------------------
# start NAME ARGS...: run a cached binary in its own session (so nothing of ours is
# tied to the caller's terminal), output to .cluster/logs/NAME.log.
start() {
    local name=$1
    shift
    # 9>&-: the component must not inherit (and so hold forever) the cluster lock.
    setsid "$CACHE_BIN/$name" "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$PID_DIR/$name.pid"
    started+=("$name")
}

start_scheduler() {
    mkdir -p "$STATE_DIR/kube-scheduler"
    start kube-scheduler \
        --kubeconfig="$KUBECONFIG_DIR/kube-scheduler" \
        --authentication-kubeconfig="$KUBECONFIG_DIR/kube-scheduler" \
        --authorization-kubeconfig="$KUBECONFIG_DIR/kube-scheduler" \
        --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
        --cert-dir="$STATE_DIR/kube-scheduler" \
        --leader-elect=false
    wait_for "kube-scheduler /healthz" 120 \
        curl -skf --max-time 5 "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

# --- fast path: already up --------------------------------------------------------
if all_running && apiserver_ready && [ "$(cat "$STATE_DIR/profile" 2>/dev/null)" = "$profile" ]; then
    log "already up (profile $profile); KUBECONFIG=$STATE_DIR/kubeconfig"
    exit 0
fi
if [ "$with_scheduler" = 1 ] && [ -z "$(pid_of kube-scheduler)" ] && with_scheduler=0 all_running &&
    apiserver_ready && [ "$(cat "$STATE_DIR/profile" 2>/dev/null)" = "$profile" ]; then
    start_scheduler
    log "kube-scheduler started on the running cluster"
    exit 0
fi

# Anything half-up (a crashed component, another profile) is stopped and the
# cluster started clean, so no test inherits objects from an earlier run.
if [ -n "$(our_pids)" ]; then
    log "restarting: cluster is partly up or on another profile"
    "$CLUSTER_HACK_DIR/down.sh"
fi

ensure_tools
"$CLUSTER_HACK_DIR/build.sh"

# A start that fails half-way stops what it started (logs stay in .cluster/logs).
started=()
on_failed_start() {
    local name
    echo "up.sh: the cluster did not come up" >&2
    for name in "${started[@]}"; do
        echo "--- last lines of $LOG_DIR/$name.log" >&2
        tail -n 5 "$LOG_DIR/$name.log" >&2
    done
    "$CLUSTER_HACK_DIR/down.sh" || true
}
trap on_failed_start EXIT

for port in $ETCD_CLIENT_PORT $ETCD_PEER_PORT $APISERVER_PORT $CONTROLLER_MANAGER_PORT $SCHEDULER_PORT $KWOK_PORT; do
    if port_in_use "$port"; then
        echo "up.sh: 127.0.0.1:$port is already in use by a process that is not this cluster:" >&2
        ss -ltnp "sport = :$port" >&2 || true
        exit 1
    fi
done

mkdir -p "$STATE_DIR/bin" "$PID_DIR" "$LOG_DIR" "$KUBECONFIG_DIR"
ln -sfn "$CACHE_BIN/kubectl" "$STATE_DIR/bin/kubectl"
ln -sfn "$CACHE_BIN/helm" "$STATE_DIR/bin/helm"

# nodegen (profile -> Node objects) is this repository's own code: rebuilt when
# its source is newer than the binary.
nodegen="$STATE_DIR/bin/nodegen"
if [ ! -x "$nodegen" ] || [ -n "$(find "$CLUSTER_HACK_DIR/go/nodegen" -newer "$nodegen" -type f)" ]; then
    (cd "$CLUSTER_HACK_DIR/go/nodegen" &&
        PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
            nice -n 5 go build -trimpath -o "$nodegen" .)
fi

make_pki
write_kubeconfig "$STATE_DIR/kubeconfig" admin
for name in kube-controller-manager kube-scheduler kwok; do
    write_kubeconfig "$KUBECONFIG_DIR/$name" "$name"
done

rm -rf "$STATE_DIR/etcd"
start etcd \
    --name=trainyard-test \
    --data-dir="$STATE_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="trainyard-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true \
    --log-level=warn
wait_for "etcd /health" 60 curl -sf --max-time 5 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# --etcd-compaction-interval=10s and no watch cache for podtemplates: a watch on
# podtemplates from an old resourceVersion gets 410 Gone within seconds instead of
# minutes, which is what lets the tests exercise relist-and-rewatch for real.
start kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --etcd-compaction-interval=10s \
    --watch-cache-sizes=podtemplates#0 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --authorization-mode=Node,RBAC \
    --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false
wait_for "kube-apiserver /readyz" 180 apiserver_ready

mkdir -p "$STATE_DIR/kube-controller-manager"
start kube-controller-manager \
    --kubeconfig="$KUBECONFIG_DIR/kube-controller-manager" \
    --authentication-kubeconfig="$KUBECONFIG_DIR/kube-controller-manager" \
    --authorization-kubeconfig="$KUBECONFIG_DIR/kube-controller-manager" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
    --cert-dir="$STATE_DIR/kube-controller-manager" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --profiling=false

start kwok \
    --kubeconfig="$KUBECONFIG_DIR/kwok" \
    --config="$CLUSTER_HACK_DIR/kwok/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --cidr="$POD_CIDR" \
    --node-ip=10.0.0.1 \
    --node-lease-duration-seconds=40 \
    -v=WARN

wait_for "kube-controller-manager /healthz" 120 \
    curl -skf --max-time 5 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
wait_for "kwok /healthz" 60 curl -sf --max-time 5 "http://127.0.0.1:$KWOK_PORT/healthz"
[ "$with_scheduler" = 1 ] && start_scheduler

"$nodegen" "$profile" "$profile_file" >"$STATE_DIR/nodes.json"
"${KUBECTL[@]}" apply -f "$STATE_DIR/nodes.json" >/dev/null
node_count=$(grep -c '"kind": "Node"' "$STATE_DIR/nodes.json")
# One list per poll (not `kubectl wait`, which watches node by node and is
# throttled client-side with the 160-node bench profile).
profile_nodes_ready() {
    [ "$("${KUBECTL[@]}" get nodes -l "trainyard.io/node-profile=$profile" \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
        grep -c '^True$')" -eq "$node_count" ]
}
wait_for "the $node_count nodes of profile $profile to be Ready" 180 profile_nodes_ready
# Pods can only be created once the namespace's default ServiceAccount exists.
wait_for "the default ServiceAccount" 120 "${KUBECTL[@]}" get serviceaccount default -n default
# Written last: it marks a cluster that came all the way up (the fast path checks it).
echo "$profile" >"$STATE_DIR/profile"
trap - EXIT

log "up in $(($(date +%s) - started_at))s: $("${KUBECTL[@]}" get nodes --no-headers | wc -l) fake nodes (profile $profile)"
log "KUBECONFIG=$STATE_DIR/kubeconfig; kubectl and helm in $STATE_DIR/bin"
