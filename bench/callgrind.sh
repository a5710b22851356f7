#!/usr/bin/env bash
# bench/callgrind.sh - instructions per keep-alive request of one aigate binary, under callgrind:
# deterministic, so it can be measured on a busy machine where req/s cannot (docs/performance.md,
# "callgrind of the two-record audit path").
#
#   bench/callgrind.sh --tree DIR --bin PATH [--warm 3000] [--measure 3000] [--out DIR]
#                      [--sse EVENTS] [--provenance on|off] [--conc N]
#
# DIR is a checkout of aigate (its config/aigate.toml is the policy, its bench/aigate/render-config.py
# renders it, as bench/run.sh does); PATH its release binary. A Python TLS upstream on loopback answers
# POST /v1/messages with the 1 KiB bench/conf/message.json; one Python client sends the harness's
# request (bench/conf/request.json, the same headers as oha) through CONNECT on one keep-alive
# connection: --warm requests with instrumentation off, then --measure with it on
# (`valgrind --tool=callgrind --instr-atstart=no`, `callgrind_control -i on|off`). Prints the
# instructions per request over all threads. Needs valgrind, python3, openssl.
# --sse EVENTS: the upstream answers with an Anthropic Messages SSE stream instead (message_start,
# EVENTS-2 text_delta events of sse-upstream's " tokenNNNNN", message_stop; chunked, one chunk per
# event), the shape provenance capture reads. --provenance on|off sets provenance.enabled (shipped:
# on): run both to see what capture costs per request (bench/capture.sh measures it in req/s).
# --conc N: N keep-alive connections, each on its own client thread, share the --warm and --measure
# requests (default 1). With more than one connection open, a decision waits one turn of the
# runtime to share its write(2) (proxy/audited.rs, `decide`): the path the keep-alive c=16 harness
# takes, which one connection never does.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TREE=""; BIN=""; WARM=3000; MEASURE=3000; OUT=""; SSE=0; PROV=""; CONC=1
while [ $# -gt 0 ]; do
  case $1 in
    --tree) TREE=$2; shift 2;;
    --bin) BIN=$2; shift 2;;
    --warm) WARM=$2; shift 2;;
    --measure) MEASURE=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --sse) SSE=$2; shift 2;;
    --provenance) PROV=$2; shift 2;;
    --conc) CONC=$2; shift 2;;
    -h|--help) sed -n '2,24p' "$0"; exit 0;;
    *) echo "callgrind.sh: unknown option $1 (see --help)" >&2; exit 64;;
  esac
done
[ -n "$TREE" ] && [ -n "$BIN" ] || { echo "callgrind.sh: --tree and --bin are required" >&2; exit 64; }
[ -x "$BIN" ] || { echo "callgrind.sh: $BIN is not executable" >&2; exit 1; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/aigate-callgrind.XXXXXX)}
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# certificates: the harness's generator, in the output directory
[ -f "$OUT/ca/mitm-ca.pem" ] || "$HERE/scripts/gen_certs.sh" "$OUT/ca" > "$OUT/certs.log" 2>&1
UP_PORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)

# the upstream: keep-alive HTTP/1.1 over TLS, the bench answer to every POST
python3 - "$OUT/ca/upstream.pem" "$OUT/ca/upstream.key" "$UP_PORT" "$HERE/conf/message.json" "$SSE" > "$OUT/upstream.log" 2>&1 <<'PY' &
import http.server, json, ssl, sys
cert, key, port, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), open(sys.argv[4], "rb").read()
n = int(sys.argv[5])
def event(e):
    return f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
events = []
if n:
    events.append(event({"type": "message_start", "message": {"id": "msg_bench", "type": "message", "role": "assistant", "model": "bench-model"}}))
    events += [event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" token{i:05}"}}) for i in range(1, n - 1)]
    events.append(event({"type": "message_stop"}))
chunked = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if n:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(chunked)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PY
PIDS+=($!)

# aigate's config: the tree's shipped policy, rendered as bench/run.sh renders it
mkdir -p "$OUT/state"
python3 "$TREE/bench/aigate/render-config.py" --base "$TREE/config/aigate.toml" --out "$OUT/aigate.toml" \
  --listen "127.0.0.1:$PROXY_PORT" --state-dir "$OUT/state" \
  --ca-cert "$OUT/ca/mitm-ca.pem" --ca-key "$OUT/ca/mitm-ca.key" --upstream-ca "$OUT/ca/upstream-ca.pem" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --resolve "api.vendor.test=127.0.0.1:$UP_PORT" \
  ${PROV:+--provenance "$PROV"}
"$BIN" check --config "$OUT/aigate.toml" > "$OUT/check.log" 2>&1 || { cat "$OUT/check.log" >&2; exit 1; }

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" run --config "$OUT/aigate.toml" > "$OUT/aigate.log" 2>&1 &
VG=$!; PIDS+=($VG)

python3 - "$PROXY_PORT" "$OUT/ca/mitm-ca.pem" "$HERE/conf/request.json" "$WARM" "$MEASURE" "$VG" "$CONC" <<'PY'
import http.client, socket, ssl, subprocess, sys, threading, time
port, ca, body = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read()
warm, measure, vg, conc = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
deadline = time.time() + 600
while True:  # valgrind starts slowly
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("callgrind.sh: aigate did not listen within 10 minutes")
        time.sleep(0.5)
ctx = ssl.create_default_context(cafile=ca)
conns = []
for _ in range(conc):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=300)
    c.set_tunnel("api.vendor.test", 443)
    conns.append(c)
headers = {"content-type": "application/json", "x-api-key": "sk-bench-0000000000000000",
           "anthropic-version": "2023-06-01"}
failed = []
def one(conn, n):
    try:
        for _ in range(n):
            conn.request("POST", "/v1/messages", body, headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failed.append(f"status {r.status}")
                return
    except Exception as e:
        failed.append(repr(e))
def run(n):
    # n requests in all, shared by the connections (the first ones take the remainder)
    ts = [threading.Thread(target=one, args=(c, n // conc + (i < n % conc))) for i, c in enumerate(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if failed:
        sys.exit(f"callgrind.sh: {failed[0]}")
run(warm)
subprocess.run(["callgrind_control", "-i", "on", vg], check=True, capture_output=True)
t = time.time()
run(measure)
subprocess.run(["callgrind_control", "-i", "off", vg], check=True, capture_output=True)
print(f"{measure} requests over {conc} connection(s) measured in {time.time() - t:.1f} s", file=sys.stderr)
for c in conns:
    c.close()
PY
kill -TERM "$VG"; wait "$VG" || true
total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$OUT/callgrind.out" | head -1)
[ -n "$total" ] || { echo "callgrind.sh: no totals in $OUT/callgrind.out" >&2; exit 1; }
python3 -c 'import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(f"{t} instructions over {n} requests: {t / n / 1000:.1f}k per request")' "$total" "$MEASURE" | tee "$OUT/result.txt"
echo "callgrind output: $OUT/callgrind.out" >&2
