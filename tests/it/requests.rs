//! Issue 16, the request loop over the JSON API: a blocked call's deny message links to a
//! draft, the engineer submits a request, approvers are told by webhook, a manager approves
//! through the grant rules, and the very same keep-alive connection's next call is exempt;
//! denial, expiry, unknown and expired links, guessing, and who may decide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::admin::{ALICE_PROXY, APPROVER, AUDITOR, BOB_ADMIN, DAVE, call, people};
use crate::common::{TestClock, TestEnv};

pub(crate) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive connection through the gateway as `user` with `token`.
pub(crate) async fn connection(env: &TestEnv, user: &str, token: &str) -> Sender {
    use base64::Engine;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    let tls = env
        .tls_through_with(
            "api.anthropic.com:443",
            &format!("Proxy-Authorization: Basic {cred}\r\n"),
            "api.anthropic.com",
            &[b"http/1.1"],
        )
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A Claude Code call; the status and the message an engineer reads.
pub(crate) async fn claude(sender: &mut Sender) -> (u16, String, String) {
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
    let id = resp
        .headers()
        .get("x-aigate-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, message, id)
}

/// The draft id of the `…/r/{id}` link in a deny message, which must be on the message's one
/// line and end at a space.
pub(crate) fn link_id(env: &TestEnv, message: &str) -> String {
    assert!(!message.contains('\n'), "one line: {message}");
    let base = format!("http://{}/r/", env.gateway.admin_addr);
    let at = message
        .find(&base)
        .unwrap_or_else(|| panic!("no {base}… link in {message:?}"));
    let rest = &message[at + base.len()..];
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(id.len(), 16, "{message}");
    assert!(
        rest[16..].starts_with(' '),
        "the link ends at a space: {message}"
    );
    id
}

/// A webhook receiver on 127.0.0.1:0: a real hyper server that keeps every body it is sent.
/// The first `fail_first` deliveries are answered 503, to see the retry.
pub(crate) async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<(String, Value)>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = got.clone();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(fail_first));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let failures = failures.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let fail = failures
                                .fetch_update(
                                    std::sync::atomic::Ordering::SeqCst,
                                    std::sync::atomic::Ordering::SeqCst,
                                    |n| n.checked_sub(1),
                                )
                                .is_ok();
                            let status = if fail {
                                503
                            } else {
                                seen.lock()
                                    .unwrap()
                                    .push((path, serde_json::from_slice(&body).unwrap()));
                                200
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

pub(crate) async fn wait_for(
    got: &Arc<Mutex<Vec<(String, Value)>>>,
    n: usize,
) -> Vec<(String, Value)> {
    for _ in 0..200 {
        let g = got.lock().unwrap().clone();
        if g.len() >= n {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} webhook deliveries: {:?}",
        got.lock().unwrap()
    );
}

pub(crate) fn hooks(addr: SocketAddr) -> String {
    format!(
        "\n[[console.notify]]\nurl = \"http://{addr}/approvers\"\nevents = [\"requested\"]\n\n[[console.notify]]\nurl = \"http://{addr}/slack\"\nformat = \"slack\"\n\n[[console.notify]]\nurl = \"http://{addr}/alice\"\nevents = [\"approved\", \"denied\", \"expired\"]\nusers = [\"alice\"]\n"
    )
}

#[tokio::test]
async fn the_loop_from_a_blocked_call_to_the_same_connections_next_call_exempt() {
    let (hook_addr, got) = receiver(1).await;
    let env = people(None).append(&hooks(hook_addr)).start().await;
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (status, message, blocked_id) = claude(&mut conn).await;
    assert_eq!(status, 403);
    let draft = link_id(&env, &message);
    // A retry reuses the link: Codex retries a 403 five times.
    let (_, again, _) = claude(&mut conn).await;
    assert_eq!(link_id(&env, &again), draft);

    // The link, without a token: what was blocked.
    let (s, d) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/drafts/{draft}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["draft"]["user"], "alice");
    assert_eq!(d["draft"]["tool"], "claude-code");
    assert_eq!(d["draft"]["workflow"], "untagged");
    assert_eq!(d["draft"]["record_id"], blocked_id.as_str());
    assert_eq!(
        d["draft"]["rule"],
        "rival-coding-tools-in-protected-workflows"
    );

    let submit =
        |j: &str| json!({"draft": draft, "justification": j, "duration": "1d", "ticket": "IT-9"});
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "duration": "1d"})),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (
            400,
            "justification is required: say why you need Claude Code and for what"
        )
    );
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "justification": "x", "duration": "15d"})),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (
            400,
            "duration is too long: an exemption lasts at most 14 days (admin.max_exemption)"
        )
    );
    let (s, r) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(submit("vendor bake-off for Q3")),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let rq = r["id"].as_str().unwrap().to_string();
    assert!(rq.starts_with("rq-"));
    assert_eq!(r["state"], "open");
    // One open request per user, tool and workflow: a second submit shows the open one.
    let (s, r2) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(submit("again")),
    )
    .await;
    assert_eq!(
        (s, r2["id"].as_str(), r2["existing"].as_bool()),
        (200, Some(rq.as_str()), Some(true))
    );

    // Still blocked, and the deny message says the request is waiting, and for whom.
    let (s, waiting, _) = claude(&mut conn).await;
    assert_eq!(s, 403);
    assert!(
        waiting.contains(&format!("Your request {rq} is waiting for bob since ")),
        "{waiting}"
    );

    // Approvers were told (the receiver failed the first delivery: retried).
    let hooks = wait_for(&got, 2).await;
    let approvers = hooks
        .iter()
        .find(|(p, _)| p == "/approvers")
        .unwrap()
        .1
        .clone();
    assert_eq!(approvers["event"], "requested");
    assert_eq!(approvers["request"]["id"], rq.as_str());
    assert_eq!(
        approvers["request"]["justification"],
        "vendor bake-off for Q3"
    );
    assert_eq!(
        approvers["approvers"],
        json!(["bob", "carol", "erin", "root"])
    );
    assert!(
        !approvers.to_string().contains(&draft),
        "the draft id is a capability: never in a payload"
    );
    let slack = hooks.iter().find(|(p, _)| p == "/slack").unwrap().1.clone();
    assert!(
        slack["text"].as_str().unwrap().starts_with(
            "alice asks for an exemption: Claude Code in workflow \"untagged\" for 1 day"
        ),
        "{slack}"
    );

    // Who may decide: not an auditor, not a manager of someone else, not the requester.
    let approve = format!("/v1/requests/{rq}/approve");
    let (s, _) = call(
        &env,
        reqwest::Method::POST,
        &approve,
        Some(AUDITOR),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &approve,
        Some(DAVE),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, list) = call(&env, reqwest::Method::GET, "/v1/requests", Some(DAVE), None).await;
    assert_eq!(
        (s, list["requests"].as_array().unwrap().len()),
        (200, 0),
        "not dave's report"
    );
    let (s, list) = call(
        &env,
        reqwest::Method::GET,
        "/v1/requests?state=open",
        Some(AUDITOR),
        None,
    )
    .await;
    assert_eq!(
        (s, list["requests"].as_array().unwrap().len()),
        (200, 1),
        "auditors read"
    );
    let (s, _) = call(
        &env,
        reqwest::Method::POST,
        &approve,
        Some(BOB_ADMIN),
        Some(json!({"duration": "2d"})),
    )
    .await;
    assert_eq!(s, 400, "never longer than asked");

    let (s, ok) = call(
        &env,
        reqwest::Method::POST,
        &approve,
        Some(BOB_ADMIN),
        Some(json!({"duration": "1h", "comment": "one hour is enough"})),
    )
    .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["state"], "approved");
    let ex = ok["exemption"].as_str().unwrap().to_string();
    assert_eq!(ok["granted"]["id"], ex.as_str());
    assert_eq!(
        ok["granted"]["request"],
        rq.as_str(),
        "the exemption carries the request"
    );
    assert_eq!(ok["granted"]["workflows"], json!(["untagged"]));
    let (s, _) = call(
        &env,
        reqwest::Method::POST,
        &approve,
        Some(APPROVER),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 409, "decided once");

    // The very same keep-alive connection: the next call goes through, exempt.
    let (s, _, passed_id) = claude(&mut conn).await;
    assert_eq!(s, 200);
    let records = env.audit().await;
    let passed = crate::common::by_id(&records, &passed_id);
    assert_eq!(passed["reason"], "exempted");
    assert_eq!(passed["exemption"], ex.as_str());
    let story: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "admin" && r["reason"].as_str().unwrap().starts_with("exemption"))
        .map(|r| (r["reason"].as_str().unwrap(), r["user"].as_str().unwrap()))
        .collect();
    assert_eq!(
        story,
        vec![
            ("exemption_requested", "alice"),
            ("exemption_granted", "bob"),
            ("exemption_request_approved", "bob")
        ]
    );
    let approved = records
        .iter()
        .find(|r| r["reason"] == "exemption_request_approved")
        .unwrap();
    assert_eq!(approved["exemption"], ex.as_str());
    assert_eq!(
        approved["admin"]["request"]["record_id"],
        blocked_id.as_str()
    );
    // The requester's own hook hears of the decision.
    let hooks = wait_for(&got, 4).await;
    let mine = hooks.iter().find(|(p, _)| p == "/alice").unwrap().1.clone();
    assert_eq!(
        (
            mine["event"].as_str(),
            mine["request"]["exemption"].as_str()
        ),
        (Some("approved"), Some(ex.as_str()))
    );
    let chain = aigate::audit::chain::verify(std::io::BufReader::new(
        std::fs::File::open(env.gateway.audit().path()).unwrap(),
    ));
    assert!(chain.is_ok(), "{chain:?}");
}

