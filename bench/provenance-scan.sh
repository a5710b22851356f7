#!/usr/bin/env bash
# `aigate provenance scan` end to end (issue 17: "at least 50 MB/s of source on one core against
# a ledger of 1 million responses"): the real release binary, `--format json`, on real source
# trees, against the embedded ledger the gateway writes, in a state directory laid out as the
# gateway lays it out (provenance/key, provenance/ledger/), read as a stopped gateway's ledger
# is read (`--ledger file`), or through the running gateway's admin API (`--ledger api`).
#
#   bench/provenance-scan.sh [--responses N] [--reps N] [--cpu N] [--work DIR] [--bin PATH]
#                            [--ledger file|api|postgres] [--gateway-cpu N] [--pg-days D]
#                            [CORPUS...]
#
# - The ledger (N responses, default 1,000,000: about 205 fingerprints each, ~6 GB) is built
#   once per N by `cargo bench --bench provenance_ledger` with AIGATE_LEDGER_STATE (bench/README.md)
#   in $WORK/state-N and reused after. Its last responses (up to 1,000) are real: every 97th text
#   file of the first CORPUS path, fingerprinted with the state directory's key, so the scan has
#   findings to build and not only absent fingerprints to look up.
# - CORPUS defaults to the cargo registry's sources and Python's standard library (what is on
#   this machine: the byte count scanned is printed with each figure). The registry grows with
#   every build that fetches a crate: for a before/after pair, freeze a copy first
#   (`cp -al ~/.cargo/registry/src DIR`) and pass DIR.
# - Each rep runs the scan under `taskset -c CPU` and /usr/bin/time: CPU seconds (user + sys)
#   and wall seconds. The ledger's open (its membership filter built from the store) is timed
#   apart, as a scan of an empty directory, and taken off for the "scan alone" columns.
#   The first rep warms the page cache and is not counted.
# - `--ledger api`: the real gateway (`aigate run`, pinned to --gateway-cpu, default 1) holds the
#   ledger, with the bench config on ports of their own (AIGATE_BENCH_PORT, default 39180 for
#   the admin API and the next one for the proxy) and an auditor token made for the run; the
#   scan asks it. The gateway's CPU seconds during each scan (from /proc) are printed beside the
#   scan's, and the figure is MB per CPU-second of both together.
# - `--pg-days D`: the ledger is in PostgreSQL instead (a throwaway cluster from bench/pg.sh on
#   the gateway's CPU): the same N responses, written by `cargo bench --bench provenance_ledger`
#   with AIGATE_LEDGER_PG through the replicas' own write, their times over D day partitions.
#   `--ledger api` asks a gateway with `storage.backend = "postgres"` (its replica filter),
#   `--ledger postgres` has the scan read the tables directly. The server's CPU seconds (its
#   processes and the backends that ended) count with the gateway's.
#
# Prints one line per rep and a summary (medians); results go to $WORK/results-<time>.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
responses=1000000
reps=3
cpu=0
work=${BENCH_WORK:-$HOME/.cache/aigate-bench}/provenance-scan
bin=${AIGATE_BIN:-$here/target/release/aigate}
access=file
gwcpu=1
pgdays=""
corpus=()
while [ $# -gt 0 ]; do
  case "$1" in
    --responses) responses=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --ledger) access=$2; shift 2 ;;
    --gateway-cpu) gwcpu=$2; shift 2 ;;
    --pg-days) pgdays=$2; shift 2 ;;
    -h|--help) sed -n "2,32p" "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) corpus+=("$1"); shift ;;
  esac
done
if [ ${#corpus[@]} -eq 0 ]; then
  corpus=("$HOME/.cargo/registry/src")
  py=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])' 2>/dev/null || true)
  [ -n "$py" ] && [ -d "$py" ] && corpus+=("$py")
fi
case "$access" in file|api|postgres) ;; *) echo "--ledger file|api|postgres, not $access" >&2; exit 2 ;; esac
[ "$access" != postgres ] || [ -n "$pgdays" ] || { echo "--ledger postgres needs --pg-days D" >&2; exit 2; }
[ "$access" != file ] || [ -z "$pgdays" ] || { echo "--pg-days: the ledger is in PostgreSQL, use --ledger api or postgres" >&2; exit 2; }
[ -x "$bin" ] || { echo "no aigate binary at $bin: cargo build --release, or --bin / AIGATE_BIN" >&2; exit 1; }
mkdir -p "$work"
state="$work/state-$responses"

