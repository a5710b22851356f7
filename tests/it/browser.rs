//! The console in a real headless Chromium (WebDriver): what a person does with a keyboard
//! and a mouse, with a screenshot of every page in `target/console-screenshots/` and
//! axe-core's audit of each. The HTTP-level detail of each rule is in `console.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::Locator;

use crate::common::{Browser, TestEnv};
use crate::console::{AUDITOR, ROOT, people};

const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";

async fn exemptions(env: &TestEnv) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/v1/exemptions", env.gateway.admin_addr))
        .bearer_auth(ROOT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["exemptions"].as_array().unwrap().clone()
}

/// Sign-in by keyboard alone (a wrong token first), then a grant with a `<script>` in its
/// reason and a revocation, by mouse, and the People page.
#[tokio::test]
async fn a_manager_signs_in_by_keyboard_grants_and_revokes() {
    let env = people().start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let b = Browser::start().await;

    b.goto(&format!("{base}/exemptions")).await;
    assert_eq!(b.path().await, "/signin?next=%2Fexemptions");
    b.check("signin").await;
    // Tab from the top of the page reaches the token field, Enter submits.
    b.keys(TAB).await;
    assert_eq!(b.focused().await, "token");
    b.keys(&format!("not-a-token{ENTER}")).await;
    let error = b.text("#signin-error").await;
    assert!(error.contains("not an admin token"), "{error}");
    b.check("signin-refused").await;
    b.find("#token").await.click().await.unwrap();
    b.keys(&format!("{ROOT}{ENTER}")).await;
    b.find("#h-grant").await;
    assert_eq!(b.path().await, "/exemptions");
    // The session cookie is HttpOnly: the page's scripts cannot read it.
    let seen = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(seen, "");
    // htmx loaded from the binary under script-src 'self'; the CSP is on the page.
    assert_eq!(
        b.client
            .execute("return typeof htmx", vec![])
            .await
            .unwrap(),
        "object"
    );
    let csp = b
        .client
        .execute(
            "return fetch(location.href).then(r => r.headers.get('content-security-policy'))",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        csp.as_str()
            .unwrap()
            .starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );
    b.check("exemptions-empty").await;

    // A grant, with markup in the reason: shown as text, never run.
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    b.find("#g-user").await.send_keys("alice").await.unwrap();
    b.find("input[name=tools][value=claude-code]")
        .await
        .click()
        .await
        .unwrap();
    b.find("#g-for").await.select_by_value("3d").await.unwrap();
    b.find("#g-reason").await.send_keys(evil).await.unwrap();
    b.find("#g-ticket").await.send_keys("SEC-42").await.unwrap();
    b.find("#h-grant ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.text_once_it_says("p.notice", "granted").await;
    let list = exemptions(&env).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reason"], evil);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let row = b.text(&format!("#ex-row-{id}")).await;
    assert!(
        row.contains(evil) && row.contains("SEC-42") && row.contains("alice"),
        "{row}"
    );
    assert_eq!(
        b.client
            .execute("return window.pwned === undefined", vec![])
            .await
            .unwrap(),
        true
    );
    b.check("exemptions-granted").await;

    // Refused with the API's message, the form kept as typed.
    b.find("#g-user").await.send_keys("root").await.unwrap();
    b.find("input[name=tools][value=claude-code]")
        .await
        .click()
        .await
        .unwrap();
    b.find("#g-reason")
        .await
        .send_keys("for myself")
        .await
        .unwrap();
    b.find("#h-grant ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let error = b.text("#grant-error").await;
    assert!(error.starts_with("Not granted:"), "{error}");
    assert_eq!(
        b.find("#g-reason")
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap(),
        "for myself"
    );
    b.check("exemptions-refused").await;

    b.goto(&format!("{base}/exemptions")).await;
    b.find(&format!("#ex-row-{id} button.danger"))
        .await
        .click()
        .await
        .unwrap();
    b.text_once_it_says("p.notice", "revoked").await;
    assert!(
        b.text("section[aria-labelledby=h-revoked]")
            .await
            .contains("by root")
    );
    assert!(!exemptions(&env).await[0]["revoked_at"].is_null());
    b.check("exemptions-revoked").await;

    b.find("nav a[href='/people']").await.click().await.unwrap();
    assert!(b.text("#main").await.contains("Bob Brown"));
    b.check("people").await;
    b.close().await;
}

/// The one-time link signs in once; an auditor reads but has no form to grant, and a forged
/// one is refused.
#[tokio::test]
async fn the_one_time_link_works_once_and_an_auditor_cannot_grant() {
    let env = people().start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let b = Browser::start().await;
    let link = env.gateway.signin_link().await.unwrap();
    b.goto(&link).await;
    // The link signs in to the front page, the Overview.
    assert_eq!(b.path().await, "/");
    assert_eq!(b.text(".who .user").await, "root");
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&link).await;
    assert!(b.text("h1").await.contains("no longer works"));
    b.check("signin-link-used").await;

    b.goto(&format!("{base}/signin?next=%2Fexemptions")).await;
    b.find("#token")
        .await
        .send_keys(&format!("{AUDITOR}{ENTER}"))
        .await
        .unwrap();
    b.find("#h-active").await;
    assert_eq!(b.text(".who .user").await, "sam");
    assert!(
        b.client.find(Locator::Css("#h-grant")).await.is_err(),
        "no grant form for an auditor"
    );
    b.check("exemptions-auditor").await;
    // A grant form of the auditor's own making, with the session's token: the role decides.
    b.client
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/exemptions';
             for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['user', 'alice'], ['tools', 'claude-code'], ['for', '1d'], ['reason', 'x']]) {
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(b.text("h1").await, "Not allowed");
    b.check("forbidden").await;
    assert!(exemptions(&env).await.is_empty());
    b.close().await;
}

