#!/usr/bin/env bash
# bench/capture.sh - what provenance capture costs: keep-alive throughput of SSE Anthropic responses
# through aigate with [provenance] enabled = true and = false, in the same run (issue 17, section 4:
# "within 5% of capture off"), and the ledger bytes per MB of captured output.
#
#   bench/capture.sh [--bin PATH] [--reps 3] [--duration 10] [--warmup 2] [--conc 16] [--events 50]
#                    [--out DIR] [--proxy-cpu 0] [--load-cpu 1] [--worker-priority normal|low] [--vary]
#
# The upstream is the harness's (run_all.sh's): nginx terminating TLS for api.vendor.test in front of
# sse-upstream, `POST /v1/messages?stream=1&n=EVENTS&ms=0` answering `text/event-stream` with
# Anthropic Messages events (message_start, EVENTS-2 text_delta, message_stop), all at once. Both run
# on free ports (aigate's [upstream.resolve] points api.vendor.test at them), so a bench run by
# someone else on ports 443/8081 does not collide. aigate runs on the shipped policy rendered by
# bench/aigate/render-config.py, exactly as bench/run.sh runs it, with only provenance.enabled
# switched. Each rep runs both modes, alternating which goes first, each on a fresh state directory;
# oha keeps CONC connections alive for DURATION seconds after WARMUP seconds of the same load.
# Prints per-rep req/s, the medians, their ratio, for each capture-on run the ledger file size
# against the output the gateway captured (the sum of provenance_chars of its outcome records), and
# the CPU time of aigate's threads per answer during the measured runs, by thread name (from
# /proc/PID/task/*/stat before and after; the rows of results.jsonl hold it per rep as "cpu").
# --worker-priority low renders provenance.worker_priority = "low" (the capture workers at SCHED_IDLE);
# the provenance marks then say how many captures a full queue dropped. --vary makes every answer's
# text differ (sse-upstream's vary=1), as real ones do, so the ledger indexes new fingerprints each
# time; without it every answer is the same text and the ledger's keys repeat.
# Needs the harness's tools: run bench/run.sh (or scripts/setup.sh) once first.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
B=${BENCH_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/aigate-bench}
CA=$B/ca
OHA=$B/tools/oha/bin/oha
SSEUP=$B/target/benchtools/release/sse-upstream
VARY=""; BIN=""; REPS=3; DURATION=10; WARMUP=2; CONC=16; EVENTS=50; OUT=""; PROXY_CPU=0; LOAD_CPU=1; PRIORITY=normal
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2;;
    --reps) REPS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --warmup) WARMUP=$2; shift 2;;
    --conc) CONC=$2; shift 2;;
    --events) EVENTS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --proxy-cpu) PROXY_CPU=$2; shift 2;;
    --load-cpu) LOAD_CPU=$2; shift 2;;
    --worker-priority) PRIORITY=$2; shift 2;;
    --vary) VARY="&vary=1"; shift;;
    -h|--help) sed -n '2,25p' "$0"; exit 0;;
    *) echo "capture.sh: unknown option $1 (see --help)" >&2; exit 64;;
  esac
done
[ -n "$BIN" ] || BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/aigate
[ -x "$BIN" ] || { echo "capture.sh: $BIN is not executable (cargo build --release, or --bin PATH)" >&2; exit 1; }
for f in "$OHA" "$SSEUP" "$CA/mitm-ca.pem" "$CA/upstream.key"; do
  [ -e "$f" ] || { echo "capture.sh: $f is missing; run bench/run.sh or bench/scripts/setup.sh once" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "capture.sh: nginx is not installed (bench/scripts/setup.sh)" >&2; exit 1; }
OUT=${OUT:-$B/capture/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/nginx"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }
PGIDS=()
stop_group() { kill -TERM -- "-$1" 2>/dev/null || true; for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL -- "-$1" 2>/dev/null || true; }
cleanup() { for g in "${PGIDS[@]}"; do stop_group "$g"; done; }
trap cleanup EXIT

# --- the upstream: the harness's nginx + sse-upstream, on free ports ---
UP_PORT=$(free_port); SSE_PORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)
setsid taskset -c "$LOAD_CPU" "$SSEUP" "127.0.0.1:$SSE_PORT" > "$OUT/sse-upstream.log" 2>&1 & PGIDS+=($!)
sed -e "s#@RUN@#$OUT/nginx#g" -e "s#@CA@#$CA#g" -e "/worker_cpu_affinity/d" \
    -e "s#127.0.0.1:443#127.0.0.1:$UP_PORT#g" -e "s#127.0.0.1:8081#127.0.0.1:$SSE_PORT#g" \
    "$BENCH/conf/nginx.conf" > "$OUT/nginx.conf"
