#!/usr/bin/env bash
# Stop the test Prometheus started by up.sh. Idempotent; the data directory is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

PID_FILE=.prometheus/pid
if [ ! -s "$PID_FILE" ]; then
    exit 0
fi
PID=$(cat "$PID_FILE")
# Only our server: the pid must still be a prometheus process started with our config.
if kill -0 "$PID" 2>/dev/null && grep -q "$PWD/.prometheus/prometheus.yml" "/proc/$PID/cmdline" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID"
    fi
    echo "prometheus: stopped" >&2
fi
rm -f "$PID_FILE"
