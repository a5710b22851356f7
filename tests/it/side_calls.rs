//! Issue 16: Codex signed in with ChatGPT fetches its workspace config, routing, plugins and
//! models from `chatgpt.com` before its model call, and stops with its own error when one fails.
//! The shipped openai vendor lists those as `side_calls`: a block of one of them is forwarded as
//! `monitor`, reason `side_call`; the model call and everything else stays blocked, so the
//! engineer reads the model call's deny with its link (tests/clients/ runs the real Codex).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestEnv, by_id};

const UA: &str = "codex_exec/0.171.0 (Debian 12; x86_64) unknown (codex_exec; 0.171.0)";

async fn codex(env: &TestEnv, method: reqwest::Method, path: &str) -> (u16, String, String) {
    let resp = env
        .client(true)
        .request(method, format!("https://chatgpt.com{path}"))
        .header("user-agent", UA)
        .header("originator", "codex_exec")
        .header("chatgpt-account-id", "acct-1")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = crate::common::request_id(resp.headers());
    (status, id, resp.text().await.unwrap())
}

#[tokio::test]
async fn codex_start_up_side_calls_pass_as_monitored_and_its_model_call_is_refused() {
    let env = TestEnv::builder().start().await;
    let get = reqwest::Method::GET;
    let mut passed = Vec::new();
    for path in [
        "/backend-api/wham/config/bundle",
        "/backend-api/wham/accounts/check",
        "/backend-api/plugins/export/curated",
        "/backend-api/codex/models?client_version=0.171.0",
    ] {
        let (status, id, _) = codex(&env, get.clone(), path).await;
        assert_eq!(status, 200, "{path}");
        passed.push(id);
    }
    // Not a side call: the model call, a write to a listed path, a path next to a listed one,
    // and one that only normalises to a listed path's neighbour.
    let mut refused = Vec::new();
    for (method, path) in [
        (reqwest::Method::POST, "/backend-api/codex/responses"),
        (get.clone(), "/backend-api/codex/responses"),
        (reqwest::Method::POST, "/backend-api/wham/config/bundle"),
        (get.clone(), "/backend-api/wham/tasks/list"),
        (get.clone(), "/backend-api/codex/models/../responses"),
    ] {
        let (status, id, body) = codex(&env, method.clone(), path).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            body.contains("aigate blocked this call") && body.contains("/r/"),
            "{body}"
        );
        refused.push(id);
    }
    let records = env.audit().await;
    for id in &passed {
        let r = by_id(&records, id);
        assert_eq!(
            (
                r["tool"].as_str(),
                r["action"].as_str(),
                r["reason"].as_str(),
                r["rule"].as_str()
            ),
            (
                Some("codex-cli"),
                Some("monitor"),
                Some("side_call"),
                Some("rival-coding-tools-in-protected-workflows")
            ),
            "{r}"
        );
    }
    for id in &refused {
        let r = by_id(&records, id);
        assert_eq!(
            (r["action"].as_str(), r["reason"].as_str()),
            (Some("block"), Some("rule_matched")),
            "{r}"
        );
    }
    let seen: Vec<String> = env.vendor.requests().into_iter().map(|s| s.path).collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(!seen.iter().any(|p| p.contains("responses")), "{seen:?}");
}
