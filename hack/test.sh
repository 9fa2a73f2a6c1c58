#!/usr/bin/env bash
# `make test`: start every real service the suite talks to on loopback (PostgreSQL,
# Prometheus, the Kubernetes test control plane), run the whole suite, and stop them
# again, whether the suite passed or not.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

cleanup() {
    hack/cluster/down.sh || true
    hack/prometheus/down.sh || true
    hack/postgres/down.sh || true
}
trap cleanup EXIT

"$VENV/bin/ruff" check trainyard tests bench hack

hack/postgres/up.sh
TRAINYARD_TEST_DATABASE_URL="$(cat .postgres/url)"
export TRAINYARD_TEST_DATABASE_URL

hack/tmux.sh
hack/prometheus/up.sh
TRAINYARD_TEST_PROMETHEUS_URL="$(cat .prometheus/url)"
TRAINYARD_TEST_PROMETHEUS_CONFIG="$(cat .prometheus/config)"
export TRAINYARD_TEST_PROMETHEUS_URL TRAINYARD_TEST_PROMETHEUS_CONFIG

if [ "${TRAINYARD_SKIP_CLUSTER:-0}" = 1 ]; then
    echo "!!! TRAINYARD_SKIP_CLUSTER=1: the Kubernetes integration tests will be SKIPPED !!!" >&2
else
    hack/cluster/up.sh
    KUBECONFIG="$PWD/.cluster/kubeconfig"
    export KUBECONFIG
fi

"$VENV/bin/python" -m pytest tests "$@"
