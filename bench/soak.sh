#!/usr/bin/env bash
# bench/soak.sh - soak test of aigate (issue #5; see README.md, "Soak").
#   bench/soak.sh [--minutes 30] [--conns 10000] [options]
# Starts the bench upstream (nginx + sse-upstream, as run_all.sh does) and aigate with the shipped
# config/aigate.toml, rendered by aigate/render-config.py with the bench host api.vendor.test added
# to the Anthropic vendor (so the shipped policy blocks Claude Code on it) and tunnel.vendor.test
# (not a vendor: tunnelled) resolved to the upstream. Then the `soak` client holds --conns client
# connections for --minutes with mixed traffic (allowed JSON, blocked Claude Code, SSE, tunnels),
# while aigate's RSS, fds and CPU are sampled. At the end aigate is stopped with SIGTERM, its audit
# log is verified and its records are counted against the answers the client received.
# Results: $BENCH_WORK/soak/<timestamp>/ (summary.md, summary.json, client.json, client.log,
# rss.csv, aigate.log, aigate.toml, state/audit.jsonl, ids.tsv, ...).
# Environment: BENCH_WORK (default ~/.cache/aigate-bench), AIGATE_BIN (default: cargo build --release
# at the repository root), AIGATE_BASE_CONFIG (default config/aigate.toml).
set -uo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SRC/.." && pwd)
B=${BENCH_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/aigate-bench}
CA=$B/ca
CONF=$SRC/conf
SSEUP=$B/target/benchtools/release/sse-upstream
SOAK=$B/target/benchtools/release/soak
HOST=api.vendor.test
TUNNEL_HOST=tunnel.vendor.test

MINUTES=30; CONNS=10000; RAMP=500; RPS=2000; MIX="json=60,blocked=20,sse=10,tunnel=10"
SSE_N=20; SSE_MS=100; PORT=8110; ADMIN=127.0.0.1:9182; SAMPLE_S=10
PROXY_CPU=0; LOAD_CPU=1; OUT=""

usage() {
  cat <<'EOF'
bench/soak.sh [options]
  --minutes M (30)       duration of the traffic, counted from the start of the ramp
  --conns N (10000)      client connections held open for the whole run
  --ramp R (500)         new connections per second while ramping up
  --rps R (2000)         total operations per second once ramped (each connection: one every N/R s)
  --mix LIST             json=60,blocked=20,sse=10,tunnel=10 (weights)
  --sse-events N (20)  --sse-interval-ms M (100)
  --port P (8110)        aigate's listen port (127.0.0.1); admin API on 127.0.0.1:9182
  --sample-s S (10)      RSS sampling interval
  --proxy-cpu N (0)  --load-cpu N (1)
  --out DIR              default $BENCH_WORK/soak/<timestamp>
EOF
  exit "${1:-0}"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2;;
    --conns) CONNS=$2; shift 2;;
    --ramp) RAMP=$2; shift 2;;
    --rps) RPS=$2; shift 2;;
    --mix) MIX=$2; shift 2;;
    --sse-events) SSE_N=$2; shift 2;;
    --sse-interval-ms) SSE_MS=$2; shift 2;;
    --port) PORT=$2; shift 2;;
    --sample-s) SAMPLE_S=$2; shift 2;;
    --proxy-cpu) PROXY_CPU=$2; shift 2;;
    --load-cpu) LOAD_CPU=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    -h|--help) usage 0;;
    *) echo "unknown option $1" >&2; usage 2;;
  esac
done
[ -z "$OUT" ] && OUT=$B/soak/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/nginx" "$OUT/state"
OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/soak.log" >&2; }

