//! The console over real HTTP on the admin listener: token sign-in and the one-time link,
//! sessions (cookie flags, fixation, sign-out, timeouts), the sign-in rate limit, CSRF, the
//! open redirect on `next`, escaping, the security headers, and the role checks of the
//! Exemptions page. The same flows in a real browser are in `browser.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{ConsoleClient, TestClock, TestEnv};

pub const ROOT: &str = "root-admin-token-0004";
pub const AUDITOR: &str = "auditor-token-0005";
pub const BOB: &str = "bob-manager-token-0002";

/// root (admin), sam (auditor); bob manages alice.
pub fn people() -> crate::common::Builder {
    let h = aigate::identify::user::hash_token;
    TestEnv::builder()
        .replace("# users_file = \"users.toml\"", "users_file = \"users.toml\"")
        .append(&format!(
            "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n[[admin.tokens]]\nuser = \"sam\"\nroles = [\"auditor\"]\nhash = \"{}\"\n",
            h(ROOT),
            h(AUDITOR)
        ))
        .users(&format!(
            "[[users]]\nid = \"carol\"\nname = \"Carol Chen\"\nroles = [\"manager\"]\n\n[[users]]\nid = \"bob\"\nname = \"Bob Brown\"\nmanager = \"carol\"\nroles = [\"manager\"]\ntokens = [\"{}\"]\n\n[[users]]\nid = \"alice\"\nname = \"Alice Adams\"\nmanager = \"bob\"\n",
            h(BOB)
        ))
}

fn console(env: &TestEnv) -> ConsoleClient {
    ConsoleClient::new(env.gateway.admin_addr)
}

fn admin_records(records: &[Value], reason: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "admin" && r["reason"] == reason)
        .cloned()
        .collect()
}

/// A grant of claude-code to alice for a day, as the form posts it.
fn grant_form(csrf: &str) -> [(&str, &str); 5] {
    [
        ("csrf", csrf),
        ("user", "alice"),
        ("tools", "claude-code"),
        ("for", "1d"),
        ("reason", "evaluate the new model"),
    ]
}

/// Every exemption, through the JSON API.
async fn exemptions(env: &TestEnv) -> Vec<Value> {
    let v: Value = reqwest::Client::builder()
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

#[tokio::test]
async fn a_token_signs_in_to_a_strict_http_only_session() {
    let env = people().start().await;
    let mut c = console(&env);
    // Without a session, a page sends the browser to sign in, and back afterwards.
    let page = c.get("/exemptions?show=all").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/signin?next=%2Fexemptions%3Fshow%3Dall");
    let form = c.get(page.location()).await;
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains("<label for=\"token\">Admin token</label>"),
        "{}",
        form.body
    );
    assert!(
        form.body
            .contains("name=\"next\" value=\"/exemptions?show=all\"")
    );

    let signed = c
        .post(
            "/signin",
            &[("token", ROOT), ("next", "/exemptions?show=all")],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.location(), "/exemptions?show=all");
    let cookie = signed.headers["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(cookie.starts_with("aigate_session="), "{cookie}");

    let page = c.get("/exemptions").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<span class=\"user\">root</span>"),
        "{}",
        page.body
    );
    let people = c.get("/people").await;
    assert_eq!(people.status, 200);
    for want in ["Bob Brown", "Alice Adams", "carol", "auditor"] {
        assert!(people.body.contains(want), "{want} in {}", people.body);
    }
    assert!(
        !people.body.contains("sha256:"),
        "token hashes are not shown"
    );

    let records = env.audit().await;
    let ins = admin_records(&records, "console_signed_in");
    assert_eq!(ins.len(), 1, "{records:#?}");
    assert_eq!(ins[0]["user"], "root");
    assert_eq!(ins[0]["admin"]["via"], "token");
    // The session id is nowhere in the log.
    let id = c.cookie.clone().unwrap();
    let id = id.split('=').nth(1).unwrap();
    assert!(!env.audit_text().contains(id));
    assert!(!env.audit_text().contains(ROOT));
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let env = people().start().await;
    let mut c = console(&env);
    let signin = c.get("/signin").await;
    c.sign_in(ROOT).await;
    let page = c.get("/exemptions").await;
    for p in [&signin, &page] {
        assert_eq!(
            p.headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(p.headers["x-content-type-options"], "nosniff");
        assert_eq!(p.headers["referrer-policy"], "no-referrer");
        assert_eq!(p.headers["cache-control"], "no-store");
        // Nothing inline for the CSP to refuse.
        assert!(
            !p.body.contains("<script>") && !p.body.contains(" style="),
            "{}",
            p.body
        );
        assert!(!p.body.contains(" onclick="));
    }
    // Assets from the binary, cached for a year, the pinned htmx among them.
    let css_url = page
        .body
        .split("href=\"")
        .find(|s| s.starts_with("/console/assets/console.css?v="))
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .unwrap();
    let css = c.get(&css_url).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let js = reqwest::get(format!("{}/console/assets/htmx.min.js", c.base))
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    let bytes = js.bytes().await.unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
    );
    assert_eq!(c.get("/console/assets/nope.js").await.status, 404);
    // The JSON API and health checks are where they were.
    assert_eq!(c.get("/healthz").await.body, "ok\n");
    assert_eq!(c.get("/v1/exemptions").await.status, 401);
}

