# Sourced by bench scripts: a throwaway PostgreSQL cluster on a free loopback port.
#   pg_start [cpu]   -> exports PG_URL (the server is pinned to `cpu` when given)
#   pg_stop
# Needs Debian's postgresql package; as root the server runs as the postgres user.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_start() {
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] || { echo "install PostgreSQL first: apt-get install postgresql" >&2; return 1; }
    PG_WORK=$(mktemp -d)
    chmod 755 "$PG_WORK"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_WORK"
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    pg_as "$PG_BIN/initdb" -D "$PG_WORK/data" -A trust -U aigate -E UTF8 >/dev/null
    local pin=()
    [ -n "${1:-}" ] && pin=(taskset -c "$1")
    pg_as "${pin[@]}" "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -l "$PG_WORK/server.log" -w \
        -o "-p $PG_PORT -k $PG_WORK -c listen_addresses=127.0.0.1" start >/dev/null
    export PG_URL="postgres://aigate@127.0.0.1:$PG_PORT/postgres"
}
pg_stop() {
    [ -n "${PG_WORK:-}" ] || return 0
    pg_as "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_WORK"
    PG_WORK=""
}
