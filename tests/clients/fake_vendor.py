#!/usr/bin/env python3
"""Fake AI vendor for tests/clients/run.sh: one HTTPS server that plays every vendor host.

    fake_vendor.py --cert vendor.pem --key vendor.key --log vendor.log [--port 8443]

Serves api.anthropic.com, api.openai.com, chatgpt.com, generativelanguage.googleapis.com,
api.githubcopilot.com, api.github.com, Amazon Bedrock (runtime and control plane), Vertex AI and
OpenRouter (aigate's [upstream.resolve] points them all here; the certificate names them all).
Logs every request as one JSON line (method, host, path, headers, first 2 KB of the body) and
answers with the smallest response each client accepts: Anthropic messages (JSON or SSE), Bedrock
InvokeModel (JSON, or an AWS event stream of Anthropic events), Vertex rawPredict /
streamRawPredict, OpenAI responses / chat completions (JSON or SSE), Gemini generateContent /
streamGenerateContent, Copilot models and token endpoints. A WebSocket upgrade gets a 400, so
clients fall back to HTTPS. Lines {"marker": NAME} written by run.sh split the log per scenario.

A Messages request that offers the `Write` tool and whose user text says
`AIGATE_WRITE_FILE /absolute/path` (run.sh's provenance check) is answered with a tool use: Write
that path with PASSAGE, streamed as Claude Code receives it (input_json_delta fragments); the
request that carries its tool_result is answered with text, so the session ends.
"""
import argparse
import base64
import binascii
import json
import struct
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--port", type=int, default=8443)
args = ap.parse_args()

lock = threading.Lock()
TEXT = "hi from fake vendor"
WRITE_MARK = "AIGATE_WRITE_FILE "
# What the model "writes" in the provenance check: long enough for a strong finding (400+
# characters), so `aigate provenance scan` of the work folder must find it and name the record.
PASSAGE = '''"""Rate limiter for the egress gateway's admission queue."""
import time


class TokenBucket:
    """Refills `rate` tokens a second up to `burst`; take() says whether a call may go."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
'''


def log(rec):
    with lock, open(args.log, "a") as f:
        f.write(json.dumps(rec) + "\n")


def sse(events, named=True):
    out = []
    for e in events:
        if named:
            out.append(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n")
        else:
            out.append(f"data: {json.dumps(e)}\n\n")
    return "".join(out)


def anthropic_message(model):
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 4}}


def anthropic_stream(model):
    return sse(anthropic_events(model))


def anthropic_events(model):
    start = dict(anthropic_message(model), content=[], stop_reason=None)
    start["usage"] = {"input_tokens": 1, "output_tokens": 0}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]


def user_texts(req):
    """The text of the request's user turns (string content or text blocks)."""
    out = []
    for m in req.get("messages") or []:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out += [b.get("text", "") for b in c if isinstance(b, dict) and b.get("type") == "text"]
    return out


def has_tool_result(req):
    msgs = req.get("messages") or []
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    c = last.get("content")
    return isinstance(c, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in c)


def write_target(req):
    """The path to Write, when this request is the provenance check's first turn."""
    tools = [t.get("name") for t in req.get("tools") or [] if isinstance(t, dict)]
    if "Write" not in tools or has_tool_result(req):
        return None
    for t in user_texts(req):
        if WRITE_MARK in t:
            return t.split(WRITE_MARK, 1)[1].split()[0]
    return None


def anthropic_write_events(model, path):
    """A tool use of Claude Code's Write, its input streamed in fragments as the API does."""
    start = dict(anthropic_message(model), content=[], stop_reason=None)
    start["usage"] = {"input_tokens": 1, "output_tokens": 0}
    args = json.dumps({"file_path": path, "content": PASSAGE})
    step = max(1, len(args) // 5)
    ev = [{"type": "message_start", "message": start},
          {"type": "content_block_start", "index": 0,
           "content_block": {"type": "tool_use", "id": "toolu_fake_write", "name": "Write", "input": {}}}]
    ev += [{"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": args[i:i + step]}}
           for i in range(0, len(args), step)]
    ev += [{"type": "content_block_stop", "index": 0},
           {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 200}},
           {"type": "message_stop"}]
    return ev


def anthropic_write_message(model, path):
    return dict(anthropic_message(model), stop_reason="tool_use",
                content=[{"type": "tool_use", "id": "toolu_fake_write", "name": "Write",
                          "input": {"file_path": path, "content": PASSAGE}}])


