#!/usr/bin/env bash
# Real STAC components on 127.0.0.1, started and stopped by PID, every wait bounded:
# PostgreSQL 15 + PostGIS with the pgstac schema, stac-fastapi-pgstac under uvicorn, and nginx
# serving a folder of COGs with byte ranges. Used by `make test-remote` (tests/test_remote.py).
#
#   scripts/real_components.sh install VENV
#       Debian packages postgresql-15-postgis-3 and nginx-light (apt-get, as root) when missing,
#       and VENV with stac-fastapi-pgstac, pypgstac and uvicorn.
#   scripts/real_components.sh start VENV STATE FILES COLLECTION.json ITEMS.ndjson
#       a cluster in a new folder /tmp/tfchips-pgstac.* (postgres must reach it; STATE may be private),
#       pgstac migrated, the collection and items loaded, the API and nginx (root FILES) started;
#       PIDs, logs and configs in STATE. Prints the two base URLs.
#   scripts/real_components.sh stop STATE
#       stops what start started, by the PIDs it recorded, and removes the cluster's folder.
#
# Ports: TFCHIPS_PG_PORT (5439), TFCHIPS_API_PORT (8081), TFCHIPS_FILES_PORT (8090).
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=${TFCHIPS_PG_PORT:-5439}
API_PORT=${TFCHIPS_API_PORT:-8081}
FILES_PORT=${TFCHIPS_FILES_PORT:-8090}
# Seconds any one component may take to come up or go down.
WAIT=${TFCHIPS_COMPONENT_WAIT:-90}

log() { echo "real_components: $*" >&2; }

# Run as the postgres user when root (initdb and postgres refuse root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND once a second until it succeeds or time is up.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "$what not ready after ${seconds}s"
    return 1
}

# stop_pid FILE: TERM the process whose PID FILE holds, KILL it if it outlives the wait.
stop_pid() {
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(head -n 1 "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq "$WAIT"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

install() {
    local venv=$1
    if [ ! -e /usr/lib/postgresql/15/lib/postgis-3.so ] || ! command -v nginx >/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            log "needs the Debian packages postgresql-15-postgis-3 and nginx-light: run as root, or install them"
            exit 1
        fi
        # A package's start scripts must not start the system-wide services.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15-postgis-3 nginx-light
        rm -f /usr/sbin/policy-rc.d
    fi
    if [ ! -x "$venv/bin/uvicorn" ]; then
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/pip" install --quiet 'stac-fastapi.pgstac==7.2.*' 'pypgstac[psycopg]==0.10.*' 'uvicorn>=0.30'
    fi
}

start() {
    local venv=$1 state=$2 files=$3 collection=$4 items=$5
    mkdir -p "$state/nginx"
    state=$(cd "$state" && pwd)
    files=$(cd "$files" && pwd)
    local cluster
    cluster=$(mktemp -d /tmp/tfchips-pgstac.XXXXXX)
    echo "$cluster" >"$state/cluster"
    mkdir "$cluster/data" "$cluster/sock"
    [ "$(id -u)" = 0 ] && chown -R postgres "$cluster"
    # A start that fails part way stops what it started.
    trap 'stop "$state"' ERR

    as_pg "$PG_BIN/initdb" -D "$cluster/data" -U postgres --auth=trust >"$state/initdb.log"
    as_pg "$PG_BIN/pg_ctl" -D "$cluster/data" -w -t "$WAIT" -l "$cluster/postgres.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$cluster/sock" start >/dev/null
    export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGPASSWORD=unused PGDATABASE=pgstac
    local dsn="postgresql://postgres@127.0.0.1:$PG_PORT/pgstac"
    "$PG_BIN/psql" -q -d postgres -c "create database pgstac" >/dev/null
    "$PG_BIN/psql" -q -c "create extension postgis" >/dev/null
    "$venv/bin/pypgstac" migrate --dsn "$dsn" >"$state/migrate.log"
    "$venv/bin/pypgstac" load collections "$collection" --method upsert --dsn "$dsn" >"$state/load.log" 2>&1
    "$venv/bin/pypgstac" load items "$items" --method upsert --dsn "$dsn" >>"$state/load.log" 2>&1

    # The factory form: the module-level `app` is not found by this version.
    "$venv/bin/uvicorn" stac_fastapi.pgstac.app:create_app --factory --host 127.0.0.1 --port "$API_PORT" \
        --log-level warning >"$state/api.log" 2>&1 &
    echo $! >"$state/api.pid"

    local user=""
    [ "$(id -u)" = 0 ] && user="user root root;"  # workers must read FILES, which may be private to root
    cat >"$state/nginx.conf" <<EOF
$user
worker_processes 1;
pid $state/nginx.pid;
error_log $state/nginx-error.log;
events { worker_connections 256; }
http {
    access_log $state/access.log;
    client_body_temp_path $state/nginx/body;
    proxy_temp_path $state/nginx/proxy;
    fastcgi_temp_path $state/nginx/fastcgi;
    uwsgi_temp_path $state/nginx/uwsgi;
    scgi_temp_path $state/nginx/scgi;
    types { application/json json; image/tiff tif; }
    server { listen 127.0.0.1:$FILES_PORT; root $files; }
}
EOF
    nginx -c "$state/nginx.conf" -e "$state/nginx-error.log"

    wait_for "$WAIT" "the STAC API on port $API_PORT" curl -fsS "http://127.0.0.1:$API_PORT/collections"
    # Any answer will do: FILES need not have an index.
    wait_for "$WAIT" "nginx on port $FILES_PORT" curl -sS -o /dev/null "http://127.0.0.1:$FILES_PORT/"
    trap - ERR
    echo "API=http://127.0.0.1:$API_PORT FILES=http://127.0.0.1:$FILES_PORT"
}

stop() {
    local state=$1
    stop_pid "$state/api.pid"
    stop_pid "$state/nginx.pid"
    [ -s "$state/cluster" ] || return 0
    local cluster
    cluster=$(cat "$state/cluster")
    case "$cluster" in /tmp/tfchips-pgstac.*) ;; *) log "not a cluster folder start made: $cluster"; return 1 ;; esac
    if [ -s "$cluster/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$cluster/data" -m fast -w -t "$WAIT" stop >/dev/null || \
            stop_pid "$cluster/data/postmaster.pid"
    fi
    cp "$cluster/postgres.log" "$state/postgres.log" 2>/dev/null || true
    rm -rf "$cluster" "$state/cluster"
}

command=${1:-}
shift || true
case "$command" in
    install) install "$@" ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) echo "usage: $0 install VENV | start VENV STATE FILES COLLECTION.json ITEMS.ndjson | stop STATE" >&2; exit 2 ;;
esac