grep -q "127.0.0.1:$UP_PORT" "$OUT/nginx.conf" || { echo "capture.sh: could not move nginx off port 443" >&2; exit 1; }
setsid taskset -c "$LOAD_CPU" nginx -c "$OUT/nginx.conf" > "$OUT/nginx.log" 2>&1 & PGIDS+=($!)
wait_port "$UP_PORT" && wait_port "$SSE_PORT" || { echo "capture.sh: upstream did not start (see $OUT/nginx.log)" >&2; exit 1; }

# --- aigate's config, one per mode: the shipped policy as bench/run.sh renders it ---
render() {  # mode(on|off) state_dir -> config path
  local mode=$1 state=$2 cfg=$OUT/aigate-$1.toml
  python3 "$BENCH/aigate/render-config.py" --base "$REPO/config/aigate.toml" --out "$cfg" \
    --listen "127.0.0.1:$PROXY_PORT" --state-dir "$state" \
    --ca-cert "$CA/mitm-ca.pem" --ca-key "$CA/mitm-ca.key" --upstream-ca "$CA/upstream-ca.pem" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --resolve "api.vendor.test=127.0.0.1:$UP_PORT" --provenance "$mode" \
    --worker-priority "$PRIORITY" > /dev/null
  "$BIN" check --config "$cfg" > "$OUT/check-$mode.log" 2>&1 || { cat "$OUT/check-$mode.log" >&2; exit 1; }
  echo "$cfg"
}

oha_args=(--no-tui --output-format json -m POST -H 'content-type: application/json' -H 'x-api-key: sk-bench-0000000000000000'
          -H 'anthropic-version: 2023-06-01' -D "$BENCH/conf/request.json" --cacert "$CA/client-bundle.pem" -x "http://127.0.0.1:$PROXY_PORT")
URL="https://api.vendor.test/v1/messages?stream=1&n=$EVENTS&ms=0$VARY"

threads() {  # pid -> one line per thread: id, name, CPU clock ticks (utime + stime); then the process's
  local t
  awk '{ sub(/^.*\) /, ""); print "process\t(process)\t" ($12 + $13) }' /proc/"$1"/stat 2>/dev/null || true
  for t in /proc/"$1"/task/*; do
    awk -v id="${t##*/}" '{ sub(/^[^(]*\(/, ""); n = $0; sub(/\).*$/, "", n); sub(/^.*\) /, "");
      print id "\t" n "\t" ($12 + $13) }' "$t/stat" 2>/dev/null || true
  done
}

run_mode() {  # mode rep
  local mode=$1 rep=$2 state=$OUT/state-$1-r$2 cfg pid f
  rm -rf "$state"; mkdir -p "$state"
  cfg=$(render "$mode" "$state")
  setsid taskset -c "$PROXY_CPU" "$BIN" run --config "$cfg" > "$OUT/aigate-$mode-r$rep.log" 2>&1 & pid=$!
  wait_port "$PROXY_PORT" || { echo "capture.sh: aigate did not listen (see $OUT/aigate-$mode-r$rep.log)" >&2; exit 1; }
  taskset -c "$LOAD_CPU" "$OHA" -z "${WARMUP}s" -c "$CONC" "${oha_args[@]}" "$URL" > /dev/null 2>&1
  f=$OUT/oha-$mode-r$rep.json
  threads "$pid" > "$OUT/threads-$mode-r$rep.before"
  taskset -c "$LOAD_CPU" "$OHA" -z "${DURATION}s" -c "$CONC" "${oha_args[@]}" "$URL" > "$f" 2> "$f.err"
  threads "$pid" > "$OUT/threads-$mode-r$rep.after"
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$f" "$state" "$mode" "$rep" "$OUT/threads-$mode-r$rep" >> "$OUT/results.jsonl" <<'PY'
import json, os, sys
f, state, mode, rep, threads = sys.argv[1:6]
o = json.load(open(f))
codes = o.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values())
rps = o["summary"]["requestsPerSec"] * (ok / total if total else 0)
chars = captured = outcomes = 0
kinds = {}
for line in open(os.path.join(state, "audit.jsonl")):
    r = json.loads(line)
    if r.get("kind") != "outcome":
        continue
    outcomes += 1
    p = r.get("provenance")
    kinds[p] = kinds.get(p, 0) + 1
    if p == "captured":
        captured += 1
        chars += r.get("provenance_chars") or 0
