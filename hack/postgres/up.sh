#!/usr/bin/env bash
# Start the PostgreSQL server the test suite and benchmarks use: loopback only, port 55432.
#
# Idempotent: installs the Debian `postgresql` package only when no server binaries exist,
# runs initdb only once, starts the server only when it is not running, and (re)creates the
# role and database only when missing. Writes the SQLAlchemy URL to .postgres/url.
# PostgreSQL refuses to run as root, so as root every server command runs as `postgres`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${TRAINYARD_PG_PORT:-55432}
STATE_DIR=$PWD/.postgres
# The data directory must be reachable by the postgres user even when the clone lives in
# a private home directory, hence /tmp, keyed by port (one server per port anyway).
PG_ROOT=${TRAINYARD_PG_ROOT:-/tmp/trainyard-postgres-$PORT}
DATA=$PG_ROOT/data
SOCKETS=$PG_ROOT/sockets
LOG=$PG_ROOT/server.log
DEADLINE_S=${TRAINYARD_PG_DEADLINE_S:-60}

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    fi
}

BINDIR=$(find_bindir)
if [ -z "$BINDIR" ]; then
    echo "postgres: installing the Debian postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BINDIR=$(find_bindir)
    if [ -z "$BINDIR" ]; then
        echo "postgres: no initdb under /usr/lib/postgresql/*/bin after installing" >&2
        exit 1
    fi
fi

if [ "$(id -u)" = 0 ]; then
    SERVER_USER=postgres
    as_server() { runuser -u postgres -- "$@"; }
else
    SERVER_USER=$(id -un)
    as_server() { "$@"; }
fi

mkdir -p "$PG_ROOT" "$SOCKETS" "$STATE_DIR"
chmod 700 "$PG_ROOT" "$SOCKETS"
chown "$SERVER_USER" "$PG_ROOT" "$SOCKETS"

if [ ! -s "$DATA/PG_VERSION" ]; then
    echo "postgres: initdb in $DATA" >&2
    # Local (socket) connections are trusted: the socket directory is private to the server
    # user. TCP connections need a password (scram), even on loopback.
    as_server "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi

if ! as_server "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    echo "postgres: starting on 127.0.0.1:$PORT" >&2
    as_server "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$DEADLINE_S" \
        -o "-h 127.0.0.1 -p $PORT -k $SOCKETS -c max_connections=200" start >/dev/null
fi

deadline=$((SECONDS + DEADLINE_S))
until as_server "$BINDIR/pg_isready" -q -h "$SOCKETS" -p "$PORT"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "postgres: not accepting connections after ${DEADLINE_S}s; log: $LOG" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.2
done

psql_admin() {
    as_server "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKETS" -p "$PORT" -U postgres -d postgres "$@"
}

PASSWORD_FILE=$STATE_DIR/password
if [ ! -s "$PASSWORD_FILE" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(24))' >"$PASSWORD_FILE")
fi
PASSWORD=$(cat "$PASSWORD_FILE")

if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'trainyard'")" != 1 ]; then
    psql_admin -c "CREATE ROLE trainyard LOGIN"
fi
# The password is (re)set every time so a fresh clone against an old data directory works.
psql_admin -c "ALTER ROLE trainyard WITH LOGIN PASSWORD '$PASSWORD'"
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'trainyard'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE trainyard OWNER trainyard"
fi

echo "$PG_ROOT" >"$STATE_DIR/root"
(umask 077 && echo "postgresql+psycopg://trainyard:$PASSWORD@127.0.0.1:$PORT/trainyard" >"$STATE_DIR/url")
echo "postgres: ready at 127.0.0.1:$PORT (URL in .postgres/url)" >&2
