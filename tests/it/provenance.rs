//! Provenance capture through the real gateway (issue 17): each vendor format, recorded shapes
//! played back by the loopback vendor, reaches the client byte for byte while the capture
//! workers reassemble it; a full capture queue drops the capture, never the client's pace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use crate::common::{Canned, TestEnv};
use aigate::provenance::fingerprint::{Fingerprinter, Key};
use aigate::provenance::ledger::Ledger;
use aigate::provenance::ledger::embedded::EmbeddedLedger;
use aigate::provenance::{ApiShape, Limits, Reassembler};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/provenance/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The characters of output in a recorded body, as the reassembler reads it on its own (its
/// exact parts are asserted in src/provenance/tests.rs): what the capture must arrive at after
/// the gateway has split, teed and queued the same bytes.
fn expected_chars(shape: ApiShape, ct: &str, enc: Option<&str>, body: &[u8]) -> u64 {
    let mut r = Reassembler::new(shape, Some(ct), enc, Limits::default()).unwrap();
    r.push(body);
    let c = r.finish();
    assert!(c.decode_error.is_none() && c.malformed == 0);
    c.parts.iter().map(|p| p.text.chars().count() as u64).sum()
}

fn encode(enc: &str, body: &[u8]) -> Vec<u8> {
    match enc {
        "gzip" => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(body).unwrap();
            z.finish().unwrap()
        }
        "deflate" => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(body).unwrap();
            z.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(body).unwrap();
            drop(w);
            out
        }
        "zstd" => zstd::encode_all(body, 3).unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

/// A body in `n` chunks of about equal size, cut anywhere (inside events, inside characters).
fn chunked(body: &[u8], n: usize) -> Vec<Bytes> {
    let size = body.len().div_ceil(n).max(1);
    body.chunks(size).map(Bytes::copy_from_slice).collect()
}

struct Case {
    host: &'static str,
    path: &'static str,
    shape: ApiShape,
    fixture: &'static str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
}

const ANTHROPIC_SDK: &[(&str, &str)] = &[
    ("user-agent", "Anthropic/Python 0.69.0"),
    ("x-stainless-lang", "python"),
];
const OPENAI_SDK: &[(&str, &str)] = &[
    ("user-agent", "OpenAI/Python 2.1.0"),
    ("x-stainless-lang", "python"),
];
const GENAI_SDK: &[(&str, &str)] = &[("x-goog-api-client", "genai-py/1.0")];
const ADMIN: &str = "root-admin-token-0017";
const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

fn cases() -> Vec<Case> {
    let c = |host, path, shape, fixture, content_type, encoding, headers| Case {
        host,
        path,
        shape,
        fixture,
        content_type,
        encoding,
        headers,
    };
    use ApiShape::*;
    vec![
        c(
            "api.anthropic.com",
            "/v1/messages",
            AnthropicMessages,
            "anthropic_stream.sse",
            SSE,
            None,
            ANTHROPIC_SDK,
        ),
        c(
            "api.anthropic.com",
            "/v1/messages",
            AnthropicMessages,
            "anthropic_message.json",
            JSON,
            None,
            ANTHROPIC_SDK,
        ),
        // Claude Code's managed-cloud routes: Bedrock streams AWS event stream frames of
        // Anthropic events and answers `invoke` with the Messages JSON; Vertex carries
        // Anthropic SSE and JSON as they are.
        c(
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-sonnet-4-5-v1:0/invoke-with-response-stream",
            AnthropicMessages,
            "bedrock_stream.eventstream",
            EVENT_STREAM,
            None,
            ANTHROPIC_SDK,
        ),
        c(
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-sonnet-4-5-v1:0/invoke",
            AnthropicMessages,
            "anthropic_message.json",
            JSON,
            None,
            ANTHROPIC_SDK,
        ),
        c(
            "us-east5-aiplatform.googleapis.com",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5:streamRawPredict",
            AnthropicMessages,
            "anthropic_stream.sse",
            SSE,
            None,
            ANTHROPIC_SDK,
        ),
        c(
            "us-east5-aiplatform.googleapis.com",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5:rawPredict",
            AnthropicMessages,
            "anthropic_message.json",
            JSON,
            None,
            ANTHROPIC_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/responses",
            OpenAiResponses,
            "openai_responses_stream.sse",
            SSE,
            None,
            OPENAI_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/responses",
            OpenAiResponses,
            "openai_responses.json",
            JSON,
            None,
            OPENAI_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/chat/completions",
            OpenAiChat,
            "openai_chat_stream.sse",
            SSE,
            None,
            OPENAI_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/chat/completions",
            OpenAiChat,
            "openai_chat.json",
            JSON,
            None,
            OPENAI_SDK,
        ),
        c(
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            Gemini,
            "gemini_stream.sse",
            SSE,
            None,
            GENAI_SDK,
        ),
        c(
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            Gemini,
            "gemini_stream_array.json",
            JSON,
            None,
            GENAI_SDK,
        ),
        c(
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            Gemini,
            "gemini_generate.json",
            JSON,
            None,
            GENAI_SDK,
        ),
        c(
            "api.anthropic.com",
            "/v1/messages",
            AnthropicMessages,
            "anthropic_stream.sse",
            SSE,
            Some("gzip"),
            ANTHROPIC_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/responses",
            OpenAiResponses,
            "openai_responses_stream.sse",
            SSE,
            Some("br"),
            OPENAI_SDK,
        ),
        c(
            "api.openai.com",
            "/v1/chat/completions",
            OpenAiChat,
            "openai_chat_stream.sse",
            SSE,
            Some("zstd"),
            OPENAI_SDK,
        ),
        c(
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            Gemini,
            "gemini_stream.sse",
            SSE,
            Some("deflate"),
            GENAI_SDK,
        ),
    ]
}

/// The outcome of the call `id`, once the capture worker has written it.
pub(crate) async fn outcome(env: &TestEnv, id: &str) -> serde_json::Value {
    for _ in 0..400 {
        let records = crate::common::raw_records_of(&env.gateway).await;
        if let Some(r) = records
            .iter()
            .find(|r| r["id"] == id && r["kind"] == "outcome")
        {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no outcome record for {id}");
}

#[tokio::test]
async fn every_format_reaches_the_client_byte_for_byte_and_is_captured() {
    let env = TestEnv::builder().start().await;
    for (i, case) in cases().into_iter().enumerate() {
        let plain = fixture(case.fixture);
        let body = match case.encoding {
            Some(enc) => encode(enc, &plain),
            None => plain.clone(),
        };
        // A path of its own per case, so the vendor plays back the right body.
        let mut headers = vec![("content-type".to_string(), case.content_type.to_string())];
        if let Some(enc) = case.encoding {
            headers.push(("content-encoding".into(), enc.into()));
        }
        let path = if case.path.contains(':') {
            case.path
                .replace("gemini-2.5-pro", &format!("gemini-{i}"))
                .replace("claude-sonnet-4-5", &format!("claude-{i}"))
        } else {
            format!("/case{i}{}", case.path)
        };
        env.vendor.serve(
            &path,
            Canned {
                headers,
                chunks: chunked(&body, 7),
                gap: Duration::from_millis(2),
            },
        );
        let mut req = env
            .client(i % 2 == 0)
            .post(format!("https://{}{path}", case.host))
            .body(r#"{"model":"m","stream":true}"#);
        for (name, value) in case.headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", case.fixture);
        let id = crate::common::request_id(resp.headers());
        let got = resp.bytes().await.unwrap();
        assert!(
            got[..] == body[..],
            "{} ({:?}): the client got other bytes than the vendor sent",
            case.fixture,
            case.encoding
        );
        let want = expected_chars(case.shape, case.content_type, case.encoding, &body);
        assert!(want > 0, "{}: the fixture has output", case.fixture);
        let r = outcome(&env, &id).await;
        assert_eq!(r["provenance"], "captured", "{}: {r}", case.fixture);
        // The recorded shapes are short (most parts under one k-gram): the count is there,
        // the ledger tests below use outputs long enough to fingerprint.
        assert!(
            r["provenance_fingerprints"].is_u64(),
            "{}: {r}",
            case.fixture
        );
        assert_eq!(
            r["provenance_chars"], want,
            "{} ({:?}): captured characters",
            case.fixture, case.encoding
        );
    }
}

#[tokio::test]
async fn a_full_queue_drops_the_capture_marks_the_record_and_never_holds_the_client() {
    let env = TestEnv::builder()
        .replace(
            "enabled = true\n# Only these tools",
            "enabled = true\nqueue = 1\n# Only these tools",
        )
        .admin_token("root", "admin", ADMIN)
        .start()
        .await;
    let body = fixture("anthropic_stream.sse");
    // Far more chunks than the queue holds, spaced out: the drop needs only two of them to
    // reach the tee as separate reads, which a busy machine merging a few cannot prevent.
    let chunks = chunked(&body, 24);
    assert!(chunks.len() >= 20, "{} chunks", chunks.len());
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks,
            gap: Duration::from_millis(15),
        },
    );
    // The worker takes nothing while held: the first chunk fills the queue of one.
    env.gateway.hold_capture(true);
    let send = async {
        let (resp, id) = crate::common::anthropic_sdk_call(&env.client(true), "{}").await;
        (id, resp.bytes().await.unwrap())
    };
    // The whole stream arrives while the worker is still held: nothing waits for it.
    let (id, got) = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the client is not held by a stalled capture");
    assert_eq!(got[..], body[..]);
    // A dropped capture's outcome is written at once, not by the (held) worker: read the log
    // as it is, without waiting for workers, for a bounded time.
    let mut found = None;
    for _ in 0..100 {
        let records = crate::common::written_records_of(&env.gateway).await;
        found = records
            .into_iter()
            .find(|r| r["id"] == id.as_str() && r["kind"] == "outcome");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = found.expect("the outcome of a dropped capture is written while the worker is held");
    assert_eq!(r["provenance"], "dropped", "{r}");
    assert!(r.get("provenance_chars").is_none(), "{r}");
    let (_, metrics) = env.admin_get("/metrics", ADMIN).await;
    assert!(
        metrics.contains("aigate_provenance_dropped_total 1\n"),
        "{metrics}"
    );
    env.gateway.hold_capture(false);
}

#[tokio::test]
async fn a_queue_full_of_bytes_drops_a_huge_response_well_below_the_chunk_bound() {
    let env = TestEnv::builder()
        .replace(
            "enabled = true\n# Only these tools",
            "enabled = true\nqueue_bytes = \"64KiB\"\n# Only these tools",
        )
        .admin_token("root", "admin", ADMIN)
        .start()
        .await;
    // About 400 KB of one answer in 16 chunks of ~25 KB: the chunk bound (4096) is never near,
    // the byte bound is passed by the third chunk while the worker is held.
    let text = "All work and no play makes a model a dull writer. ".repeat(8_000);
    let body = anthropic_sse(&text);
    let chunks = chunked(&body, 16);
    assert!(chunks.iter().take(3).map(Bytes::len).sum::<usize>() > 64 << 10);
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks,
            gap: Duration::from_millis(10),
        },
    );
    env.gateway.hold_capture(true);
    let send = async {
        let (resp, id) = crate::common::anthropic_sdk_call(&env.client(true), "{}").await;
        (id, resp.bytes().await.unwrap())
    };
    let (id, got) = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the client is not held by a stalled capture");
    assert!(
        got[..] == body[..],
        "the client got other bytes than the vendor sent"
    );
    let mut found = None;
    for _ in 0..100 {
        let records = crate::common::written_records_of(&env.gateway).await;
        found = records
            .into_iter()
            .find(|r| r["id"] == id.as_str() && r["kind"] == "outcome");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = found.expect("the outcome of a dropped capture is written while the worker is held");
    assert_eq!(r["provenance"], "dropped", "{r}");
    let (_, metrics) = env.admin_get("/metrics", ADMIN).await;
    assert!(
        metrics.contains("aigate_provenance_dropped_total 1\n"),
        "{metrics}"
    );
    env.gateway.hold_capture(false);

    // Once the worker has drained what it held, the queue takes a response again.
    let small = anthropic_sse(PROSE);
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks: chunked(&small, 3),
            gap: Duration::from_millis(2),
        },
    );
    let (resp, id) = crate::common::anthropic_sdk_call(&env.client(true), "{}").await;
    resp.bytes().await.unwrap();
    let r = outcome(&env, &id).await;
    assert_eq!(r["provenance"], "captured", "{r}");
}

