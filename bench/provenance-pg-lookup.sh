#!/usr/bin/env bash
# The PostgreSQL ledger's lookup, as `aigate provenance scan --ledger postgres` makes it: one
# `SELECT hash, entry_id FROM aigate_provenance_fingerprints WHERE hash = ANY($1)` for a group
# of files' fingerprints (45,000, nearly all absent), against the ledger's own tables
# (migrations/0004_provenance_ledger.sql) with ROWS fingerprints spread over DAYS day
# partitions, as the ledger created them before migration 7 (since then it partitions the
# index by month: 13 for a year of captures). Prints the time per query and per fingerprint,
# and what that allows in MB of source a second (about 91,000 fingerprints a MB,
# docs/provenance.md).
#
#   bench/provenance-pg-lookup.sh [--rows N] [--reps N] DAYS...
#
# A throwaway cluster from bench/pg.sh (Debian's postgresql), pinned to CPU 1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rows=2000000
reps=3
days=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n "2,13p" "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) days+=("$1"); shift ;;
  esac
done
[ ${#days[@]} -gt 0 ] || days=(1 30)
# shellcheck source=bench/pg.sh
source "$here/bench/pg.sh"
trap pg_stop EXIT
echo "# $(date -u +%FT%TZ), $(uname -n), load $(cut -d' ' -f1-3 /proc/loadavg); $rows fingerprints"
for d in "${days[@]}"; do
  pg_start 1
  psql() { command psql -q -X -v ON_ERROR_STOP=1 "$PG_URL" "$@"; }
  psql -f "$here/migrations/0004_provenance_ledger.sql" > /dev/null
  for i in $(seq 0 $((d - 1))); do
    tag=$(date -u -d "2026-01-01 + $i days" +%Y%m%d)
    psql -c "CREATE TABLE aigate_provenance_fingerprints_$tag PARTITION OF aigate_provenance_fingerprints
             FOR VALUES FROM ('2026-01-01'::date + $i) TO ('2026-01-01'::date + $((i + 1)));"
  done
  psql -c "INSERT INTO aigate_provenance_fingerprints (hash, entry_id, time)
           SELECT (random() * 9.2e18)::bigint * (CASE WHEN random() < 0.5 THEN -1 ELSE 1 END),
                  '0193-bench-' || (g / 205)::text,
                  '2026-01-01'::timestamptz + ((g % $d) || ' days')::interval + interval '1 hour'
           FROM generate_series(1, $rows) g;
           ANALYZE aigate_provenance_fingerprints;"
  ms=()
  for _ in $(seq 1 "$reps"); do
    t=$(psql -c '\timing on' -c "SELECT count(*) FROM aigate_provenance_fingerprints
        WHERE hash = ANY(ARRAY(SELECT (random() * 9.2e18)::bigint FROM generate_series(1, 45000)));" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    ms+=("$t")
  done
  python3 - "$d" "$rows" "${ms[@]}" <<'EOF'
import sys
d, rows, ms = int(sys.argv[1]), int(sys.argv[2]), sorted(float(x) for x in sys.argv[3:])
m = ms[len(ms) // 2]
us = m * 1000 / 45000
print(f"{d:4d} day partitions: {m:8.1f} ms a lookup of 45,000 (median of {len(ms)}), "
      f"{us:6.2f} us a fingerprint: {1e6 / (us * 91000):6.2f} MB of source a second")
EOF
  pg_stop
done
