//! The data path end to end: tunnel, intercept over HTTP/1.1 and h2, deny shapes, monitor, SSE,
//! header stripping, secrets, and the anti-bypass checks of the core.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestEnv, by_id, client_for, records_of};

const SDK_UA: &str = "Anthropic/Python 0.69.0";
const CLAUDE_UA: &str = "claude-cli/2.1.12 (external, cli)";

fn allow_sdk() -> &'static str {
    "\n[[rules]]\nname = \"sanctioned-sdks\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n"
}

#[tokio::test]
async fn non_vendor_hosts_are_tunnelled_byte_for_byte() {
    let env = TestEnv::builder().start().await;
    let mut s = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload, "tunnel must not alter bytes");
    drop(s);
    let records = env.audit_n(1).await;
    let r = &records[0];
    assert_eq!(r["kind"], "tunnel");
    assert_eq!(r["reason"], "not_vendor");
    assert_eq!(r["host"], "echo.internal.test");
    assert_eq!(r["bytes_up"], 100_000);
    assert_eq!(r["bytes_down"], 100_000);
    assert!(env.vendor.requests().is_empty());
}

async fn allowed_request(h1_only: bool) {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let resp = env
        .client(h1_only)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("x-stainless-lang", "python")
        .header("x-aigate-workflow", "docs")
        .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.version(),
        if h1_only {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        }
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigate-decision"], "allow");
    assert!(
        resp.headers().get("alt-svc").is_none(),
        "alt-svc must be stripped (QUIC bypasses the proxy)"
    );
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/v1/messages");
    let seen = env.vendor.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.get("x-aigate-workflow").is_none(),
        "the workflow header must not reach the vendor"
    );
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "upstream uses h2 when the vendor offers it"
    );
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(r["kind"], "request");
    assert_eq!(r["action"], "allow");
    assert_eq!(r["reason"], "rule_matched");
    assert_eq!(r["rule"], "sanctioned-sdks");
    assert_eq!(r["tool"], "anthropic-sdk");
    assert_eq!(r["tool_confidence"], "high");
    assert_eq!(
        r["evidence"],
        serde_json::json!(["user-agent", "header:x-stainless-lang"])
    );
    assert_eq!(r["model"], "claude-sonnet-4-5");
    assert_eq!(r["workflow"], "docs");
    assert_eq!(r["workflow_source"], "header");
    assert_eq!(r["status"], 200);
    assert_eq!(r["vendor"], "anthropic");
    assert!(r["bytes_up"].as_u64().unwrap() > 50);
    assert!(r["error"].is_null(), "{r}");
}

#[tokio::test]
async fn intercepted_allow_over_http1() {
    allowed_request(true).await;
}

#[tokio::test]
async fn intercepted_allow_over_h2() {
    allowed_request(false).await;
}

#[tokio::test]
async fn http1_upstream_when_the_vendor_offers_only_http1() {
    let env = TestEnv::builder()
        .append(allow_sdk())
        .vendor_alpn(vec![b"http/1.1"])
        .start()
        .await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(env.vendor.requests()[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn claude_code_is_blocked_in_anthropic_error_format() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages?beta=true")
        .header("user-agent", CLAUDE_UA)
        .header("x-app", "cli")
        .header("anthropic-beta", "claude-code-20250219,oauth-2025-04-20")
        .json(&serde_json::json!({"model": "claude-opus-4-1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-decision"], "block");
    assert_eq!(resp.headers()["x-aigate-reason"], "rule_matched");
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    // Without it, Claude Code prints "Failed to authenticate" before the message.
    assert_eq!(
        body["error"]["details"]["error_code"], "dlp_request_denied",
        "{body}"
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        // The shipped rule bans the tool in every workflow (allow-list), so the message does not
        // single one out.
        msg.contains("Claude Code is not allowed (rule"),
        "{msg}"
    );
    assert!(
        msg.contains("rule \"rival-coding-tools-in-protected-workflows\""),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "aigate does not know who you are, so nothing can be exempted for you; http://{}/r/",
            env.gateway.admin_addr
        )),
        "the shipped default links to aigate's own request page (which tells an anonymous caller what IT must set up): {msg}"
    );
    assert!(msg.contains(&format!("Request id: {id}")), "{msg}");
    assert!(
        env.vendor.requests().is_empty(),
        "a blocked call must never reach the vendor"
    );
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(
        (
            r["action"].as_str(),
            r["reason"].as_str(),
            r["tool"].as_str()
        ),
        (Some("block"), Some("rule_matched"), Some("claude-code"))
    );
    assert_eq!(r["status"], 403);
    assert_eq!(r["model"], "claude-opus-4-1");
    assert_eq!(r["workflow_source"], "none");
    assert_eq!(
        r["evidence"],
        serde_json::json!(["user-agent", "header:anthropic-beta", "header:x-app"])
    );
}

#[tokio::test]
async fn codex_is_blocked_in_openai_error_format_and_its_websocket_refused() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(true)
        .post("https://api.openai.com/v1/responses")
        .header(
            "user-agent",
            "codex_exec/0.165.0 (Debian 12; x86_64) unknown (codex_exec; 0.165.0)",
        )
        .header("originator", "codex_exec")
        .header("x-aigate-workflow", "training-data")
        .body(r#"{"model":"gpt-5-codex","input":"hi","stream":true}"#)
        .send()
        .await
        .unwrap();
    // Not 403: Codex retries a 403 five times before it shows the message, a 400 not at all.
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_denied");
    assert_eq!(body["error"]["code"], "aigate_blocked");
    assert!(body["error"]["param"].is_null());
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OpenAI Codex CLI is not allowed (rule")
    );

    // The WebSocket transport Codex tries first: refused before the upgrade, with the same body.
    let tls = env
        .tls_through("api.openai.com:443", "api.openai.com", &[b"http/1.1"])
        .await
        .unwrap();
    let req = http::Request::builder()
        .uri("wss://api.openai.com/v1/responses")
        .header("host", "api.openai.com")
        .header("user-agent", "codex_exec/0.165.0 (Debian 12; x86_64)")
        .header("originator", "codex_exec")
        .header("openai-beta", "responses_websockets=2026-02-04")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let err = tokio_tungstenite::client_async(req, tls).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "aigate_blocked");
        }
        other => panic!("expected an HTTP 400, got {other:?}"),
    }
    assert!(env.vendor.requests().is_empty());
    let records = env.audit_n(2).await;
    assert!(
        records
            .iter()
            .all(|r| r["tool"] == "codex-cli" && r["action"] == "block"),
        "{records:#?}"
    );
}

