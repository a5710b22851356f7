//! Issue 14, "Identification that survives tampering": each spelling a determined user tries on
//! Claude Code's six signals (and Codex's body), through the real proxy under the shipped
//! policy. Each one used to hide its signal; each is now `claude-code` (or `codex-cli`) and
//! blocked. The normaliser's own table tests are in src/identify/normalise.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use http::HeaderValue;

use crate::common::{TestEnv, by_id};

/// A user agent no signature knows: only the tampered signal can name the tool.
const NEUTRAL_UA: &str = "curl/8.5.0";
const PLAIN: &str = r#"{"model":"claude-opus-4-1","messages":[]}"#;
const MARKED: &str = r#"{"model":"claude-opus-4-1","system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.12.abc; cc_entrypoint=cli"}],"messages":[]}"#;

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn br(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
    w.write_all(b).unwrap();
    drop(w);
    out
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

/// The request must be refused with 403 and recorded as blocked; returns its record.
async fn blocked(env: &TestEnv, req: reqwest::RequestBuilder, what: &str) -> serde_json::Value {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let id = crate::common::request_id(resp.headers());
    let body = resp.text().await.unwrap();
    assert_eq!(status, 403, "{what}: {body}");
    let records = env.audit().await;
    let r = by_id(&records, &id).clone();
    assert_eq!(
        (r["tool"].as_str(), r["action"].as_str()),
        (Some("claude-code"), Some("block")),
        "{what}: {r:#}"
    );
    r
}

#[tokio::test]
async fn each_altered_claude_code_signal_is_still_claude_code_and_blocked() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    let post = || {
        client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", NEUTRAL_UA)
            .header("content-type", "application/json")
    };
    let bytes = |b: &[u8]| HeaderValue::from_bytes(b).unwrap();
    let escaped = MARKED
        .replace("x-anthropic", r"\u0078-anthropic")
        .replace("cc_version=", r"\u0063c_version\u003d");
    let attempts: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "user agent in capitals",
            post()
                .header("user-agent", "Claude-CLI/2.1.12 (external, cli)")
                .body(PLAIN),
            "user-agent",
        ),
        (
            "user agent with 0xff",
            post()
                .header(
                    "user-agent",
                    bytes(b"\xffclaude-cli/2.1.12 (external, cli)\xff"),
                )
                .body(PLAIN),
            "user-agent",
        ),
        (
            "x-app: CLI",
            post().header("x-app", "CLI").body(PLAIN),
            "header:x-app",
        ),
        (
            "x-app: cli + 0xff",
            post().header("x-app", bytes(b"cli\xff")).body(PLAIN),
            "header:x-app",
        ),
        (
            "anthropic-beta in capitals",
            post()
                .header("anthropic-beta", "Claude-Code-20250219")
                .body(PLAIN),
            "header:anthropic-beta",
        ),
        (
            "session id of 0xff bytes only",
            post()
                .header("x-claude-code-session-id", bytes(b"\xff\xfe"))
                .body(PLAIN),
            "header:x-claude-code-session-id",
        ),
        (
            "JSON-escaped body marker",
            post().body(escaped.clone()),
            "body",
        ),
        (
            "body marker in capitals",
            post().body(MARKED.replace(
                "x-anthropic-billing-header: cc_version",
                "X-Anthropic-Billing-Header: CC_VERSION",
            )),
            "body",
        ),
        (
            "gzip body",
            post()
                .header("content-encoding", "gzip")
                .body(gzip(MARKED.as_bytes())),
            "body",
        ),
        (
            "br body",
            post()
                .header("content-encoding", "br")
                .body(br(MARKED.as_bytes())),
            "body",
        ),
        (
            "zstd body",
            post()
                .header("content-encoding", "zstd")
                .body(zstd(MARKED.as_bytes())),
            "body",
        ),
        (
            "deflate body",
            post()
                .header("content-encoding", "deflate")
                .body(deflate(MARKED.as_bytes())),
            "body",
        ),
        (
            "gzip then br, escaped marker",
            post()
                .header("content-encoding", "gzip, BR")
                .body(br(&gzip(escaped.as_bytes()))),
            "body",
        ),
    ];
    for (what, req, label) in attempts {
        let r = blocked(&env, req, what).await;
        assert_eq!(r["evidence"], serde_json::json!([label]), "{what}: {r:#}");
        assert_eq!(
            r["model"], "claude-opus-4-1",
            "{what}: the model is read too"
        );
    }
    assert!(
        env.vendor.requests().is_empty(),
        "no altered Claude Code call reaches the vendor"
    );
}