gateway=""
pg_cpu() { echo 0; }
if [ -n "$pgdays" ]; then
  # shellcheck source=bench/pg.sh
  source "$here/bench/pg.sh"
  pg_start "$gwcpu"
  trap 'pg_stop' EXIT
  # The server's CPU seconds: the postmaster with the children it reaped, and those still running.
  pg_cpu() {
    local pm
    pm=$(head -1 "$PG_WORK/data/postmaster.pid")
    { awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
      for c in $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null; done
    } | awk -v hz="$(getconf CLK_TCK)" '{t += $1} END {print t / hz}'
  }
  state="$work/pgstate-$responses"
  mkdir -p "$state"
  echo "writing $responses responses over $pgdays days to PostgreSQL (a throwaway cluster, CPU $gwcpu)"
  (cd "$here" && AIGATE_LEDGER_RESPONSES=$responses AIGATE_LEDGER_STATE="$state" \
     AIGATE_LEDGER_ANSWERS="${corpus[0]}" AIGATE_LEDGER_PG="$PG_URL" AIGATE_LEDGER_DAYS="$pgdays" \
     CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-off} \
     nice cargo bench --bench provenance_ledger)
elif [ ! -d "$state/provenance/ledger/index" ]; then
  echo "building a ledger of $responses responses in $state (once; ~100 s and ~6 GB at 1,000,000)"
  mkdir -p "$state"
  (cd "$here" && AIGATE_LEDGER_RESPONSES=$responses AIGATE_LEDGER_STATE="$state" \
     AIGATE_LEDGER_ANSWERS="${corpus[0]}" AIGATE_LEDGER_BATCHES=0 AIGATE_LEDGER_DOCS=2000 \
     CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-off} \
     nice cargo bench --bench provenance_ledger)
fi

config="$work/aigate-$responses.toml"
sed "s|^state_dir = .*|state_dir = \"$state\"|" "$here/config/aigate.toml" > "$config"
if [ -n "$pgdays" ]; then
  sed -i -e "s|^backend = \"file\"|backend = \"postgres\"\nurl = \"$PG_URL\"\nreplica_id = \"bench\"|" "$config"
fi
empty="$work/empty"
mkdir -p "$empty"