#[tokio::test]
async fn allowed_websocket_is_spliced_through() {
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
    assert_eq!(resp.headers()["x-aigate-decision"], "monitor");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "ping through the gate",
    ))
    .await
    .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "ping through the gate"
    );
    drop(ws);
    let records = env.audit_n(1).await;
    assert_eq!(records[0]["status"], 101);
    assert_eq!(records[0]["tool"], "openai-sdk");
}

#[tokio::test]
async fn the_default_monitor_forwards_without_would_block() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://api.openai.com/v1/chat/completions")
        .header("user-agent", "OpenAI/Python 2.1.0")
        .header("x-stainless-lang", "python")
        .body(r#"{"model":"gpt-5-mini"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigate-decision"], "monitor");
    let id = crate::common::request_id(resp.headers());
    drop(resp.bytes().await.unwrap());
    assert_eq!(env.vendor.requests().len(), 1);
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(
        (r["action"].as_str(), r["reason"].as_str()),
        (Some("monitor"), Some("default_action"))
    );
    // No rule would have blocked it: only a rule's monitor sets would_block (policy::tests).
    assert_eq!(r["would_block"], false);
}

#[tokio::test]
async fn sse_reaches_the_client_event_by_event() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/sse/v1/messages")
        .header("user-agent", SDK_UA)
        .body("{\"stream\":true}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("alt-svc").is_none());
    let mut stream = resp.bytes_stream();
    // The vendor holds back every event after the first until we release it: if the gateway
    // buffered the response, this would never arrive.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first event must arrive before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"event: message\ndata: {\"n\":1}\n\n");
    env.vendor.release_sse.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(rest)
            .unwrap()
            .matches("event: message")
            .count(),
        4
    );
    let records = env.audit_n(1).await;
    assert_eq!(records[0]["bytes_down"].as_u64().unwrap(), 5 * 30);
}

#[tokio::test]
async fn secrets_never_reach_the_audit_log() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    for client in [env.client(true), env.client(false)] {
        let resp = client
            .post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=AIzaSECRETQUERYKEY&alt=sse")
            .header("authorization", "Bearer sk-SECRETBEARER")
            .header("x-api-key", "sk-ant-SECRETAPIKEY")
            .header("x-goog-api-key", "AIzaSECRETGOOG")
            .header("cookie", "session=SECRETCOOKIE")
            .body(r#"{"contents":[{"parts":[{"text":"SECRETBODYTEXT"}]}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            env.vendor.requests().last().unwrap().headers["x-api-key"],
            "sk-ant-SECRETAPIKEY",
            "credentials do reach the vendor"
        );
    }
    let records = env.audit_n(2).await;
    let text = env.audit_text();
    for secret in [
        "SECRETQUERYKEY",
        "SECRETBEARER",
        "SECRETAPIKEY",
        "SECRETGOOG",
        "SECRETCOOKIE",
        "SECRETBODYTEXT",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    assert_eq!(
        records[0]["path"],
        "/v1beta/models/gemini-2.5-pro:generateContent?key=REDACTED&alt=sse"
    );
    assert_eq!(records[0]["model"], "gemini-2.5-pro");
}

#[tokio::test]
async fn proxy_authorization_identifies_the_user_and_is_not_forwarded() {
    let token = "tok-alice-0123456789";
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let users = env.dir.path().join("users.toml");
    std::fs::write(&users, format!("[[users]]\nid = \"alice\"\ngroups = [\"ml\"]\ndefault_workflow = \"docs\"\ntokens = [\"{}\"]\n", aigate::identify::user::hash_token(token))).unwrap();
    let gw = env
        .variant("auth", |t| {
            t.replace(
                "# users_file = \"users.toml\"",
                "users_file = \"users.toml\"",
            )
        })
        .await;
    let client = |cred: &str| client_for(&gw, cred, false);
    let resp = client(&format!("alice:{token}@"))
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("x-stainless-lang", "python")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the SDK is allowed for alice");
    assert!(
        env.vendor.requests()[0]
            .headers
            .get("proxy-authorization")
            .is_none()
    );
    let err = client("alice:wrong@")
        .post("https://api.anthropic.com/v1/messages")
        .body("{}")
        .send()
        .await;
    assert!(err.is_err() || err.unwrap().status() == 407);
    let records = records_of(&gw).await;
    assert!(
        !std::fs::read_to_string(gw.audit().path())
            .unwrap()
            .contains(token)
    );
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[0]["user_source"], "proxy_auth");
    assert_eq!(records[0]["workflow"], "docs");
    assert_eq!(records[0]["workflow_source"], "user_default");
    // Issue 18: a wrong password is recorded under the user name it tried, with its own reason;
    // the password is nowhere.
    assert_eq!(records[1]["reason"], "proxy_auth_wrong");
    assert_eq!(records[1]["user"], "alice");
    assert_eq!(records[1]["error"], "proxy_auth_wrong");
    assert_eq!(records[1]["status"], 407);
    assert!(
        !std::fs::read_to_string(gw.audit().path())
            .unwrap()
            .contains("wrong@")
            && !records[1].to_string().contains(":wrong")
    );
}