#[tokio::test]
async fn the_responses_websocket_is_captured_from_its_frames() {
    let env = TestEnv::builder().start().await;
    let tls = env
        .tls_through("api.openai.com:443", "api.openai.com", &[b"http/1.1"])
        .await
        .unwrap();
    let req = http::Request::builder()
        .uri("wss://api.openai.com/v1/responses")
        .header("host", "api.openai.com")
        .header("user-agent", "OpenAI/Python 2.1.0")
        .header("x-stainless-lang", "python")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    let id = crate::common::request_id(resp.headers());
    // The loopback vendor echoes text messages: what it sends back are these events, one per
    // message, as the Responses WebSocket sends them.
    let text = "Here is the fix: rename the variable and re-run the tests.";
    let big = "é".repeat(40_000);
    let events = [
        serde_json::json!({"type":"response.created","response":{"id":"resp_1"}}),
        serde_json::json!({"type":"response.output_item.added","output_index":0,"item":{"type":"message","id":"msg_1"}}),
        serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":&text[..20]}),
        serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":&text[20..]}),
        serde_json::json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":big}),
        serde_json::json!({"type":"response.output_item.done","output_index":0,"item":{"type":"message","id":"msg_1"}}),
        serde_json::json!({"type":"response.completed","response":{"id":"resp_1"}}),
    ];
    for e in &events {
        let m = e.to_string();
        ws.send(tokio_tungstenite::tungstenite::Message::text(m.clone()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), m);
    }
    ws.close(None).await.unwrap();
    drop(ws);
    let r = outcome(&env, &id).await;
    assert_eq!(r["status"], 101);
    assert_eq!(r["provenance"], "captured", "{r}");
    let want = text.chars().count() + big.chars().count();
    assert_eq!(r["provenance_chars"], want as u64, "{r}");
}