#[tokio::test]
async fn all_claude_code_signals_altered_together_are_all_seen() {
    let env = TestEnv::builder().start().await;
    let escaped = MARKED.replace("cc_version=", r"\u0063c_version\u003d");
    let req = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header(
            "user-agent",
            HeaderValue::from_bytes(b"Claude-CLI/2.1.12 (external, cli)\xff").unwrap(),
        )
        .header("x-app", HeaderValue::from_bytes(b"CLI\xff").unwrap())
        .header("anthropic-beta", "CLAUDE-CODE-20250219")
        .header(
            "x-claude-code-session-id",
            HeaderValue::from_bytes(b"\xff").unwrap(),
        )
        .header("content-encoding", "zstd")
        .body(zstd(escaped.as_bytes()));
    let r = blocked(&env, req, "all six").await;
    assert_eq!(
        r["evidence"],
        serde_json::json!([
            "user-agent",
            "header:anthropic-beta",
            "header:x-app",
            "header:x-claude-code-session-id",
            "body"
        ])
    );
    assert_eq!(r["tool_confidence"], "high");
}

#[tokio::test]
async fn side_call_paths_in_any_spelling_are_claude_code_and_blocked() {
    let env = TestEnv::builder().start().await;
    for path in [
        "//api/claude_code/settings",
        "/api/%63laude_code/settings",
        "/v1/../api/claude_code/settings",
        "/v1/%2e%2e/api/claude_cli/bootstrap",
        "/API/Claude_Code/settings",
        "/./api//event_logging/batch",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nUser-Agent: Bun/1.2.19");
        let resp = env
            .raw_https("api.anthropic.com", head.as_bytes(), b"")
            .await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{path}: {resp}");
        let records = env.audit().await;
        let r = records.last().unwrap();
        assert_eq!(
            (
                r["tool"].as_str(),
                r["action"].as_str(),
                r["evidence"].clone()
            ),
            (
                Some("claude-code"),
                Some("block"),
                serde_json::json!(["path"])
            ),
            "{path}: {r:#}"
        );
    }
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn invalid_header_bytes_neither_hide_a_header_nor_break_the_gateway() {
    let env = TestEnv::builder().start().await;
    // Bytes no HTTP library sends: 0x80-0xff in several headers, and in the workflow tag.
    let head = b"POST /v1/messages HTTP/1.1\r\nUser-Agent: \xc3claude-cli/2.1.12\r\nX-App: \xfe\xffcli\r\nX-Aigate-Workflow: \xffdocs\r\nContent-Type: application/json";
    let resp = env
        .raw_https("api.anthropic.com", head, PLAIN.as_bytes())
        .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let records = env.audit().await;
    let r = records.last().unwrap();
    assert_eq!(r["tool"], "claude-code", "{r:#}");
    assert_eq!(
        r["evidence"],
        serde_json::json!(["user-agent", "header:x-app"])
    );
    assert_eq!(r["workflow"], "untagged", "a malformed tag counts as none");
    // The gateway still serves the next request.
    let ok = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body(PLAIN)
        .send()
        .await
        .unwrap();
    assert_ne!(ok.status(), 502);
}

#[tokio::test]
async fn a_body_aigate_cannot_decode_is_refused_not_forwarded() {
    let env = TestEnv::builder().start().await;
    // 16 MiB of spaces after the marker's start compress to a few KiB: a decompression bomb.
    let mut bomb = br#"{"model":"claude-opus-4-1","pad":""#.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 16 << 20));
    let cases = [
        ("gzip", gzip(&bomb), "decompression_limit"),
        ("br", br(&bomb), "decompression_limit"),
        ("zstd", zstd(&bomb), "decompression_limit"),
        ("deflate", deflate(&bomb), "decompression_limit"),
        (
            "compress",
            PLAIN.as_bytes().to_vec(),
            "unsupported_content_encoding",
        ),
        (
            "gzip",
            b"this is not gzip".to_vec(),
            "corrupt_content_encoding",
        ),
    ];
    for (enc, body, error) in cases {
        assert!(body.len() < 1 << 20, "{enc} is {} bytes", body.len());
        let resp = env
            .client(false)
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "Anthropic/Python 0.69.0")
            .header("content-encoding", enc)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{enc}");
        assert_eq!(resp.headers()["x-aigate-reason"], "body_undecodable");
        let id = crate::common::request_id(resp.headers());
        let records = env.audit().await;
        let r = by_id(&records, &id);
        assert_eq!(
            (r["reason"].as_str(), r["error"].as_str()),
            (Some("body_undecodable"), Some(error)),
            "{enc}: {r:#}"
        );
    }
    assert!(env.vendor.requests().is_empty());
}

