//! The audit explorer and the Overview in a real headless Chromium: sign in, filter (with
//! htmx, and the URL in step), page, open a permalink from a deny message's id, export; by
//! keyboard where a reviewer would. Screenshots in `target/console-screenshots/` (audit,
//! audit-record, overview), each checked by axe-core. What the pages answer is compared with
//! `aigate audit query` in `explorer.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::Browser;
use crate::explorer::{AUDITOR, cli, ids_on, reviewed};

const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";

#[tokio::test]
async fn a_reviewer_filters_pages_opens_and_exports_in_the_browser() {
    let (env, blocked) = reviewed().await;
    let log = env.gateway.audit().path().to_path_buf();
    let base = format!("http://{}", env.gateway.admin_addr);
    let b = Browser::start().await;

    b.goto(&format!("{base}/audit")).await;
    assert_eq!(b.path().await, "/signin?next=%2Faudit");
    b.find("#token")
        .await
        .send_keys(&format!("{AUDITOR}{ENTER}"))
        .await
        .unwrap();
    b.find("#audit-filter").await;
    assert_eq!(b.path().await, "/audit");
    b.check("audit").await;

    // The keyboard reaches the filter: Tab from the id search goes on to the first field, and
    // Enter in a field shows the result (htmx swaps it in and puts the filter in the URL).
    b.find("#find-id").await.click().await.unwrap();
    b.keys(TAB).await;
    assert_eq!(b.focused().await, "", "the Open button");
    b.keys(TAB).await;
    assert_eq!(b.focused().await, "f-action");
    b.keys(&format!("block{ENTER}")).await;
    wait_for_path(&b, "/audit?action=block").await;
    let (out, _) = cli(&log, &["--format", "json", "--action", "block"]);
    let want = out.lines().count();
    let html = b.client.source().await.unwrap();
    assert_eq!(ids_on(&html).len(), want, "{html}");
    assert!(want >= 3);
    b.check("audit-filtered").await;

    // Pages of 2: the "Older records" link, then back to the newest.
    b.goto(&format!("{base}/audit?action=block&limit=2")).await;
    let first = ids_on(&b.client.source().await.unwrap());
    assert_eq!(first.len(), 2);
    b.find("#next-page").await.click().await.unwrap();
    b.client
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(fantoccini::Locator::XPath("//a[text()='Newest']"))
        .await
        .unwrap();
    let second = ids_on(&b.client.source().await.unwrap());
    assert!(!second.is_empty() && second.iter().all(|id| !first.contains(id)));
    assert!(b.path().await.contains("cursor="));

    // The id of a deny message opens its record.
    b.goto(&format!("{base}/audit")).await;
    b.find("#find-id")
        .await
        .send_keys(&format!("{blocked}{ENTER}"))
        .await
        .unwrap();
    b.find("#h-rules").await;
    assert_eq!(b.path().await, format!("/audit/{blocked}"));
    assert!(
        b.text("#explain-decision")
            .await
            .contains("rival-coding-tools-in-protected-workflows")
    );
    b.check("audit-record").await;
    b.client
        .execute(
            "document.getElementById('h-rules').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    b.check("audit-record-rules").await;

    // The exports, as the browser fetches the links on the page: what the CLI prints.
    b.goto(&format!("{base}/audit?user=alice")).await;
    for (link, format) in [("Export CSV", "csv"), ("Export JSON Lines", "json")] {
        let href = b
            .client
            .find(fantoccini::Locator::LinkText(link))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        let got = b
            .client
            .execute(
                "return fetch(arguments[0]).then(r => r.text())",
                vec![serde_json::Value::String(href.clone())],
            )
            .await
            .unwrap();
        let (want, _) = cli(&log, &["--format", format, "--user", "alice"]);
        assert_eq!(got.as_str().unwrap(), want, "{href}");
    }
    // The Overview: the charts, the collapsed attempts, the chain.
    b.find("nav a[href='/']").await.click().await.unwrap();
    b.find("#h-attempts").await;
    assert_eq!(b.path().await, "/");
    b.check("overview").await;
    b.find("#h-attempts").await.click().await.unwrap();
    b.client
        .execute(
            "document.getElementById('h-users').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    b.check("overview-lists").await;
    b.find(".attempt-count").await.click().await.unwrap();
    b.find("#audit-filter").await;
    assert!(b.path().await.starts_with("/audit?action=block&user="));
    b.close().await;
}

/// Wait until the browser's address is `want` (htmx pushes it after the swap).
async fn wait_for_path(b: &Browser, want: &str) {
    for _ in 0..100 {
        if b.path().await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the address is {}, not {want}", b.path().await);
}