/// One Anthropic Messages call answered with the recorded JSON message: its outcome record.
async fn one_message_answered(env: &TestEnv) -> serde_json::Value {
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), JSON.into())],
            chunks: vec![Bytes::from(fixture("anthropic_message.json"))],
            gap: Duration::ZERO,
        },
    );
    let (resp, id) = crate::common::anthropic_sdk_call(&env.client(false), "{}").await;
    resp.bytes().await.unwrap();
    outcome(env, &id).await
}

#[tokio::test]
async fn capture_off_leaves_the_record_without_provenance() {
    let env = TestEnv::builder()
        .replace(
            "enabled = true\n# Only these tools",
            "enabled = false\n# Only these tools",
        )
        .start()
        .await;
    let r = one_message_answered(&env).await;
    assert!(r.get("provenance").is_none(), "{r}");
}

/// The shipped policy's capture workers (`worker_priority = "low"`, the default) run under
/// `SCHED_IDLE` at nice 19 (their threads, in this process), and so do the embedded ledger's
/// store's own threads (its flush, compaction and monitor threads, which inherit the policy of
/// the thread that opened it) and the sync thread that fsyncs it, and the workers still capture
/// what the vendor sends back. Fails if any of them is left in the normal policy.
#[tokio::test]
async fn capture_workers_and_the_ledger_s_threads_run_at_idle_priority_and_still_capture() {
    let env = TestEnv::builder().start().await;
    // Fields 19 and 41 of a thread's stat are its nice value and its scheduling policy (5:
    // SCHED_IDLE); the name (field 2) has no spaces here.
    let priority_of = |names: &[&str]| -> Vec<(i64, i64)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                if !names.iter().any(|n| name.trim_end().starts_with(n)) {
                    return None;
                }
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
                Some((fields.get(16)?.parse().ok()?, fields.get(38)?.parse().ok()?))
            })
            .collect()
    };
    // Other tests' gateways run in this process too: at least one of each that is idle is this
    // one's (nothing else puts a thread in SCHED_IDLE).
    for names in [
        &["aigate-capture"][..],
        &["ledger-sync"],
        &["flusher"],
        &["compactor"],
    ] {
        let mut idle = false;
        for _ in 0..100 {
            idle = priority_of(names).contains(&(19, 5));
            if idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            idle,
            "no {names:?} thread at SCHED_IDLE and nice 19: {:?}",
            priority_of(names)
        );
    }
    let r = one_message_answered(&env).await;
    assert_eq!(r["provenance"], "captured", "{r}");
}

