#!/usr/bin/env bash
# The aigate candidate command for run_all.sh (see README.md, section "aigate").
# run_all.sh exports PROXY_PORT, MITM_CA_CERT, MITM_CA_KEY, UPSTREAM_CA and RUN_DIR; bench/run.sh
# exports AIGATE_BIN and AIGATE_BASE_CONFIG (AIGATE_PROVENANCE=on|off overrides [provenance] enabled,
# to measure the audit path apart from capture). Renders $RUN_DIR/aigate.toml from the shipped config,
# validates it with `aigate check`, then execs `aigate run` in the foreground (SIGTERM stops it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${AIGATE_BIN:?AIGATE_BIN not set (use bench/run.sh)}"
: "${AIGATE_BASE_CONFIG:=$HERE/../../config/aigate.toml}"
: "${PROXY_PORT:?}" "${MITM_CA_CERT:?}" "${MITM_CA_KEY:?}" "${UPSTREAM_CA:?}" "${RUN_DIR:?}"
CFG=$RUN_DIR/aigate.toml
mkdir -p "$RUN_DIR/state"
python3 "$HERE/render-config.py" --base "$AIGATE_BASE_CONFIG" --out "$CFG" \
  --listen "127.0.0.1:$PROXY_PORT" --state-dir "$RUN_DIR/state" \
  --ca-cert "$MITM_CA_CERT" --ca-key "$MITM_CA_KEY" --upstream-ca "$UPSTREAM_CA" \
  --admin-listen "${AIGATE_ADMIN_LISTEN:-127.0.0.1:9181}" \
  --per-client "${AIGATE_PER_CLIENT:-max}" \
  ${AIGATE_PROVENANCE:+--provenance "$AIGATE_PROVENANCE"}
# AIGATE_STORAGE_URL=postgres://...: the same run with exemptions (and the audit copy) in
# PostgreSQL, to compare the hot path with the file backend (bench/README.md, "aigate").
if [ -n "${AIGATE_STORAGE_URL:-}" ]; then
  sed -i "s|^backend = \"file\"|backend = \"postgres\"\nurl = \"$AIGATE_STORAGE_URL\"\nreplica_id = \"bench\"|" "$CFG"
  grep -q '^backend = "postgres"' "$CFG" || { echo "start.sh: could not switch $CFG to postgres" >&2; exit 1; }
  # AIGATE_STORAGE_AUDIT=false: exemptions in PostgreSQL, the audit log in the file only.
  if [ "${AIGATE_STORAGE_AUDIT:-true}" = false ]; then
    sed -i 's|^replica_id = "bench"|replica_id = "bench"\naudit = false|' "$CFG"
  fi
fi
"$AIGATE_BIN" check --config "$CFG" >&2
echo "aigate: $("$AIGATE_BIN" --version); config $CFG (from $AIGATE_BASE_CONFIG); ulimit -n $(ulimit -n)" >&2
exec "$AIGATE_BIN" run --config "$CFG"