ledger = os.path.join(state, "provenance", "ledger")
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ledger) for f in fs)
def ticks(path):  # thread id -> (name, clock ticks of CPU)
    out = {}
    for line in open(path):
        tid, name, t = line.rstrip("\n").split("\t")
        out[tid] = (name, int(t))
    return out
before, after = ticks(threads + ".before"), ticks(threads + ".after")
hz = os.sysconf("SC_CLK_TCK")
cpu = {}  # thread name -> CPU seconds during the measured run
for tid, (name, t) in after.items():
    if tid != "process":
        cpu[name] = round(cpu.get(name, 0) + (t - before.get(tid, (name, 0))[1]) / hz, 2)
# The process's time counts its threads that ended too (a thread started and done within the run).
process = (after.get("process", ("", 0))[1] - before.get("process", ("", 0))[1]) / hz
cpu["(threads that ended)"] = round(max(0.0, process - sum(cpu.values())), 2)
print(json.dumps(dict(mode=mode, rep=int(rep), ok_rps=round(rps, 1), ok=ok, errors=total - ok,
                      p50_ms=round((o.get("latencyPercentiles") or {}).get("p50", 0) * 1000, 2),
                      outcomes=outcomes, provenance=kinds, captured=captured,
                      captured_chars=chars, ledger_bytes=size, cpu=cpu)))
PY
  tail -1 "$OUT/results.jsonl" >&2
}

echo "capture.sh: $BIN ($("$BIN" --version 2>&1)), ${REPS} reps x ${DURATION}s, c=$CONC, $EVENTS events per response${VARY:+, every answer new text}; results in $OUT" >&2
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then run_mode on "$rep"; run_mode off "$rep"; else run_mode off "$rep"; run_mode on "$rep"; fi
done

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
on = [r for r in rows if r["mode"] == "on"]
off = [r for r in rows if r["mode"] == "off"]
print("| rep | capture on req/s | capture off req/s | on/off |")
print("|---|---|---|---|")
for a in on:
    b = next(r for r in off if r["rep"] == a["rep"])
    print(f"| {a['rep']} | {a['ok_rps']:.0f} | {b['ok_rps']:.0f} | {a['ok_rps'] / b['ok_rps']:.3f} |")
mon, moff = statistics.median(r["ok_rps"] for r in on), statistics.median(r["ok_rps"] for r in off)
print(f"| median | {mon:.0f} | {moff:.0f} | {mon / moff:.3f} |")
chars = sum(r["captured_chars"] for r in on)
ledger = sum(r["ledger_bytes"] for r in on)
cap = sum(r["captured"] for r in on)
print()
print(f"capture on: {cap} responses captured, {chars / 1e6:.2f} MB of output, ledger files {ledger / 1e6:.2f} MB "
      f"= {ledger / (chars / 1e6) / 1e6 if chars else 0:.2f} MB of ledger per MB of output "
      f"(provenance marks: {[r['provenance'] for r in on]}; errors on/off: {sum(r['errors'] for r in on)}/{sum(r['errors'] for r in off)})")
print()
print("CPU time of aigate's threads per answer answered, µs (median of the reps; by thread name):")
for name, rs in (("capture on", on), ("capture off", off)):
    names = sorted({n for r in rs for n in r.get("cpu", {})})
    per = {n: statistics.median(r.get("cpu", {}).get(n, 0) / r["ok"] * 1e6 for r in rs) for n in names}
    total = statistics.median(sum(r.get("cpu", {}).values()) / r["ok"] * 1e6 for r in rs)
    print(f"- {name}: {total:.0f} in all; " + ", ".join(f"{n} {v:.0f}" for n, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.5))
PY
