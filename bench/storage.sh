#!/usr/bin/env bash
# Keep-alive throughput with exemptions in PostgreSQL against the file backend (issue #7's
# figure): three bench/run.sh runs, keep-alive only, each with `direct` for the ratio: file,
# postgres (exemptions only, storage.audit = false) and postgres with the audit log shipped too.
# PostgreSQL runs pinned to the load CPU so it does not share aigate's core.
#   bench/storage.sh [run_all.sh options, e.g. --reps 3 --conc "16"]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pg.sh
trap pg_stop EXIT
B=${BENCH_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/aigate-bench}
TS=$(date +%Y%m%d-%H%M%S)
pg_start 1
bench/run.sh --peers direct,aigate --tests keepalive --out "$B/results/storage-file-$TS" "$@"
AIGATE_STORAGE_URL=$PG_URL AIGATE_STORAGE_AUDIT=false bench/run.sh --peers direct,aigate \
    --tests keepalive --out "$B/results/storage-postgres-$TS" "$@"
AIGATE_STORAGE_URL=$PG_URL bench/run.sh --peers direct,aigate --tests keepalive \
    --out "$B/results/storage-postgres-audit-$TS" "$@"
for backend in file postgres postgres-audit; do
    echo "== $backend"
    grep -E '^\| (direct|aigate) \|' "$B/results/storage-$backend-$TS/summary.md" | head -8
done
