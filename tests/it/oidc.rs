//! Console sign-in with a real OpenID provider (tests/fixtures/oidc/provider.mjs, the certified
//! `oidc-provider` package): the whole authorization code flow over HTTP with a cookie-keeping
//! client, and each ID token check refusing a token that is wrong in that one respect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;

use std::net::SocketAddr;

use crate::common::{Balancer, Idp, TestEnv};

const PEOPLE: &str =
    "[[users]]\nid = \"carol\"\n\n[[users]]\nid = \"alice\"\nmanager = \"carol\"\n";
const ROLES: &str = "user_claim = \"preferred_username\"\nroles = { \"sec-team\" = \"auditor\", \"it-admins\" = \"admin\", \"approvers\" = \"approver\" }\n";

async fn gateway(idp: &Idp, extra: &str) -> TestEnv {
    TestEnv::builder()
        .replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        )
        .users(PEOPLE)
        .oidc(idp, extra)
        .start()
        .await
}

/// A browser: keeps cookies, follows redirects (but stops at the callback's answer, so tests see
/// where it sends the browser), no proxy.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(|a| {
            let from_callback = a
                .previous()
                .last()
                .is_some_and(|u| u.path() == "/console/oidc/callback");
            if from_callback { a.stop() } else { a.follow() }
        }))
        .build()
        .unwrap()
}

/// What the callback answered: status, `Location`, page.
struct Answer {
    status: u16,
    location: String,
    page: String,
}

/// A console page, in `browser` (its session cookie): the page, or a panic if the browser is
/// not signed in (sent to /signin).
async fn console_page(env: &TestEnv, browser: &reqwest::Client, path: &str) -> (u16, String) {
    console_page_at(env.gateway.admin_addr, browser, path).await
}

async fn console_page_at(
    admin: SocketAddr,
    browser: &reqwest::Client,
    path: &str,
) -> (u16, String) {
    let r = browser
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    assert_ne!(status, 303, "not signed in: sent to {location:?}");
    (status, r.text().await.unwrap())
}

/// The console's sign-in URL; waits until discovery has succeeded.
async fn login_url(env: &TestEnv, next: &str) -> String {
    login_url_at(env.gateway.admin_addr, next).await
}