#[tokio::test]
async fn wrong_tokens_are_refused_audited_and_rate_limited() {
    let env = people().start().await;
    let mut c = console(&env);
    for _ in 0..5 {
        let p = c
            .post("/signin", &[("token", "not-a-token"), ("next", "/")])
            .await;
        assert_eq!(p.status, 401);
        assert!(
            p.body.contains("not an admin token aigate knows"),
            "{}",
            p.body
        );
        assert!(c.cookie.is_none());
    }
    // The sixth attempt waits, even with the right token.
    let p = c.post("/signin", &[("token", ROOT), ("next", "/")]).await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.headers.contains_key("retry-after"));
    assert!(c.cookie.is_none());
    let records = env.audit().await;
    let refused = admin_records(&records, "console_signin_refused");
    assert_eq!(refused.len(), 6, "{refused:#?}");
    assert_eq!(refused[0]["error"], "unknown admin token");
    assert_eq!(refused[0]["status"], 401);
    assert_eq!(refused[5]["status"], 429);
    assert!(!env.audit_text().contains("not-a-token"));
}

#[tokio::test]
async fn a_planted_session_id_is_never_adopted_and_sign_out_ends_the_session() {
    let env = people().start().await;
    let mut c = console(&env);
    // An attacker plants a session id in the victim's browser before sign-in.
    let planted = "aigate_session=attacker-chosen-session-id-0000000000000".to_string();
    c.cookie = Some(planted.clone());
    assert_eq!(c.get("/exemptions").await.status, 303);
    let signed = c.sign_in(ROOT).await;
    let fresh = signed.set_cookie().unwrap();
    assert_ne!(fresh, planted);
    // The planted id signs nobody in; the fresh one does.
    let mut attacker = console(&env);
    attacker.cookie = Some(planted);
    assert_eq!(attacker.get("/exemptions").await.status, 303);
    assert_eq!(c.get("/exemptions").await.status, 200);
    // Each sign-in is a new id.
    let mut again = console(&env);
    again.sign_in(ROOT).await;
    assert_ne!(again.cookie, c.cookie);

    // Sign-out deletes the session server-side: the old cookie is dead even if kept.
    let kept = c.cookie.clone();
    let page = c.get("/exemptions").await;
    let out = c.post("/signout", &[("csrf", &page.csrf())]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/signin");
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let mut replay = console(&env);
    replay.cookie = kept;
    assert_eq!(replay.get("/exemptions").await.status, 303);
    let records = env.audit().await;
    assert_eq!(admin_records(&records, "console_signed_out").len(), 1);
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_maximum_age() {
    let clock = Arc::new(TestClock::default());
    let env = people()
        .replace("# session_idle = \"1h\"", "session_idle = \"10m\"")
        .replace("# session_max = \"12h\"", "session_max = \"30m\"")
        .clock(clock.clone())
        .start()
        .await;
    let mut c = console(&env);
    c.sign_in(ROOT).await;
    // Busy: each use keeps it alive, until the absolute limit.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(5 * 60));
        assert_eq!(c.get("/exemptions").await.status, 200);
    }
    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(c.get("/exemptions").await.status, 303, "past session_max");
    // Idle.
    let mut idle = console(&env);
    idle.sign_in(ROOT).await;
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(idle.get("/people").await.status, 200);
    clock.advance(Duration::from_secs(10 * 60 + 1));
    let p = idle.get("/people").await;
    assert_eq!(p.status, 303, "past session_idle");
    assert_eq!(p.location(), "/signin?next=%2Fpeople");
}

#[tokio::test]
async fn next_never_leaves_the_console() {
    let env = people().start().await;
    for evil in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
    ] {
        let mut c = console(&env);
        let form = c
            .get(&format!(
                "/signin?{}",
                serde_urlencoded::to_string([("next", evil)]).unwrap()
            ))
            .await;
        assert!(
            form.body.contains("name=\"next\" value=\"/\""),
            "{evil}: {}",
            form.body
        );
        let p = c.post("/signin", &[("token", ROOT), ("next", evil)]).await;
        assert_eq!(p.status, 303);
        assert_eq!(p.location(), "/", "{evil}");
    }
}