pub(crate) const AUDITOR: &str = "auditor-token-0017";

const PROSE: &str = "The gateway sees every answer a vendor sends back, so it is the one place where a \
record of model output can be made as it arrives. Fingerprints of that output, kept without the \
text itself, let an auditor later ask whether a file in a repository or a record in a training set \
came back from a banned assistant, for whom, and when. Winnowing keeps a few hashes per window.";

const OTHER_PROSE: &str = "Chat completions stream their deltas one small piece at a time, and each \
piece carries only a few characters of the assistant's message; the capture joins them per choice \
before anything is fingerprinted, so the ledger sees the message the client saw, whole, however the \
vendor chose to cut it on the wire, and a scan of a pasted copy still finds this very response.";

/// An Anthropic Messages SSE stream whose text is `text`, cut into deltas of 50 characters.
pub(crate) fn anthropic_sse(text: &str) -> Vec<u8> {
    let mut events = vec![
        serde_json::json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[]}}),
        serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(50) {
        let piece: String = piece.iter().collect();
        events.push(serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":piece}}));
    }
    events.push(serde_json::json!({"type":"content_block_stop","index":0}));
    events.push(serde_json::json!({"type":"message_stop"}));
    let mut out = String::new();
    for e in events {
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

/// An OpenAI Chat Completions SSE stream whose message is `text`, in deltas of 30 characters.
fn chat_sse(text: &str) -> Vec<u8> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for piece in chars.chunks(30) {
        let piece: String = piece.iter().collect();
        let e = serde_json::json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":piece}}]});
        out.push_str(&format!("data: {e}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// The output of a recorded body as the reassembler reads it (all parts, joined).
fn output_of(shape: ApiShape, ct: &str, body: &[u8]) -> Vec<String> {
    let mut r = Reassembler::new(shape, Some(ct), None, Limits::default()).unwrap();
    r.push(body);
    r.finish().parts.into_iter().map(|p| p.text).collect()
}

fn fingerprinter(state: &std::path::Path) -> Fingerprinter {
    let key = Key::load(&Key::path(state)).unwrap();
    Fingerprinter::new(&key)
}

async fn admin_post(
    env: &TestEnv,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = env
        .admin_request(reqwest::Method::POST, path, token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// A POST of `body` as `kind`: the status, the answer's type and its bytes.
async fn post_raw(
    env: &TestEnv,
    path: &str,
    token: &str,
    kind: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, Vec<u8>) {
    let resp = env
        .admin_request(reqwest::Method::POST, path, token)
        .header("content-type", kind)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer_kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (status, answer_kind, resp.bytes().await.unwrap().to_vec())
}

/// A gateway with an auditor token, whose vendor answers `/v1/messages` with [`PROSE`] as
/// Anthropic SSE in `chunks` pieces; the body the client should get.
async fn prose_gateway(chunks: usize) -> (TestEnv, Vec<u8>) {
    let env = TestEnv::builder()
        .admin_token("sam", "auditor", AUDITOR)
        .start()
        .await;
    let body = anthropic_sse(PROSE);
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks: chunked(&body, chunks),
            gap: Duration::from_millis(1),
        },
    );
    (env, body)
}

/// `n` calls through `env`'s gateway (as the Anthropic SDK makes them), each answered with
/// `body` byte for byte: their record ids.
async fn prose_calls(env: &TestEnv, body: &[u8], n: usize) -> Vec<String> {
    let client = env.client(false);
    let mut ids = Vec::new();
    for _ in 0..n {
        let (resp, id) =
            crate::common::anthropic_sdk_call(&client, r#"{"model":"claude-sonnet-4-5"}"#).await;
        assert!(resp.bytes().await.unwrap()[..] == body[..]);
        ids.push(id);
    }
    ids
}

/// A counter's value in the `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A captured call's outcome names its fingerprint count, its ledger entry carries the call's
/// facts, the output's fingerprints find it, and the ledger file holds no text of it.
#[tokio::test]
async fn the_ledger_entry_joins_the_outcome_and_its_fingerprints_find_it() {
    let (env, body) = prose_gateway(4).await;
    let (resp, id) =
        crate::common::anthropic_sdk_call(&env.client(false), r#"{"model":"claude-sonnet-4-5"}"#)
            .await;
    resp.bytes().await.unwrap();
    let r = outcome(&env, &id).await;
    assert_eq!(r["provenance"], "captured", "{r}");
    let n = r["provenance_fingerprints"].as_u64().unwrap();
    assert!(n > 0, "{r}");

    let (status, entry) = env
        .admin_get(&format!("/v1/provenance/entries/{id}"), AUDITOR)
        .await;
    assert_eq!(status, 200, "{entry}");
    let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["tool"], "anthropic-sdk");
    assert_eq!(entry["vendor"], "anthropic");
    assert_eq!(entry["user"], r["user"]);
    assert_eq!(entry["model"], "claude-sonnet-4-5");
    assert_eq!(entry["fingerprints"], n);
    assert_eq!(entry["chars"], r["provenance_chars"]);
    let (status, _) = env
        .admin_get("/v1/provenance/entries/no-such-record", AUDITOR)
        .await;
    assert_eq!(status, 404);

    // The scan's question: which entries hold these fingerprints.
    let state = env.dir.path().join("state");
    let fp = fingerprinter(&state);
    let output = output_of(ApiShape::AnthropicMessages, SSE, &body);
    let longest = output.iter().max_by_key(|t| t.len()).unwrap().clone();
    let prints: Vec<u64> = fp.all(&longest).iter().map(|f| f.hash).collect();
    assert!(!prints.is_empty());
    let (status, found) = admin_post(
        &env,
        "/v1/provenance/lookup",
        AUDITOR,
        serde_json::json!({ "fingerprints": prints }),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let hits = found["hits"].as_array().unwrap();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h[1] == id.as_str()),
        "{found}"
    );
    assert_eq!(found["entries"][&id]["tool"], "anthropic-sdk");
    let clean: Vec<u64> = fp
        .all("The quick brown fox jumps over the lazy dog, again and again, until the end of the day.")
        .iter()
        .map(|f| f.hash)
        .collect();
    let (_, none) = admin_post(
        &env,
        "/v1/provenance/lookup",
        AUDITOR,
        serde_json::json!({ "fingerprints": clean }),
    )
    .await;
    assert_eq!(none["hits"], serde_json::json!([]), "{none}");

    // The scan's binary body (little-endian u64s) answers as the JSON one does; a torn body
    // or an unknown type is refused with what to send.
    let env = &env;
    let binary = |body: Vec<u8>, kind: &'static str| async move {
        let (status, _, answer) = post_raw(env, "/v1/provenance/lookup", AUDITOR, kind, body).await;
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&answer).unwrap(),
        )
    };
    let le: Vec<u8> = prints.iter().flat_map(|p| p.to_le_bytes()).collect();
    let (status, same) = binary(le.clone(), "application/octet-stream").await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same, found, "the binary lookup answers as the JSON one");
    let (status, torn) = binary(le[..12].to_vec(), "application/octet-stream").await;
    assert_eq!(status, 400, "{torn}");
    assert!(
        torn["error"].as_str().unwrap().contains("multiple of 8"),
        "{torn}"
    );
    let (status, unknown) = binary(le, "text/plain").await;
    assert_eq!(status, 415, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("application/octet-stream"),
        "{unknown}"
    );

    // The screen a scan asks first: every fingerprint the ledger holds comes back (sorted,
    // distinct), and the clean text's do not; the body's form is the answer's.
    let may_hold = |body: Vec<u8>, token: &'static str| {
        post_raw(
            env,
            "/v1/provenance/may-hold",
            token,
            "application/octet-stream",
            body,
        )
    };
    let mut asked = clean.clone();
    asked.extend(prints.iter().rev());
    asked.extend(&prints[..3]);
    let (status, kind, passed) = may_hold(
        asked.iter().flat_map(|p| p.to_le_bytes()).collect(),
        AUDITOR,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&passed));
    assert_eq!(kind.as_deref(), Some("application/octet-stream"));
    let passed: Vec<u64> = passed
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut held = prints.clone();
    held.sort_unstable();
    held.dedup();
    assert!(passed.is_sorted() && passed.windows(2).all(|w| w[0] != w[1]));
    assert!(held.iter().all(|h| passed.binary_search(h).is_ok()));
    assert!(
        clean.iter().all(|h| passed.binary_search(h).is_err()),
        "the clean text's fingerprints are screened out"
    );
    let (status, _, torn) = may_hold(vec![0; 12], AUDITOR).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&torn));
    let (status, _, _) = may_hold(Vec::new(), "not-a-token").await;
    assert_eq!(status, 401);
    let (status, as_json) = admin_post(
        env,
        "/v1/provenance/may-hold",
        AUDITOR,
        serde_json::json!({ "fingerprints": asked }),
    )
    .await;
    assert_eq!(status, 200, "{as_json}");
    assert_eq!(as_json["fingerprints"], serde_json::json!(passed));

    // Fingerprints, never the text.
    let probe = &longest.as_bytes()[..longest.len().min(24)];
    assert!(probe.len() >= 16);
    let mut dirs = vec![state.join("provenance").join("ledger")];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.is_dir() {
                dirs.push(f);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(probe.len()).any(|w| w == probe),
                "the ledger file {} holds output text",
                f.display()
            );
        }
    }
    assert!(files > 2, "{files} ledger files");
}

