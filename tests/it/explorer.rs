//! The console's audit explorer (`/audit`) against the real `aigate audit query` on the same
//! log: the same records for the same filter, page by page, and byte for byte in both
//! exports; a manager's scope; permalinks, the id search, and the rules considered as
//! `explain` answers them. The browser walk-through is in `browser_explorer.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

use crate::common::{ConsoleClient, TestEnv, client_for};

pub const ROOT: &str = "root-admin-token-0004";
pub const AUDITOR: &str = "auditor-token-0005";
pub const BOB: &str = "bob-manager-token-0002";
const ALICE: &str = "alice-token-0006";
const DAVE: &str = "dave-token-0007";

const CLAUDE: &str = "claude-cli/2.1.0 (external, cli)";
const SDK: &str = "Anthropic/Python 0.69.0";

/// root (admin), sam (auditor); bob manages alice; dave reports to carol.
pub fn reviewers() -> crate::common::Builder {
    let h = aigate::identify::user::hash_token;
    TestEnv::builder()
        .replace("# users_file = \"users.toml\"", "users_file = \"users.toml\"")
        .append(&format!(
            "\n[[rules]]\nname = \"watch-anthropic-sdk\"\naction = \"monitor\"\ntools = [\"anthropic-sdk\"]\n\
             \n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n[[admin.tokens]]\nuser = \"sam\"\nroles = [\"auditor\"]\nhash = \"{}\"\n",
            h(ROOT),
            h(AUDITOR)
        ))
        .users(&format!(
            "[[users]]\nid = \"carol\"\nroles = [\"manager\"]\n\n[[users]]\nid = \"bob\"\nname = \"Bob Brown\"\nmanager = \"carol\"\nroles = [\"manager\"]\ntokens = [\"{}\"]\n\n[[users]]\nid = \"alice\"\nname = \"Alice Adams\"\nmanager = \"bob\"\ntokens = [\"{}\"]\n\n[[users]]\nid = \"dave\"\nmanager = \"carol\"\ntokens = [\"{}\"]\n",
            h(BOB),
            h(ALICE),
            h(DAVE)
        ))
}

/// A gateway with a few calls of each kind by alice, dave and anonymous callers: blocks,
/// monitors, allows; the request id of alice's first block.
pub async fn reviewed() -> (TestEnv, String) {
    reviewed_with(reviewers()).await
}

/// As [`reviewed`], on a gateway of `builder` (one with a test clock, say).
pub async fn reviewed_with(builder: crate::common::Builder) -> (TestEnv, String) {
    let env = builder.start().await;
    let mut blocked_id = String::new();
    let calls: [(&str, &str, &str); 9] = [
        ("alice", "api.anthropic.com/v1/messages", CLAUDE),
        ("dave", "api.anthropic.com/v1/messages", CLAUDE),
        ("alice", "api.anthropic.com/v1/messages", SDK),
        (
            "",
            "api.openai.com/v1/chat/completions",
            "OpenAI/Python 2.1.0",
        ),
        ("alice", "api.anthropic.com/v1/messages?beta=true", CLAUDE),
        ("dave", "api.anthropic.com/v1/messages", SDK),
        ("", "api.anthropic.com/v1/messages", CLAUDE),
        (
            "alice",
            "api.openai.com/v1/responses",
            "OpenAI/Python 2.1.0",
        ),
        ("dave", "api.anthropic.com/v1/complete", CLAUDE),
    ];
    for (user, url, ua) in calls {
        let cred = match user {
            "alice" => format!("alice:{ALICE}@"),
            "dave" => format!("dave:{DAVE}@"),
            _ => String::new(),
        };
        let resp = client_for(&env.gateway, &cred, false)
            .post(format!("https://{url}"))
            .header("user-agent", ua)
            .header("x-stainless-lang", "python")
            .body("{\"model\":\"m-1\"}")
            .send()
            .await
            .unwrap();
        if user == "alice" && resp.status() == 403 && blocked_id.is_empty() {
            blocked_id = crate::common::request_id(resp.headers());
        }
        drop(resp.bytes().await.unwrap());
    }
    env.audit_n(9).await;
    assert!(!blocked_id.is_empty(), "alice's Claude Code is blocked");
    (env, blocked_id)
}

