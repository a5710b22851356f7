//! Body signals after the peek (issue 14): a blocked tool's marker past `body_peek_bytes`, or
//! in the last chunk, still blocks, and the vendor never receives the whole body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;

use crate::common::{Seen, TestEnv, raw_records_of};

const SDK_UA: &str = "Anthropic/Python 0.69.0";
const MARK: &str = "x-anthropic-billing-header: cc_version=2.1.197";

/// The SDK is allowed, Claude Code is blocked (shipped policy): only the body tells them apart.
fn allow_sdk() -> &'static str {
    "\n[[rules]]\nname = \"sanctioned-sdks\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n"
}

/// A messages request whose user text is `filler` bytes long, then `tail` in the system field.
fn body(filler: usize, tail: &str) -> String {
    format!(
        r#"{{"model":"claude-opus-4-1","messages":[{{"role":"user","content":"{}"}}],"system":[{{"type":"text","text":"{tail}"}}]}}"#,
        "a".repeat(filler)
    )
}

/// The vendor's view of its only request, once its end (complete or cut off) has been seen.
async fn vendor_saw(env: &TestEnv) -> Seen {
    for _ in 0..100 {
        let seen = env.vendor.requests();
        if seen.len() == 1 {
            // Give a cut-off body time to reach the vendor's side, so a late last byte shows.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return env.vendor.requests().remove(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the vendor saw {} requests", env.vendor.requests().len());
}

async fn assert_late_block(env: &TestEnv, resp: reqwest::Response, total: usize) {
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "late_body_signal");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["type"], "error", "Anthropic's error shape: {json}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("Claude Code"), "{message}");

    let seen = vendor_saw(env).await;
    assert!(!seen.complete, "the vendor must not receive the whole body");
    assert!(
        seen.body_len < total,
        "{} of {total} bytes reached the vendor",
        seen.body_len
    );
    assert!(!seen.body.windows(MARK.len()).any(|w| w == MARK.as_bytes()));

    let records = env.audit().await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["action"], "block");
    assert_eq!(r["reason"], "late_body_signal");
    assert_eq!(r["tool"], "claude-code");
    assert_eq!(r["status"], 403);
    assert!(r["rule"].is_string(), "the blocking rule is named: {r}");
    assert_eq!(r["tool_conflicts"], serde_json::json!(["anthropic-sdk"]));

    // As written: the decision that let the call go upstream, then its outcome with the
    // revised decision.
    let raw = raw_records_of(&env.gateway).await;
    assert_eq!(raw.len(), 2, "{raw:?}");
    assert_eq!(raw[0]["outcome_follows"], true);
    assert_eq!(raw[0]["action"], "allow");
    assert_eq!(raw[0]["tool"], "anthropic-sdk");
    assert_eq!(raw[1]["kind"], "outcome");
    assert_eq!(raw[1]["id"], raw[0]["id"]);
    assert_eq!(raw[1]["reason"], "late_body_signal");
    assert!(
        raw[1]["bytes_up"].as_u64().unwrap() < total as u64,
        "bytes_up counts what went upstream: {}",
        raw[1]["bytes_up"]
    );
}

#[tokio::test]
async fn a_marker_after_the_peek_cancels_a_content_length_request() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let text = body(64 * 1024, MARK);
    let total = text.len();
    let resp = env
        .client(true)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_late_block(&env, resp, total).await;
}

#[tokio::test]
async fn a_marker_in_the_last_chunk_cancels_a_chunked_request() {
    for h1_only in [true, false] {
        let env = TestEnv::builder().append(allow_sdk()).start().await;
        let text = body(40 * 1024, MARK);
        let total = text.len();
        // The marker comes alone, last, after the rest has already been streamed.
        let (head, last) = text.split_at(total - MARK.len() - 10);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let head = Bytes::copy_from_slice(head.as_bytes());
        let last = Bytes::copy_from_slice(last.as_bytes());
        tokio::spawn(async move {
            for chunk in head.chunks(8 * 1024) {
                let _ = tx.send(Ok(Bytes::copy_from_slice(chunk))).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(Ok(last)).await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let resp = env
            .client(h1_only)
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_late_block(&env, resp, total).await;
    }
}

#[tokio::test]
async fn a_clean_large_body_passes_byte_for_byte() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    // Near-misses of the marker all through it, across every seam.
    let tail = "x-anthropic-billing-header: cc_version";
    let mut text = String::new();
    while text.len() < 300 * 1024 {
        text.push_str(&body(997, tail));
    }
    let resp = env
        .client(true)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = vendor_saw(&env).await;
    assert!(seen.complete);
    assert_eq!(seen.body_len, text.len());
    assert!(seen.body == text.as_bytes(), "the body arrives unchanged");
    let records = env.audit().await;
    assert_eq!(records[0]["reason"], "rule_matched");
    assert_eq!(records[0]["tool"], "anthropic-sdk");
}

/// Letters no compressor can shrink much, so a compressed body still runs past the peek.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

fn compress(encoding: &str, b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(b).unwrap();
            drop(w);
            out
        }
        "zstd" => zstd::encode_all(b, 3).unwrap(),
        other => panic!("{other}"),
    }
}

/// Issue 14: the rest of the body is read as the peek is, decoded by its Content-Encoding and
/// with JSON escapes folded. A compressed body whose escaped marker lies past the peek used to
/// reach the vendor whole: the compressed bytes never spell the marker.
#[tokio::test]
async fn a_compressed_escaped_marker_after_the_peek_is_found() {
    // `=` written as `\u003d`: the escape folded, the marker reads as MARK.
    let escaped = MARK.replace('=', "\\u003d");
    let text = format!(
        r#"{{"model":"claude-opus-4-1","messages":[{{"role":"user","content":"{}"}}],"system":[{{"type":"text","text":"{escaped}"}}]}}"#,
        noise(96 * 1024)
    );
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let env = TestEnv::builder().append(allow_sdk()).start().await;
        let wire = compress(encoding, text.as_bytes());
        assert!(
            wire.len() > 32 * 1024,
            "past the 16 KiB peek: {encoding}, {} bytes",
            wire.len()
        );
        let total = wire.len();
        let resp = env
            .client(true)
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(wire)
            .send()
            .await
            .unwrap();
        assert_late_block(&env, resp, total).await;
    }
}

/// A body whose encoding breaks past the peek cannot be searched there: it is cancelled before
/// its last byte and refused as undecodable, as a broken peek is.
#[tokio::test]
async fn a_body_corrupt_after_the_peek_is_cancelled() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let text = body(0, &noise(96 * 1024));
    // A gzip member, then bytes that are no gzip member's header.
    let mut wire = compress("gzip", text.as_bytes());
    wire.extend_from_slice(&[0xaa; 1024]);
    let resp = env
        .client(true)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(wire)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-aigate-reason"], "body_undecodable");
    let seen = vendor_saw(&env).await;
    assert!(!seen.complete, "the vendor must not receive the whole body");
    let records = env.audit().await;
    assert_eq!(records[0]["reason"], "body_undecodable", "{records:?}");
    assert_eq!(records[0]["error"], "corrupt_content_encoding");
}
