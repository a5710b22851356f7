#!/usr/bin/env bash
# bench/run.sh - benchmark aigate against the anchor peers with one command (see README.md, "aigate").
#   bench/run.sh [run_all.sh options]        e.g.  bench/run.sh --quick --peers direct,hudsucker-nodelay,aigate
# 1. runs scripts/setup.sh if a tool, build or certificate is missing (root; apt, cargo, pip; once)
# 2. builds aigate (`cargo build --release` at the repository root), unless AIGATE_BIN=/path is given
# 3. runs run_all.sh with aigate as the candidate named `aigate` (bench/aigate/start.sh renders its
#    config from config/aigate.toml into the run directory), passing every argument through
# 4. verifies aigate's audit log of the run and appends its summary to report.md
# Environment: BENCH_WORK (default ~/.cache/aigate-bench), AIGATE_BIN, AIGATE_BASE_CONFIG (default
# config/aigate.toml of this repository), AIGATE_ADMIN_LISTEN (127.0.0.1:9181), AIGATE_PER_CLIENT (max).
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
B=${BENCH_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/aigate-bench}
export BENCH_WORK=$B

# --- arguments (passed through to run_all.sh; --out is needed here too) ---
OUT=""; args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --out) OUT=${args[i+1]:-};;
    --candidate|--candidate-name) echo "bench/run.sh sets --candidate/--candidate-name itself (aigate); use run_all.sh for other candidates" >&2; exit 2;;
    -h|--help) "$BENCH/run_all.sh" --help; exit 0;;
  esac
done

# --- 1. setup (idempotent; only when something is missing) ---
need=(
  "$B/tools/oha/bin/oha" "$B/target/benchtools/release/sseprobe" "$B/target/benchtools/release/sse-upstream"
  "$B/target/hudsucker/release/hudsucker-bench" "$B/venv/bin/mitmdump" "$B/ca/mitm-ca.pem"
)
missing=0; for f in "${need[@]}"; do [ -e "$f" ] || missing=1; done
command -v nginx >/dev/null && command -v squid >/dev/null || missing=1
if [ "$missing" = 1 ]; then
  echo "bench/run.sh: running scripts/setup.sh (one-time; needs root)" >&2
  "$BENCH/scripts/setup.sh"
fi

# squid runs as user proxy: it must be able to reach its run directory and the CA below $B
# (with $B under a 0700 home it cannot, and squid ssl-bump dies at start).
if id proxy >/dev/null 2>&1 && ! runuser -u proxy -- test -x "$B" 2>/dev/null; then
  echo "bench/run.sh: letting user proxy (squid) traverse to $B (chmod o+x on its parents)" >&2
  d=$B; while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
fi

# --- 2. aigate binary ---
if [ -z "${AIGATE_BIN:-}" ]; then
  echo "bench/run.sh: cargo build --release in $REPO" >&2
  (cd "$REPO" && cargo build --release)
  AIGATE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/aigate
fi
[ -x "$AIGATE_BIN" ] || { echo "bench/run.sh: $AIGATE_BIN is not executable" >&2; exit 1; }
AIGATE_BIN=$(cd "$(dirname "$AIGATE_BIN")" && pwd)/$(basename "$AIGATE_BIN")
: "${AIGATE_BASE_CONFIG:=$REPO/config/aigate.toml}"
AIGATE_BASE_CONFIG=$(cd "$(dirname "$AIGATE_BASE_CONFIG")" && pwd)/$(basename "$AIGATE_BASE_CONFIG")
export AIGATE_BIN AIGATE_BASE_CONFIG

# --- 3. run_all.sh with aigate as the candidate ---
if [ -z "$OUT" ]; then OUT=$B/results/$(date +%Y%m%d-%H%M%S); args+=(--out "$OUT"); fi
rc=0
"$BENCH/run_all.sh" --candidate-name aigate --candidate "$(printf '%q' "$BENCH/aigate/start.sh")" "${args[@]}" || rc=$?

# --- 4. aigate's audit log of this run ---
AUDIT=$OUT/run/aigate/state/audit.jsonl
if [ -f "$AUDIT" ]; then
  {
    echo
    echo "## aigate"
    echo
    echo "binary: $AIGATE_BIN ($("$AIGATE_BIN" --version 2>&1))"
    echo "git: repository $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')," \
         "tree holding the binary $(git -C "$(dirname "$AIGATE_BIN")" describe --always --dirty 2>/dev/null || echo '?')"
    echo "config: $OUT/run/aigate/aigate.toml (rendered from $AIGATE_BASE_CONFIG, sha256 $(sha256sum "$AIGATE_BASE_CONFIG" | cut -c1-12))"
    echo "audit log: $AUDIT"
    echo "audit verify: $("$AIGATE_BIN" audit verify "$AUDIT" 2>&1 | tail -1)"
    python3 - "$AUDIT" <<'PY'
import collections, json, sys
c = collections.Counter()
for line in open(sys.argv[1]):
    r = json.loads(line)
    c[(r.get("kind"), r.get("vendor"), r.get("tool"), r.get("action"), r.get("reason"), r.get("status"))] += 1
print("\n| kind | vendor | tool | action | reason | status | records |\n|---|---|---|---|---|---|---|")
for k, n in sorted(c.items(), key=lambda kv: -kv[1]):
    print("| " + " | ".join(str(x) for x in k) + f" | {n} |")
PY
  } > "$OUT/aigate-audit.md"
  cat "$OUT/aigate-audit.md" >> "$OUT/report.md" 2>/dev/null || true
  cat "$OUT/aigate-audit.md"
fi
echo "results: $OUT" >&2
exit "$rc"