/// A page on another origin posting to the console with the victim's session; a session id
/// planted before sign-in; a sign-in link whose `next` points away.
#[tokio::test]
async fn csrf_session_fixation_and_open_redirects_are_refused_in_the_browser() {
    let env = people().start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let b = Browser::start().await;

    // Fixation: a cookie planted before sign-in is replaced, never adopted.
    b.goto(&format!("{base}/signin?next=https%3A%2F%2Fevil.example%2F"))
        .await;
    b.client
        .execute(
            "document.cookie = 'aigate_session=planted-by-an-attacker; path=/'",
            vec![],
        )
        .await
        .unwrap();
    let planted = b.client.get_named_cookie("aigate_session").await.unwrap();
    assert_eq!(planted.value(), "planted-by-an-attacker");
    b.find("#token")
        .await
        .send_keys(&format!("{ROOT}{ENTER}"))
        .await
        .unwrap();
    b.find(".who .user").await;
    // Open redirect: next pointed at another site; the browser stayed on the console.
    let url = b.client.current_url().await.unwrap();
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    assert_eq!(url.port(), Some(env.gateway.admin_addr.port()));
    let cookie = b.client.get_named_cookie("aigate_session").await.unwrap();
    assert_ne!(cookie.value(), "planted-by-an-attacker");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    // CSRF: another origin on the same site (127.0.0.1, another port): SameSite does not stop
    // the cookie there, the console's checks do.
    let evil = crate::common::serve_html(format!(
        "<!doctype html><title>win a prize</title><form id=f method=post action=\"{base}/exemptions\">\
         <input name=user value=alice><input name=tools value=claude-code><input name=for value=1d>\
         <input name=reason value=csrf></form><script>document.getElementById('f').submit()</script>"
    ))
    .await;
    b.goto(&format!("http://{evil}/")).await;
    b.find("h1").await;
    assert_eq!(b.text("h1").await, "This form was refused");
    assert!(b.text("#main").await.contains("Sec-Fetch-Site: same-site"));
    b.check("csrf-refused").await;
    assert!(exemptions(&env).await.is_empty(), "nothing granted");
    b.close().await;
}