/// `kill -9` of the real binary while captured calls stream: every outcome record that says
/// `captured` has its entry in the ledger, with the fingerprint count it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_ledger_entry_whose_outcome_was_written() {
    // `_env` keeps the loopback vendor and the state directory alive until the end.
    let BinaryGateway {
        env: _env,
        body,
        state,
        mut child,
        client,
    } = binary_gateway("kill", 3, Duration::from_millis(1)).await;
    let mut load = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        load.push(tokio::spawn(async move {
            loop {
                let Ok(resp) = client
                    .post("https://api.anthropic.com/v1/messages")
                    .header("user-agent", "Anthropic/Python 0.69.0")
                    .header("x-stainless-lang", "python")
                    .body("{\"model\":\"claude-sonnet-4-5\"}")
                    .send()
                    .await
                else {
                    return;
                };
                if resp.bytes().await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();
    for task in load {
        task.await.unwrap();
    }
    let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let captured: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "outcome" && r["provenance"] == "captured")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["provenance_fingerprints"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        captured.len() >= 5,
        "only {} captured calls",
        captured.len()
    );
    let ledger = EmbeddedLedger::open(&aigate::provenance::ledger::embedded::path(&state)).unwrap();
    for (id, n) in &captured {
        let entry = ledger
            .entry(id)
            .unwrap()
            .unwrap_or_else(|| panic!("outcome {id} says captured, but the ledger has no entry"));
        assert_eq!(entry.fingerprints, *n, "{id}");
    }
    // The membership filter after the crash (the one saved before it, with the entries written
    // since added from the store) holds every captured call's fingerprints: none is missed.
    ledger.wait_for_filter();
    assert!(ledger.filter_origin().is_some());
    let found = found_by_fingerprints(&ledger, &state, &body);
    for (id, _) in &captured {
        assert!(
            found.contains(id),
            "{id} is in the ledger but not found by its fingerprints"
        );
    }
}

/// The real binary on the test environment's policy (the SDK allowed) in the state directory
/// `name`, its loopback vendor answering `PROSE` in `chunks` chunks `gap` apart.
struct BinaryGateway {
    env: TestEnv,
    body: Vec<u8>,
    state: std::path::PathBuf,
    child: std::process::Child,
    client: reqwest::Client,
}

async fn binary_gateway(name: &str, chunks: usize, gap: Duration) -> BinaryGateway {
    let env = TestEnv::builder()
        .append("\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n")
        .start()
        .await;
    let body = anthropic_sse(PROSE);
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks: chunked(&body, chunks),
            gap,
        },
    );
    let config = crate::cli::binary_config(&env, name);
    let state = env.dir.path().join(name);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = crate::cli::client_of(&mut child, &state);
    BinaryGateway {
        env,
        body,
        state,
        child,
        client,
    }
}

