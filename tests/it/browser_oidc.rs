//! Console sign-in with the company's OpenID provider in a real headless Chromium, through the
//! real `oidc-provider` (tests/fixtures/oidc/provider.mjs), with the provider on another site
//! (`localhost`) than the console (`127.0.0.1`), as a company IdP is. The provider's redirect
//! back is then a cross-site navigation: the console's `SameSite=Strict` session cookie must
//! still hold on the page it lands on. Sign-out ends the provider's session too (RP-initiated
//! logout) and comes back to the console's signed-out page, so the next sign-in asks for the
//! login again. Screenshots in
//! `target/console-screenshots/oidc-*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::{Browser, Idp, TestEnv};

const ENTER: &str = "\u{e007}";
const PEOPLE: &str =
    "[[users]]\nid = \"carol\"\n\n[[users]]\nid = \"alice\"\nmanager = \"carol\"\n";
const ROLES: &str = "user_claim = \"preferred_username\"\nroles = { \"sec-team\" = \"auditor\", \"it-admins\" = \"admin\", \"approvers\" = \"approver\" }\n";

/// Until discovery has succeeded, the sign-in link answers 503.
async fn wait_for_discovery(env: &TestEnv) {
    let probe = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("http://{}/console/oidc/login", env.gateway.admin_addr);
    for _ in 0..600 {
        if probe.get(&url).send().await.unwrap().status() == 303 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("OIDC discovery did not succeed within 60 s");
}

/// From the console's sign-in page to the provider's login form, and back as `user`.
async fn sign_in_at_provider(b: &Browser, user: &str) {
    b.find("#signin-oidc").await.click().await.unwrap();
    let login = b.find("input[name=login]").await;
    let at = b.client.current_url().await.unwrap();
    assert_eq!(
        at.host_str(),
        Some("localhost"),
        "the provider's page: {at}"
    );
    login.send_keys(&format!("{user}{ENTER}")).await.unwrap();
}

#[tokio::test]
async fn oidc_sign_in_across_sites_maps_groups_and_sign_out_ends_the_provider_session() {
    let idp = Idp::start_at("localhost").await;
    assert!(
        idp.issuer.starts_with("http://localhost:"),
        "{}",
        idp.issuer
    );
    let env = TestEnv::builder()
        .replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        )
        .users(PEOPLE)
        .oidc(&idp, ROLES)
        .start()
        .await;
    let base = format!("http://{}", env.gateway.admin_addr);
    wait_for_discovery(&env).await;
    let b = Browser::start().await;

    b.goto(&format!("{base}/requests")).await;
    assert_eq!(b.path().await, "/signin?next=%2Frequests");
    b.check("oidc-signin").await;
    sign_in_at_provider(&b, "sam").await;
    // Back on the console's own page after the cross-site redirect, signed in: sam is an
    // auditor through the provider's group `sec-team`.
    b.find("#main").await;
    assert_eq!(b.path().await, "/requests", "{}", b.text("#main").await);
    assert_eq!(b.text(".who .user").await, "sam");
    assert_eq!(b.text(".who .roles").await, "auditor");
    let session = b.client.get_named_cookie("aigate_session").await.unwrap();
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert_eq!(session.http_only(), Some(true));
    b.check("oidc-signed-in").await;

    // Sign-out: the console's session ends, then the provider's (its end_session_endpoint, with
    // its own confirmation page), which sends the browser back to the console's signed-out page
    // (`post_logout_redirect_uri`) rather than leaving it on the provider's.
    b.find("form[action='/signout'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.find("button[name=logout]").await.click().await.unwrap();
    let mut at = b.client.current_url().await.unwrap();
    for _ in 0..100 {
        at = b.client.current_url().await.unwrap();
        if at.path() == "/signed-out" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (at.host_str(), at.port(), at.path()),
        (
            Some("127.0.0.1"),
            Some(env.gateway.admin_addr.port()),
            "/signed-out"
        ),
        "{}",
        b.text("body").await
    );
    assert!(b.text("h1").await.contains("Signed out"));
    b.check("oidc-signed-out").await;

    // Signed out at both ends: the console asks for a sign-in, and the provider for the login
    // again (with its session still alive it would send the browser straight back). root is an
    // admin through `it-admins`.
    b.goto(&format!("{base}/requests")).await;
    assert_eq!(b.path().await, "/signin?next=%2Frequests");
    sign_in_at_provider(&b, "root").await;
    b.find("#main").await;
    assert_eq!(b.path().await, "/requests");
    assert_eq!(b.text(".who .user").await, "root");
    assert_eq!(b.text(".who .roles").await, "admin");
    b.close().await;

    let records = env.audit().await;
    let story: Vec<(String, String)> = records
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|x| x.starts_with("console_sign"))
                // `wait_for_discovery`'s probes while discovery had not finished.
                && r["admin"]["check"] != "unavailable"
        })
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        story,
        vec![
            ("console_signed_in".to_string(), "sam".to_string()),
            ("console_signed_out".to_string(), "sam".to_string()),
            ("console_signed_in".to_string(), "root".to_string()),
        ]
    );
    let out = records
        .iter()
        .find(|r| r["reason"] == "console_signed_out")
        .unwrap();
    assert_eq!(out["admin"]["provider_logout"], true, "{out}");
}
