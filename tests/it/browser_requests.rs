//! Issue 16's loop in a real headless Chromium: a blocked Claude Code call's link opens the
//! request page, the engineer submits, the approvers' webhook hears of it, an auditor reads the
//! queue without a form to decide, the manager signs in and approves shorter than asked, and
//! the very same keep-alive connection's next call goes through with the exemption id in its
//! record. Screenshots in `target/console-screenshots/request-*.png`, axe-core on each page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::Locator;

use std::sync::Arc;
use std::time::Duration;

use crate::admin::{ALICE_PROXY, APPROVER, AUDITOR, BOB_ADMIN, DAVE, ROOT, call, people};
use crate::common::Browser;
use crate::common::TestClock;
use crate::requests::{claude, connection, hooks, link_id, receiver, wait_for};

const ENTER: &str = "\u{e007}";

async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}/requests")).await;
    b.find("#token")
        .await
        .send_keys(&format!("{token}{ENTER}"))
        .await
        .unwrap();
    b.find("#queue").await;
    assert_eq!(b.path().await, "/requests");
}

/// A form of the signed-in person's own making posted to `action`, with the session's CSRF
/// token or without it: what a crafted page or a curious person can do that the console's
/// own pages do not offer.
async fn post_form(b: &Browser, action: &str, with_csrf: bool, fields: &[(&str, &str)]) {
    let mut fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if with_csrf {
        let token = b
            .client
            .execute(
                "return document.querySelector('input[name=csrf]').value",
                vec![],
            )
            .await
            .unwrap();
        fields.push(("csrf".into(), token.as_str().unwrap().to_string()));
    }
    b.client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
             for (const [k, v] of arguments[1]) {
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit();",
            vec![serde_json::json!(action), serde_json::json!(fields)],
        )
        .await
        .unwrap();
}