/// The ids of the entries `ledger` finds through the fingerprints of the answer `body`.
fn found_by_fingerprints(
    ledger: &EmbeddedLedger,
    state: &std::path::Path,
    body: &[u8],
) -> std::collections::HashSet<String> {
    let fp = fingerprinter(state);
    let prints: Vec<u64> = output_of(ApiShape::AnthropicMessages, SSE, body)
        .iter()
        .flat_map(|t| fp.all(t))
        .map(|f| f.hash)
        .collect();
    ledger
        .find(&prints)
        .unwrap()
        .hits
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// A clean shutdown (SIGTERM) of the real binary saves the membership filter with every entry
/// written: the next open (a restart, a scan of the stopped gateway's ledger) loads it and reads
/// nothing from the store on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_saves_the_filter_with_every_entry() {
    // `_env` keeps the loopback vendor and the state directory alive until the end.
    let BinaryGateway {
        env: _env,
        body,
        state,
        mut child,
        client,
    } = binary_gateway("term", 2, Duration::ZERO).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (resp, id) =
            crate::common::anthropic_sdk_call(&client, "{\"model\":\"claude-sonnet-4-5\"}").await;
        ids.push(id);
        resp.bytes().await.unwrap();
    }
    // Each outcome says `captured` once its entry is in the ledger.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap_or_default();
        let captured = text
            .lines()
            .filter(|l| {
                l.contains("\"kind\":\"outcome\"") && l.contains("\"provenance\":\"captured\"")
            })
            .count();
        if captured >= ids.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{captured} captured");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let term = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());

    let ledger = EmbeddedLedger::open(&aigate::provenance::ledger::embedded::path(&state)).unwrap();
    ledger.wait_for_filter();
    let origin = ledger.filter_origin().unwrap();
    assert!(origin.loaded, "{origin:?}");
    assert_eq!(
        origin.entries_added, 0,
        "the shutdown saved the filter before its last entries"
    );
    let found = found_by_fingerprints(&ledger, &state, &body);
    for id in &ids {
        assert!(found.contains(id), "{id}");
    }
}

