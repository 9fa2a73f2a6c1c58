#!/usr/bin/env bash
# Stop the test PostgreSQL server started by up.sh. Idempotent; leaves no server process.
# The data directory is kept so the next up.sh starts in a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${TRAINYARD_PG_PORT:-55432}
PG_ROOT=${TRAINYARD_PG_ROOT:-/tmp/trainyard-postgres-$PORT}
if [ -s .postgres/root ]; then
    PG_ROOT=$(cat .postgres/root)
fi
DATA=$PG_ROOT/data
BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

if [ -z "$BINDIR" ] || [ ! -s "$DATA/PG_VERSION" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    as_server() { runuser -u postgres -- "$@"; }
else
    as_server() { "$@"; }
fi
if as_server "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_server "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    echo "postgres: stopped" >&2
fi
