//! The admin API: grants that let a blocked tool through and expire on the same connection,
//! revocation, every grant rule's refusal, the role matrix, and the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::common::{TestClock, TestEnv};

pub(crate) const ALICE_PROXY: &str = "alice-proxy-token-0001";
pub(crate) const BOB_ADMIN: &str = "bob-manager-token-0002";
pub(crate) const DAVE: &str = "dave-manager-token-0003";
pub(crate) const ROOT: &str = "root-admin-token-0004";
pub(crate) const AUDITOR: &str = "auditor-token-0005";
pub(crate) const APPROVER: &str = "erin-approver-token-0006";

async fn env_with_people(clock: Option<Arc<TestClock>>) -> TestEnv {
    people(clock).start().await
}

/// The people of `env_with_people`, before the gateway starts.
pub(crate) fn people(clock: Option<Arc<TestClock>>) -> crate::common::Builder {
    let h = aigate::identify::user::hash_token;
    let mut b = TestEnv::builder()
        .replace("# users_file = \"users.toml\"", "users_file = \"users.toml\"")
        .append(&format!(
            "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n[[admin.tokens]]\nuser = \"sam\"\nroles = [\"auditor\"]\nhash = \"{}\"\n",
            h(ROOT),
            h(AUDITOR)
        ));
    if let Some(c) = clock {
        b = b.clock(c);
    }
    b.users(&format!(
        "[[users]]\nid = \"carol\"\nroles = [\"manager\"]\n\n[[users]]\nid = \"bob\"\nmanager = \"carol\"\nroles = [\"manager\"]\ntokens = [\"{}\"]\n\n[[users]]\nid = \"alice\"\nmanager = \"bob\"\ntokens = [\"{}\"]\n\n[[users]]\nid = \"dave\"\nroles = [\"manager\"]\ntokens = [\"{}\"]\n\n[[users]]\nid = \"erin\"\nroles = [\"approver\"]\ntokens = [\"{}\"]\n",
        h(BOB_ADMIN),
        h(ALICE_PROXY),
        h(DAVE),
        h(APPROVER)
    ))
}

fn admin(env: &TestEnv) -> (reqwest::Client, String) {
    (
        reqwest::Client::builder().no_proxy().build().unwrap(),
        format!("http://{}", env.gateway.admin_addr),
    )
}

pub(crate) async fn call(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (client, base) = admin(env);
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One keep-alive HTTP/1.1 connection through the gateway, as alice.
async fn alice_connection(env: &TestEnv) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    connection_as(env, "alice").await.unwrap()
}