#[tokio::test]
async fn sni_must_name_the_connect_host() {
    let env = TestEnv::builder().start().await;
    let err = env
        .tls_through("api.anthropic.com:443", "api.openai.com", &[b"http/1.1"])
        .await;
    assert!(err.is_err(), "a fronted handshake must fail");
    let records = env.audit_n(1).await;
    assert_eq!(records[0]["reason"], "sni_mismatch");
    assert_eq!(records[0]["action"], "block");
}

#[tokio::test]
async fn host_header_must_name_the_connect_host() {
    let env = TestEnv::builder().start().await;
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: api.openai.com\r\nUser-Agent: OpenAI/Python 2.1.0\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    assert!(head.contains("x-aigate-reason: host_mismatch"), "{head}");
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn plain_http_to_a_vendor_is_refused_and_ip_literals_on_web_ports_too() {
    let env = TestEnv::builder().start().await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(env.proxy_url()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .post("http://api.anthropic.com/v1/messages")
        .header("user-agent", CLAUDE_UA)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "plain_http_vendor");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AI vendor hosts may only be reached over HTTPS.")
    );
    for target in [
        "127.0.0.1:443",
        "2130706433:443",
        "[::ffff:127.0.0.1]:443",
        "0x7f.1:80",
    ] {
        let refused = env.connect_raw(target, "").await.unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 403"), "{target}: {refused}");
        assert!(
            refused.contains("x-aigate-reason: ip_literal"),
            "{target}: {refused}"
        );
    }
    let refused = env
        .connect_raw("API.Anthropic.com.:8443", "")
        .await
        .unwrap_err();
    assert!(
        refused.contains("x-aigate-reason: vendor_port"),
        "{refused}"
    );
    assert!(env.vendor.requests().is_empty());
    let records = env.audit_n(6).await;
    assert_eq!(records.iter().filter(|r| r["action"] == "block").count(), 6);
}

#[tokio::test]
async fn upstream_failure_is_a_502_in_the_vendor_format() {
    let env = TestEnv::builder()
        .append(allow_sdk())
        .replace("connect_timeout = \"10s\"", "connect_timeout = \"2s\"")
        .start()
        .await;
    // A second gateway whose vendor address points at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let vendor = env.vendor_addr.to_string();
    let gw = env
        .variant("closed", |t| t.replace(&vendor, &closed.to_string()))
        .await;
    let client = client_for(&gw, "", false);
    let resp = client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    let records = records_of(&gw).await;
    let r = &records[0];
    assert_eq!(r["error"], "upstream_connect");
    assert_eq!(r["status"], 502);
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_closed_and_fail_open_forwards() {
    // /dev/full accepts the open and fails every write with ENOSPC: a disk that is full.
    let env = TestEnv::builder()
        .append(allow_sdk())
        .replace("path = \"audit.jsonl\"", "path = \"/dev/full\"")
        .start()
        .await;
    let client = env.client(false);
    let send = || {
        client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .body("{}")
            .send()
    };
    // The policy allows the call, but its decision record cannot be written: fail_closed does
    // not send it to the vendor (issue 15: a record before the vendor sees the call).
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-aigate-reason"], "audit_unavailable");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the call was not sent to the vendor"),
        "{body}"
    );
    assert!(
        env.vendor.requests().is_empty(),
        "nothing reached the vendor"
    );
    assert!(
        !env.gateway.audit().flush().await,
        "the write must be reported as failed"
    );
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-aigate-reason"], "audit_unavailable");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit log cannot be written"),
        "{body}"
    );
    assert!(
        env.vendor.requests().is_empty(),
        "the refused call never reached the vendor"
    );

    let open = env
        .variant("open", |t| {
            t.replace("on_failure = \"fail_closed\"", "on_failure = \"fail_open\"")
        })
        .await;
    let client = client_for(&open, "", false);
    for _ in 0..2 {
        let resp = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            !resp.bytes().await.unwrap().is_empty(),
            "fail_open delivers"
        );
        let _ = open.audit().flush().await;
    }
    assert!(
        open.audit()
            .health()
            .write_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// Seen from Claude Code 2.1.197: side calls with `Bun/…` and `axios/…` user agents.
#[tokio::test]
async fn claude_code_side_calls_are_identified_by_path() {
    let env = TestEnv::builder().start().await;
    for (path, ua) in [
        ("/api/eval/sdk-zAZezfDKGoZuXXKe", "Bun/1.4.0"),
        ("/api/claude_code_penguin_mode", "axios/1.15.2"),
    ] {
        let resp = env
            .client(false)
            .get(format!("https://api.anthropic.com{path}"))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }
    let records = env.audit().await;
    assert!(
        records.iter().all(|r| r["tool"] == "claude-code"
            && r["evidence"] == serde_json::json!(["path"])
            && r["tool_confidence"] == "medium"),
        "{records:#?}"
    );
    assert!(env.vendor.requests().is_empty());
}

/// A configured corporate CA is used as-is: the leaves clients see chain to it.
#[tokio::test]
async fn a_configured_corporate_ca_is_used_as_is() {
    let env = TestEnv::builder().start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Corp Egress CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(env.dir.path().join("corp-ca.pem"), cert.pem()).unwrap();
    std::fs::write(env.dir.path().join("corp-ca.key"), key.serialize_pem()).unwrap();
    let gw = env
        .variant("corp", |t| {
            t.replace(
                "# cert = \"/etc/aigate/ca-cert.pem\"\n# key = \"/etc/aigate/ca-key.pem\"",
                "cert = \"corp-ca.pem\"\nkey = \"corp-ca.key\"",
            )
        })
        .await;
    assert_eq!(gw.ca_cert_pem(), cert.pem());
    assert!(
        !env.dir.path().join("corp/ca-key.pem").exists(),
        "no CA of its own is generated"
    );
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", gw.proxy_addr)).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let resp = client
        .post("https://api.openai.com/v1/chat/completions")
        .header("user-agent", "OpenAI/Python 2.1.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the minted leaf chains to the corporate CA"
    );
}

#[tokio::test]
async fn required_proxy_auth_answers_407_and_audits_the_attempt() {
    let env = TestEnv::builder()
        .replace("require_auth = false", "require_auth = true")
        .start()
        .await;
    let refused = env
        .connect_raw("api.anthropic.com:443", "")
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 407"), "{refused}");
    assert!(
        refused.contains("proxy-authenticate: Basic realm=\"aigate\""),
        "{refused}"
    );
    let refused = env
        .connect_raw(
            "api.anthropic.com:443",
            "Proxy-Authorization: Bearer not-a-real-token-123\r\n",
        )
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 407"), "{refused}");
    let records = env.audit_n(2).await;
    assert_eq!(records[0]["error"], "proxy_auth_missing");
    assert_eq!(records[1]["error"], "proxy_auth_wrong");
    assert_eq!(records[0]["reason"], "proxy_auth");
    assert_eq!(records[1]["reason"], "proxy_auth_wrong");
    assert_eq!(
        records[1]["user"], "anonymous",
        "a bearer token names nobody"
    );
    assert!(records.iter().all(|r| r["status"] == 407));
    assert!(!env.audit_text().contains("not-a-real-token-123"));
}

/// The bytes of a real ClientHello for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn tunnel_sni_must_name_the_connect_host() {
    let env = TestEnv::builder().start().await;
    // Fronting: CONNECT to a name of our own, then ask TLS for the vendor.
    let mut s = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    s.write_all(&client_hello("api.anthropic.com"))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the fronted tunnel must be closed without passing the hello on"
    );
    // The same ClientHello for the CONNECT host passes untouched (the echo sends it back).
    let hello = client_hello("echo.internal.test");
    let mut s = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    s.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    drop(s);
    let records = env.audit_n(2).await;
    let fronted = records
        .iter()
        .find(|r| r["reason"] == "sni_mismatch")
        .expect("a sni_mismatch record");
    assert_eq!(fronted["action"], "block");
    assert_eq!(fronted["kind"], "tunnel");
    assert_eq!(fronted["error"], "sni_mismatch: api.anthropic.com");
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "not_vendor" && r["bytes_up"] == hello.len() as u64)
    );
}

