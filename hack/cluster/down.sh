#!/usr/bin/env bash
# `make cluster-down`: stop every process hack/cluster/up.sh started and check that
# none is left. Idempotent: with nothing running it says so and succeeds.
#
# Processes are found by their pid files and, as a safety net, by scanning /proc
# for our cached binaries running with this checkout's .cluster/ on their command
# line (lib.sh is_ours), so nothing else on the machine is ever signalled.
# The etcd data goes too (the next up.sh starts clean); certificates and logs stay
# for post-mortems.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
take_cluster_lock

started_at=$(date +%s)
# Stop in reverse dependency order: clients first, etcd last.
pids=()
for name in kube-scheduler kwok kube-controller-manager kube-apiserver etcd; do
    pid="$(pid_of "$name")"
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    fi
    rm -f "$PID_DIR/$name.pid"
done
mapfile -t strays < <(our_pids)
for pid in "${strays[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
done
pids+=("${strays[@]}")

if [ ${#pids[@]} -eq 0 ]; then
    echo "cluster: not running" >&2
    rm -rf "$STATE_DIR/etcd"
    exit 0
fi

# Wait on the condition "none of them is alive", with a deadline; then SIGKILL.
deadline=$(($(date +%s) + 30))
while :; do
    alive=()
    for pid in "${pids[@]}"; do
        is_ours "$pid" && alive+=("$pid")
    done
    [ ${#alive[@]} -eq 0 ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "cluster: killing ${alive[*]} (no exit 30s after SIGTERM)" >&2
        kill -KILL "${alive[@]}" 2>/dev/null || true
        sleep 1
        break
    fi
    sleep 0.2
done

left="$(our_pids)"
if [ -n "$left" ]; then
    echo "cluster: processes still running after down: $left" >&2
    exit 1
fi
rm -rf "$STATE_DIR/etcd" "$STATE_DIR/profile"
echo "cluster: down in $(($(date +%s) - started_at))s, no process left" >&2