/// `aigate audit query LOG ARGS…` with the real binary: its stdout, and the next cursor it
/// printed on stderr.
pub fn cli(log: &std::path::Path, args: &[&str]) -> (String, Option<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("AIGATE_CONFIG")
        .env("RUST_LOG", "off")
        .args(["audit", "query", log.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let next = stderr
        .lines()
        .find_map(|l| l.strip_prefix("next page: --cursor "))
        .map(str::to_string);
    (String::from_utf8(out.stdout).unwrap(), next)
}

/// The record ids a page of the explorer lists, in its order.
pub fn ids_on(body: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("aria-label=\"Record ") {
        rest = &rest[at + "aria-label=\"Record ".len()..];
        ids.push(rest[..rest.find('"').unwrap()].to_string());
    }
    ids
}

/// The "Older records" link of a page, if there is one.
fn next_link(body: &str) -> Option<String> {
    let at = body.find("id=\"next-page\" rel=\"next\" href=\"")?;
    let rest = &body[at + "id=\"next-page\" rel=\"next\" href=\"".len()..];
    Some(rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
}

fn json_ids(lines: &str) -> Vec<String> {
    lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn signed_in(env: &TestEnv, token: &str) -> ConsoleClient {
    let mut c = ConsoleClient::new(env.gateway.admin_addr);
    c.sign_in(token).await;
    c
}

#[tokio::test]
async fn the_explorer_pages_and_exports_what_audit_query_answers() {
    let (env, _) = reviewed().await;
    let log = env.gateway.audit().path().to_path_buf();
    let mut c = signed_in(&env, AUDITOR).await;
    // (the explorer's URL parameters, the CLI's flags)
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("", vec![]),
        ("action=block", vec!["--action", "block"]),
        (
            "user=alice&since=1h",
            vec!["--user", "alice", "--since", "1h"],
        ),
        (
            "tool=claude-code&vendor=anthropic",
            vec!["--tool", "claude-code", "--vendor", "anthropic"],
        ),
        (
            "action=monitor&rule=watch-anthropic-sdk",
            vec!["--action", "monitor", "--rule", "watch-anthropic-sdk"],
        ),
        ("reason=default_action", vec!["--reason", "default_action"]),
        ("path=beta%3Dtrue", vec!["--path", "beta=true"]),
        (
            "workflow=untagged&exemption=-",
            vec!["--workflow", "untagged", "--exemption", "-"],
        ),
    ];
    for (params, flags) in &cases {
        // Pages of 2, newest first, following the page's own "Older records" link; the CLI
        // pages with --limit 2 --cursor (it prints each page oldest first).
        let mut url = format!("/audit?{params}&limit=2");
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = c.get(&url).await;
            assert_eq!(page.status, 200, "{url}: {}", page.body);
            let mut args = vec!["--format", "json", "--limit", "2"];
            args.extend(flags.iter());
            if let Some(cur) = &cursor {
                args.extend(["--cursor", cur.as_str()]);
            }
            let (out, next) = cli(&log, &args);
            let mut want = json_ids(&out);
            want.reverse();
            assert_eq!(ids_on(&page.body), want, "{url}");
            seen.extend(want);
            match (next_link(&page.body), next) {
                (Some(link), Some(n)) => {
                    assert!(link.ends_with(&format!("cursor={n}")), "{link} against {n}");
                    url = link;
                    cursor = Some(n);
                }
                (None, None) => break,
                (link, n) => panic!("{url}: the explorer's next page {link:?}, the CLI's {n:?}"),
            }
        }
        // Every record of the filter, page after page: the whole answer of the CLI.
        let mut args = vec!["--format", "json"];
        args.extend(flags.iter());
        let (all, _) = cli(&log, &args);
        let mut all = json_ids(&all);
        all.reverse();
        assert_eq!(seen, all, "{params}");
        assert!(
            !all.is_empty() || params.contains("path"),
            "{params}: a case that finds nothing proves little"
        );

        // The exports: byte for byte what the CLI prints, with the same filter.
        for (export, format) in [("/audit.csv", "csv"), ("/audit.jsonl", "json")] {
            let page = c.get(&format!("{export}?{params}")).await;
            assert_eq!(page.status, 200, "{export}?{params}");
            let mut args = vec!["--format", format];
            args.extend(flags.iter());
            let (want, _) = cli(&log, &args);
            assert_eq!(page.body, want, "{export}?{params}");
            let ct = page.headers["content-type"].to_str().unwrap();
            assert!(
                ct.starts_with(if format == "csv" {
                    "text/csv"
                } else {
                    "application/x-ndjson"
                }),
                "{ct}"
            );
            assert!(
                page.headers["content-disposition"]
                    .to_str()
                    .unwrap()
                    .starts_with("attachment")
            );
        }
    }
    // Empty fields, as a plain GET form sends them, are no filter: the address is cleaned, so
    // the one shared is the filter alone.
    let sent = c.get("/audit?action=block&user=&tool=+&since=").await;
    assert_eq!(sent.status, 303);
    assert_eq!(sent.location(), "/audit?action=block");
    assert_eq!(
        c.get("/audit.csv?action=block&user=").await.body,
        cli(&log, &["--format", "csv", "--action", "block"]).0
    );
    // The CSV export has a header and a row per call.
    let csv = c.get("/audit.csv?user=alice").await.body;
    assert!(csv.starts_with("time,id,kind,client,user"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");

    // A bad filter is named, with the fix, and the form stays as typed.
    let bad = c.get("/audit?action=deny&user=alice").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("action = &quot;deny&quot;: use allow, monitor, block or abandoned"),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("value=\"alice\""));
    assert_eq!(c.get("/audit?colour=red").await.status, 400);
    assert_eq!(c.get("/audit?limit=0").await.status, 400);
    assert_eq!(c.get("/audit.csv?action=deny").await.status, 400);
}

#[tokio::test]
async fn a_deny_messages_id_opens_its_record_with_the_rules_explain_considers() {
    let (env, id) = reviewed().await;
    let mut c = signed_in(&env, AUDITOR).await;
    // The search box: an id as pasted from a terminal.
    let found = c.get(&format!("/audit/find?id=%20%22{id}%22.")).await;
    assert_eq!(found.status, 303);
    assert_eq!(found.location(), format!("/audit/{id}"));
    assert_eq!(c.get("/audit/find?id=").await.location(), "/audit");

    let page = c.get(&format!("/audit/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(body.contains(&id));
    assert!(
        body.contains("rival-coding-tools-in-protected-workflows"),
        "the rule"
    );
    assert!(body.contains("claude-code") && body.contains("alice"));
    assert!(
        body.contains("Evidence") && body.contains("user-agent"),
        "the evidence"
    );
    // The rules considered are `explain`'s: the same rules in the same order, the same one
    // matched. Asked of /v1/explain for the same call.
    let explained: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/explain", env.gateway.admin_addr))
        .bearer_auth(AUDITOR)
        .json(&serde_json::json!({
            "host": "api.anthropic.com",
            "path": "/v1/messages",
            "headers": { "user-agent": CLAUDE, "x-stainless-lang": "python" },
            "user": "alice",
            "body": "{\"model\":\"m-1\"}",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rules = body.split("id=\"h-rules\"").nth(1).unwrap();
    let rules = rules.split("</table>").next().unwrap();
    let mut at = 0;
    for line in explained["rules"].as_array().unwrap() {
        let name = line["rule"].as_str().unwrap();
        let row = format!("<td class=\"mono\">{name}</td>");
        let found = rules[at..]
            .find(&row)
            .unwrap_or_else(|| panic!("{name} missing or out of order in {rules}"));
        at += found + row.len();
        let matched = rules[at..]
            .split("</tr>")
            .next()
            .unwrap()
            .contains("<strong>yes</strong>");
        assert_eq!(matched, line["matched"] == true, "{name}");
    }
    assert!(explained["rules"].as_array().unwrap().len() >= 2);
    let decision = body.split("id=\"explain-decision\"").nth(1).unwrap();
    assert!(decision.contains(explained["reason"].as_str().unwrap()));
    assert_eq!(explained["action"], "block");

    // The call's records as written: a deny is one record.
    assert_eq!(body.matches("<details class=\"raw\">").count(), 1, "{body}");
    // A forwarded call has its decision and its outcome.
    let log = env.gateway.audit().path().to_path_buf();
    let (monitored, _) = cli(
        &log,
        &["--format", "json", "--action", "monitor", "--user", "alice"],
    );
    let mid = json_ids(&monitored).pop().unwrap();
    let page = c.get(&format!("/audit/{mid}")).await.body;
    assert_eq!(page.matches("<details class=\"raw\">").count(), 2, "{page}");
    assert!(
        page.contains("· outcome ·") && page.contains("· request ·"),
        "{page}"
    );

    let missing = c.get("/audit/no-such-id").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("No audit record"));
}

/// A manager sees the records of the people below them, and nothing of anyone else's: in the
/// list, on a permalink, and in the exports.
#[tokio::test]
async fn a_manager_explores_only_their_reports_records() {
    let (env, alice_block) = reviewed().await;
    let log = env.gateway.audit().path().to_path_buf();
    let mut bob = signed_in(&env, BOB).await;
    let page = bob.get("/audit?limit=100").await;
    assert_eq!(page.status, 200);
    let (alices, _) = cli(&log, &["--format", "json", "--user", "alice"]);
    let mut want = json_ids(&alices);
    want.reverse();
    assert_eq!(ids_on(&page.body), want);
    assert_eq!(want.len(), 4);
    // dave's records exist, and stay hidden, even when asked for by name or id.
    assert!(ids_on(&bob.get("/audit?user=dave").await.body).is_empty());
    let (daves, _) = cli(&log, &["--format", "json", "--user", "dave"]);
    let dave_id = json_ids(&daves).pop().unwrap();
    assert_eq!(bob.get(&format!("/audit/{dave_id}")).await.status, 404);
    assert_eq!(bob.get(&format!("/audit/{alice_block}")).await.status, 200);
    let (csv, _) = cli(&log, &["--format", "csv", "--user", "alice"]);
    assert_eq!(bob.get("/audit.csv").await.body, csv);
    assert_eq!(
        bob.get("/audit.csv?user=dave").await.body.lines().count(),
        1,
        "the header only"
    );
    // The auditor sees dave's.
    let mut sam = signed_in(&env, AUDITOR).await;
    assert_eq!(sam.get(&format!("/audit/{dave_id}")).await.status, 200);
}