#[tokio::test]
async fn a_state_change_needs_the_sessions_csrf_token_and_a_same_origin_post() {
    let env = people().start().await;
    let mut c = console(&env);
    c.sign_in(ROOT).await;
    let token = c.get("/exemptions").await.csrf();
    let base = c.base.clone();
    // No token, a wrong one, another session's, and the right one from another site.
    let mut other = console(&env);
    other.sign_in(ROOT).await;
    let others = other.get("/exemptions").await.csrf();
    let missing = "CSRF token is missing";
    for (csrf, origin, site, why) in [
        ("", base.as_str(), Some("same-origin"), missing),
        ("wrong", base.as_str(), Some("same-origin"), missing),
        (others.as_str(), base.as_str(), Some("same-origin"), missing),
        (
            token.as_str(),
            "http://evil.example",
            Some("cross-site"),
            "Sec-Fetch-Site: cross-site",
        ),
        (
            token.as_str(),
            "http://evil.example",
            None,
            "another origin",
        ),
    ] {
        let p = c
            .post_from("/exemptions", &grant_form(csrf), Some(origin), site)
            .await;
        assert_eq!(p.status, 403, "{why}: {}", p.body);
        assert!(p.body.contains(why), "{why}: {}", p.body);
    }
    assert!(exemptions(&env).await.is_empty(), "nothing granted");
    // The real thing.
    let p = c.post("/exemptions", &grant_form(&token)).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(p.location().starts_with("/exemptions?granted=ex-"));
    assert_eq!(exemptions(&env).await.len(), 1);
    let records = env.audit().await;
    let csrf = records
        .iter()
        .filter(|r| {
            r["reason"] == "admin_denied"
                && r["error"].as_str().is_some_and(|e| e.starts_with("csrf:"))
        })
        .count();
    assert_eq!(csrf, 5, "{records:#?}");
    assert_eq!(admin_records(&records, "exemption_granted").len(), 1);
}