#[tokio::test]
async fn h2_coalescing_onto_another_vendor_is_refused() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"h2"])
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = |authority: &str| {
        http::Request::post(format!("https://{authority}/v1/messages"))
            .header("user-agent", SDK_UA)
            .header("x-stainless-lang", "python")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap()
    };
    let first = sender.send_request(req("api.anthropic.com")).await.unwrap();
    assert_eq!(first.status(), 200);
    // A second host on the same connection, as a browser coalescing connections would.
    let second = sender.send_request(req("api.openai.com")).await.unwrap();
    assert_eq!(second.status(), 421);
    assert_eq!(second.headers()["x-aigate-reason"], "host_mismatch");
    assert_eq!(env.vendor.requests().len(), 1);
}

#[tokio::test]
async fn h2c_upgrades_are_refused() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("x-aigate-reason: upgrade_refused"), "{head}");
    assert!(env.vendor.requests().is_empty());
}

/// ALPN picks the protocol: a client that offers none is served HTTP/1.1 (and audited like any
/// other), and HTTP/2's preface without ALPN is not a way around the pipeline.
#[tokio::test]
async fn without_alpn_a_client_gets_http1_and_an_h2_preface_goes_nowhere() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let head = raw_to_close(&env, &[], b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\nConnection: close\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:.200}");
    assert!(head.contains("x-aigate-decision: allow"), "{head:.400}");
    assert_eq!(env.vendor.requests().len(), 1);

    let head = raw_to_close(&env, &[], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 4"),
        "{head:.200}"
    );
    assert_eq!(
        env.vendor.requests().len(),
        1,
        "the preface reached the vendor"
    );
}

#[tokio::test]
async fn plain_bytes_after_connect_to_a_vendor_go_nowhere() {
    let env = TestEnv::builder().start().await;
    let mut s = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    s.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        env.vendor.requests().is_empty(),
        "non-TLS bytes must never reach the vendor"
    );
    let records = env.audit_n(1).await;
    assert_eq!(records[0]["reason"], "tls_handshake");
    assert_eq!(records[0]["action"], "block");
}

