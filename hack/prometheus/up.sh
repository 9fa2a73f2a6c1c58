#!/usr/bin/env bash
# Start the Prometheus server the test suite scrapes into: loopback only, port 26990.
#
# Idempotent: installs Debian's `prometheus` package (server + promtool) only when either
# binary is missing, and starts the server only when ours is not already answering. The
# tests rewrite .prometheus/prometheus.yml (their control plane and its workers) and
# apply it with POST /-/reload (--web.enable-lifecycle). Writes the URL to
# .prometheus/url and the config path to .prometheus/config.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${TRAINYARD_PROMETHEUS_PORT:-26990}
STATE_DIR=$PWD/.prometheus
DEADLINE_S=${TRAINYARD_PROMETHEUS_DEADLINE_S:-60}
URL="http://127.0.0.1:$PORT"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "prometheus: installing the Debian prometheus package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package's own service (port 9090) is not ours; where no init system runs it,
    # nothing was started. Either way the suite uses only the server started below.
fi

mkdir -p "$STATE_DIR/data"
CONFIG=$STATE_DIR/prometheus.yml
if [ ! -s "$CONFIG" ]; then
    cat >"$CONFIG" <<YAML
# Rewritten by the tests (then POST /-/reload); this is only the starting point.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
YAML
fi

ready() { curl -fsS -o /dev/null --max-time 2 "$URL/-/ready"; }

if ! ready 2>/dev/null; then
    echo "prometheus: starting on 127.0.0.1:$PORT" >&2
    # setsid: the server outlives this script (hack/test.sh stops it with down.sh).
    setsid prometheus \
        --config.file="$CONFIG" \
        --storage.tsdb.path="$STATE_DIR/data" \
        --storage.tsdb.retention.time=1d \
        --web.listen-address="127.0.0.1:$PORT" \
        --web.enable-lifecycle \
        >"$STATE_DIR/server.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/pid"
    deadline=$((SECONDS + DEADLINE_S))
    until ready 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$(cat "$STATE_DIR/pid")" 2>/dev/null; then
            echo "prometheus: not ready after ${DEADLINE_S}s; log: $STATE_DIR/server.log" >&2
            tail -n 20 "$STATE_DIR/server.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
fi

echo "$URL" >"$STATE_DIR/url"
echo "$CONFIG" >"$STATE_DIR/config"
echo "prometheus: ready at $URL (URL in .prometheus/url)" >&2