# ---------- preflight (as run_all.sh) ----------
ulimit -n "$(ulimit -Hn)" 2>/dev/null
sysctl -qw net.ipv4.ip_local_port_range="10240 65000" 2>/dev/null || true
[ -f "$CA/mitm-ca.pem" ] || "$SRC/scripts/gen_certs.sh" "$CA"
grep -qE "^127\.0\.0\.1[[:space:]].*\b$HOST\b" /etc/hosts || echo "127.0.0.1 $HOST" >> /etc/hosts
[ -x "$SSEUP" ] || { echo "missing $SSEUP - run scripts/setup.sh" >&2; exit 1; }
# the soak client: built into the harness's tool target dir (only the `soak` binary)
if [ ! -x "$SOAK" ] || [ "$SRC/tools/benchtools/src/bin/soak.rs" -nt "$SOAK" ]; then
  log "building $SOAK"
  (cd "$SRC/tools/benchtools" && CARGO_TARGET_DIR="$B/target/benchtools" cargo build --release --bin soak) || exit 1
fi
if [ -z "${AIGATE_BIN:-}" ]; then
  log "cargo build --release in $REPO"
  (cd "$REPO" && cargo build --release) || exit 1
  AIGATE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/aigate
fi
[ -x "$AIGATE_BIN" ] || { echo "$AIGATE_BIN is not executable" >&2; exit 1; }
: "${AIGATE_BASE_CONFIG:=$REPO/config/aigate.toml}"

wait_port() { local i; for i in $(seq 1 $(( $2 * 10 ))); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }
# Each process is started with `setsid`, so it leads its own process group; we stop exactly that
# group by PID (never by name).
STARTED_PGIDS=()
stop_group() {  # pgid [seconds before SIGKILL]
  local g=$1 t=${2:-10} i; [ -z "$g" ] && return 0
  kill -TERM -- "-$g" 2>/dev/null
  for i in $(seq 1 $(( t * 10 ))); do kill -0 "$g" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$g" 2>/dev/null; wait "$g" 2>/dev/null; return 0
}
cleanup() { local g; for g in "${STARTED_PGIDS[@]}"; do stop_group "$g"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in 443 8081 "$PORT" "${ADMIN##*:}"; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p busy (stale upstream or another bench?)" >&2; exit 1; }
done
{
  echo "date: $(date -Is)"; echo "kernel: $(uname -r)"; echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc)"
  echo "aigate: $AIGATE_BIN ($("$AIGATE_BIN" --version 2>&1)); tree $(git -C "$(dirname "$AIGATE_BIN")" describe --always --dirty 2>/dev/null || echo '?')"
  echo "repository: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
  echo "nginx: $(nginx -v 2>&1)"
  echo "params: minutes=$MINUTES conns=$CONNS ramp=$RAMP/s rps=$RPS mix=$MIX sse=${SSE_N}ev@${SSE_MS}ms port=$PORT"
  echo "pinning: aigate on CPU $PROXY_CPU; soak client + nginx + sse-upstream + sampler on CPU $LOAD_CPU; ulimit -n $(ulimit -n)"
} > "$OUT/versions.txt"
cat "$OUT/versions.txt" >&2

# ---------- upstream, as run_all.sh start_upstream ----------
setsid taskset -c "$LOAD_CPU" "$SSEUP" 127.0.0.1:8081 > "$OUT/sse-upstream.log" 2>&1 & STARTED_PGIDS+=($!)
sed -e "s#@RUN@#$OUT/nginx#g" -e "s#@CA@#$CA#g" -e "/worker_cpu_affinity/d" "$CONF/nginx.conf" > "$OUT/nginx.conf"
setsid taskset -c "$LOAD_CPU" nginx -c "$OUT/nginx.conf" > "$OUT/nginx.log" 2>&1 & STARTED_PGIDS+=($!)
wait_port 443 20 && wait_port 8081 20 || { echo "upstream failed to start" >&2; exit 1; }
r=$(curl -sS --cacert "$CA/client-bundle.pem" -X POST -d @"$CONF/request.json" "https://$HOST/v1/messages" -o /dev/null -w '%{http_code} %{size_download}')
log "upstream up: JSON check -> $r"

