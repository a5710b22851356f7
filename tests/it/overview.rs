//! The console's Overview (`/`) over real HTTP: its counts are the explorer's and
//! `aigate audit query`'s for the same window, repeats collapse into attempts whose links list
//! exactly their records, a manager's Overview counts only their reports, and the audit
//! chain's state is verified in the background, cached, and names a broken line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::common::{ConsoleClient, TestClock};
use crate::explorer::{AUDITOR, BOB, cli, ids_on, reviewed_with, reviewers};

/// The number in an element with this id.
pub(crate) fn number(body: &str, id: &str) -> u64 {
    let at = body
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at + id.len() + 6..];
    rest[..rest.find('<').unwrap()].parse().unwrap()
}

/// The attempts table's links: (count shown, explorer link).
fn attempts(body: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("class=\"attempt-count\" href=\"") {
        rest = &rest[at + "class=\"attempt-count\" href=\"".len()..];
        let href = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
        let n = rest.find('×').unwrap();
        let count = rest[n + '×'.len_utf8()..]
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        out.push((count, href));
    }
    out
}

async fn chain_state(c: &mut ConsoleClient, want: &str) -> String {
    for _ in 0..100 {
        let body = c.get("/").await.body;
        let state = body
            .split("id=\"chain-state\"")
            .nth(1)
            .unwrap()
            .split("</p>")
            .next()
            .unwrap()
            .to_string();
        if state.contains(want) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the chain state never said {want}");
}

#[tokio::test]
async fn the_overview_counts_what_the_explorer_lists_and_collapses_retries() {
    let clock = Arc::new(TestClock::default());
    let (env, _) = reviewed_with(reviewers().clock(clock.clone())).await;
    let log = env.gateway.audit().path().to_path_buf();
    let mut c = ConsoleClient::new(env.gateway.admin_addr);
    c.sign_in(AUDITOR).await;
    let page = c.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = page.body;
    let count = |flags: &[&str]| {
        let mut args = vec!["--format", "json", "--since", "24h"];
        args.extend_from_slice(flags);
        cli(&log, &args).0.lines().count() as u64
    };
    assert_eq!(number(&body, "n-blocked"), count(&["--action", "block"]));
    assert_eq!(
        number(&body, "n-monitored"),
        count(&["--action", "monitor"])
    );
    assert_eq!(number(&body, "n-blocked"), 5);
    // alice's two Claude Code blocks are one attempt, and so are dave's; the anonymous one is
    // its own. Each attempt's link lists exactly its records.
    let shown = attempts(&body);
    assert_eq!(number(&body, "n-attempts"), 3);
    let mut counts: Vec<u64> = shown.iter().map(|(n, _)| *n).collect();
    counts.sort();
    assert_eq!(counts, [1, 2, 2]);
    for (n, href) in &shown {
        let listed = c.get(href).await;
        assert_eq!(listed.status, 200, "{href}: {}", listed.body);
        assert_eq!(ids_on(&listed.body).len() as u64, *n, "{href}");
    }
    // The charts read without pictures: a title, a description and a table of the numbers.
    assert!(body.contains("<title id=\"timeline-title\">"));
    assert!(
        body.contains("claude-code: 5 blocked, 0 monitored"),
        "{body}"
    );
    assert!(
        body.contains("anthropic-sdk: 0 blocked, 2 monitored"),
        "{body}"
    );
    // The ranges.
    assert_eq!(c.get("/?range=30d").await.status, 200);

    // A manager's Overview counts their reports' records only.
    let mut bob = ConsoleClient::new(env.gateway.admin_addr);
    bob.sign_in(BOB).await;
    let mine = bob.get("/").await.body;
    assert_eq!(number(&mine, "n-blocked"), 2, "alice's blocks");
    assert_eq!(attempts(&mine).len(), 1);

    // The chain: verified in the background on the first view, then shown from the cache.
    let ok = chain_state(&mut c, "Verified").await;
    assert!(ok.contains("up to record"), "{ok}");
    // An edited record is named once the cache is stale, at the next view.
    let text = std::fs::read_to_string(&log).unwrap();
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"user\":\"alice\""))
        .unwrap();
    let edited = line.replacen("\"user\":\"alice\"", "\"user\":\"mallory\"", 1);
    std::fs::write(&log, text.replacen(line, &edited, 1)).unwrap();
    assert!(
        c.get("/").await.body.contains("Verified"),
        "cached for a while"
    );
    clock.advance(Duration::from_secs(11 * 60));
    let broken = chain_state(&mut c, "Broken").await;
    assert!(
        broken.contains(&format!("line {}: record was edited", i + 1)),
        "{broken}"
    );
}