/// What Codex sends to `/v1/responses` (codex-rs `ResponsesApiRequest`): its instructions, and
/// an `<environment_context>` user turn.
const CODEX_BODY: &str = r#"{"model":"gpt-5-codex","instructions":"You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI on a user's computer.","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context>\n  <cwd>/home/u/src</cwd>\n  <approval_policy>never</approval_policy>\n</environment_context>"}]}],"tools":[{"type":"function","name":"shell"}],"tool_choice":"auto","parallel_tool_calls":false,"store":false,"stream":true,"prompt_cache_key":"0199"}"#;

#[tokio::test]
async fn a_codex_body_under_a_forged_sdk_user_agent_is_codex_with_the_conflict_recorded() {
    let env = TestEnv::builder().start().await;
    for (enc, body) in [
        ("identity", CODEX_BODY.as_bytes().to_vec()),
        ("zstd", zstd(CODEX_BODY.as_bytes())),
    ] {
        let resp = env
            .client(false)
            .post("https://api.openai.com/v1/responses")
            .header("user-agent", "OpenAI/Python 1.99.0")
            .header("x-stainless-lang", "python")
            .header("content-type", "application/json")
            .header("content-encoding", enc)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{enc}: Codex's deny_status");
        let id = crate::common::request_id(resp.headers());
        let records = env.audit().await;
        let r = by_id(&records, &id);
        assert_eq!(
            (r["tool"].as_str(), r["action"].as_str()),
            (Some("codex-cli"), Some("block")),
            "{enc}: {r:#}"
        );
        assert_eq!(r["evidence"], serde_json::json!(["body"]), "{enc}");
        assert_eq!(r["model"], "gpt-5-codex");
        let conflicts = r["tool_conflicts"].as_array().unwrap();
        assert!(
            conflicts.iter().any(|c| c == "openai-sdk"),
            "the forged SDK user agent shows as a conflict: {r:#}"
        );
    }
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn a_bedrock_model_arn_keeps_its_encoded_slash_and_a_dotted_path_still_names_the_model() {
    let env = TestEnv::builder().start().await;
    for (path, want) in [
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-v1%3A0/invoke",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0",
        ),
        (
            "/x/..//model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
    ] {
        let head = format!("POST {path} HTTP/1.1\r\nUser-Agent: {NEUTRAL_UA}");
        let resp = env
            .raw_https(
                "bedrock-runtime.us-east-1.amazonaws.com",
                head.as_bytes(),
                b"{}",
            )
            .await;
        assert!(resp.starts_with("HTTP/1.1 "), "{path}: {resp}");
        let records = env.audit().await;
        let r = records.last().unwrap();
        assert_eq!(r["model"], want, "{path}: {r:#}");
    }
}

#[tokio::test]
async fn a_deny_takes_the_shape_of_the_normalised_path() {
    let env = TestEnv::builder().start().await;
    // OpenRouter serves both APIs; `/api/v1/%6Dessages` is its Anthropic messages endpoint.
    let head = "POST /api//v1/%6Dessages HTTP/1.1\r\nUser-Agent: claude-cli/2.1.12 (external, cli)";
    let resp = env
        .raw_https("openrouter.ai", head.as_bytes(), PLAIN.as_bytes())
        .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.contains(r#""type":"error""#) && body.contains(r#""permission_error""#),
        "Anthropic's error shape: {resp}"
    );
}