#[tokio::test]
async fn vendor_hosts_in_other_spellings_are_still_intercepted() {
    let env = TestEnv::builder().start().await;
    for target in ["API.ANTHROPIC.COM:443", "api.anthropic.com.:443"] {
        let mut tls = env
            .tls_through(target, "api.anthropic.com", &[b"http/1.1"])
            .await
            .unwrap();
        tls.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: claude-cli/2.1.0 (external, cli)\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
    }
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn upstream_faults_are_502_or_504_in_the_vendor_format_and_audited() {
    let env = TestEnv::builder()
        .append(allow_sdk())
        .replace("response_timeout = \"600s\"", "response_timeout = \"1s\"")
        .start()
        .await;
    let client = env.client(true);
    let send = |path: &str| {
        client
            .post(format!("https://api.anthropic.com{path}"))
            .header("user-agent", SDK_UA)
            .body("{}")
            .send()
    };

    // A vendor that never answers: 504.
    let resp = send("/stall").await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout_error");

    // A vendor that breaks off a short answer: it is read whole before its head goes out, so
    // the client gets a clean 502.
    let resp = send("/reset").await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");

    // A vendor that breaks off a stream: the client sees the break, the record says so.
    let resp = send("/reset-stream").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a truncated body must not look complete"
    );

    // A vendor whose certificate we do not trust: 502, upstream_tls.
    let untrusted = env
        .variant("untrusted", |t| {
            let start = t.find("extra_roots = [").unwrap();
            let end = start + t[start..].find(']').unwrap() + 1;
            format!("{}extra_roots = []{}", &t[..start], &t[end..])
        })
        .await;
    let resp = crate::common::client_for(&untrusted, "", true)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let records = crate::common::records_of(&untrusted).await;
    assert_eq!(records[0]["error"], "upstream_tls");

    let records = env.audit_n(3).await;
    let errors: Vec<&str> = records
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        errors,
        vec!["upstream_timeout", "upstream_reset", "upstream_reset"],
        "{records:#?}"
    );
    assert_eq!(records[0]["status"], 504);
    assert_eq!(records[1]["status"], 502);
    assert_eq!(records[2]["status"], 200);
}

#[tokio::test]
async fn the_policy_reloads_on_change_and_an_invalid_file_keeps_the_old_one() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    let send = || {
        client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .header("x-stainless-lang", "python")
            .body("{}")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200, "monitored by default");
    let v1 = env.gateway.policy_version();

    // Ban the SDK: the open connection sees it from its next request, no restart.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, format!("{text}\n[[rules]]\nname = \"no-sdk\"\naction = \"block\"\ntools = [\"anthropic-sdk\"]\n")).unwrap();
    let mut blocked = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if send().await.unwrap().status() == 403 {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the changed policy applies without a restart");
    let v2 = env.gateway.policy_version();
    assert_ne!(v1, v2);

    // A broken file: refused with check's messages, the running policy stays.
    std::fs::write(
        &env.config_path,
        format!("{text}\n[[rules]]\nname = \"bad\"\naction = \"deny\"\n"),
    )
    .unwrap();
    let err = env.gateway.reload().unwrap_err().to_string();
    assert!(
        err.contains(
            "rules[2].action = \"deny\": unknown action; use one of allow, monitor, block"
        ),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.gateway.policy_version(), v2);
    assert_eq!(send().await.unwrap().status(), 403);

    let records = env.audit().await;
    let versions: Vec<&str> = records
        .iter()
        .map(|r| r["policy_version"].as_str().unwrap())
        .collect();
    assert_eq!(versions.first().copied(), Some(&*v1));
    assert_eq!(versions.last().copied(), Some(&*v2));
    let last = records.last().unwrap();
    assert_eq!(
        (last["rule"].as_str(), last["action"].as_str()),
        (Some("no-sdk"), Some("block"))
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_streams_in_flight_finish() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let client = env.client(false);
    let resp = client
        .post("https://api.anthropic.com/sse/v1/messages")
        .header("user-agent", SDK_UA)
        .body("{}")
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message"));

    let addr = env.gateway.proxy_addr;
    let audit_path = env.gateway.audit().path().to_path_buf();
    let TestEnv {
        gateway,
        vendor,
        dir,
        ..
    } = env;
    let drain = tokio::spawn(gateway.shutdown());
    // New clients are turned away while the stream goes on.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener must close on shutdown");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!drain.is_finished(), "shutdown waits for the open stream");

    vendor.release_sse.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(rest)
            .unwrap()
            .matches("event: message")
            .count(),
        4,
        "the stream finished whole"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .unwrap()
            .unwrap(),
        "drained before the timeout"
    );
    let text = std::fs::read_to_string(audit_path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The log ends on the shutdown's signed checkpoint, right after the stream's record.
    let [.., record, checkpoint] = &records[..] else {
        panic!("{records:?}")
    };
    assert_eq!(checkpoint["reason"], "audit_checkpoint", "{checkpoint}");
    assert_eq!(checkpoint["admin"]["cause"], "shutdown");
    assert_eq!(record["bytes_down"], 150);
    assert!(record["error"].is_null(), "{record}");
    drop(dir);
}

#[tokio::test]
async fn a_client_over_its_connection_limit_gets_a_clear_503() {
    let env = TestEnv::builder()
        .append("")
        .replace(
            "max_connections_per_client = 512",
            "max_connections_per_client = 2",
        )
        .start()
        .await;
    // Two tunnels hold the two slots (a tunnel keeps its client's slot).
    let _t1 = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    let _t2 = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    let refused = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("x-aigate-reason: connection_limit"),
        "{refused}"
    );
    drop(_t1);
    let mut ok = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if env.connect_raw("echo.internal.test:7000", "").await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a closed tunnel gives its slot back");
    let records = env.audit().await;
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "connection_limit" && r["status"] == 503)
    );
}