# The gateway's CPU seconds so far (user + system), 0 without one.
gateway_cpu() {
  local g=0
  [ -z "$gateway" ] || g=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$gateway/stat")
  python3 -c "print($g + $(pg_cpu))"
}
if [ "$access" = api ]; then
  port=${AIGATE_BENCH_PORT:-39180}
  token="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  hash=$(printf %s "$token" | "$bin" user hash-token)
  sed -e "s|^listen = \"127.0.0.1:9180\"|listen = \"127.0.0.1:$port\"|" \
      -e "s|^listen = \"127.0.0.1:3128\"|listen = \"127.0.0.1:$((port + 1))\"|" "$config" > "$config.api"
  printf '\n[[admin.tokens]]\nuser = "bench-scan"\nroles = ["auditor"]\nhash = "%s"\n' "$hash" >> "$config.api"
  config="$config.api"
  export AIGATE_ADMIN="http://127.0.0.1:$port" AIGATE_TOKEN="$token"
  RUST_LOG=info taskset -c "$gwcpu" "$bin" run --config "$config" > "$work/gateway.log" 2>&1 &
  gateway=$!
  # Waited for: it saves the filter as it stops, and the next run opens the same ledger.
  trap 'kill $gateway 2>/dev/null && wait $gateway 2>/dev/null; [ -z "$pgdays" ] || pg_stop; true' EXIT
  echo "gateway (pid $gateway, CPU $gwcpu) loading the ledger's filter ..."
  ready="membership filter ready"
  [ -z "$pgdays" ] || ready="replica's filter is ready"
  t0=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    grep -q "$ready" "$work/gateway.log" && break
    kill -0 "$gateway" 2>/dev/null || { echo "the gateway stopped:" >&2; tail -20 "$work/gateway.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "$ready" "$work/gateway.log" || { echo "the gateway's filter is not ready after 600 s" >&2; exit 1; }
  echo "filter ready after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
fi

# One scan: prints "cpu_s wall_s max_rss_kb bytes documents findings strong gateway_cpu_s".
scan() {
  local out="$work/scan.json" t="$work/time.txt" rc=0 g0 g1
  g0=$(gateway_cpu)
  AIGATE_CONFIG="$config" RUST_LOG=off taskset -c "$cpu" /usr/bin/time -o "$t" -f '%U %S %e %M' \
    "$bin" provenance scan --ledger "$access" --format json "$@" > "$out" 2> "$work/scan.err" || rc=$?
  g1=$(gateway_cpu)
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "scan failed (exit $rc):" >&2; cat "$work/scan.err" >&2; exit 1
  fi
  python3 - "$out" "$t" "$g0" "$g1" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
u, s, e, m = open(sys.argv[2]).read().split()[-4:]
f = doc["findings"]
strong = sum(1 for x in f if x["tier"] == "strong")
g = float(sys.argv[4]) - float(sys.argv[3])
print(f"{float(u) + float(s):.3f} {float(e):.3f} {m} {doc['scanned']['bytes']} {doc['scanned']['documents']} {len(f)} {strong} {g:.2f}")
EOF
}

log="$work/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# provenance scan end to end: $(date -u +%FT%TZ), $(uname -n), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# binary $bin ($(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')), ledger $( [ -n "$pgdays" ] && echo "in PostgreSQL" || echo "$state") ($responses responses, $( [ -n "$pgdays" ] && du -sh "$PG_WORK/data" | cut -f1 || du -sh "$state/provenance/ledger" | cut -f1)), CPU $cpu"
  echo "# corpus: ${corpus[*]}"
  echo "# ledger access: $access$( [ "$access" = api ] && echo ", gateway on CPU $gwcpu")$( [ -n "$pgdays" ] && echo "; PostgreSQL over $pgdays days, on CPU $gwcpu, its CPU counted with the gateway's")"
} | tee "$log"

medians() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
opens=(); runs=()
scan "$empty" > /dev/null   # page cache: the ledger's files
scan "${corpus[@]}" > /dev/null   # page cache: the corpus
for r in $(seq 1 "$reps"); do
  o=$(scan "$empty"); opens+=("$o")
  x=$(scan "${corpus[@]}"); runs+=("$x")
  echo "rep $r: open (empty scan) cpu/wall/rss_kb: $(echo "$o" | cut -d' ' -f1-3); scan cpu_s wall_s rss_kb bytes docs findings strong gateway_cpu_s: $x" | tee -a "$log"
done
gcpu=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f8 | medians)
ocpu=$(printf '%s\n' "${opens[@]}" | cut -d' ' -f1 | medians)
owall=$(printf '%s\n' "${opens[@]}" | cut -d' ' -f2 | medians)
cpu_s=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | medians)
wall_s=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | medians)
bytes=$(echo "${runs[0]}" | cut -d' ' -f4)
python3 - "$bytes" "$cpu_s" "$wall_s" "$ocpu" "$owall" "$gcpu" <<'EOF' | tee -a "$log"
import sys
b, c, w, oc, ow, g = (float(x) for x in sys.argv[1:])
mb = b / 1e6
if g > 0:
    print(f"the gateway answering the scan: {g:.2f} CPU-s (median); scan and gateway together "
          f"{mb / (c + g):.1f} MB per CPU-second")
print(f"scanned {mb:.1f} MB; medians: whole command {c:.2f} CPU-s, {w:.2f} s wall -> "
      f"{mb / c:.1f} MB per CPU-second, {mb / w:.1f} MB/s wall")
print(f"ledger open (empty scan) {oc:.2f} CPU-s, {ow:.2f} s wall; scan alone "
      f"{mb / max(c - oc, 1e-9):.1f} MB per CPU-second, {mb / max(w - ow, 1e-9):.1f} MB/s wall")
EOF
echo "results: $log"