#[tokio::test]
async fn a_denied_request_is_reported_in_the_next_deny_message_and_self_approval_is_refused() {
    let env = people(None).start().await;
    let mut conn = connection(&env, "bob", BOB_ADMIN).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let (s, r) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "justification": "try it", "duration": "1h"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let rq = r["id"].as_str().unwrap().to_string();
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &format!("/v1/requests/{rq}/approve"),
        Some(BOB_ADMIN),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403, "nobody approves their own request: {e}");
    // What to do instead, in the console's words too (browser_requests.rs).
    assert_eq!(
        e["error"],
        "nobody decides their own exemption request, whatever their role: ask your manager or an approver to decide it (who can: carol, erin, root)"
    );
    let deny = format!("/v1/requests/{rq}/deny");
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &deny,
        Some(BOB_ADMIN),
        Some(json!({"comment": "no"})),
    )
    .await;
    assert_eq!(s, 403, "nor denies it: {e}");
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &deny,
        Some("carol-is-not-here"),
        Some(json!({"comment": "no"})),
    )
    .await;
    assert_eq!(s, 401, "{e}");
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &deny,
        Some(APPROVER),
        Some(json!({"comment": " "})),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (
            400,
            "a comment is required when denying: tell the requester why"
        )
    );
    let (s, r) = call(
        &env,
        reqwest::Method::POST,
        &deny,
        Some(APPROVER),
        Some(json!({"comment": "not in\nprod \u{1b}[31mcode"})),
    )
    .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("denied")), "{r}");
    let (s, message, _) = claude(&mut conn).await;
    assert_eq!(s, 403);
    assert!(
        message.contains(&format!(
            "Your request {rq} was denied by erin: not in prod  [31mcode."
        )),
        "{message}"
    );
    assert!(!message.contains('\u{1b}') && !message.contains('\n'));
    let records = env.audit().await;
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "exemption_request_denied" && r["user"] == "erin")
    );
}