/// Captures that finish together are recorded in one ledger commit (one fsync), and each
/// outcome still says `captured` only once its entry is in the ledger.
#[tokio::test]
async fn captures_finished_together_share_one_ledger_commit() {
    let (env, body) = prose_gateway(3).await;
    // The worker takes nothing while held: twelve responses finish and wait in its queue.
    env.gateway.hold_capture(true);
    let ids = prose_calls(&env, &body, 12).await;
    for _ in 0..400 {
        if env.gateway.captures_in_transit() == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(env.gateway.captures_in_transit(), 12);
    env.gateway.hold_capture(false);
    let mut recorded = 0;
    for id in &ids {
        let r = outcome(&env, id).await;
        assert_eq!(r["provenance"], "captured", "{r}");
        let (status, entry) = env
            .admin_get(&format!("/v1/provenance/entries/{id}"), AUDITOR)
            .await;
        assert_eq!(status, 200, "{entry}");
        let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
        recorded += entry["fingerprints"].as_u64().unwrap();
    }
    let (_, metrics) = env.admin_get("/metrics", AUDITOR).await;
    // Far below a run's size: every fingerprint is still held for the index, and the gauge
    // says so.
    assert!(recorded > 0);
    assert!(
        metrics.contains(&format!(
            "aigate_provenance_ledger_held_fingerprints {recorded}\n"
        )),
        "{recorded} fingerprints recorded: {metrics}"
    );
    let commits = counter(&metrics, "aigate_provenance_ledger_commits_total");
    assert!(
        metrics.contains("aigate_provenance_captured_total 12\n"),
        "{metrics}"
    );
    // Usually one; a slow machine may cross the 20 ms batch window once or twice.
    assert!(
        (1..=3).contains(&commits),
        "12 captures finished together took {commits} ledger commits"
    );
}

/// The worker writes a capture's entry without an fsync and leaves its outcome to the sync
/// thread: while that thread is held, the entry is committed (and found) but no outcome says
/// `captured`; released, one fsync covers the commits made meanwhile and the outcomes follow.
#[tokio::test]
async fn outcomes_wait_for_the_ledger_sync() {
    let (env, body) = prose_gateway(3).await;
    env.gateway.hold_capture_sync(true);
    let ids = prose_calls(&env, &body, 5).await;
    // Every entry reaches the ledger while the sync is held.
    for id in &ids {
        let mut status = 0;
        for _ in 0..400 {
            status = env
                .admin_get(&format!("/v1/provenance/entries/{id}"), AUDITOR)
                .await
                .0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(status, 200, "the entry of {id} is not in the ledger");
    }
    let (_, metrics) = env.admin_get("/metrics", AUDITOR).await;
    let syncs = counter(&metrics, "aigate_provenance_ledger_syncs_total");
    assert!(counter(&metrics, "aigate_provenance_ledger_commits_total") >= 1);
    assert_eq!(
        env.gateway.captures_in_transit(),
        5,
        "outcomes went out before the sync"
    );
    let records = crate::common::written_records_of(&env.gateway).await;
    assert!(
        !records
            .iter()
            .any(|r| r["kind"] == "outcome" && ids.iter().any(|id| r["id"] == id.as_str())),
        "an outcome was written before the ledger's sync"
    );
    env.gateway.hold_capture_sync(false);
    for id in &ids {
        let r = outcome(&env, id).await;
        assert_eq!(r["provenance"], "captured", "{r}");
    }
    let (_, metrics) = env.admin_get("/metrics", AUDITOR).await;
    // The held sync wrote them all: one fsync, or two had the sync thread taken the first
    // outcomes before it was held.
    let after = counter(&metrics, "aigate_provenance_ledger_syncs_total");
    assert!(
        (syncs + 1..=syncs + 2).contains(&after),
        "five captures held for one sync took {} fsyncs",
        after - syncs
    );
}

/// With PostgreSQL, two replicas write one ledger: a capture made through one is found, by
/// its fingerprints and by its id, through the other.
#[tokio::test]
async fn the_postgres_ledger_is_shared_by_two_replicas() {
    let pg = crate::postgres::Postgres::start();
    let env = TestEnv::builder()
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"",
                pg.url()
            ),
        )
        .admin_token("sam", "auditor", AUDITOR)
        .start()
        .await;
    // Every replica needs the same fingerprint key, or their fingerprints would differ.
    let key = Key::path(&env.dir.path().join("state"));
    let b_key = Key::path(&env.dir.path().join("b"));
    std::fs::create_dir_all(b_key.parent().unwrap()).unwrap();
    std::fs::copy(&key, &b_key).unwrap();
    let b = env
        .variant("b", |t| {
            t.replace("replica_id = \"a\"", "replica_id = \"b\"")
        })
        .await;
    for gw in [&env.gateway, &b] {
        for _ in 0..200 {
            if gw.storage_up() == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let sse = anthropic_sse(PROSE);
    let chat = chat_sse(OTHER_PROSE);
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks: chunked(&sse, 3),
            gap: Duration::from_millis(1),
        },
    );
    env.vendor.serve(
        "/v1/chat/completions",
        Canned {
            headers: vec![("content-type".into(), SSE.into())],
            chunks: chunked(&chat, 3),
            gap: Duration::from_millis(1),
        },
    );
    let call = |gw: &aigate::AppHandle, url: &'static str, ua: &'static str| {
        let client = crate::common::client_for(gw, "", false);
        async move {
            let resp = client
                .post(url)
                .header("user-agent", ua)
                .header("x-stainless-lang", "python")
                .body("{}")
                .send()
                .await
                .unwrap();
            let id = crate::common::request_id(resp.headers());
            resp.bytes().await.unwrap();
            id
        }
    };
    let via_a = call(
        &env.gateway,
        "https://api.anthropic.com/v1/messages",
        "Anthropic/Python 0.69.0",
    )
    .await;
    let via_b = call(
        &b,
        "https://api.openai.com/v1/chat/completions",
        "OpenAI/Python 2.1.0",
    )
    .await;
    let r = outcome(&env, &via_a).await;
    assert_eq!(r["provenance"], "captured", "{r}");

    let fp = fingerprinter(&env.dir.path().join("state"));
    let prints = |shape, body: &[u8]| -> Vec<u64> {
        output_of(shape, SSE, body)
            .iter()
            .flat_map(|t| fp.all(t))
            .map(|f| f.hash)
            .collect()
    };
    let mut both = prints(ApiShape::AnthropicMessages, &sse);
    both.extend(prints(ApiShape::OpenAiChat, &chat));
    // Ask replica b about both: it answers for a's capture too.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut found = serde_json::Value::Null;
    for _ in 0..100 {
        found = client
            .post(format!("http://{}/v1/provenance/lookup", b.admin_addr))
            .bearer_auth(AUDITOR)
            .json(&serde_json::json!({ "fingerprints": both }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if found["entries"].as_object().is_some_and(|e| e.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = found["entries"]
        .as_object()
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(entries.len(), 2, "{found}");
    assert_eq!(entries[&via_a]["tool"], "anthropic-sdk");
    assert_eq!(entries[&via_b]["tool"], "openai-sdk");
    let entry: serde_json::Value = client
        .get(format!(
            "http://{}/v1/provenance/entries/{via_a}",
            b.admin_addr
        ))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entry["fingerprints"], r["provenance_fingerprints"]);
    let db = pg.client().await;
    let rows = crate::postgres::column(
        &db,
        "SELECT replica FROM aigate_provenance_entries ORDER BY replica",
    )
    .await;
    assert_eq!(rows, ["a", "b"]);

    // `aigate provenance scan` with this config reads PostgreSQL itself and finds both
    // replicas' captures in one pasted file.
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("notes.md"),
        format!("# Notes\n\n{PROSE}\n\n{OTHER_PROSE}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["provenance", "scan", "--format", "json", "--config"])
        .arg(&env.config_path)
        .arg(&work)
        .env("RUST_LOG", "off")
        .env_remove("AIGATE_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ledger: the PostgreSQL ledger"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ledger"]["access"], "postgres");
    let mut ids: Vec<&str> = doc["findings"][0]["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![via_a.as_str(), via_b.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{doc:#}");
    assert!(stderr.contains("with an auditor token"), "{stderr}");

    // With a token, `auto` asks a replica's admin API instead (its membership filter spares
    // PostgreSQL what no entry holds), and finds the same.
    let mut scan = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"));
    scan.args(["provenance", "scan", "--format", "json", "--config"])
        .arg(&env.config_path)
        .arg(&work)
        .env("RUST_LOG", "off")
        .env("AIGATE_TOKEN", AUDITOR)
        .env("AIGATE_ADMIN", format!("http://{}", b.admin_addr));
    // Off the test's runtime, which serves the gateway the scan asks.
    let out = tokio::task::spawn_blocking(move || scan.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("storage.backend = \"postgres\" and an admin token is given"),
        "{stderr}"
    );
    let via_api: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(via_api["ledger"]["access"], "api");
    assert_eq!(via_api["findings"], doc["findings"]);

    // A token but no replica at --admin: the error offers reading the tables directly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["provenance", "scan", "--config"])
        .arg(&env.config_path)
        .arg(&work)
        .env("RUST_LOG", "off")
        .env("AIGATE_TOKEN", AUDITOR)
        .env("AIGATE_ADMIN", format!("http://{nobody}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--ledger postgres"), "{stderr}");
}