/// Send raw bytes on an intercepted HTTP/1.1 connection and return the status line.
async fn raw_intercepted(env: &TestEnv, bytes: &[u8]) -> String {
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Send raw bytes on an intercepted connection that offers `alpn`, and read until the gateway
/// closes it (10 s at most).
async fn raw_to_close(env: &TestEnv, alpn: &[&[u8]], bytes: &[u8]) -> String {
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", alpn)
        .await
        .unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
        .await
        .unwrap()
        .ok();
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test]
async fn hostile_requests_get_a_clear_status_and_never_reach_the_vendor() {
    let env = TestEnv::builder().append(allow_sdk()).start().await;
    let big = "a".repeat(70 * 1024);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized header",
            format!("GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nx-big: {big}\r\n\r\n")
                .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            "too many headers",
            format!("GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\n{many}\r\n")
                .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            "obs-fold",
            b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nx-a: b\r\n c\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "bad request line",
            b"GET /v1/models HTTP/9.9 extra\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (name, bytes, want) in cases {
        let got = raw_intercepted(&env, &bytes).await;
        assert!(got.starts_with(want), "{name}: {got:?}");
    }
    // The proxy leg too: an oversized CONNECT.
    let refused = env
        .connect_raw(&format!("{big}.example:443"), "")
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 4"), "{refused:.40}");
    // A head over 64 KiB is refused on the proxy leg however it arrives (hyper's buffer limit
    // alone lets one that comes in a single read through).
    let refused = env
        .connect_raw("api.anthropic.com:443", &format!("x-big: {big}\r\n"))
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused:.40}");
    assert!(
        env.vendor.requests().is_empty(),
        "{:?}",
        env.vendor
            .requests()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
}

/// CL.TE smuggling: Transfer-Encoding wins, Content-Length is dropped and the connection is
/// closed after the response (hyper, RFC 9112 6.3), so bytes hidden after the chunked body are
/// never read as a request, and never carried to the vendor inside another request's body.
#[tokio::test]
async fn a_smuggled_request_goes_nowhere() {
    let env = TestEnv::builder().start().await;
    let seen = raw_to_close(&env, &[b"http/1.1"], b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: OpenAI/Python 2.1.0\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: claude-cli/2.1.0 (external, cli)\r\nContent-Length: 2\r\n\r\n{}").await;
    assert_eq!(
        seen.matches("HTTP/1.1 ").count(),
        1,
        "one response, then the connection closes: {seen}"
    );
    let vendor = env.vendor.requests();
    assert_eq!(vendor.len(), 1);
    assert_eq!(vendor[0].path, "/v1/messages");
    assert!(
        vendor[0].body.is_empty(),
        "nothing smuggled inside the body"
    );
    let records = env.audit().await;
    assert_eq!(records.len(), 1);
    assert!(records.iter().all(|r| r["path"] != "/smuggled"));
}

/// A request that claims to be the SDK but carries Claude Code's marks: the evidence of both is
/// kept, and policy decides on Claude Code (the first signature that matches). The SDK's user
/// agent contradicts Claude Code's own, so it is a conflict even though Claude Code is built on
/// the SDK, and the record says which signals matched it.
#[tokio::test]
async fn a_forged_tool_keeps_the_conflicting_evidence() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("x-stainless-lang", "python")
        .header("anthropic-beta", "claude-code-20250219")
        .body(r#"{"model":"claude-opus-4-1","system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.197"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let records = env.audit().await;
    let r = &records[0];
    assert_eq!(r["tool"], "claude-code");
    assert_eq!(
        r["evidence"],
        serde_json::json!(["header:anthropic-beta", "body"])
    );
    assert_eq!(r["tool_conflicts"], serde_json::json!(["anthropic-sdk"]));
    assert_eq!(
        r["tool_conflict_evidence"],
        serde_json::json!(["anthropic-sdk: user-agent, header:x-stainless-lang"])
    );
    assert_eq!(r["user_agent"], SDK_UA);
}

/// Claude Code's own requests, as the real client sends them (it is built on the Anthropic
/// TypeScript SDK and sends its `x-stainless-*` headers): no conflict, so a forged one stands out.
/// The user agent is only recorded when the tool is unknown or conflicted.
#[tokio::test]
async fn a_real_claude_code_request_has_no_conflict() {
    let env = TestEnv::builder().start().await;
    let resp = claude_code_request(&env.client(false), Some("docs")).await;
    assert_eq!(resp.status(), 403);
    let records = env.audit().await;
    let r = &records[0];
    assert_eq!(
        (r["tool"].as_str(), r["tool_confidence"].as_str()),
        (Some("claude-code"), Some("high"))
    );
    assert_eq!(r["tool_conflicts"], serde_json::json!([]));
    assert!(
        r["tool_conflict_evidence"].is_null(),
        "absent when there is no conflict: {r}"
    );
    assert!(r["user_agent"].is_null(), "{r}");
}

/// Issue #14: the Python OpenAI SDK with `User-Agent: codex_exec/0.1` is Codex at medium
/// confidence, with the SDK as a conflict and the reason in the record.
#[tokio::test]
async fn a_forged_user_agent_is_a_conflict_and_the_record_says_why() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://api.openai.com/v1/chat/completions")
        .header("user-agent", "codex_exec/0.1")
        .header("x-stainless-lang", "python")
        .header("x-stainless-package-version", "2.1.0")
        .body(r#"{"model":"gpt-5-mini"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        400,
        "Codex is blocked untagged (its deny_status)"
    );
    let records = env.audit().await;
    let r = &records[0];
    assert_eq!(
        (r["tool"].as_str(), r["tool_confidence"].as_str()),
        (Some("codex-cli"), Some("medium"))
    );
    assert_eq!(r["evidence"], serde_json::json!(["user-agent"]));
    assert_eq!(r["tool_conflicts"], serde_json::json!(["openai-sdk"]));
    assert_eq!(
        r["tool_conflict_evidence"],
        serde_json::json!(["openai-sdk: header:x-stainless-lang"])
    );
    assert_eq!(r["user_agent"], "codex_exec/0.1");
}

