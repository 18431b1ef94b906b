#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests marked `postgres` (shared Optuna studies).
#
#   eval "$(.ci/postgres.sh start)"   # installs PostgreSQL if absent, starts it on 127.0.0.1,
#                                     # creates a database and prints two `export` lines:
#                                     #   CIDER_TEST_POSTGRES_URL=postgresql://cider@127.0.0.1:PORT/cider_test
#                                     #   CIDER_PG_DATADIR=/tmp/cider-pg.XXXXXX (the data directory)
#   .ci/postgres.sh stop              # stops the server of $CIDER_PG_DATADIR and deletes that directory
#
# Only the export lines go to stdout; progress and errors go to stderr. The server listens on
# loopback only, trusts local connections (no password: it holds nothing but test data), runs
# without fsync, and keeps its socket and log inside the data directory. PostgreSQL comes from
# the distribution's packages (Debian/Ubuntu: apt-get install postgresql) when initdb is absent.
# As root, the server runs as the `postgres` system user (PostgreSQL refuses to run as root).
#
# Environment: CIDER_PG_PORT (default: a free port), CIDER_PG_DB (default cider_test),
# CIDER_PG_USER (default cider).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_bin_dir() {
    local d
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version; take the newest.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is not available; install PostgreSQL (initdb, pg_ctl) and re-run"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "PostgreSQL is not installed; installing it needs root (or sudo)"
        sudo="sudo"
    fi
    log "installing PostgreSQL from the distribution's packages (apt-get install postgresql)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
}

free_port() {
    if [ -n "${CIDER_PG_PORT:-}" ]; then
        echo "$CIDER_PG_PORT"
        return
    fi
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
            return
        fi
    done
    echo 55432
}

# Run a command as the server's owner: the `postgres` system user when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' system user to run the server"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin port db user datadir
    bin="$(find_bin_dir || true)"
    if [ -z "$bin" ]; then
        install_postgres
        bin="$(find_bin_dir)" || die "PostgreSQL was installed but initdb/pg_ctl were not found"
    fi
    port="$(free_port)"
    db="${CIDER_PG_DB:-cider_test}"
    user="${CIDER_PG_USER:-cider}"
    datadir="$(mktemp -d "${TMPDIR:-/tmp}/cider-pg.XXXXXX")"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' system user to run the server"
        chown postgres: "$datadir"
    fi
    chmod 700 "$datadir"
    log "initdb in $datadir ($("$bin/postgres" --version))"
    as_owner "$bin/initdb" -D "$datadir/data" -U "$user" --auth=trust -E UTF8 --no-locale >"$datadir.initdb.log" 2>&1 \
        || { cat "$datadir.initdb.log" >&2; die "initdb failed"; }
    rm -f "$datadir.initdb.log"
    log "starting the server on 127.0.0.1:$port"
    as_owner "$bin/pg_ctl" -D "$datadir/data" -l "$datadir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $datadir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2 || { cat "$datadir/server.log" >&2 || true; die "the server did not start"; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" >&2 || die "createdb $db failed"
    log "ready: database $db, data directory $datadir (stop with: .ci/postgres.sh stop)"
    echo "export CIDER_TEST_POSTGRES_URL=postgresql://$user@127.0.0.1:$port/$db"
    echo "export CIDER_PG_DATADIR=$datadir"
}

stop() {
    local datadir="${1:-${CIDER_PG_DATADIR:-}}" bin
    [ -n "$datadir" ] || die "stop: no data directory (set CIDER_PG_DATADIR or pass it)"
    [ -d "$datadir/data" ] || { log "stop: $datadir holds no server; nothing to do"; return 0; }
    bin="$(find_bin_dir)" || die "stop: pg_ctl not found"
    as_owner "$bin/pg_ctl" -D "$datadir/data" -m fast -w stop >&2 || log "stop: pg_ctl stop failed (already stopped?)"
    case "$(basename "$datadir")" in
        cider-pg.*) rm -rf "$datadir" ;;
        *) log "stop: not deleting $datadir (not a directory this script created)" ;;
    esac
}

case "${1:-start}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) die "usage: $0 [start|stop [DATADIR]]" ;;
esac