#[tokio::test]
async fn unknown_expired_and_guessed_links_get_clear_answers_audited_and_rate_limited() {
    let clock = Arc::new(TestClock::default());
    let env = people(Some(clock.clone())).start().await;
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let (s, e) = call(
        &env,
        reqwest::Method::GET,
        "/v1/drafts/aaaaaaaaaaaaaaaa",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(
        e["error"],
        "no request link with id \"aaaaaaaaaaaaaaaa\": check the link in the deny message"
    );
    clock.advance(Duration::from_secs(86_401));
    let (s, e) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/drafts/{draft}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 410, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("this request link expired at "),
        "{e}"
    );
    let (s, _) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "justification": "x", "duration": "1h"})),
    )
    .await;
    assert_eq!(s, 410);
    // Guessing: past the client's share of audited refusals, 429 without a lookup.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (s, _) = call(
            &env,
            reqwest::Method::GET,
            &format!("/v1/drafts/guess{i:011}"),
            None,
            None,
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let records = env.audit().await;
    let refused = records
        .iter()
        .filter(|r| r["kind"] == "admin" && r["error"] == "request_link")
        .count();
    assert_eq!(
        refused, 10,
        "audited up to the per-client share, the rest summarised"
    );
}

#[tokio::test]
async fn an_unanswered_request_expires_with_a_record_and_the_requester_is_told() {
    let (hook_addr, got) = receiver(0).await;
    let clock = Arc::new(TestClock::default());
    let env = people(Some(clock.clone()))
        .append(&hooks(hook_addr))
        .start()
        .await;
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let (s, r) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "justification": "x", "duration": "1h"})),
    )
    .await;
    assert_eq!(s, 201);
    let rq = r["id"].as_str().unwrap().to_string();
    clock.advance(Duration::from_secs(86_401));
    let mut state = String::new();
    for _ in 0..100 {
        let (_, r) = call(
            &env,
            reqwest::Method::GET,
            &format!("/v1/requests/{rq}"),
            Some(BOB_ADMIN),
            None,
        )
        .await;
        state = r["state"].as_str().unwrap().to_string();
        if state == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "expired");
    let hooks = wait_for(&got, 4).await;
    assert!(
        hooks
            .iter()
            .any(|(p, v)| p == "/alice" && v["event"] == "expired"),
        "{hooks:?}"
    );
    let records = env.audit().await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "exemption_request_expired")
            .count(),
        1
    );
    // Expired, a request no longer blocks a new one.
    let (s, _) = call(&env, reqwest::Method::POST, "/v1/requests", None, Some(json!({"draft": link_id(&env, &claude(&mut conn).await.1), "justification": "again", "duration": "1h"}))).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn an_anonymous_call_gets_a_link_that_explains_what_it_must_set_up() {
    let env = TestEnv::builder().start().await;
    let client = env.client(true);
    let resp = client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .header("x-app", "cli")
        .body("{\"model\":\"claude-sonnet-4-5\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("aigate does not know who you are"),
        "{message}"
    );
    let draft = link_id(&env, message);
    let (s, d) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/drafts/{draft}"),
        None,
        None,
    )
    .await;
    assert_eq!((s, d["exemptable"].as_bool()), (200, Some(false)));
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .contains("identity.source_addresses")
    );
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(json!({"draft": draft, "justification": "x", "duration": "1h"})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("aigate could not tell who made this call")
    );
}

