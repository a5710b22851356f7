#!/usr/bin/env bash
# Grant propagation between two replicas sharing PostgreSQL (issue #7's figure): starts a
# throwaway PostgreSQL cluster on a free loopback port, runs examples/grant_propagation.rs
# (release) against it, stops the cluster. Needs Debian's postgresql package (root: the server
# runs as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."
GRANTS=${GRANTS:-100}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$BIN/pg_ctl" ] || { echo "install PostgreSQL first: apt-get install postgresql" >&2; exit 1; }
WORK=$(mktemp -d)
chmod 755 "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$WORK"; runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { as_pg "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
as_pg "$BIN/initdb" -D "$WORK/data" -A trust -U aigate -E UTF8 >/dev/null
as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
cargo run --quiet --release --example grant_propagation -- \
    --url "postgres://aigate@127.0.0.1:$PORT/postgres" --grants "$GRANTS"