/// [`login_url`] of the console at `admin` (a replica, or a balancer in front of several).
async fn login_url_at(admin: SocketAddr, next: &str) -> String {
    let url = format!("http://{admin}/console/oidc/login?next={}", urlencode(next));
    let probe = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    for _ in 0..600 {
        if probe.get(&url).send().await.unwrap().status() == 303 {
            // People start from the link on the sign-in page, which keeps `next`.
            let signin = probe
                .get(format!("http://{admin}/signin?next={}", urlencode(next)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let href = signin
                .split("id=\"signin-oidc\" href=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no OIDC link on /signin: {signin}"))
                .replace("&amp;", "&");
            assert!(signin.contains("Sign in with 127.0.0.1"), "{signin}");
            return format!("http://{admin}{href}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("OIDC discovery did not succeed within 60 s");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The whole flow as `user`: the console sends the browser to the provider, the person signs in
/// there, the provider sends them back. The callback's answer.
async fn sign_in(env: &TestEnv, browser: &reqwest::Client, user: &str, next: &str) -> Answer {
    sign_in_at(env.gateway.admin_addr, browser, user, next, || {}).await
}

/// [`sign_in`] through the console at `admin`; `at_provider` runs while the person is on the
/// provider's page (a balancer is pointed at another replica there).
async fn sign_in_at(
    admin: SocketAddr,
    browser: &reqwest::Client,
    user: &str,
    next: &str,
    at_provider: impl FnOnce(),
) -> Answer {
    let url = login_url_at(admin, next).await;
    let form = browser.get(&url).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(
        form.url().path().starts_with("/interaction/"),
        "the provider's sign-in page: {}",
        form.url()
    );
    let at = form.url().clone();
    at_provider();
    let done = browser
        .post(at)
        .form(&[("login", user)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.url().path(), "/console/oidc/callback");
    let status = done.status().as_u16();
    // A signed-in callback answers a console page that moves on by `Refresh` (a 303 would keep
    // the provider's site as the navigation's origin, and the Strict session cookie would stay
    // behind); a refusal is a page of its own.
    let location = done
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .or_else(|| {
            done.headers().get("refresh").map(|v| {
                let v = v.to_str().unwrap();
                v.split_once("url=").unwrap().1.to_string()
            })
        })
        .unwrap_or_default();
    Answer {
        status,
        location,
        page: done.text().await.unwrap(),
    }
}

async fn sign_in_records(env: &TestEnv) -> Vec<Value> {
    env.gateway.audit().flush().await;
    crate::common::raw_records_of(&env.gateway)
        .await
        .into_iter()
        .filter(|r| r["reason"] == "console_signed_in" || r["reason"] == "console_signin_refused")
        // `login_url`'s probes while discovery had not finished.
        .filter(|r| r["admin"]["check"] != "unavailable")
        .collect()
}

#[tokio::test]
async fn signs_in_with_roles_from_groups_and_the_directory() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, ROLES).await;
    for (user, roles, status) in [
        ("sam", vec!["auditor"], 200),
        ("root", vec!["admin"], 200),
        ("carol", vec!["manager"], 200),
        ("ann", vec!["approver"], 200),
        // Signed in, with no role: the page says what is missing.
        ("alice", vec![], 403),
    ] {
        let b = browser();
        let a = sign_in(&env, &b, user, "/exemptions").await;
        assert_eq!(a.status, 200, "{}", a.page);
        assert_eq!(a.location, "/exemptions");
        // The console session: the page asked for loads with the cookie, as this user.
        let (got, page) = console_page(&env, &b, "/exemptions").await;
        assert_eq!(got, status, "{user}: {page}");
        assert!(
            page.contains(&format!("<span class=\"user\">{user}</span>")),
            "{page}"
        );
        let records = sign_in_records(&env).await;
        let r = records.last().unwrap();
        assert_eq!(r["reason"], "console_signed_in");
        assert_eq!(r["kind"], "admin");
        assert_eq!(r["action"], "allow");
        assert_eq!(r["user"], user);
        assert_eq!(r["admin"]["via"], "oidc");
        assert_eq!(r["admin"]["issuer"], idp.issuer.as_str());
        assert_eq!(r["admin"]["subject"], user);
        assert_eq!(r["admin"]["roles"], serde_json::json!(roles));
    }
    let records = sign_in_records(&env).await;
    assert_eq!(records.len(), 5, "{records:#?}");
    // Neither the code nor the secret is in the log.
    let text = env.audit_text();
    assert!(!text.contains(crate::common::IDP_CLIENT_SECRET));
    assert!(!text.contains("code="));
}

/// Signs in through the provider, whose token endpoint returns an ID token that is wrong in one
/// respect; the console must refuse it and name the check.
async fn refused_by(tamper: &str, check: &str) {
    let idp = Idp::start(Some(tamper)).await;
    let env = gateway(&idp, ROLES).await;
    let b = browser();
    let a = sign_in(&env, &b, "root", "/").await;
    assert_eq!(a.status, 403, "{tamper}: {}", a.page);
    assert!(a.page.contains("Sign-in refused"), "{}", a.page);
    // No session: the console sends the browser to sign in.
    let r = b
        .get(format!("http://{}/people", env.gateway.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/signin", "{tamper}");
    let records = sign_in_records(&env).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["reason"], "console_signin_refused");
    assert_eq!(r["action"], "block");
    assert_eq!(r["status"], 403);
    assert_eq!(r["admin"]["check"], check, "{r:#}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("oidc {check}: the ID token was refused")),
        "{r:#}"
    );
}

#[tokio::test]
async fn an_id_token_signed_by_another_key_is_refused() {
    refused_by("foreign_key", "signature").await;
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    refused_by("audience", "audience").await;
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    refused_by("issuer", "issuer").await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    refused_by("expired", "expired").await;
}

#[tokio::test]
async fn an_id_token_with_another_sign_ins_nonce_is_refused() {
    refused_by("nonce", "nonce").await;
}

/// An e-mail address the provider itself says is unverified names nobody: mallory's claims
/// say alice's address, unverified.
#[tokio::test]
async fn an_unverified_email_is_no_identity() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, "roles = { \"it-admins\" = \"admin\" }\n").await;
    let a = sign_in(&env, &browser(), "mallory", "/").await;
    assert_eq!(a.status, 403, "{}", a.page);
    let records = sign_in_records(&env).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["admin"]["check"], "user");
    // With a verified one, the default claim (email) is the user.
    let b = browser();
    let a = sign_in(&env, &b, "sam", "/people").await;
    assert_eq!(a.status, 200, "{}", a.page);
    let (_, page) = console_page(&env, &b, "/people").await;
    assert!(
        page.contains("<span class=\"user\">sam@example.com</span>"),
        "{page}"
    );
}

/// Issue 16: two replicas on one PostgreSQL behind a load balancer. The sign-in starts on
/// replica A (which keeps the PKCE verifier, nonce and browser binding), the provider's
/// redirect back reaches replica B, and B finishes it: started sign-ins live in PostgreSQL, not
/// in A's memory. The session then serves pages through either replica.
#[tokio::test]
async fn a_sign_in_started_on_one_replica_finishes_on_the_other() {
    let pg = crate::postgres::Postgres::start();
    let idp = Idp::start(None).await;
    let lb = Balancer::start().await;
    // Both replicas name the balancer as the callback, as replicas behind one do.
    let env = TestEnv::builder()
        .replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        )
        .users(PEOPLE)
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"",
                pg.url()
            ),
        )
        .oidc(
            &idp,
            &format!(
                "{ROLES}redirect_url = \"http://{}/console/oidc/callback\"\n",
                lb.addr
            ),
        )
        .start()
        .await;
    let b = env
        .variant("b", |t| {
            t.replace("replica_id = \"a\"", "replica_id = \"b\"")
        })
        .await;
    lb.serve(&[env.gateway.admin_addr, b.admin_addr]);
    // Both replicas have discovered the provider and reach the database.
    login_url_at(env.gateway.admin_addr, "/").await;
    login_url_at(b.admin_addr, "/").await;

    lb.to(0);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        // A new connection per request: the balancer decides each one.
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::custom(|a| {
            let from_callback = a
                .previous()
                .last()
                .is_some_and(|u| u.path() == "/console/oidc/callback");
            if from_callback { a.stop() } else { a.follow() }
        }))
        .build()
        .unwrap();
    let answer = sign_in_at(lb.addr, &browser, "sam", "/people", || lb.to(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.page);
    assert_eq!(answer.location, "/people");
    // B signed sam in; A never saw the callback.
    let on = |records: Vec<Value>| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| {
                r["reason"] == "console_signed_in" || r["reason"] == "console_signin_refused"
            })
            .filter(|r| r["admin"]["check"] != "unavailable")
            .map(|r| {
                (
                    r["reason"].as_str().unwrap().to_string(),
                    r["user"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let on_b = on(crate::common::raw_records_of(&b).await);
    assert_eq!(
        on_b,
        vec![("console_signed_in".to_string(), "sam".to_string())]
    );
    assert!(on(crate::common::raw_records_of(&env.gateway).await).is_empty());
    // The session serves pages through A too.
    lb.to(0);
    let (status, page) = console_page_at(lb.addr, &browser, "/people").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<span class=\"user\">sam</span>"), "{page}");
    b.shutdown().await;
}

/// The provider's redirect back works once, and only in the browser that started the sign-in.
#[tokio::test]
async fn a_callback_works_once_and_only_in_its_own_browser() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, ROLES).await;
    let url = login_url(&env, "/").await;
    // Follow everything but the last redirect, to hold the callback URL.
    let victim = reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(|a| {
            if a.url().path() == "/console/oidc/callback" {
                a.stop()
            } else {
                a.follow()
            }
        }))
        .build()
        .unwrap();
    let form = victim.get(&url).send().await.unwrap();
    let back = victim
        .post(form.url().clone())
        .form(&[("login", "root")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303);
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    assert!(
        callback.contains("/console/oidc/callback?code="),
        "{callback}"
    );

    // Another browser (an attacker who planted the link) gets nothing.
    let other = browser().get(&callback).send().await.unwrap();
    assert_eq!(other.status(), 400);
    assert!(other.text().await.unwrap().contains("another browser"));
    // The state is spent: the right browser cannot use it afterwards either.
    let again = victim.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("unknown, expired or already used")
    );
    let checks: Vec<Value> = sign_in_records(&env)
        .await
        .iter()
        .map(|r| r["admin"]["check"].clone())
        .collect();
    assert_eq!(checks, vec!["browser", "state"]);

    // A fresh sign-in, replayed after it succeeded, is refused too.
    let b = browser();
    let a = sign_in(&env, &b, "root", "/").await;
    assert_eq!(a.status, 200);
    let records = sign_in_records(&env).await;
    assert_eq!(records.last().unwrap()["reason"], "console_signed_in");
}