async fn request_state(env: &crate::common::TestEnv, rq: &str) -> String {
    let (s, r) = call(
        env,
        reqwest::Method::GET,
        &format!("/v1/requests/{rq}"),
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    r["state"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_loop_in_the_browser_from_the_deny_link_to_the_approved_next_call() {
    let (hook_addr, got) = receiver(0).await;
    let env = people(None).append(&hooks(hook_addr)).start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (status, message, blocked_id) = claude(&mut conn).await;
    assert_eq!(status, 403);
    let draft = link_id(&env, &message);
    let b = Browser::start().await;

    // The engineer opens the link: what was blocked and why, no sign-in.
    b.goto(&format!("{base}/r/{draft}")).await;
    let facts = b.text("#main").await;
    for want in [
        "aigate blocked Claude Code",
        "claude-code",
        "untagged",
        "rival-coding-tools-in-protected-workflows",
        "alice",
        blocked_id.as_str(),
    ] {
        assert!(facts.contains(want), "{want:?} not on the page: {facts}");
    }
    // Presets capped by admin.max_exemption (14 days here): all four.
    let options = b.text("#duration").await;
    assert_eq!(
        options.lines().collect::<Vec<_>>(),
        vec!["1 hour", "1 day", "3 days", "1 week"]
    );
    b.check("request-page").await;
    b.find("#justification")
        .await
        .send_keys("vendor bake-off for Q3")
        .await
        .unwrap();
    b.find("#duration")
        .await
        .select_by_value("3d")
        .await
        .unwrap();
    b.find("#ticket").await.send_keys("IT-9").await.unwrap();
    b.find("#ask ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // Post/redirect/get: the stable URL now shows the request's status.
    b.find("#status").await;
    assert_eq!(b.path().await, format!("/r/{draft}"));
    let card = b.text("section[aria-labelledby=status]").await;
    assert!(
        card.contains("open") && card.contains("3 days") && card.contains("IT-9"),
        "{card}"
    );
    b.check("request-submitted").await;

    // The approvers' webhook on 127.0.0.1 got it.
    let delivered = wait_for(&got, 2).await;
    let told = &delivered.iter().find(|(p, _)| p == "/approvers").unwrap().1;
    assert_eq!(told["event"], "requested");
    assert_eq!(told["request"]["justification"], "vendor bake-off for Q3");
    let rq = told["request"]["id"].as_str().unwrap().to_string();
    assert!(card.contains(&rq), "{card}");

    // Still blocked until someone decides.
    assert_eq!(claude(&mut conn).await.0, 403);

    // An unknown link: a clear page, not a sign-in.
    b.goto(&format!("{base}/r/AAAAAAAAAAAAAAAA")).await;
    assert_eq!(b.text("h1").await, "Unknown request link");
    assert!(b.text("#main").await.contains("fresh link"));
    b.check("request-unknown").await;

    // An auditor reads the queue but has no form to decide.
    sign_in(&b, &base, AUDITOR).await;
    let queue = b.text(&format!("article[id='{rq}']")).await;
    assert!(queue.contains("vendor bake-off for Q3"), "{queue}");
    assert!(
        b.client
            .find(Locator::Css(&format!(
                "form[action='/requests/{rq}/approve']"
            )))
            .await
            .is_err(),
        "no approve form for an auditor"
    );
    b.check("requests-auditor").await;

    // The manager signs in, sees who asked, why, and how often they were blocked; approves
    // for one hour instead of three days.
    sign_in(&b, &base, BOB_ADMIN).await;
    let item = b.text(&format!("article[id='{rq}']")).await;
    for want in [
        "alice asks for claude-code in untagged",
        "rival-coding-tools-in-protected-workflows",
        "vendor bake-off for Q3",
        "IT-9",
        // From the audit log: the first call and the one after the submit.
        "Blocked (7 days)\n2 calls",
        "0 for this tool",
    ] {
        assert!(
            item.contains(want),
            "{want:?} not in the queue item: {item}"
        );
    }
    b.check("requests-queue").await;
    b.find(&format!("#duration-{rq}"))
        .await
        .select_by_value("1h")
        .await
        .unwrap();
    b.find(&format!("#acomment-{rq}"))
        .await
        .send_keys("one hour is enough")
        .await
        .unwrap();
    b.find(&format!(
        "form[action='/requests/{rq}/approve'] button[type=submit]"
    ))
    .await
    .click()
    .await
    .unwrap();
    let history = b.text("section[aria-labelledby=history]").await;
    assert!(
        history.contains(&rq) && history.contains("approved") && history.contains("bob"),
        "{history}"
    );
    assert!(b.text("#queue").await.contains("Waiting (0)"));
    b.check("requests-history").await;

    let (s, r) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/requests/{rq}"),
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("approved")), "{r}");
    assert_eq!(r["approved_secs"], 3600);
    let ex = r["exemption"].as_str().unwrap().to_string();

    // The very same keep-alive connection's next call goes through, exempt.
    let (s, _, passed_id) = claude(&mut conn).await;
    assert_eq!(s, 200);
    let records = env.audit().await;
    let passed = crate::common::by_id(&records, &passed_id);
    assert_eq!(passed["reason"], "exempted");
    assert_eq!(passed["exemption"], ex.as_str());

    // The engineer's page, reloaded, shows the decision.
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}/r/{draft}")).await;
    let card = b.text("section[aria-labelledby=status]").await;
    assert!(
        card.contains("approved") && card.contains("bob") && card.contains(&ex),
        "{card}"
    );
    b.check("request-approved").await;
    b.close().await;
}

/// bob, a manager, is blocked himself: he cannot approve his own request in the console (an
/// audited 403 page, nothing granted); erin, an approver, denies it with a comment, which bob
/// reads on his request page and in his next deny message.
#[tokio::test]
async fn a_self_approval_is_refused_and_a_denial_reaches_the_requester() {
    let env = people(None).start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let mut conn = connection(&env, "bob", BOB_ADMIN).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let b = Browser::start().await;
    b.goto(&format!("{base}/r/{draft}")).await;
    b.find("#justification")
        .await
        .send_keys("try it")
        .await
        .unwrap();
    b.find("#duration")
        .await
        .select_by_value("1h")
        .await
        .unwrap();
    b.find("#ask ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let card = b.text("section[aria-labelledby=status]").await;
    let rq = card
        .split_whitespace()
        .find(|w| w.starts_with("rq-"))
        .unwrap()
        .to_string();

    // bob signs in and posts an approval of his own request with his session's token.
    sign_in(&b, &base, BOB_ADMIN).await;
    b.client
        .execute(
            &format!(
                "const f = document.createElement('form'); f.method = 'post'; f.action = '/requests/{rq}/approve';
                 const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf';
                 i.value = document.querySelector('input[name=csrf]').value; f.appendChild(i);
                 document.body.appendChild(f); f.submit();"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(b.text("h1").await, "Not allowed");
    let why = b.text("#refused").await;
    assert_eq!(
        why,
        "nobody decides their own exemption request, whatever their role: ask your manager or an approver to decide it (who can: carol, erin, root)."
    );
    b.check("requests-self-approval").await;
    let (s, r) = call(
        &env,
        reqwest::Method::GET,
        &format!("/v1/requests/{rq}"),
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("open")), "{r}");

    // erin denies; an empty comment is refused by the browser's `required`, so type one.
    sign_in(&b, &base, APPROVER).await;
    b.find(&format!("#dcomment-{rq}"))
        .await
        .send_keys("not for production code")
        .await
        .unwrap();
    b.find(&format!(
        "form[action='/requests/{rq}/deny'] button[type=submit]"
    ))
    .await
    .click()
    .await
    .unwrap();
    let history = b.text("section[aria-labelledby=history]").await;
    assert!(
        history.contains("denied")
            && history.contains("erin")
            && history.contains("not for production code"),
        "{history}"
    );
    b.check("requests-denied").await;

    b.client.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}/r/{draft}")).await;
    let card = b.text("section[aria-labelledby=status]").await;
    assert!(
        card.contains("denied")
            && card.contains("erin")
            && card.contains("not for production code"),
        "{card}"
    );
    b.check("request-denied").await;
    let (s, message, _) = claude(&mut conn).await;
    assert_eq!(s, 403);
    assert!(
        message.contains(&format!(
            "Your request {rq} was denied by erin: not for production code"
        )),
        "{message}"
    );
    b.close().await;
}

/// A call aigate could not attribute to anyone: the link's page says it cannot be exempted and
/// what IT must set up, and offers no form.
#[tokio::test]
async fn an_anonymous_users_link_explains_what_it_must_set_up() {
    let env = crate::common::TestEnv::builder().start().await;
    let resp = env
        .client(true)
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .header("x-app", "cli")
        .body("{\"model\":\"claude-sonnet-4-5\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    let draft = link_id(&env, body["error"]["message"].as_str().unwrap());
    let b = Browser::start().await;
    b.goto(&format!("http://{}/r/{draft}", env.gateway.admin_addr))
        .await;
    assert_eq!(b.text("#why").await, "This call cannot be exempted");
    let why = b.text("section[aria-labelledby=why]").await;
    assert!(
        why.contains("proxy authentication") && why.contains("identity.source_addresses"),
        "{why}"
    );
    assert!(
        b.client.find(Locator::Css("#justification")).await.is_err(),
        "no form to ask with"
    );
    b.check("request-anonymous").await;
    b.close().await;
}

/// A link nobody made and a link past its 24 h: each a clear page that says what to do, never a
/// sign-in, and each an audit record (`error = "request_link"`).
#[tokio::test]
async fn unknown_and_expired_links_get_a_clear_page_and_are_audited() {
    let clock = Arc::new(TestClock::default());
    let env = people(Some(clock.clone())).start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let b = Browser::start().await;

    b.goto(&format!("{base}/r/zzzzzzzzzzzzzzzz")).await;
    assert_eq!(b.text("h1").await, "Unknown request link");
    let main = b.text("#main").await;
    assert!(
        main.contains("check the link in the deny message") && main.contains("fresh link"),
        "{main}"
    );
    b.check("request-unknown-link").await;

    clock.advance(Duration::from_secs(24 * 3600 + 1));
    b.goto(&format!("{base}/r/{draft}")).await;
    assert_eq!(b.text("h1").await, "This request link has expired");
    let main = b.text("#main").await;
    assert!(
        main.contains("this request link expired at ") && main.contains("fresh link"),
        "{main}"
    );
    assert!(
        b.client.find(Locator::Css("#justification")).await.is_err(),
        "no form on an expired link"
    );
    b.check("request-expired").await;
    // A form kept open in another tab is refused the same way.
    post_form(
        &b,
        &format!("/r/{draft}"),
        false,
        &[("justification", "late"), ("duration", "1h")],
    )
    .await;
    assert_eq!(b.text("h1").await, "This request link has expired");
    b.close().await;

    let records = env.audit().await;
    let refusals: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r["error"] == "request_link")
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            ("/r/zzzzzzzzzzzzzzzz".to_string(), 404),
            (format!("/r/{draft}"), 410),
            (format!("/r/{draft}"), 410),
        ]
    );
    let (s, list) = call(&env, reqwest::Method::GET, "/v1/requests", Some(ROOT), None).await;
    assert_eq!((s, list["requests"].as_array().unwrap().len()), (200, 0));
}