#[tokio::test]
async fn a_cross_site_sign_in_post_is_refused() {
    let env = people().start().await;
    let mut c = console(&env);
    let p = c
        .post_from(
            "/signin",
            &[("token", ROOT), ("next", "/")],
            Some("http://evil.example"),
            Some("cross-site"),
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(c.cookie.is_none());
}

#[tokio::test]
async fn text_people_typed_is_shown_escaped() {
    let env = people().start().await;
    let mut c = console(&env);
    c.sign_in(ROOT).await;
    let token = c.get("/exemptions").await.csrf();
    let evil = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    let p = c
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", evil),
                ("ticket", "\"><b>T-1</b>"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page = c.get("/exemptions").await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"));
    assert!(!page.body.contains("<b>T-1</b>"));
    assert!(
        page.body
            .contains("&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        page.body
    );
    // A refused grant shows the form again with what was typed, escaped too.
    let p = c
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "<script>x</script>"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", "r"),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(!p.body.contains("<script>x"));
    assert!(
        p.body.contains("value=\"&lt;script&gt;x&lt;/script&gt;\""),
        "{}",
        p.body
    );
}

#[tokio::test]
async fn the_grant_form_says_what_the_api_says_and_revokes() {
    let env = people().start().await;
    let mut c = console(&env);
    c.sign_in(ROOT).await;
    let token = c.get("/exemptions").await.csrf();
    // No reason: the API's message, from the same rule.
    let p = c
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", " "),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    let api = reqwest::Client::new()
        .post(format!("{}/v1/exemptions", c.base))
        .bearer_auth(ROOT)
        .json(&serde_json::json!({"user": "alice", "tools": ["claude-code"], "for": "1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 400);
    let api_message = api.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = maud::html! { (api_message) }.into_string();
    assert!(
        p.body.contains(&format!("Not granted: {shown}")),
        "{shown} in {}",
        p.body
    );
    // Too long: capped by admin.max_exemption, the API's words again.
    let p = c
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "30d"),
                ("reason", "long"),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(
        p.body.contains("max_exemption") || p.body.contains("longer than"),
        "{}",
        p.body
    );

    let p = c
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", "trial"),
                ("ticket", "SEC-1"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let id = p
        .location()
        .trim_start_matches("/exemptions?granted=")
        .to_string();
    let page = c.get(p.location()).await;
    assert!(page.body.contains(&format!("Exemption {id} granted.")));
    assert!(page.body.contains(&format!("id=\"ex-row-{id}\"")));
    let active = &page.body
        [page.body.find("id=\"h-active\"").unwrap()..page.body.find("id=\"h-upcoming\"").unwrap()];
    assert!(
        active.contains("SEC-1") && active.contains("(1)"),
        "{active}"
    );

    let p = c
        .post(&format!("/exemptions/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page = c.get(p.location()).await;
    let revoked = &page.body[page.body.find("id=\"h-revoked\"").unwrap()..];
    assert!(
        revoked.contains(&format!("ex-row-{id}"))
            && revoked.contains("revoked")
            && revoked.contains("by root"),
        "{revoked}"
    );
    assert!(
        exemptions(&env)
            .await
            .iter()
            .all(|e| !e["revoked_at"].is_null())
    );
    // Twice: the API's 409 message.
    let p = c
        .post(&format!("/exemptions/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(p.status, 409);
}

#[tokio::test]
async fn an_auditor_reads_but_cannot_grant_or_revoke() {
    let env = people().start().await;
    let mut admin = console(&env);
    admin.sign_in(ROOT).await;
    let t = admin.get("/exemptions").await.csrf();
    let p = admin
        .post(
            "/exemptions",
            &[
                ("csrf", &t),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", "trial"),
            ],
        )
        .await;
    let id = p
        .location()
        .trim_start_matches("/exemptions?granted=")
        .to_string();

    let mut sam = console(&env);
    sam.sign_in(AUDITOR).await;
    let page = sam.get("/exemptions").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("ex-row-{id}")),
        "the auditor reads every exemption"
    );
    assert!(
        !page.body.contains("Grant an exemption"),
        "no grant form for an auditor"
    );
    assert!(!page.body.contains("/revoke\""), "no revoke buttons");
    assert_eq!(sam.get("/people").await.status, 200);
    let token = page.csrf();
    let p = sam
        .post(
            "/exemptions",
            &[
                ("csrf", &token),
                ("user", "alice"),
                ("tools", "claude-code"),
                ("for", "1d"),
                ("reason", "mine"),
            ],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("sam") && p.body.contains("one of the roles admin, manager"));
    let p = sam
        .post(&format!("/exemptions/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(p.status, 403);
    let list = exemptions(&env).await;
    assert_eq!(list.len(), 1);
    assert!(list[0]["revoked_at"].is_null());
    let records = env.audit().await;
    let denied: Vec<_> = admin_records(&records, "admin_denied")
        .into_iter()
        .filter(|r| r["user"] == "sam")
        .collect();
    assert_eq!(denied.len(), 2, "{records:#?}");
}

#[tokio::test]
async fn the_one_time_link_signs_in_once() {
    let env = people().start().await;
    let link = env.gateway.signin_link().await.unwrap();
    let base = format!("http://{}", env.gateway.admin_addr);
    assert!(link.starts_with(&format!("{base}/signin/once/")), "{link}");
    let path = link.trim_start_matches(&base).to_string();
    let mut c = console(&env);
    let p = c.get(&path).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), "/");
    let page = c.get("/exemptions").await;
    assert!(
        page.body.contains("<span class=\"user\">root</span>"),
        "the first admin token's user"
    );
    // Used: a clear page, no session.
    let mut late = console(&env);
    let p = late.get(&path).await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("This sign-in link no longer works"));
    assert!(late.cookie.is_none());
    let records = env.audit().await;
    let ins = admin_records(&records, "console_signed_in");
    assert_eq!(ins[0]["admin"]["via"], "link");
    let refused = admin_records(&records, "console_signin_refused");
    assert_eq!(refused[0]["path"], "/signin/once/…");
    let secret = path.trim_start_matches("/signin/once/");
    assert!(!env.audit_text().contains(secret));
}

#[tokio::test]
async fn without_admin_tokens_the_link_signs_in_the_built_in_local_admin() {
    let clock = Arc::new(TestClock::default());
    let env = TestEnv::builder().clock(clock.clone()).start().await;
    let base = format!("http://{}", env.gateway.admin_addr);
    let link = env.gateway.signin_link().await.unwrap();
    let mut c = console(&env);
    assert_eq!(c.get(link.trim_start_matches(&base)).await.status, 303);
    let page = c.get("/exemptions").await;
    assert!(
        page.body
            .contains("<span class=\"user\">local-admin</span>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Grant an exemption"));
    // Expired after 15 minutes.
    let link = env.gateway.signin_link().await.unwrap();
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let mut late = console(&env);
    assert_eq!(late.get(link.trim_start_matches(&base)).await.status, 401);
}

/// A client for `https://…` trusting only `ca_pem`.
fn tls_console(base: String, ca_pem: &str) -> ConsoleClient {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .use_rustls_tls()
        .build()
        .unwrap();
    ConsoleClient::with_http(base, http)
}

#[tokio::test]
async fn over_tls_with_a_minted_certificate_the_cookie_is_secure_and_host_only() {
    let env = people()
        .replace("# [console.tls]", "[console.tls]")
        .replace("# mint = true", "mint = true")
        .start()
        .await;
    let base = env.gateway.console_url();
    assert_eq!(base, format!("https://{}", env.gateway.admin_addr));
    // Trusted through aigate's own CA, the one clients already have.
    let mut c = tls_console(base.clone(), env.gateway.ca_cert_pem());
    let signed = c.sign_in(ROOT).await;
    let cookie = signed.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-aigate_session="), "{cookie}");
    for flag in ["; Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert_eq!(c.get("/exemptions").await.status, 200);
    // The JSON API is on the same TLS listener.
    let mut api = tls_console(base.clone(), env.gateway.ca_cert_pem());
    assert_eq!(api.get("/healthz").await.body, "ok\n");
    // Plain HTTP gets no page.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/signin", env.gateway.admin_addr))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let link = env.gateway.signin_link().await.unwrap();
    assert!(link.starts_with(&format!("{base}/signin/once/")), "{link}");
}

#[tokio::test]
async fn over_tls_with_the_company_certificate_files() {
    let company = crate::common::TestCa::new("company CA");
    let (cert, key) = company.leaf_pem(&["127.0.0.1", "localhost"]);
    let files = tempfile::tempdir().unwrap();
    let cert_path = files.path().join("console-cert.pem");
    let key_path = files.path().join("console-key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let env = people()
        .replace("# [console.tls]", "[console.tls]")
        .replace(
            "# cert = \"/etc/aigate/console-cert.pem\"",
            &format!("cert = {:?}", cert_path.display().to_string()),
        )
        .replace(
            "# key = \"/etc/aigate/console-key.pem\"",
            &format!("key = {:?}", key_path.display().to_string()),
        )
        .start()
        .await;
    let mut c = tls_console(env.gateway.console_url(), &company.cert_pem);
    c.sign_in(ROOT).await;
    assert_eq!(c.get("/people").await.status, 200);
    // aigate's own CA did not sign it.
    let other = tls_console(env.gateway.console_url(), env.gateway.ca_cert_pem());
    let r = other.http_get_raw("/signin").await;
    assert!(r.is_err(), "a certificate aigate's CA did not sign");
}

/// Until the gateway has reached PostgreSQL (and applied the migrations).
async fn until_db_up(gw: &aigate::AppHandle) {
    for _ in 0..500 {
        if gw.storage_up() == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("PostgreSQL never came up");
}

/// Two replicas on one PostgreSQL, as behind a load balancer: a session made through one
/// serves pages and forms through the other, signing out on one ends it on both, a one-time
/// link printed by one works through the other (once), and the table holds only hashes.
#[tokio::test]
async fn a_session_made_on_one_replica_is_good_on_the_other() {
    let pg = crate::postgres::Postgres::start();
    let env = people()
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"",
                pg.url()
            ),
        )
        .start()
        .await;
    let b = env
        .variant("b", |t| {
            t.replace("replica_id = \"a\"", "replica_id = \"b\"")
        })
        .await;
    until_db_up(&env.gateway).await;
    until_db_up(&b).await;
    let mut on_a = console(&env);
    on_a.sign_in(ROOT).await;
    let mut on_b = ConsoleClient::new(b.admin_addr);
    on_b.cookie = on_a.cookie.clone();
    let page = on_b.get("/exemptions").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<span class=\"user\">root</span>"));
    // The CSRF token is the session's, whichever replica rendered the form.
    let token = on_a.get("/exemptions").await.csrf();
    assert_eq!(page.csrf(), token);
    let p = on_b.post("/exemptions", &grant_form(&token)).await;
    assert_eq!(p.status, 303, "{}", p.body);
    // Only hashes in the table.
    let db = pg.client().await;
    let keys: Vec<String> = db
        .query("SELECT key FROM aigate_console_sessions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let id = on_a.cookie.clone().unwrap();
    let id = id.split_once('=').unwrap().1.to_string();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.len() == 64 && *k != id), "{keys:?}");
    // Sign-out through b ends the session for a too.
    let out = on_b.post("/signout", &[("csrf", &token)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(on_a.get("/exemptions").await.status, 303);
    // A one-time link printed by a, opened through b: once.
    let link = env.gateway.signin_link().await.unwrap();
    let path = link.split_once("/signin/once/").unwrap().1;
    let mut via_b = ConsoleClient::new(b.admin_addr);
    let p = via_b.get(&format!("/signin/once/{path}")).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(via_b.get("/people").await.status, 200);
    let mut again = console(&env);
    assert_eq!(again.get(&format!("/signin/once/{path}")).await.status, 401);
    b.shutdown().await;
}