/// The link is in every vendor's error shape (Anthropic, OpenAI, Google) and in the WebSocket
/// refusal, on the message's one line; an identified user's link says how to request.
#[tokio::test]
async fn every_deny_format_and_the_websocket_refusal_carry_the_link() {
    let env = people(None)
        .append("\n[[rules]]\nname = \"no-gemini-cli\"\naction = \"block\"\nexemptable = true\ntools = [\"gemini-cli\"]\n")
        .start()
        .await;
    let client = crate::common::client_for(&env.gateway, &format!("alice:{ALICE_PROXY}@"), true);
    // Each format's own marker: Anthropic's `type`, OpenAI's `code`, Google's `status`.
    let calls = [
        (
            "https://api.anthropic.com/v1/messages",
            "claude-cli/2.1.12 (external, cli)",
            ("/type", "error"),
        ),
        (
            "https://api.openai.com/v1/responses",
            "codex_exec/0.165.0 (Debian 12; x86_64) unknown (codex_exec; 0.165.0)",
            ("/error/code", "aigate_blocked"),
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent",
            "GeminiCLI/0.9.0 (linux; x64)",
            ("/error/status", "PERMISSION_DENIED"),
        ),
    ];
    let mut links = Vec::new();
    for (url, ua, (marker, value)) in calls {
        let resp = client
            .post(url)
            .header("user-agent", ua)
            .header(
                "originator",
                if ua.starts_with("codex") {
                    "codex_exec"
                } else {
                    ""
                },
            )
            .body("{\"model\":\"m\"}")
            .send()
            .await
            .unwrap();
        // Codex prints a 400's message and retries a 403 (the tool's deny_status, docs/clients.md).
        let status = if ua.starts_with("codex") { 400 } else { 403 };
        assert_eq!(resp.status(), status, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body.pointer(marker).and_then(Value::as_str),
            Some(value),
            "{body}"
        );
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(
            message.contains("To request a time-boxed exemption, open http://"),
            "{message}"
        );
        links.push(link_id(&env, message));
    }
    assert_eq!(
        links.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "one draft per tool"
    );

    use base64::Engine;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("alice:{ALICE_PROXY}"));
    let tls = env
        .tls_through_with(
            "api.openai.com:443",
            &format!("Proxy-Authorization: Basic {cred}\r\n"),
            "api.openai.com",
            &[b"http/1.1"],
        )
        .await
        .unwrap();
    let req = http::Request::builder()
        .uri("wss://api.openai.com/v1/responses")
        .header("host", "api.openai.com")
        .header("user-agent", "codex_exec/0.165.0 (Debian 12; x86_64)")
        .header("originator", "codex_exec")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    match tokio_tungstenite::client_async(req, tls).await.unwrap_err() {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400, "Codex's deny_status");
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert_eq!(
                link_id(&env, message),
                links[1],
                "the WebSocket refusal reuses Codex's link"
            );
        }
        other => panic!("expected an HTTP 400, got {other:?}"),
    }
}