# ---------- aigate ----------
CFG=$OUT/aigate.toml
python3 "$SRC/aigate/render-config.py" --base "$AIGATE_BASE_CONFIG" --out "$CFG" \
  --listen "127.0.0.1:$PORT" --state-dir "$OUT/state" \
  --ca-cert "$CA/mitm-ca.pem" --ca-key "$CA/mitm-ca.key" --upstream-ca "$CA/upstream-ca.pem" \
  --admin-listen "$ADMIN" --per-client max \
  --vendor-host "$HOST" --vendor-host-in anthropic --resolve "$TUNNEL_HOST=127.0.0.1:443" || exit 1
"$AIGATE_BIN" check --config "$CFG" > "$OUT/aigate-check.txt" 2>&1 || { cat "$OUT/aigate-check.txt" >&2; exit 1; }
setsid taskset -c "$PROXY_CPU" "$AIGATE_BIN" run --config "$CFG" > "$OUT/aigate.log" 2>&1 & AIGATE_PGID=$!; STARTED_PGIDS+=("$AIGATE_PGID")
wait_port "$PORT" 30 || { log "aigate did not listen on $PORT; see $OUT/aigate.log"; exit 1; }
AIGATE_PID=$AIGATE_PGID
[ "$(cat /proc/$AIGATE_PID/comm 2>/dev/null)" = aigate ] || AIGATE_PID=$(ps -o pid=,comm= -g "$AIGATE_PGID" | awk '$2 == "aigate" {print $1; exit}')
log "aigate pid $AIGATE_PID: $(grep 'Max open files' /proc/$AIGATE_PID/limits | tr -s ' ')"
grep 'Max open files' /proc/$AIGATE_PID/limits | tr -s ' ' >> "$OUT/versions.txt"
sleep 2

