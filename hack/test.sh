#!/usr/bin/env bash
# `make test`: start every real service the suite talks to on loopback (PostgreSQL,
# Prometheus, the Kubernetes test control plane), run the whole suite, and stop them
# again, whether the suite passed or not.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

cleanup() {
    # A cluster still starting is waited for first (it holds the cluster lock).
    [ -z "${cluster_pid:-}" ] || wait "$cluster_pid" 2>/dev/null || true
    hack/cluster/down.sh || true
    hack/prometheus/down.sh || true
    hack/postgres/down.sh || true
}
trap cleanup EXIT

hack/tmux.sh
hack/postgres/up.sh
TRAINYARD_TEST_DATABASE_URL="$(cat .postgres/url)"
export TRAINYARD_TEST_DATABASE_URL

# The cluster takes longest to come up (etcd, apiserver, controller-manager, kwok and
# their readiness waits, mostly idle time), so it starts in the background while ruff
# and Prometheus run, and is waited for before pytest; a failed start fails this
# script at the `wait` (set -e). It starts after tmux and PostgreSQL, which may
# apt-get install their packages; up.sh itself installs only openssl and curl when
# missing, which Prometheus's up.sh (curl) needs anyway, so no two apt-gets race.
cluster_pid=
if [ "${TRAINYARD_SKIP_CLUSTER:-0}" = 1 ]; then
    echo "!!! TRAINYARD_SKIP_CLUSTER=1: the Kubernetes integration tests will be SKIPPED !!!" >&2
else
    hack/cluster/up.sh &
    cluster_pid=$!
fi

"$VENV/bin/ruff" check trainyard tests bench hack

hack/prometheus/up.sh
TRAINYARD_TEST_PROMETHEUS_URL="$(cat .prometheus/url)"
TRAINYARD_TEST_PROMETHEUS_CONFIG="$(cat .prometheus/config)"
export TRAINYARD_TEST_PROMETHEUS_URL TRAINYARD_TEST_PROMETHEUS_CONFIG

if [ -n "$cluster_pid" ]; then
    wait "$cluster_pid"
    KUBECONFIG="$PWD/.cluster/kubeconfig"
    export KUBECONFIG
fi

"$VENV/bin/python" -m pytest tests "$@"