/// A keep-alive connection with alice's token, presented as `user`.
async fn connection_as(
    env: &TestEnv,
    user: &str,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    use base64::Engine;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{ALICE_PROXY}"));
    let connect_headers = format!("Proxy-Authorization: Basic {cred}\r\n");
    let tls = env
        .tls_through_with(
            "api.anthropic.com:443",
            &connect_headers,
            "api.anthropic.com",
            &[b"http/1.1"],
        )
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn claude_call(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> u16 {
    let req = http::Request::post("/v1/messages")
        .header("host", "api.anthropic.com")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .header("x-app", "cli")
        .body(Full::new(Bytes::from_static(
            b"{\"model\":\"claude-sonnet-4-5\"}",
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn a_grant_lets_the_tool_through_until_it_expires_on_the_same_connection() {
    let clock = Arc::new(TestClock::default());
    let env = env_with_people(Some(clock.clone())).await;
    let mut conn = alice_connection(&env).await;
    assert_eq!(claude_call(&mut conn).await, 403);
    let (status, ex) = call(&env, reqwest::Method::POST, "/v1/exemptions", Some(BOB_ADMIN), Some(json!({"user": "alice", "tools": ["claude-code"], "for": "1h", "reason": "vendor bake-off", "ticket": "IT-7"}))).await;
    assert_eq!(status, 201, "{ex}");
    let id = ex["id"].as_str().unwrap().to_string();
    assert_eq!(ex["active"], true);
    assert_eq!(
        claude_call(&mut conn).await,
        200,
        "the open connection sees the grant on its next request"
    );
    clock.advance(Duration::from_secs(3601));
    assert_eq!(
        claude_call(&mut conn).await,
        403,
        "expired: the same connection is blocked again"
    );
    let records = env.audit().await;
    let requests: Vec<&Value> = records.iter().filter(|r| r["kind"] == "request").collect();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1]["reason"], "exempted");
    assert_eq!(requests[1]["exemption"], id.as_str());
    assert_eq!(requests[1]["user"], "alice");
    let admin: Vec<&Value> = records.iter().filter(|r| r["kind"] == "admin").collect();
    assert_eq!(admin.len(), 1);
    assert_eq!(admin[0]["reason"], "exemption_granted");
    assert_eq!(admin[0]["user"], "bob");
    assert_eq!(admin[0]["admin"]["reason"], "vendor bake-off");
    assert_eq!(admin[0]["admin"]["subject"], json!({"user": "alice"}));
    let chain = aigate::audit::chain::verify(std::io::BufReader::new(
        std::fs::File::open(env.gateway.audit().path()).unwrap(),
    ));
    assert!(chain.is_ok(), "{chain:?}");
}

#[tokio::test]
async fn a_revoke_takes_effect_on_the_next_request() {
    let env = env_with_people(None).await;
    let mut conn = alice_connection(&env).await;
    let (_, ex) = call(&env, reqwest::Method::POST, "/v1/exemptions", Some(ROOT), Some(json!({"user": "alice", "tools": ["claude-code"], "workflows": ["untagged"], "for": "2d", "reason": "pilot"}))).await;
    let id = ex["id"].as_str().unwrap();
    assert_eq!(claude_call(&mut conn).await, 200);
    let (status, revoked) = call(
        &env,
        reqwest::Method::DELETE,
        &format!("/v1/exemptions/{id}"),
        Some(BOB_ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_by"], "bob");
    assert_eq!(revoked["active"], false);
    assert_eq!(claude_call(&mut conn).await, 403);
    let (status, again) = call(
        &env,
        reqwest::Method::DELETE,
        &format!("/v1/exemptions/{id}"),
        Some(BOB_ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (status, again["error"].as_str().unwrap()),
        (409, format!("exemption {id:?} is already revoked").as_str())
    );
}

#[tokio::test]
async fn every_grant_rule_violation_gets_its_message_and_nothing_is_stored() {
    let env = env_with_people(None).await;
    let cases: Vec<(Value, &str, u16, &str)> = vec![
        (
            json!({"user": "alice", "tools": ["claude-code"], "reason": "x"}),
            BOB_ADMIN,
            400,
            "expires_at is required: an exemption is always time-boxed",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "expires_at": "2001-01-01T00:00:00Z", "reason": "x"}),
            BOB_ADMIN,
            400,
            "expires_at must be after starts_at and in the future",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "for": "15d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "expires_at is too far ahead: an exemption lasts at most 14 days",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "for": "1d"}),
            BOB_ADMIN,
            400,
            "reason is required: say why this exemption is needed",
        ),
        (
            json!({"user": "alice", "tools": ["claude_code"], "for": "1d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "unknown tool \"claude_code\"",
        ),
        (
            json!({"user": "alice", "tools": ["anthropic-sdk"], "for": "1d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "tool \"anthropic-sdk\" is not blocked by any exemptable rule, so there is nothing to exempt",
        ),
        (
            json!({"user": "bob", "tools": ["claude-code"], "for": "1d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "you cannot exempt yourself; ask your manager",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "workflows": ["training_data"], "for": "1d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "workflow \"training_data\" is not in the workflow catalog; known workflows are training-data, code-analysis, product-code, docs, vendor-evaluation, untagged",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "for": "1d", "reason": "x"}),
            DAVE,
            400,
            "\"dave\" is not the manager of \"alice\" (nor above them in the directory)",
        ),
        (
            json!({"group": "ml", "tools": ["claude-code"], "for": "1d", "reason": "x"}),
            BOB_ADMIN,
            400,
            "only an admin can exempt a group",
        ),
        (
            json!({"user": "alice", "tools": ["claude-code"], "for": "1d", "reason": "x", "colour": "red"}),
            BOB_ADMIN,
            400,
            "unknown field `colour`",
        ),
    ];
    for (body, token, status, message) in cases {
        let (got, resp) = call(
            &env,
            reqwest::Method::POST,
            "/v1/exemptions",
            Some(token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {resp}");
        let error = resp["error"].as_str().unwrap();
        if message.starts_with("unknown field") {
            // serde's text, with the list of fields and the position after it.
            assert!(error.contains(message), "{body}: {resp}");
        } else {
            assert_eq!(error, message, "{body}");
        }
    }
    let (_, list) = call(
        &env,
        reqwest::Method::GET,
        "/v1/exemptions",
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!(list["exemptions"], json!([]));
}

#[tokio::test]
async fn role_matrix() {
    let env = env_with_people(None).await;
    let (_, ex) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(ROOT),
        Some(json!({"user": "alice", "tools": ["claude-code"], "for": "1d", "reason": "pilot"})),
    )
    .await;
    let id = ex["id"].as_str().unwrap().to_string();
    let grant = json!({"user": "alice", "tools": ["codex-cli"], "for": "1d", "reason": "pilot"});
    // (token, POST grant, GET list count, GET one, DELETE)
    let matrix: Vec<(Option<&str>, u16, Option<usize>, u16)> = vec![
        (Some(ROOT), 201, Some(2), 200),
        (Some(BOB_ADMIN), 201, Some(3), 200),
        // An approver grants for anyone, without being their manager, and reads everything.
        (Some(APPROVER), 201, Some(4), 200),
        (Some(DAVE), 400, Some(0), 403),
        (Some(AUDITOR), 403, Some(4), 200),
        (Some(ALICE_PROXY), 401, None, 401),
        (Some("nonsense"), 401, None, 401),
        (None, 401, None, 401),
    ];
    for (token, post, count, get_one) in matrix {
        let (s, body) = call(
            &env,
            reqwest::Method::POST,
            "/v1/exemptions",
            token,
            Some(grant.clone()),
        )
        .await;
        assert_eq!(s, post, "{token:?} POST: {body}");
        let (s, list) = call(&env, reqwest::Method::GET, "/v1/exemptions", token, None).await;
        match count {
            Some(n) => assert_eq!(
                (s, list["exemptions"].as_array().unwrap().len()),
                (200, n),
                "{token:?} GET"
            ),
            None => assert_eq!(s, 401, "{token:?} GET"),
        }
        let (s, _) = call(
            &env,
            reqwest::Method::GET,
            &format!("/v1/exemptions/{id}"),
            token,
            None,
        )
        .await;
        assert_eq!(s, get_one, "{token:?} GET one");
    }
    for (token, status) in [
        (None, 401),
        (Some(AUDITOR), 403),
        (Some(DAVE), 403),
        (Some(BOB_ADMIN), 200),
    ] {
        let (s, body) = call(
            &env,
            reqwest::Method::DELETE,
            &format!("/v1/exemptions/{id}"),
            token,
            None,
        )
        .await;
        assert_eq!(s, status, "{token:?} DELETE: {body}");
    }
    let (s, _) = call(&env, reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&env, reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200);
    let records = env.audit().await;
    let denied = records
        .iter()
        .filter(|r| r["kind"] == "admin" && r["reason"] == "admin_denied")
        .count();
    assert!(denied >= 10, "refusals are audited: {denied}");
    assert!(
        !env.audit_text().contains("nonsense") && !env.audit_text().contains(ROOT),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_with_a_reason() {
    let env = env_with_people(None).await;
    let (client, base) = admin(&env);
    let big = "x".repeat(100 * 1024);
    let resp = client
        .post(format!("{base}/v1/exemptions"))
        .bearer_auth(ROOT)
        .header("content-type", "application/json")
        .body(format!("{{\"reason\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client
        .post(format!("{base}/v1/exemptions"))
        .bearer_auth(ROOT)
        .header("content-type", "application/json")
        .body("{\"user\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("EOF"), "{body}");
}

#[tokio::test]
async fn a_reloaded_users_file_changes_who_a_token_belongs_to_without_dropping_connections() {
    let env = env_with_people(None).await;
    let mut open_conn = alice_connection(&env).await;
    assert_eq!(claude_call(&mut open_conn).await, 403);
    // IT regenerates the file: the token now belongs to "alice2", whose default workflow is the
    // sanctioned (monitored) one.
    let h = aigate::identify::user::hash_token;
    std::fs::write(
        env.dir.path().join("users.toml"),
        format!(
            "[[users]]\nid = \"alice2\"\ndefault_workflow = \"vendor-evaluation\"\ntokens = [\"{}\"]\n",
            h(ALICE_PROXY)
        ),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(mut fresh) = connection_as(&env, "alice2").await else {
            continue;
        };
        if claude_call(&mut fresh).await == 200 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new directory applies to new connections");
    assert_eq!(
        claude_call(&mut open_conn).await,
        403,
        "the open connection keeps working (and its identity)"
    );
    let records = env.audit().await;
    assert_eq!(records.last().unwrap()["user"], "alice");
    assert!(records.iter().any(|r| r["user"] == "alice2"
        && r["workflow"] == "vendor-evaluation"
        && r["status"] == 200));
}

#[tokio::test]
async fn audit_explain_and_metrics_for_security() {
    let env = env_with_people(None).await;
    let client = env.client(false);
    for i in 0..7 {
        let ua = if i % 2 == 0 {
            "claude-cli/2.1.0 (external, cli)"
        } else {
            "Anthropic/Python 0.69.0"
        };
        let _ = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", ua)
            .body("{}")
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    // Newest first, paginated with a cursor, filtered.
    let (s, page1) = call(
        &env,
        reqwest::Method::GET,
        "/v1/audit?action=block&tool=claude-code&limit=3&since=1h",
        Some(AUDITOR),
        None,
    )
    .await;
    assert_eq!(s, 200, "{page1}");
    let recs = page1["records"].as_array().unwrap();
    assert_eq!(recs.len(), 3);
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert!(
        recs.iter()
            .all(|r| r["tool"] == "claude-code" && r["action"] == "block")
    );
    let cursor = page1["next_cursor"].as_u64().unwrap();
    let (_, page2) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/audit?action=block&tool=claude-code&limit=3&cursor={cursor}"),
        Some(AUDITOR),
        None,
    )
    .await;
    let recs2 = page2["records"].as_array().unwrap();
    assert_eq!(recs2.len(), 1, "4 blocked calls in all");
    assert!(page2["next_cursor"].is_null());
    let (s, bad) = call(
        &env,
        reqwest::Method::GET,
        "/v1/audit?action=deny",
        Some(AUDITOR),
        None,
    )
    .await;
    assert_eq!(
        (s, bad["error"].as_str().unwrap()),
        (
            400,
            "action = \"deny\": use allow, monitor, block or abandoned"
        )
    );
    let (s, mine) = call(
        &env,
        reqwest::Method::GET,
        "/v1/audit",
        Some(BOB_ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (s, mine["records"].as_array().unwrap().len()),
        (200, 0),
        "a manager sees only their reports' records; these calls were anonymous: {mine}"
    );
    let (s, _) = call(&env, reqwest::Method::GET, "/v1/audit", None, None).await;
    assert_eq!(s, 401);

    // explain answers as the CLI does, with the live exemptions.
    let body = json!({"host": "api.anthropic.com", "path": "/v1/messages", "headers": {"user-agent": "claude-cli/2.1.0", "x-app": "cli"}, "user": "alice"});
    let (s, report) = call(
        &env,
        reqwest::Method::POST,
        "/v1/explain",
        Some(BOB_ADMIN),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        (report["action"].as_str(), report["rule"].as_str()),
        (
            Some("block"),
            Some("rival-coding-tools-in-protected-workflows")
        )
    );
    let (_, _) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(BOB_ADMIN),
        Some(json!({"user": "alice", "tools": ["claude-code"], "for": "1h", "reason": "pilot"})),
    )
    .await;
    let (_, report) = call(
        &env,
        reqwest::Method::POST,
        "/v1/explain",
        Some(AUDITOR),
        Some(body),
    )
    .await;
    assert_eq!(
        (report["action"].as_str(), report["reason"].as_str()),
        (Some("allow"), Some("exempted"))
    );

    // The monitored calls' outcomes (which the metrics count) come through the provenance
    // capture, after the ledger's next sync: wait for them.
    crate::common::raw_records_of(&env.gateway).await;
    let (s, text) = call(&env, reqwest::Method::GET, "/metrics", Some(AUDITOR), None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains("aigate_requests_total{kind=\"request\",vendor=\"anthropic\",tool=\"claude-code\",action=\"block\",reason=\"rule_matched\"} 4"), "{text}");
    assert!(text.contains("aigate_exemptions_active 1"), "{text}");
    assert!(
        text.contains("aigate_request_duration_seconds_count{vendor=\"anthropic\"} 7"),
        "{text}"
    );
    assert!(text.contains("aigate_audit_write_errors_total 0"));
    assert!(!text.contains("alice"), "no per-user labels");
    let (s, _) = call(&env, reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(s, 401);
}

/// A manager looks up the record of the request id one of their people was blocked with, and
/// sees nobody else's: the directory's manager chain scopes `/v1/audit`.
#[tokio::test]
async fn a_manager_reads_the_audit_records_of_their_reports_only() {
    let env = env_with_people(None).await;
    let mut alice = alice_connection(&env).await;
    let req = http::Request::post("/v1/messages")
        .header("host", "api.anthropic.com")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .header("x-app", "cli")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = alice.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    let alice_id = crate::common::request_id(resp.headers());
    let _ = resp.into_body().collect().await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .body("{}")
        .send()
        .await
        .unwrap();
    let other_id = crate::common::request_id(resp.headers());
    drop(resp.bytes().await);

    let records_for = |token: &'static str, id: String| {
        let env = &env;
        async move {
            let (s, page) = call(
                env,
                reqwest::Method::GET,
                &format!("/v1/audit?id={id}"),
                Some(token),
                None,
            )
            .await;
            assert_eq!(s, 200, "{page}");
            page["records"].as_array().unwrap().clone()
        }
    };
    // bob manages alice: her blocked request, with the rule that blocked it.
    let found = records_for(BOB_ADMIN, alice_id.clone()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            found[0]["user"].as_str(),
            found[0]["action"].as_str(),
            found[0]["rule"].as_str()
        ),
        (
            Some("alice"),
            Some("block"),
            Some("rival-coding-tools-in-protected-workflows")
        )
    );
    // Not a report's record: not visible to bob, though the auditor sees it.
    assert!(records_for(BOB_ADMIN, other_id.clone()).await.is_empty());
    assert_eq!(records_for(AUDITOR, other_id).await.len(), 1);
    // dave manages nobody: alice's record is not his to see.
    assert!(records_for(DAVE, alice_id).await.is_empty());
    // Unfiltered, bob's page holds alice's records and nobody else's.
    let (_, page) = call(
        &env,
        reqwest::Method::GET,
        "/v1/audit",
        Some(BOB_ADMIN),
        None,
    )
    .await;
    let users: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| *u == "alice"),
        "{users:?}"
    );
    // Counts are scoped the same way.
    let (s, summary) = call(
        &env,
        reqwest::Method::GET,
        "/v1/audit?group_by=user",
        Some(BOB_ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(
        summary["groups"],
        json!([{"user": "alice", "count": users.len()}])
    );
}

/// The `aigate exemption` CLI, as a manager at a terminal uses it.
#[tokio::test]
async fn the_exemption_cli_grants_lists_shows_and_revokes() {
    let env = env_with_people(None).await;
    let admin_url = format!("http://{}", env.gateway.admin_addr);
    let run = |args: Vec<String>, token: &'static str| {
        let admin_url = admin_url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
                .args(["exemption", "--admin", &admin_url])
                .args(args)
                .env("AIGATE_TOKEN", token)
                .env("RUST_LOG", "off")
                .output()
                .unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (code, out, err) = run(
        s(&[
            "grant",
            "--user",
            "alice",
            "--tool",
            "claude-code",
            "--workflow",
            "code-analysis",
            "--for",
            "3d",
            "--reason",
            "bake-off",
            "--ticket",
            "IT-9",
            "--format",
            "json",
        ]),
        BOB_ADMIN,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let granted: Value = serde_json::from_str(&out).unwrap();
    let id = granted["id"].as_str().unwrap().to_string();
    assert_eq!(granted["ticket"], "IT-9");
    let (code, out, _) = run(s(&["list", "--active"]), BOB_ADMIN).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.starts_with("ID "), "{out}");
    assert!(
        out.contains(&id)
            && out.contains("user:alice")
            && out.contains("claude-code")
            && out.contains("code-analysis")
            && out.contains("bake-off"),
        "{out}"
    );
    let (code, out, _) = run(
        vec!["show".into(), id.clone(), "--format".into(), "json".into()],
        AUDITOR,
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["active"], true);
    let (code, _, err) = run(vec!["revoke".into(), id.clone()], AUDITOR)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("refused (403 Forbidden): sam may not do this"),
        "{err}"
    );
    let (code, out, _) = run(vec!["revoke".into(), id.clone()], BOB_ADMIN)
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains(" no "), "{out}");
    let (code, _, err) = run(
        s(&[
            "grant",
            "--user",
            "alice",
            "--tool",
            "claude-code",
            "--for",
            "30d",
            "--reason",
            "x",
        ]),
        BOB_ADMIN,
    )
    .await
    .unwrap();
    assert_eq!(code, 64);
    assert_eq!(
        err,
        "aigate: refused (400 Bad Request): expires_at is too far ahead: an exemption lasts at most 14 days\n"
    );
}

/// `aigate doctor` against a running gateway: one line per check, a fix for each failure.
#[tokio::test]
async fn doctor_reports_each_check() {
    let env = TestEnv::builder().start().await;
    let proxy = env.gateway.proxy_addr.to_string();
    let cfg = env.config_path.clone();
    let run = move |vars: Vec<(&'static str, String)>| {
        let proxy = proxy.clone();
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"));
            cmd.args([
                "doctor",
                "--config",
                cfg.to_str().unwrap(),
                "--proxy",
                &proxy,
            ])
            .env("RUST_LOG", "off");
            for v in [
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
                "NO_PROXY",
                "no_proxy",
                "NODE_EXTRA_CA_CERTS",
                "SSL_CERT_FILE",
                "CODEX_CA_CERTIFICATE",
            ] {
                cmd.env_remove(v);
            }
            for (k, v) in vars {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            (
                out.status.code().unwrap(),
                String::from_utf8(out.stdout).unwrap(),
            )
        })
    };
    let proxy = env.gateway.proxy_addr.to_string();
    let (code, out) = run(vec![("HTTPS_PROXY", format!("http://{proxy}"))])
        .await
        .unwrap();
    assert_eq!(code, 1, "the test CA is not in this machine's store: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "FAIL  the aigate CA is trusted by this machine's store: install it: aigate ca export"
        ),
        "{out}"
    );
    assert_eq!(lines[1], "ok    HTTPS_PROXY points at the gateway");
    assert!(
        lines.contains(&"ok    api.anthropic.com resolves on this machine"),
        "{out}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!("ok    a CONNECT to api.anthropic.com through {proxy} is intercepted by aigate")
    );

    let (code, out) = run(vec![("NO_PROXY", "localhost,.anthropic.com".into())])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "FAIL  HTTPS_PROXY is set: export HTTPS_PROXY=http://{proxy}"
        )),
        "{out}"
    );
    assert!(out.contains("FAIL  NO_PROXY leaves the vendor hosts to the proxy: NO_PROXY exempts .anthropic.com; remove those entries"), "{out}");

    // Issue 18: the quickstart's own method, NODE_EXTRA_CA_CERTS, counts as trusting the CA.
    let ca = std::path::absolute(env.gateway.ca_cert_path()).unwrap();
    let (code, out) = run(vec![
        ("HTTPS_PROXY", format!("http://{proxy}")),
        ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
    ])
    .await
    .unwrap();
    // (The exit code is 1 only for vendor names this sandbox cannot resolve.)
    let _ = code;
    assert!(!out.contains("FAIL  the aigate CA"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ok    NODE_EXTRA_CA_CERTS holds the aigate CA (Claude Code, Gemini CLI, Copilot CLI, Node SDKs)"
    );
    assert_eq!(
        lines[1],
        "ok    the aigate CA is trusted through this machine's tool variables: NODE_EXTRA_CA_CERTS (not in the system store: other programs, such as curl, do not trust it)"
    );
    // A variable naming some other CA is a failure with its fix.
    let other = env.dir.path().join("other-ca.pem");
    std::fs::write(&other, another_ca()).unwrap();
    let (code, out) = run(vec![
        ("HTTPS_PROXY", format!("http://{proxy}")),
        ("SSL_CERT_FILE", other.display().to_string()),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  SSL_CERT_FILE holds the aigate CA (Python SDKs, Codex CLI): SSL_CERT_FILE={} does not hold this gateway's CA: aigate ca export > {}",
            other.display(),
            other.display()
        )),
        "{out}"
    );
}

/// A PEM certificate that is not the gateway's: a CA generated elsewhere.
fn another_ca() -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aigate::config::load(None).unwrap();
    aigate::tls::CertificateAuthority::load_or_create(&cfg.ca, dir.path())
        .unwrap()
        .cert_pem()
        .to_string()
}

/// Issue 15: a manager chained 26 grants of 14 days with future `starts_at` values, and the
/// report was exempt for a year; `starts_at` 30 days in the past made a 43-day grant. Through
/// the real admin API: the second back-to-back grant is refused with the rule and the grants
/// that count, and so are a back-dated and a far-future start.
#[tokio::test]
async fn chained_and_back_dated_grants_are_refused() {
    let env = env_with_people(None).await;
    let at = |from_now: i64| {
        let now = std::time::SystemTime::now();
        let t = if from_now >= 0 {
            now + Duration::from_secs(from_now as u64)
        } else {
            now - Duration::from_secs(from_now.unsigned_abs())
        };
        humantime::format_rfc3339_seconds(t).to_string()
    };
    const DAY: i64 = 86_400;
    let grant = |starts: String, days: i64| json!({"user": "alice", "tools": ["claude-code"], "starts_at": starts, "for": format!("{days}d"), "reason": "pilot"});
    let (status, first) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(BOB_ADMIN),
        Some(grant(at(0), 14)),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_str().unwrap();
    let (status, refused) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(BOB_ADMIN),
        Some(grant(at(14 * DAY), 14)),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.starts_with(
            "user \"alice\" would be exempt from claude-code for 28 days within 30 days; at most 14 days of cover in any 30 days (admin.max_exemption, admin.exemption_window)"
        ) && message.contains(first_id),
        "{message}"
    );
    // Once the first grant has left the window, the next one fits.
    let (status, body) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(BOB_ADMIN),
        Some(grant(at(30 * DAY), 14)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, refused) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(ROOT),
        Some(json!({"user": "alice", "tools": ["claude-code"], "starts_at": at(-30 * DAY), "expires_at": at(13 * DAY), "reason": "back-dated"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        refused["error"],
        "starts_at is in the past: an exemption starts now or later (at most 5 minutes earlier, for clock skew)"
    );
    let (status, refused) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(ROOT),
        Some(grant(at(45 * DAY), 1)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        refused["error"],
        "starts_at is too far ahead: an exemption starts at most 30 days from now (admin.max_exemption_lead)"
    );
}

/// Issue 15: the cover check read the stored grants without a lock, so grants sent at the same
/// moment could each fit a limit they exceed together. Twenty one-day grants for one subject on
/// different days, sent at once: each fits alone, together they are 20 days where 14 are allowed
/// in any 30. Exactly 14 are accepted and stored. Ten subjects in turn: without the lock about
/// two bursts in three showed the race (measured), so ten leave it no room to hide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_stay_within_the_cover_limit() {
    // Room for all twenty connections at once (the shipped limit per client is 16).
    let env = people(None)
        .replace(
            "max_connections_per_client = 16",
            "max_connections_per_client = 64",
        )
        .start()
        .await;
    const DAY: u64 = 86_400;
    let now = std::time::SystemTime::now();
    for round in 0..10 {
        let group = format!("race-{round}");
        let grants = (0..20u64).map(|i| {
            let starts = now + Duration::from_secs(i * DAY + 60);
            let body = json!({"group": &group, "tools": ["claude-code"], "reason": "race",
                "starts_at": humantime::format_rfc3339_seconds(starts).to_string(), "for": "1d"});
            call(
                &env,
                reqwest::Method::POST,
                "/v1/exemptions",
                Some(ROOT),
                Some(body),
            )
        });
        let results = futures_util::future::join_all(grants).await;
        for (status, body) in &results {
            assert!(*status == 201 || *status == 400, "{status} {body}");
        }
        let accepted = results.iter().filter(|(s, _)| *s == 201).count();
        let (status, list) = call(
            &env,
            reqwest::Method::GET,
            &format!("/v1/exemptions?subject=group:{group}"),
            Some(ROOT),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let stored = list["exemptions"].as_array().unwrap().len();
        assert_eq!((accepted, stored), (14, 14), "grants for group {group}");
    }
}

/// Issue 15: a manager's `reason` with terminal escape sequences was printed raw by
/// `aigate exemption list` (a fake row, a cleared screen). Typed text is escaped in the table;
/// JSON keeps it exact.
#[tokio::test]
async fn typed_text_is_escaped_in_the_terminal() {
    let env = env_with_people(None).await;
    let hostile = "pilot\u{1b}[2J\u{1b}[H\rex-fake  user:bob  all\nsecond line\u{202e}";
    let (status, body) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(BOB_ADMIN),
        Some(json!({"user": "alice", "tools": ["claude-code"], "for": "1d", "reason": hostile, "ticket": "IT-1\u{7}"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let admin_url = format!("http://{}", env.gateway.admin_addr);
    let cli = move |args: &'static [&'static str]| {
        let admin_url = admin_url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
                .args(["exemption", "--admin", &admin_url])
                .args(args)
                .env("AIGATE_TOKEN", AUDITOR)
                .env("RUST_LOG", "off")
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let table = cli(&["list"]).await.unwrap();
    assert!(
        !table
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{table:?}"
    );
    assert_eq!(table.lines().count(), 2, "a header and one row: {table:?}");
    assert!(
        table.contains("pilot\\u{1b}[2J\\u{1b}[H\\rex-fake  user:bob  all\\nsecond line\\u{202e}"),
        "{table:?}"
    );
    let json: Value =
        serde_json::from_str(&cli(&["list", "--format", "json"]).await.unwrap()).unwrap();
    assert_eq!(json["exemptions"][0]["id"], id.as_str());
    assert_eq!(
        json["exemptions"][0]["reason"], hostile,
        "JSON keeps the text exact"
    );
}

/// A long SSE stream is one row in `/v1/audit` while it is open, with its progress (bytes so
/// far), and one finished row once it ends: its decision, progress and outcome records joined.
#[tokio::test]
async fn a_live_stream_is_one_open_row_with_its_progress_then_one_finished_row() {
    let env = TestEnv::builder()
        .replace("progress_interval = \"60s\"", "progress_interval = \"1s\"")
        .append(&format!(
            "\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n\n[[admin.tokens]]\nuser = \"sam\"\nroles = [\"auditor\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(AUDITOR)
        ))
        .start()
        .await;
    let resp = env
        .client(false)
        .post("https://api.anthropic.com/sse/v1/messages")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body("{\"stream\":true}")
        .send()
        .await
        .unwrap();
    let id = crate::common::request_id(resp.headers());
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    let rows_of = |page: &Value| -> Vec<Value> {
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["id"] == id.as_str())
            .cloned()
            .collect()
    };
    // Open: shown by its newest progress record.
    let mut live = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (s, page) = call(&env, reqwest::Method::GET, "/v1/audit", Some(AUDITOR), None).await;
        assert_eq!(s, 200, "{page}");
        live = rows_of(&page);
        if live.len() == 1 && live[0]["duration_ms"].as_f64().unwrap() >= 1000.0 {
            break;
        }
    }
    assert_eq!(live.len(), 1, "one row while open: {live:#?}");
    let row = &live[0];
    assert_eq!(row["kind"], "request");
    assert_eq!(row["outcome_follows"], true, "{row}");
    assert!(row["duration_ms"].as_f64().unwrap() >= 1000.0, "{row}");
    assert_eq!(
        row["bytes_down"].as_u64().unwrap(),
        first.len() as u64,
        "{row}"
    );
    let raw = crate::common::raw_records_of(&env.gateway).await;
    let kinds: Vec<&str> = raw
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"request"));
    assert!(
        kinds[1..].iter().all(|k| *k == "progress") && kinds.len() >= 2,
        "{kinds:?}"
    );

    env.vendor.release_sse.notify_one();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    env.audit_n(1).await;
    let (_, page) = call(&env, reqwest::Method::GET, "/v1/audit", Some(AUDITOR), None).await;
    let done = rows_of(&page);
    assert_eq!(done.len(), 1, "one row once finished: {done:#?}");
    assert_eq!(done[0]["status"], 200);
    assert_eq!(done[0]["bytes_down"].as_u64().unwrap(), 5 * 30);
    assert!(done[0]["outcome_follows"].is_null(), "{}", done[0]);
}

/// A fresh machine: no users file entry and no proxy credentials, yet a blocked loopback client
/// is the account that runs aigate (`identity.local_account`, shipped on), so the record and the
/// deny message name a person and an admin can exempt them. Anonymous, it could never be.
#[tokio::test]
async fn a_loopback_client_is_the_local_account_and_can_be_exempted() {
    const IT: &str = "it-admin-token-0006";
    let env = people(None)
        .replace("local_account = false", "local_account = true")
        .append(&format!(
            "\n[[admin.tokens]]\nuser = \"it-admin\"\nroles = [\"admin\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(IT)
        ))
        .start()
        .await;
    let me = aigate::identify::local_account::name();
    let tls = env
        .tls_through_with(
            "api.anthropic.com:443",
            "",
            "api.anthropic.com",
            &[b"http/1.1"],
        )
        .await
        .unwrap();
    let (mut conn, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(c);
    assert_eq!(claude_call(&mut conn).await, 403);
    let records = env.audit().await;
    let r = records.last().unwrap();
    assert_eq!(
        (r["user"].as_str(), r["user_source"].as_str()),
        (Some(me.as_str()), Some("source_address")),
        "{r}"
    );
    let (status, resp) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(IT),
        Some(json!({"user": me, "tools": ["claude-code"], "for": "1h", "reason": "first try"})),
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(
        claude_call(&mut conn).await,
        200,
        "the same connection, now exempt"
    );
    // A manager still manages only their reports: the local account has no manager.
    let (status, resp) = call(
        &env,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(DAVE),
        Some(json!({"user": me, "tools": ["claude-code"], "for": "1h", "reason": "x"})),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
}