# ---------- RSS / fd / CPU sampler (aigate's process) ----------
setsid taskset -c "$LOAD_CPU" python3 - "$AIGATE_PID" "$OUT/rss.csv" "$SAMPLE_S" <<'PY' > "$OUT/sampler.log" 2>&1 & SAMPLER=$!; STARTED_PGIDS+=("$SAMPLER")
import os, signal, sys, time
pid, out, iv = sys.argv[1], sys.argv[2], float(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
def cpus():
    r = []
    for line in open("/proc/stat"):
        if line.startswith("cpu") and line[3].isdigit():
            v = [int(x) for x in line.split()[1:]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            r.append((busy, busy + v[3] + v[4]))
    return r
with open(out, "w", buffering=1) as f:
    f.write("unix,rss_kib,fds,threads,cpu_s,cpu0_busy_pct,cpu1_busy_pct,load1\n")
    prev = cpus()
    while not stop:
        try:
            st = {l.split(":")[0]: l.split(":")[1].strip() for l in open(f"/proc/{pid}/status")}
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            break
        now = cpus()
        busy = [round(100.0 * (b1 - b0) / max(1, t1 - t0), 1) for (b0, t0), (b1, t1) in zip(prev, now)]
        prev = now
        cpu_s = (int(stat[11]) + int(stat[12])) / hz
        f.write(f"{time.time():.1f},{st['VmRSS'].split()[0]},{fds},{st['Threads']},{cpu_s:.2f},{busy[0] if busy else ''},{busy[1] if len(busy) > 1 else ''},{open('/proc/loadavg').read().split()[0]}\n")
        t_end = time.time() + iv
        while not stop and time.time() < t_end:
            time.sleep(0.2)
PY
sleep "$SAMPLE_S"

# ---------- the soak client ----------
log "soak: $CONNS connections, $MINUTES min, ramp $RAMP/s, $RPS ops/s, mix $MIX"
taskset -c "$LOAD_CPU" "$SOAK" --proxy "127.0.0.1:$PORT" --conns "$CONNS" --ramp "$RAMP" --rps "$RPS" \
  --duration "$(( MINUTES * 60 ))" --mix "$MIX" --sse-n "$SSE_N" --sse-ms "$SSE_MS" \
  --host "$HOST" --tunnel-host "$TUNNEL_HOST" --mitm-ca "$CA/mitm-ca.pem" --upstream-ca "$CA/upstream-ca.pem" \
  --body-file "$CONF/request.json" --ids "$OUT/ids.tsv" --progress 10 > "$OUT/client.json" 2> "$OUT/client.log"
CLIENT_RC=$?
log "soak client exited $CLIENT_RC: $(tail -c 600 "$OUT/client.json")"
# a few more samples with every client connection closed
sleep $(( SAMPLE_S * 3 ))
stop_group "$SAMPLER" 5

# ---------- stop aigate (SIGTERM: drains, flushes the audit log, exits 0) ----------
T0=$(date +%s.%N)
kill -TERM "$AIGATE_PID"
for i in $(seq 1 600); do kill -0 "$AIGATE_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$AIGATE_PID" 2>/dev/null; then log "aigate still running 60 s after SIGTERM: SIGKILL"; AIGATE_RC=killed; stop_group "$AIGATE_PGID" 1
else wait "$AIGATE_PGID" 2>/dev/null; AIGATE_RC=$?; fi
log "aigate exited: $AIGATE_RC after $(python3 -c "import sys; print(round($(date +%s.%N) - $T0, 1))") s"
echo "$AIGATE_RC" > "$OUT/aigate-exit.txt"
stop_group "$AIGATE_PGID" 1

AUDIT=$OUT/state/audit.jsonl
"$AIGATE_BIN" audit verify "$AUDIT" > "$OUT/audit-verify.txt" 2>&1; echo "exit $?" >> "$OUT/audit-verify.txt"
log "audit verify: $(tr '\n' ' ' < "$OUT/audit-verify.txt")"

# ---------- counts and summary ----------
python3 - "$OUT" <<'PY'
import collections, csv, json, re, sys
out = sys.argv[1]
cl = json.load(open(f"{out}/client.json"))
MiB = lambda k: round(int(k) / 1024, 1)

# audit records
by = collections.Counter()
cat = collections.Counter()
errs = collections.Counter()
ids = {}
def category(r):
    stream = "stream=1" in (r.get("path") or "")
    if r["kind"] == "request" and r.get("status") == 200 and r.get("action") == "monitor":
        return "sse" if stream else "json"
    if r["kind"] == "request" and r.get("status") == 403 and r.get("action") == "block" and r.get("reason") == "rule_matched":
        return "blocked"
    if r["kind"] == "tunnel" and r.get("status") == 200 and r.get("reason") == "not_vendor":
        return "tunnel"
    return "other"
n = 0
for line in open(f"{out}/state/audit.jsonl"):
    r = json.loads(line)
    n += 1
    c = category(r)
    cat[c] += 1
    ids[r["id"]] = c
    by[(r["kind"], r.get("vendor"), r.get("tool"), r.get("action"), r.get("reason"), r.get("status"),
        "stream" if "stream=1" in (r.get("path") or "") else "", r.get("error"))] += 1
    if r.get("error"):
        errs[(r["kind"], c, r["error"])] += 1

# client ids: answered responses per kind, to match by request id
client_ids = collections.defaultdict(set)
unanswered_ids = collections.Counter()
try:
    for line in open(f"{out}/ids.tsv"):
        k, i, status, done = line.rstrip("\n").split("\t")
        if done == "1":
            client_ids[k].add(i)
        else:
            unanswered_ids[k] += 1
except FileNotFoundError:
    pass

kinds = ["json", "blocked", "sse", "tunnel"]
rows, equal = [], True
for k in kinds:
    a = cl["kinds"][k]["answered"]
    rec = cat[k]
    audit_ids = {i for i, c in ids.items() if c == k}
    missing = len(client_ids[k] - audit_ids)      # answered, no record of that id in this category
    extra = len(audit_ids - client_ids[k])         # a record, no answered response with that id
    equal &= (a == rec)
    rows.append((k, cl["kinds"][k]["sent"], a, cl["kinds"][k]["ok"], rec, a - rec, missing, extra))

rss = list(csv.DictReader(open(f"{out}/rss.csv")))
def at(t, after=True):
    c = [s for s in rss if (float(s["unix"]) >= t if after else float(s["unix"]) <= t)]
    return (c[0] if after else c[-1]) if c else None
start = at(cl["start_unix"], after=False) or rss[0]
ramp = at(cl["ramp_done_unix"] + 10) if cl.get("ramp_done_unix") else None
load = [s for s in rss if cl["start_unix"] <= float(s["unix"]) <= cl["stop_unix"]]
peak = max(load or rss, key=lambda s: int(s["rss_kib"]))
end_load = at(cl["stop_unix"], after=False)
closed = rss[-1]
# growth over the steady state: least-squares slope of RSS from 60 s after the ramp to the stop
steady = [s for s in load if cl.get("ramp_done_unix") and float(s["unix"]) >= cl["ramp_done_unix"] + 60]
slope = None
if len(steady) >= 3:
    xs = [float(s["unix"]) for s in steady]; ys = [int(s["rss_kib"]) / 1024 for s in steady]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs) * 3600
fds_peak = max(int(s["fds"]) for s in rss)
busy = [s for s in load if s["cpu0_busy_pct"]]
avg = lambda col: round(sum(float(s.get(col) or 0) for s in busy) / len(busy), 1) if busy else None
cpu_s = float(end_load["cpu_s"]) - float(start["cpu_s"]) if end_load else None

# aigate's own log: warnings and errors, grouped
ansi = re.compile(r"\x1b\[[0-9;]*m")
levels, msgs = collections.Counter(), collections.Counter()
for line in open(f"{out}/aigate.log", errors="replace"):
    line = ansi.sub("", line).strip()
    m = re.search(r"\b(WARN|ERROR)\b\s+(.*)", line)
    if m:
        levels[m.group(1)] += 1
        msgs[re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b|127\.0\.0\.1:\d+|\d+(\.\d+)?", "#", m.group(2))[:200]] += 1

verify = open(f"{out}/audit-verify.txt").read().strip().splitlines()
aigate_rc = open(f"{out}/aigate-exit.txt").read().strip()
L = []
L += [f"# aigate soak test, {out.rsplit('/', 1)[-1]}", ""]
L += ["```"] + open(f"{out}/versions.txt").read().strip().splitlines() + ["```", ""]
dur = cl["stop_unix"] - cl["start_unix"]
L += ["## Connections", "",
      f"- target {cl['conns']}, ramp {cl['ramp_per_s']}/s done after {cl['ramp_s']:.1f} s; traffic {dur/60:.1f} min",
      f"- held: peak {cl['live_peak']}, minimum after the ramp {cl['live_min_after_ramp']}, at stop {cl['live_at_stop']}, "
      f"before close {cl['live_before_close']}, after close {cl['live_after_close']}",
      f"- kept connections opened {cl['connections_opened']} (re-opened {cl['connections_opened'] - cl['live_peak'] if cl['connections_opened'] > cl['live_peak'] else 0}), "
      f"lost {cl['connections_lost']}; slots unfinished at close {cl['unfinished_at_close']}",
      f"- aigate fds: peak {fds_peak}", ""]
L += ["## Requests: client vs audit log", "",
      f"answered = the whole response arrived; ok = as expected (status, decision, body). "
      f"{cl['answered']} answered, {cl['answered_per_s']:.0f}/s over the traffic period.", "",
      "| type | sent | answered | ok | audit records | answered − records | answered ids without record | record ids not answered |",
      "|---|---|---|---|---|---|---|---|"]
for r in rows:
    L.append("| " + " | ".join(str(x) for x in r) + " |")
L.append(f"| other records | | | | {cat['other']} | | | |")
L += ["", f"**Audit records vs answered: {'EQUAL' if equal else 'NOT EQUAL'}** "
      f"(kind=request: {cat['json'] + cat['blocked'] + cat['sse']} vs {sum(cl['kinds'][k]['answered'] for k in ['json','blocked','sse'])}; "
      f"kind=tunnel: {cat['tunnel']} vs {cl['kinds']['tunnel']['answered']}); {n} records in all.",
      f"Responses whose head arrived but not the whole body (ids.tsv): {dict(unanswered_ids) or 'none'}", ""]
L += ["## Errors", "", f"client operation errors: {cl['errors_total']}", ""]
L += [f"- {k}: {v}" for k, v in cl["errors"].items()] or ["- none"]
L += ["", "client connection errors (kept connections):", ""]
L += [f"- {k}: {v}" for k, v in cl["conn_errors"].items()] or ["- none"]
L += ["", "audit records with an error (kind, category, error):", ""]
L += [f"- {k}: {v}" for k, v in errs.most_common(20)] or ["- none"]
L += ["", f"aigate log: {dict(levels) or 'no WARN/ERROR lines'}"]
L += [f"- {v} x {k}" for k, v in msgs.most_common(10)]
L += ["", f"aigate exit status after SIGTERM: {aigate_rc}", f"audit verify: {' / '.join(verify)}", ""]
L += ["## aigate RSS (VmRSS, sampled every few seconds; rss.csv)", "",
      "| point | time (from client start) | RSS MiB | fds | threads |", "|---|---|---|---|---|"]
for name, s in [("start (before the client)", start), ("after the ramp (+10 s)", ramp), ("peak during traffic", peak),
                ("end of traffic", end_load), ("all connections closed", closed)]:
    if s:
        L.append(f"| {name} | {float(s['unix']) - cl['start_unix']:+.0f} s | {MiB(s['rss_kib'])} | {s['fds']} | {s['threads']} |")
if steady:
    L += ["", f"steady state (ramp + 60 s .. stop, {len(steady)} samples): min {min(MiB(s['rss_kib']) for s in steady)} MiB, "
          f"max {max(MiB(s['rss_kib']) for s in steady)} MiB, least-squares slope {slope:+.2f} MiB/h"]
L += ["", f"CPU during traffic: aigate {cpu_s:.0f} CPU-s ({100 * cpu_s / dur:.1f} % of one core); "
      f"CPU0 busy {avg('cpu0_busy_pct')} %, CPU1 busy {avg('cpu1_busy_pct')} %, load average {avg('load1')} "
      f"(means of the samples; CPU0 busy well above aigate's share means something else ran there)" if cpu_s is not None else "", ""]
L += ["## Audit records by kind, vendor, tool, action, reason, status, stream, error", "",
      "| kind | vendor | tool | action | reason | status | stream | error | records |", "|---|---|---|---|---|---|---|---|---|"]
for k, v in by.most_common():
    L.append("| " + " | ".join("" if x is None else str(x) for x in k) + f" | {v} |")
open(f"{out}/summary.md", "w").write("\n".join(L) + "\n")
json.dump({"client": cl, "audit_categories": cat, "equal": equal, "rows": rows, "records": n,
           "rss_mib": {"start": MiB(start["rss_kib"]), "after_ramp": MiB(ramp["rss_kib"]) if ramp else None,
                       "peak": MiB(peak["rss_kib"]), "end": MiB(end_load["rss_kib"]) if end_load else None,
                       "closed": MiB(closed["rss_kib"]), "slope_mib_per_h": slope},
           "fds_peak": fds_peak, "audit_verify": verify, "aigate_exit": aigate_rc},
          open(f"{out}/summary.json", "w"), indent=1, default=str)
print("\n".join(L))
PY
log "results: $OUT"