/// A Claude-Code-shaped request as the real client sends it, with an optional workflow tag.
async fn claude_code_request(client: &reqwest::Client, tag: Option<&str>) -> reqwest::Response {
    let mut req = client
        .post("https://api.anthropic.com/v1/messages?beta=true")
        .header("user-agent", "claude-cli/2.1.197 (external, cli)")
        .header("x-app", "cli")
        .header("anthropic-beta", "claude-code-20250219,oauth-2025-04-20")
        .header("x-claude-code-session-id", "4f1c2d3e")
        .header("x-stainless-lang", "js")
        .header("x-stainless-package-version", "0.60.0");
    if let Some(tag) = tag {
        req = req.header("x-aigate-workflow", tag);
    }
    req.body(r#"{"model":"claude-opus-4-1","system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.197"}],"messages":[]}"#)
        .send()
        .await
        .unwrap()
}

/// Issue #14: the shipped policy is an allow-list. Claude Code tagged `docs`, a near-miss of a
/// protected tag, or the sanctioned tag claimed by someone who may not claim it, is blocked; the
/// sanctioned workflow, claimed by a member of its group, is monitored, never silently allowed.
/// The records keep the claimed tag, the tag that decided and why they differ.
#[tokio::test]
async fn workflow_tags_count_only_from_the_catalog_and_rival_tools_are_blocked_outside_it() {
    let token = "tok-eve-0123456789abcdef";
    let env = TestEnv::builder()
        .replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        )
        .users(&format!(
            "[[users]]\nid = \"eve\"\ngroups = [\"ai-evaluation\"]\ntokens = [\"{}\"]\n",
            aigate::identify::user::hash_token(token)
        ))
        .start()
        .await;
    let anyone = env.client(false);
    // (tag, decided workflow, claimed, workflow_reason)
    let blocked = [
        ("docs", "docs", None, None),
        ("training-data", "training-data", None, None),
        (
            "training_data",
            "untagged",
            Some("training_data"),
            Some("workflow_unknown"),
        ),
        (
            "code-analysis.",
            "untagged",
            Some("code-analysis."),
            Some("workflow_unknown"),
        ),
        (
            "Made-Up",
            "untagged",
            Some("made-up"),
            Some("workflow_unknown"),
        ),
        (
            "vendor-evaluation",
            "untagged",
            Some("vendor-evaluation"),
            Some("workflow_not_permitted"),
        ),
    ];
    for (tag, decided, claimed, why) in blocked {
        let resp = claude_code_request(&anyone, Some(tag)).await;
        assert_eq!(resp.status(), 403, "{tag}");
        assert_eq!(resp.headers()["x-aigate-reason"], "rule_matched", "{tag}");
        let id = crate::common::request_id(resp.headers());
        // The engineer learns that their tag was ignored, and why, not only that `untagged`
        // is blocked.
        let body: serde_json::Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let told = match why {
            Some("workflow_unknown") => Some("is not in the workflow catalog"),
            Some(_) => Some("you are not among the people who may claim it"),
            None => None,
        };
        match (claimed, told) {
            (Some(c), Some(t)) => assert!(
                message.contains(&format!("Your workflow tag \"{c}\" was not accepted: "))
                    && message.contains(t),
                "{tag}: {message}"
            ),
            _ => assert!(!message.contains("was not accepted"), "{tag}: {message}"),
        }
        let records = env.audit().await;
        let r = by_id(&records, &id);
        assert_eq!(
            r["rule"], "rival-coding-tools-in-protected-workflows",
            "{tag}"
        );
        assert_eq!(r["workflow"], decided, "{tag}");
        assert_eq!(r["workflow_source"], "header", "{tag}");
        assert_eq!(r["workflow_claimed"].as_str(), claimed, "{tag}");
        assert_eq!(r["workflow_reason"].as_str(), why, "{tag}");
    }
    let eve = client_for(&env.gateway, &format!("eve:{token}@"), false);
    let resp = claude_code_request(&eve, Some("vendor-evaluation")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigate-decision"], "monitor");
    let id = crate::common::request_id(resp.headers());
    drop(resp.bytes().await.unwrap());
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(
        (
            r["action"].as_str(),
            r["rule"].as_str(),
            r["workflow"].as_str(),
            r["user"].as_str()
        ),
        (
            Some("monitor"),
            Some("rival-coding-tools-in-sanctioned-evaluation"),
            Some("vendor-evaluation"),
            Some("eve")
        )
    );
    assert_eq!(r["would_block"], true);
    assert!(r["workflow_reason"].is_null(), "{r}");
    let seen = env.vendor.requests();
    assert_eq!(seen.len(), 1, "only the sanctioned call reached the vendor");
    assert!(seen[0].headers.get("x-aigate-workflow").is_none());
}

/// `unknown_workflow = "block"`: a tag that does not count is refused whatever the tool, with
/// its own reason.
#[tokio::test]
async fn unknown_workflow_block_refuses_untrusted_tags() {
    let env = TestEnv::builder()
        .replace(
            "unknown_workflow = \"untagged\"",
            "unknown_workflow = \"block\"",
        )
        .append(allow_sdk())
        .start()
        .await;
    let send = |tag: &'static str| {
        env.client(false)
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .header("x-stainless-lang", "python")
            .header("x-aigate-workflow", tag)
            .body("{}")
            .send()
    };
    for (tag, reason) in [
        ("training_data", "workflow_unknown"),
        ("vendor-evaluation", "workflow_not_permitted"),
    ] {
        let resp = send(tag).await.unwrap();
        assert_eq!(resp.status(), 403, "{tag}");
        assert_eq!(resp.headers()["x-aigate-reason"], reason, "{tag}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "permission_error");
    }
    let resp = send("docs").await.unwrap();
    assert_eq!(resp.status(), 200, "a catalogued tag still counts");
    assert_eq!(env.vendor.requests().len(), 1);
    let records = env.audit().await;
    assert_eq!(records[0]["reason"], "workflow_unknown");
    assert_eq!(records[0]["workflow_claimed"], "training_data");
    assert_eq!(records[1]["reason"], "workflow_not_permitted");
}

/// An unknown tool on a vendor host in a protected workflow gets `policy.unknown_tool` (shipped:
/// monitor), and the record keeps its user agent so IT can write a signature; in an unprotected
/// workflow it gets the default action.
#[tokio::test]
async fn an_unknown_tool_in_a_protected_workflow_is_decided_by_the_unknown_tool_setting() {
    let env = TestEnv::builder()
        .replace("unknown_tool = \"monitor\"", "unknown_tool = \"block\"")
        .start()
        .await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "homegrown-agent/0.3 (linux)")
        .header("x-aigate-workflow", "docs")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "unknown_tool");
    assert!(env.vendor.requests().is_empty());
    let records = env.audit().await;
    let r = &records[0];
    assert_eq!(
        (r["tool"].as_str(), r["action"].as_str()),
        (Some("unknown"), Some("block"))
    );
    assert_eq!(r["user_agent"], "homegrown-agent/0.3 (linux)");

    // The shipped setting: monitored, and the record says why.
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "homegrown-agent/0.3 (linux)")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-aigate-decision"], "monitor");
    let records = env.audit().await;
    // Monitored by the setting, not by a rule: no rule would have blocked it.
    assert_eq!(
        (
            records[0]["reason"].as_str(),
            records[0]["would_block"].as_bool()
        ),
        (Some("unknown_tool"), Some(false))
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    for h1_only in [false, true] {
        let env = TestEnv::builder().append(allow_sdk()).start().await;
        let client = env.client(h1_only);
        let resp = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", SDK_UA)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Not reading the body is what real clients do when they only need the status.
        drop(resp);
        let TestEnv { gateway, dir, .. } = env;
        let started = std::time::Instant::now();
        assert!(
            gateway.shutdown().await,
            "an idle keep-alive connection must not hold the drain"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "h1_only={h1_only}: {:?}",
            started.elapsed()
        );
        drop((client, dir));
    }
}