#[tokio::test]
async fn next_is_only_ever_a_local_path() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, ROLES).await;
    for (next, lands) in [
        ("/r/abc123", "/r/abc123"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
    ] {
        let a = sign_in(&env, &browser(), "sam", next).await;
        assert_eq!(a.status, 200, "{}", a.page);
        assert_eq!(a.location, lands, "{next}");
    }
}

/// Starting sign-ins costs memory: one address holds at most 20 pending ones.
#[tokio::test]
async fn sign_in_starts_are_limited_per_address() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, ROLES).await;
    let url = login_url(&env, "/").await; // the probe started one
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    for _ in 1..20 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 303);
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let busy = sign_in_records(&env).await;
    assert_eq!(busy.len(), 1, "{busy:#?}");
    assert_eq!(busy[0]["admin"]["check"], "busy");
}

/// A failed callback is a failed sign-in of the address: after `MAX_FAILURES` (5) in a minute,
/// the callback and the admin-token form answer 429. Both OIDC routes carry the console's
/// security headers. Without `[console.oidc]` the sign-in page has no provider link.
#[tokio::test]
async fn failed_callbacks_count_towards_the_sign_in_limit() {
    let idp = Idp::start(None).await;
    let env = gateway(&idp, ROLES).await;
    login_url(&env, "/").await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let callback = format!(
        "http://{}/console/oidc/callback?code=x&state=forged",
        env.gateway.admin_addr
    );
    for _ in 0..5 {
        let r = c.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    }
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let form = c
        .post(format!("http://{}/signin", env.gateway.admin_addr))
        .form(&[("token", "whatever"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 429, "the token form shares the limit");
    let login = c
        .get(format!(
            "http://{}/console/oidc/login",
            env.gateway.admin_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);
    assert_eq!(login.headers()["x-frame-options"], "DENY");

    let plain = TestEnv::builder().start().await;
    let page = c
        .get(format!("http://{}/signin", plain.gateway.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("signin-oidc"), "{page}");
    let r = c
        .get(format!(
            "http://{}/console/oidc/login",
            plain.gateway.admin_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The provider is down when the gateway starts: the gateway runs, the sign-in page says OIDC
/// is unavailable and why, and sign-in works once the provider is up (discovery retries).
#[tokio::test]
async fn a_provider_down_at_start_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let env = TestEnv::builder()
        .replace("# users_file = \"users.toml\"", "users_file = \"users.toml\"")
        .users(PEOPLE)
        .file("oidc-client-secret", crate::common::IDP_CLIENT_SECRET)
        .append(&format!(
            "\n[console.oidc]\nissuer = \"{issuer}\"\nclient_id = \"{}\"\nclient_secret_file = \"oidc-client-secret\"\nscopes = [\"openid\", \"groups\", \"profile\"]\n{ROLES}",
            crate::common::IDP_CLIENT_ID
        ))
        .start()
        .await;
    let url = format!("http://{}/console/oidc/login", env.gateway.admin_addr);
    let r = browser().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let page = r.text().await.unwrap();
    assert!(page.contains("is unavailable"), "{page}");
    assert!(page.contains("/.well-known/openid-configuration"), "{page}");
    // The gateway itself is fine.
    let health = browser()
        .get(format!("http://{}/readyz", env.gateway.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The sign-in page offers the provider, says why it cannot be used, and keeps the token form.
    let signin = browser()
        .get(format!("http://{}/signin", env.gateway.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(signin.contains("Sign in with 127.0.0.1"), "{signin}");
    assert!(signin.contains("is unavailable right now"), "{signin}");
    assert!(signin.contains("name=\"token\""), "{signin}");

    let _idp = Idp::start_on(None, port).await;
    let b = browser();
    let a = sign_in(&env, &b, "sam", "/people").await;
    assert_eq!(a.status, 200, "{}", a.page);
    let (status, page) = console_page(&env, &b, "/people").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<span class=\"user\">sam</span>"), "{page}");
}

/// The commented `[console.oidc]` example in the shipped config is valid once uncommented.
#[test]
fn the_shipped_example_is_valid() {
    let text = aigate::config::DEFAULT_CONFIG;
    let start = text.find("# [console.oidc]").expect("the example");
    let end = start + text[start..].find("\n\n").unwrap();
    let example: String = text[start..end]
        .lines()
        .filter(|l| !l.starts_with("# #"))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = aigate::config::load_str(
        &format!("{text}\n{example}\n"),
        "example",
        std::path::Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let oidc = cfg.console.oidc.expect("[console.oidc]");
    assert_eq!(oidc.issuer, "https://login.example.com/realms/corp");
    assert_eq!(oidc.user_claim, "email");
    assert_eq!(oidc.roles.len(), 3);
    assert!(
        oidc.roles
            .iter()
            .any(|(g, r)| g == "sec-approvers" && *r == aigate::config::Role::Approver)
    );
}