/// Three decisions the console refuses, each leaving the request open: the requester's own
/// manager posting without the form's CSRF token, a manager of someone else (told whom to ask),
/// and an auditor, who reads the queue but has no form, posting one of their own.
#[tokio::test]
async fn refused_decisions_change_nothing() {
    let env = people(None).start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let mut conn = connection(&env, "alice", ALICE_PROXY).await;
    let (_, message, _) = claude(&mut conn).await;
    let draft = link_id(&env, &message);
    let (s, r) = call(
        &env,
        reqwest::Method::POST,
        "/v1/requests",
        None,
        Some(serde_json::json!({"draft": draft, "justification": "bake-off", "duration": "1d"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let rq = r["id"].as_str().unwrap().to_string();
    let approve = format!("/requests/{rq}/approve");
    let b = Browser::start().await;

    // bob is alice's manager: only the token is missing.
    sign_in(&b, &base, BOB_ADMIN).await;
    b.find(&format!("form[action='{approve}']")).await;
    post_form(&b, &approve, false, &[("duration", "1h")]).await;
    assert_eq!(b.text("h1").await, "This form was refused");
    assert!(b.text("#main").await.contains("CSRF token is missing"));
    b.check("requests-csrf-refused").await;
    assert_eq!(request_state(&env, &rq).await, "open");

    // dave manages nobody here: the request is not in his queue, and a forged approval is told
    // whom to ask instead.
    sign_in(&b, &base, DAVE).await;
    assert!(
        b.client
            .find(Locator::Css(&format!("article[id='{rq}']")))
            .await
            .is_err(),
        "not dave's report"
    );
    post_form(&b, &approve, true, &[]).await;
    assert_eq!(b.text("h1").await, "Not allowed");
    let why = b.text("#refused").await;
    assert_eq!(
        why,
        "dave is not alice's manager (nor above them in the directory): deciding it needs alice's manager chain or the approver or admin role. Ask one of them (who can: bob, carol, erin, root), or an admin for the approver role."
    );
    b.check("requests-not-their-manager").await;
    assert_eq!(request_state(&env, &rq).await, "open");
    // The API answers dave with the very same sentence.
    let (s, e) = call(
        &env,
        reqwest::Method::POST,
        &format!("/v1/requests/{rq}/approve"),
        Some(DAVE),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(
        (s, format!("{}.", e["error"].as_str().unwrap())),
        (403, why)
    );

    // sam, an auditor: reads it, no form, and a form of his own is refused for the role.
    sign_in(&b, &base, AUDITOR).await;
    assert!(
        b.text(&format!("article[id='{rq}']"))
            .await
            .contains("bake-off")
    );
    assert!(
        b.client
            .find(Locator::Css(&format!("form[action='{approve}']")))
            .await
            .is_err()
    );
    post_form(&b, &approve, true, &[]).await;
    assert_eq!(b.text("h1").await, "Not allowed");
    assert!(
        b.text("#main")
            .await
            .contains("This needs one of the roles admin, manager, approver")
    );
    b.check("requests-auditor-refused").await;
    b.close().await;
    assert_eq!(request_state(&env, &rq).await, "open");

    let records = env.audit().await;
    let refused: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["path"] == approve.as_str() && r["status"] == 403)
        .map(|r| (r["user"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refused,
        vec![("bob", "block"), ("dave", "block"), ("sam", "block")]
    );
    assert!(
        !records.iter().any(|r| r["reason"] == "exemption_granted"),
        "nothing granted"
    );
}
