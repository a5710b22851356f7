//! The AI host catalog (issue 14): model APIs that aigate does not intercept are recorded as AI
//! traffic outside inspection, and policy can block or intercept them instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestEnv, by_id};

const ROOT: &str = "root-admin-token-0004";

fn with_admin_token(b: crate::common::Builder) -> crate::common::Builder {
    b.append(&format!(
        "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n",
        aigate::identify::user::hash_token(ROOT)
    ))
}

async fn admin_get(env: &TestEnv, path: &str) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}{path}", env.gateway.admin_addr))
        .bearer_auth(ROOT)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A tunnel to Mistral is tunnelled untouched, but flagged: `ai_host`, reason `ai_host`,
/// action `monitor`, a metric, and the admin API lists the catalog it came from.
#[tokio::test]
async fn a_tunnel_to_a_catalogued_model_api_is_flagged_not_anonymous() {
    let env = with_admin_token(TestEnv::builder()).start().await;
    let mut tls = env
        .tls_to_vendor_through("api.mistral.ai:443", "api.mistral.ai")
        .await
        .unwrap();
    tls.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.mistral.ai\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(tls);
    // The vendor saw the call: aigate did not inspect it.
    assert_eq!(env.vendor.requests().len(), 1);

    let records = env.audit_n(1).await;
    let r = &records[0];
    assert_eq!(r["kind"], "tunnel");
    assert_eq!(r["host"], "api.mistral.ai");
    assert_eq!(r["ai_host"], "inference-apis");
    assert_eq!(r["reason"], "ai_host");
    assert_eq!(r["action"], "monitor");
    assert!(r["bytes_up"].as_u64().unwrap() > 100);

    let (status, metrics) = admin_get(&env, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "aigate_ai_host_connections_total{group=\"inference-apis\",action=\"monitor\"} 1"
        ),
        "{metrics}"
    );
    let (status, body) = admin_get(&env, "/v1/ai-hosts").await;
    assert_eq!(status, 200, "{body}");
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!catalog["version"].as_str().unwrap().is_empty());
    let group = catalog["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "inference-apis")
        .unwrap();
    assert_eq!(group["action"], "monitor");
    assert_eq!(group["source"], "builtin");
    assert!(
        group["hosts"]
            .as_array()
            .unwrap()
            .contains(&"api.mistral.ai".into())
    );
}

/// A tunnel to a host outside the catalog stays an ordinary tunnel, with no `ai_host`.
#[tokio::test]
async fn a_host_outside_the_catalog_is_not_flagged() {
    let env = TestEnv::builder().start().await;
    let mut s = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    drop(s);
    let records = env.audit_n(1).await;
    assert_eq!(records[0]["reason"], "not_vendor");
    assert!(records[0].get("ai_host").is_none(), "{}", records[0]);
}

/// `ai_hosts.actions` blocks a group: the CONNECT is refused and the record names the group.
#[tokio::test]
async fn a_blocked_group_refuses_the_connect() {
    let env = TestEnv::builder()
        .replace(
            "[ai_hosts.actions]\n",
            "[ai_hosts.actions]\n\"inference-apis\" = \"block\"\n",
        )
        .start()
        .await;
    let head = env.connect_raw("api.groq.com:443", "").await.unwrap_err();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("x-aigate-reason: ai_host"), "{head}");
    let records = env.audit_n(1).await;
    let r = &records[0];
    assert_eq!(r["action"], "block");
    assert_eq!(r["reason"], "ai_host");
    assert_eq!(r["ai_host"], "inference-apis");
    assert_eq!(r["host"], "api.groq.com");
}

/// `intercept` makes the group a vendor: the rival tools' signatures and rules apply to it.
#[tokio::test]
async fn an_intercepted_group_is_a_vendor_and_codex_on_it_is_blocked() {
    let env = TestEnv::builder()
        .replace(
            "[ai_hosts.actions]\n",
            "[ai_hosts.actions]\n\"inference-apis\" = \"intercept\"\n",
        )
        .start()
        .await;
    let resp = env
        .client(false)
        .post("https://api.mistral.ai/v1/chat/completions")
        .header("user-agent", "codex_exec/0.171.0 (Ubuntu 24.4.0; x86_64)")
        .header("originator", "codex_exec")
        .json(&serde_json::json!({"model": "devstral-medium", "messages": []}))
        .send()
        .await
        .unwrap();
    // Codex's deny_status: it retries a 403.
    assert_eq!(resp.status(), 400);
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "aigate_blocked", "{body}");
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(r["vendor"], "inference-apis");
    assert_eq!(r["tool"], "codex-cli");
    assert_eq!(r["model"], "devstral-medium");
    assert!(env.vendor.requests().is_empty());
}

/// Side-channel tell (issue 14): Claude Code pointed at a relay outside inspection still makes
/// its side calls to api.anthropic.com; the user's AI-host tunnel right after names the tool.
#[tokio::test]
async fn an_ai_host_tunnel_after_an_identified_side_call_names_the_tool() {
    let env = TestEnv::builder()
        .replace(
            "# \"10.20.0.0/16\" = \"ci-runners\"",
            "\"127.0.0.1\" = \"alice\"",
        )
        .start()
        .await;
    // The tunnel alone: no tell.
    drop(
        env.tls_to_vendor_through("api.mistral.ai:443", "api.mistral.ai")
            .await
            .unwrap(),
    );
    let first = env.audit_n(1).await[0].clone();
    assert_eq!(first["user"], "alice");
    assert!(first.get("side_call_tool").is_none(), "{first}");

    // Claude Code's settings side call, identified (and blocked, untagged).
    let resp = env
        .client(false)
        .get("https://api.anthropic.com/api/claude_code/settings")
        .header("user-agent", "claude-cli/2.1.197 (external, cli)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    drop(
        env.tls_to_vendor_through("api.mistral.ai:443", "api.mistral.ai")
            .await
            .unwrap(),
    );
    let records = env.audit_n(3).await;
    let tunnel = records
        .iter()
        .filter(|r| r["kind"] == "tunnel")
        .nth(1)
        .unwrap();
    assert_eq!(tunnel["ai_host"], "inference-apis");
    assert_eq!(tunnel["side_call_tool"], "claude-code", "{tunnel}");
}
