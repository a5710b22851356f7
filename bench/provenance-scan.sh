#!/usr/bin/env bash
# `aigate provenance scan` end to end (issue 17: "at least 50 MB/s of source on one core against
# a ledger of 1 million responses"): the real release binary, `--format json`, on real source
# trees, against the embedded ledger the gateway writes, in a state directory laid out as the
# gateway lays it out (provenance/key, provenance/ledger/), read as a stopped gateway's ledger
# is read (`--ledger file`).
#
#   bench/provenance-scan.sh [--responses N] [--reps N] [--cpu N] [--work DIR] [--bin PATH] [CORPUS...]
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
#
# Prints one line per rep and a summary (medians); results go to $WORK/results-<time>.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
responses=1000000
reps=3
cpu=0
work=${BENCH_WORK:-$HOME/.cache/aigate-bench}/provenance-scan
bin=${AIGATE_BIN:-$here/target/release/aigate}
corpus=()
while [ $# -gt 0 ]; do
  case "$1" in
    --responses) responses=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n "2,25p" "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) corpus+=("$1"); shift ;;
  esac
done
if [ ${#corpus[@]} -eq 0 ]; then
  corpus=("$HOME/.cargo/registry/src")
  py=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])' 2>/dev/null || true)
  [ -n "$py" ] && [ -d "$py" ] && corpus+=("$py")
fi
[ -x "$bin" ] || { echo "no aigate binary at $bin: cargo build --release, or --bin / AIGATE_BIN" >&2; exit 1; }
mkdir -p "$work"
state="$work/state-$responses"

if [ ! -d "$state/provenance/ledger/index" ]; then
  echo "building a ledger of $responses responses in $state (once; ~100 s and ~6 GB at 1,000,000)"
  mkdir -p "$state"
  (cd "$here" && AIGATE_LEDGER_RESPONSES=$responses AIGATE_LEDGER_STATE="$state" \
     AIGATE_LEDGER_ANSWERS="${corpus[0]}" AIGATE_LEDGER_BATCHES=0 AIGATE_LEDGER_DOCS=2000 \
     CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-off} \
     nice cargo bench --bench provenance_ledger)
fi

config="$work/aigate-$responses.toml"
sed "s|^state_dir = .*|state_dir = \"$state\"|" "$here/config/aigate.toml" > "$config"
empty="$work/empty"
mkdir -p "$empty"

# One scan: prints "cpu_s wall_s max_rss_kb bytes documents findings strong".
scan() {
  local out="$work/scan.json" t="$work/time.txt" rc=0
  AIGATE_CONFIG="$config" RUST_LOG=off taskset -c "$cpu" /usr/bin/time -o "$t" -f '%U %S %e %M' \
    "$bin" provenance scan --ledger file --format json "$@" > "$out" 2> "$work/scan.err" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "scan failed (exit $rc):" >&2; cat "$work/scan.err" >&2; exit 1
  fi
  python3 - "$out" "$t" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
u, s, e, m = open(sys.argv[2]).read().split()[-4:]
f = doc["findings"]
strong = sum(1 for x in f if x["tier"] == "strong")
print(f"{float(u) + float(s):.3f} {float(e):.3f} {m} {doc['scanned']['bytes']} {doc['scanned']['documents']} {len(f)} {strong}")
EOF
}

log="$work/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# provenance scan end to end: $(date -u +%FT%TZ), $(uname -n), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# binary $bin ($(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')), ledger $state ($responses responses, $(du -sh "$state/provenance/ledger" | cut -f1)), CPU $cpu"
  echo "# corpus: ${corpus[*]}"
} | tee "$log"

medians() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
opens=(); runs=()
scan "$empty" > /dev/null   # page cache: the ledger's files
scan "${corpus[@]}" > /dev/null   # page cache: the corpus
for r in $(seq 1 "$reps"); do
  o=$(scan "$empty"); opens+=("$o")
  x=$(scan "${corpus[@]}"); runs+=("$x")
  echo "rep $r: open (empty scan) cpu/wall/rss_kb: $(echo "$o" | cut -d' ' -f1-3); scan cpu_s wall_s rss_kb bytes docs findings strong: $x" | tee -a "$log"
done
ocpu=$(printf '%s\n' "${opens[@]}" | cut -d' ' -f1 | medians)
owall=$(printf '%s\n' "${opens[@]}" | cut -d' ' -f2 | medians)
cpu_s=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | medians)
wall_s=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | medians)
bytes=$(echo "${runs[0]}" | cut -d' ' -f4)
python3 - "$bytes" "$cpu_s" "$wall_s" "$ocpu" "$owall" <<'EOF' | tee -a "$log"
import sys
b, c, w, oc, ow = (float(x) for x in sys.argv[1:])
mb = b / 1e6
print(f"scanned {mb:.1f} MB; medians: whole command {c:.2f} CPU-s, {w:.2f} s wall -> "
      f"{mb / c:.1f} MB per CPU-second, {mb / w:.1f} MB/s wall")
print(f"ledger open (empty scan) {oc:.2f} CPU-s, {ow:.2f} s wall; scan alone "
      f"{mb / max(c - oc, 1e-9):.1f} MB per CPU-second, {mb / max(w - ow, 1e-9):.1f} MB/s wall")
EOF
echo "results: $log"