def eventstream_message(headers, payload):
    """One frame of the AWS event stream encoding (application/vnd.amazon.eventstream): prelude
    (total length, headers length, CRC32 of those 8 bytes), string headers, payload, CRC32."""
    hb = b""
    for k, v in headers.items():
        kb, vb = k.encode(), v.encode()
        hb += struct.pack(">B", len(kb)) + kb + struct.pack(">BH", 7, len(vb)) + vb
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    msg = prelude + struct.pack(">I", binascii.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", binascii.crc32(msg))


def bedrock_stream(model):
    """InvokeModelWithResponseStream: each Anthropic event, base64 in a `chunk` event."""
    out = b""
    for e in anthropic_events(model):
        payload = json.dumps({"bytes": base64.b64encode(json.dumps(e).encode()).decode()}).encode()
        out += eventstream_message({":event-type": "chunk", ":content-type": "application/json",
                                    ":message-type": "event"}, payload)
    return out


def openai_response(model):
    return {"id": "resp_fake", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model,
            "output": [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}],
            "usage": {"input_tokens": 1, "output_tokens": 4, "total_tokens": 5,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def openai_response_stream(model):
    resp = openai_response(model)
    item = resp["output"][0]
    return sse([
        {"type": "response.created", "sequence_number": 0, "response": dict(resp, status="in_progress", output=[])},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
         "item": dict(item, content=[], status="in_progress")},
        {"type": "response.content_part.added", "sequence_number": 2, "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "delta": TEXT},
        {"type": "response.output_text.done", "sequence_number": 4, "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "text": TEXT},
        {"type": "response.content_part.done", "sequence_number": 5, "item_id": "msg_fake", "output_index": 0,
         "content_index": 0, "part": item["content"][0]},
        {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": item},
        {"type": "response.completed", "sequence_number": 7, "response": resp},
    ])


def chat_completion(model):
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}


def chat_completion_stream(model):
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    chunks = [
        dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        dict(base, choices=[{"index": 0, "delta": {"content": TEXT}, "finish_reason": None}]),
        dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
             usage={"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}),
    ]
    return sse(chunks, named=False) + "data: [DONE]\n\n"


def from_schema(schema):
    """The smallest value that fits a JSON schema (enums take their first value, so Gemini CLI's
    next-speaker check answers "user"), for clients that ask for JSON output."""
    if not isinstance(schema, dict):
        return TEXT
    if schema.get("enum"):
        return schema["enum"][0]
    t = str(schema.get("type", "object")).lower()
    if t == "object":
        props = schema.get("properties") or {}
        return {k: from_schema(v) for k, v in props.items()}
    if t == "array":
        return []
    if t in ("number", "integer"):
        lo, hi = schema.get("minimum", 1), schema.get("maximum", 100)
        return max(float(lo), min(10.0, float(hi))) if t == "number" else int(max(lo, min(10, hi)))
    if t == "boolean":
        return False
    return "fake"


def gemini_response(model, req=None):
    text = TEXT
    gc = (req or {}).get("generationConfig") or {}
    if gc.get("responseMimeType") == "application/json":
        text = json.dumps(from_schema(gc.get("responseJsonSchema") or gc.get("responseSchema") or {}))
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 4, "totalTokenCount": 5},
            "modelVersion": model, "responseId": "fake"}


def copilot_models():
    def model(mid, vendor, family, endpoints):
        return {"id": mid, "name": mid, "vendor": vendor, "version": mid, "object": "model",
                "model_picker_enabled": True, "preview": False, "is_chat_default": mid.startswith("claude-sonnet"),
                "policy": {"state": "enabled", "terms": ""},
                "supported_endpoints": endpoints,
                "billing": {"is_premium": False, "multiplier": 0},
                "capabilities": {"type": "chat", "family": family, "tokenizer": "o200k_base", "object": "model_capabilities",
                                 "limits": {"max_context_window_tokens": 200000, "max_output_tokens": 16000,
                                            "max_prompt_tokens": 128000},
                                 "supports": {"streaming": True, "tool_calls": True, "parallel_tool_calls": True,
                                              "vision": False, "structured_outputs": True}}}
    return {"object": "list", "data": [
        model("claude-sonnet-4.5", "Anthropic", "claude-sonnet-4.5", ["/chat/completions", "/v1/messages"]),
        model("gpt-5", "Azure OpenAI", "gpt-5", ["/chat/completions", "/responses"]),
        model("gpt-5-mini", "Azure OpenAI", "gpt-5-mini", ["/chat/completions", "/responses"]),
    ]}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _send(self, code, body, ctype="application/json"):
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", "req_fake_vendor")
        self.send_header("x-request-id", "req_fake_vendor")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self._body()
        host = (self.headers.get("Host") or "").split(":")[0]
        ws = self.headers.get("Upgrade", "").lower() == "websocket"
        log({"t": time.time(), "method": self.command, "path": self.path, "host": host, "websocket": ws,
             "headers": [[k, v] for k, v in self.headers.items()],
             "body": body[:2048].decode("utf-8", "replace")})
        if ws:
            return self._send(400, {"error": {"message": "fake vendor: no websocket"}})
        try:
            j = json.loads(body) if body else {}
        except ValueError:
            j = {}
        if not isinstance(j, dict):
            j = {}
        stream = j.get("stream") is True
        model = j.get("model") or "fake-model"
        p = self.path.split("?")[0]

        if host == "api.github.com":
            if p.startswith("/copilot_internal/v2/token"):
                return self._send(200, {"token": "tid=fake;exp=9999999999", "expires_at": 9999999999,
                                        "refresh_in": 1500, "endpoints": {"api": "https://api.githubcopilot.com"},
                                        "chat_enabled": True, "sku": "copilot_for_business_seat"})
            if p.startswith("/copilot_internal/user"):
                return self._send(200, {"login": "fake-user", "copilot_plan": "business", "chat_enabled": True,
                                        "access_type_sku": "copilot_for_business_seat",
                                        "endpoints": {"api": "https://api.githubcopilot.com"},
                                        "is_mcp_enabled": False})
            if p == "/user":
                return self._send(200, {"login": "fake-user", "id": 1, "name": "Fake User", "type": "User"})
            return self._send(200, {})
        if host == "chatgpt.com" and p == "/backend-api/wham/accounts/check":
            # Codex's workspace routing discovery (ChatGPT sign-in): the signed-in workspace,
            # with no backend constraint, as chatgpt.com answers a plain business workspace.
            acct = self.headers.get("chatgpt-account-id") or "acct-fake"
            return self._send(200, {"accounts": [{"id": acct, "workspace_backend_origin": "NO_CONSTRAINT",
                                                  "account_routing_override": "NO_CONSTRAINT"}]})
        if host.startswith("bedrock.") and p.startswith("/inference-profiles"):
            return self._send(200, {"inferenceProfileSummaries": []})
        if p.startswith("/model/") and p.endswith("/invoke-with-response-stream"):
            return self._send(200, bedrock_stream(p.split("/")[2]), "application/vnd.amazon.eventstream")
        if p.startswith("/model/") and p.endswith("/invoke"):
            return self._send(200, anthropic_message(p.split("/")[2]))
        if "/publishers/anthropic/models/" in p and p.endswith(":streamRawPredict"):
            return self._send(200, anthropic_stream(p.rsplit("/", 1)[-1].split(":")[0]), "text/event-stream")
        if "/publishers/anthropic/models/" in p and p.endswith(":rawPredict"):
            return self._send(200, anthropic_message(p.rsplit("/", 1)[-1].split(":")[0]))
        target = write_target(j)
        if target and p.endswith("/v1/messages") and host != "generativelanguage.googleapis.com":
            return self._send(200, sse(anthropic_write_events(model, target)), "text/event-stream") if stream \
                else self._send(200, anthropic_write_message(model, target))
        if p.endswith("/v1/messages") and host != "generativelanguage.googleapis.com":
            return self._send(200, anthropic_stream(model), "text/event-stream") if stream \
                else self._send(200, anthropic_message(model))
        if p.endswith("/responses"):
            return self._send(200, openai_response_stream(model), "text/event-stream") if stream \
                else self._send(200, openai_response(model))
        if p.endswith("/chat/completions"):
            return self._send(200, chat_completion_stream(model), "text/event-stream") if stream \
                else self._send(200, chat_completion(model))
        if ":streamGenerateContent" in p:
            m = p.rsplit("/", 1)[-1].split(":")[0]
            return self._send(200, "data: " + json.dumps(gemini_response(m, j)) + "\r\n\r\n", "text/event-stream")
        if ":generateContent" in p:
            return self._send(200, gemini_response(p.rsplit("/", 1)[-1].split(":")[0], j))
        if ":countTokens" in p:
            return self._send(200, {"totalTokens": 1})
        if ":embedContent" in p or ":batchEmbedContents" in p:
            return self._send(200, {"embedding": {"values": [0.0]}, "embeddings": [{"values": [0.0]}]})
        if p.endswith("/models") and "githubcopilot" in host:
            return self._send(200, copilot_models())
        if p.endswith("/models"):
            return self._send(200, {"object": "list", "data": [], "models": []})
        return self._send(200, {})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
srv = ThreadingHTTPServer(("127.0.0.1", args.port), H)
srv.daemon_threads = True
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"fake vendor on 127.0.0.1:{args.port}", flush=True)
sys.stdout.flush()
srv.serve_forever()
