# Shared by up.sh and down.sh (sourced, not run): where things live and which
# ports they use.
#
# Ports: only 127.0.0.1:26000-26999 (this project's range on a shared machine),
# and every component's port is set explicitly so no default (2379, 10257, ...)
# collides with anything else running here.
# shellcheck shell=bash
# shellcheck source=versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"

CLUSTER_HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_HACK_DIR/../.." && pwd)"
STATE_DIR="$REPO_ROOT/.cluster"
PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/logs"
PKI_DIR="$STATE_DIR/pki"
KUBECONFIG_DIR="$STATE_DIR/kubeconfigs"
CACHE_BIN="${TRAINYARD_CACHE_DIR:-$HOME/.cache/trainyard}/k8s/$K8S_VERSION/bin"

ETCD_CLIENT_PORT=26379
ETCD_PEER_PORT=26380
APISERVER_PORT=26443
CONTROLLER_MANAGER_PORT=26257
SCHEDULER_PORT=26259
KWOK_PORT=26247

SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16

# The components, in start order; kube-scheduler only with TRAINYARD_WITH_SCHEDULER=1.
ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kwok kube-scheduler)

# is_ours PID: true when PID runs one of our cached binaries with our state
# directory on its command line, so a recycled pid or a foreign process that
# merely mentions the path is never mistaken for (and never killed as) ours.
is_ours() {
    [ -r "/proc/$1/cmdline" ] || return 1
    case "$(readlink "/proc/$1/exe" 2>/dev/null)" in
        "$CACHE_BIN"/*) ;;
        *) return 1 ;;
    esac
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$STATE_DIR/"
}

# pid_of NAME: the live pid of our component NAME, or nothing.
pid_of() {
    local pid_file="$PID_DIR/$1.pid" pid
    [ -f "$pid_file" ] || return 0
    pid="$(cat "$pid_file")"
    if [ -n "$pid" ] && is_ours "$pid"; then
        echo "$pid"
    fi
}

# our_pids: every live process we started (even one whose pid file was lost).
our_pids() {
    local dir
    for dir in /proc/[0-9]*; do
        is_ours "${dir#/proc/}" && echo "${dir#/proc/}"
    done
    return 0
}

# port_in_use PORT: true when something accepts connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll COMMAND until it succeeds
# or the deadline passes (then say which log to read and fail).
wait_for() {
    local what=$1 timeout=$2 deadline
    shift 2
    deadline=$(($(date +%s) + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "cluster: timed out after ${timeout}s waiting for $what (logs: $LOG_DIR)" >&2
            return 1
        fi
        sleep 0.5
    done
}

# take_cluster_lock: serialise up.sh/down.sh of this checkout (two pytest sessions,
# or `make test` next to a manual `make cluster-up`). Held until the script exits;
# a nested call (up.sh running down.sh) inherits it through TRAINYARD_CLUSTER_LOCK.
take_cluster_lock() {
    [ "${TRAINYARD_CLUSTER_LOCK:-}" = "$STATE_DIR" ] && return 0
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 600 9; then
        echo "cluster: another up.sh/down.sh held $STATE_DIR/.lock for 10 minutes" >&2
        exit 1
    fi
    export TRAINYARD_CLUSTER_LOCK="$STATE_DIR"
}