/// Slow and broken clients are cut off by the configured timeouts and never hold a slot.
#[tokio::test]
async fn slowloris_and_stalled_handshakes_are_cut_off() {
    let env = TestEnv::builder()
        .replace("header_timeout = \"30s\"", "header_timeout = \"1s\"")
        .replace("handshake_timeout = \"10s\"", "handshake_timeout = \"1s\"")
        .start()
        .await;
    let started = std::time::Instant::now();
    // Headers byte by byte, slower than the timeout allows.
    let mut s = tokio::net::TcpStream::connect(env.gateway.proxy_addr)
        .await
        .unwrap();
    let mut cut = false;
    for b in b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\nX-Slow: yes\r\n\r\n" {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut probe = [0u8; 256];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "a slowloris client must be cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A client that CONNECTs and then never finishes (or never starts) its handshake.
    let mut stalled = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    let truncated_hello = &client_hello("api.anthropic.com")[..20];
    stalled.write_all(truncated_hello).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("cut off after the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let mut silent = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("cut off after the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // TLS garbage.
    let mut garbage = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf))
        .await
        .expect("refused");
    let records = env.audit_n(3).await;
    let handshakes: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["reason"] == "tls_handshake")
        .collect();
    assert!(handshakes.len() >= 3, "{records:#?}");
    assert!(
        handshakes
            .iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains("timed out"))
    );
    assert!(env.vendor.requests().is_empty());
}

/// Idle keep-alive connections are closed, HTTP/2 with GOAWAY; a request in flight longer than
/// the idle timeout (a slow stream) is not.
#[tokio::test]
async fn idle_connections_are_closed_but_not_while_a_request_is_in_flight() {
    let env = TestEnv::builder()
        .replace("idle_timeout = \"90s\"", "idle_timeout = \"1s\"")
        .start()
        .await;
    let req = |path: &str| {
        http::Request::post(format!("https://api.anthropic.com{path}"))
            .header("user-agent", SDK_UA)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap()
    };

    // HTTP/2: a stream that stays quiet for 2 s (the vendor holds its second event) lives on.
    let tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"h2"])
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req("/sse")).await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.vendor.release_sse.notify_one();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("\"n\":2"),
        "the quiet stream finished: {body:?}"
    );
    // Then the connection is idle, and is closed.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .unwrap();

    // HTTP/1.1 keep-alive: answered, then closed once idle.
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle HTTP/1.1 connection is closed");
}

/// Issue 18: a rule that blocks a whole vendor still said "not allowed in workflow "untagged"",
/// and showed engineers the raw code "Reason: rule_matched". The message says what decided;
/// the code stays in the header and the record.
#[tokio::test]
async fn a_vendor_wide_block_is_worded_as_one() {
    let env = TestEnv::builder()
        .append(
            "\n[[rules]]\nname = \"no-anthropic\"\naction = \"block\"\nvendors = [\"anthropic\"]\n",
        )
        .start()
        .await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", SDK_UA)
        .header("x-stainless-lang", "python")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "rule_matched");
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "aigate blocked this call to Anthropic: calls to Anthropic are not allowed (rule \"no-anthropic\"). This rule allows no exemptions; contact IT if you believe this is wrong. Request id: {id}."
        )
    );
    let records = env.audit().await;
    assert_eq!(by_id(&records, &id)["reason"], "rule_matched");
}
