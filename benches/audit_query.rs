//! The audit explorer's first page on a large log (issue #16): a filtered first page must come
//! back in under 300 ms at 10 million records.
//!
//! Writes the log with the real writer (hash chain, signed checkpoints every 1000 records,
//! rotation at 1 GiB: the files a gateway leaves), once, into `AIGATE_BENCH_DIR` (default
//! `target/audit-bench`), then times `audit::query::newest_first`, the engine behind
//! `aigate audit query --limit`, `/v1/audit` and the console's explorer, for several filters:
//! with the index in this process's memory (the admin API), read from its file (a fresh
//! `aigate audit query`), and with the log's and the index's pages dropped from the page cache
//! first (cold). Run:
//!
//! ```text
//! cargo bench --bench audit_query                         # 10,000,000 records
//! AIGATE_BENCH_RECORDS=1000000 cargo bench --bench audit_query
//! ```
//!
//! The generated log (about 6 GB at 10M records) stays for the next run; delete the directory
//! when done. Results: docs/performance.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aigate::audit::query::{Filter, newest_first, series_newest_first};
use aigate::audit::{AuditLog, AuditRecord, Kind, index};
use aigate::config::{AuditIntegrity, Fsync, OnGap};
use aigate::identify::Confidence;
use aigate::identify::WorkflowSource;
use aigate::identify::user::IdentitySource;
use aigate::policy::{Action, Reason};

/// The log's first record; records are spread over the 30 days after it.
const START: &str = "2026-10-01T00:00:00Z";
const SPAN: Duration = Duration::from_secs(30 * 86_400);
const USERS: u64 = 2_000;
/// The rare user makes this many calls in the whole log.
const RARE_CALLS: u64 = 50;

fn main() {
    let records: u64 = std::env::var("AIGATE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::var_os("AIGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/audit-bench"));
    let log = dir.join(format!("{records}")).join("audit.jsonl");
    let done = log.with_file_name("complete");
    if !done.exists() {
        generate(&log, records);
        std::fs::write(&done, b"").unwrap_or_else(|e| panic!("cannot write {done:?}: {e}"));
    }
    let files = series_newest_first(&log).unwrap_or_else(|e| panic!("cannot list the log: {e}"));
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "log: {records} records in {} files, {:.2} GB ({})",
        files.len(),
        bytes as f64 / 1e9,
        log.display()
    );

    // Building the indexes: every file read once (the first selective query pays it).
    for f in &files {
        let _ = std::fs::remove_file(index::index_path(f));
        index::forget(f);
    }
    let t = Instant::now();
    for f in &files {
        index::open(f).unwrap_or_else(|e| panic!("index of {f:?}: {e}"));
    }
    println!("index build, all files: {:.1} s", t.elapsed().as_secs_f64());

    let start = humantime::parse_rfc3339(START).unwrap_or_else(|e| panic!("{e}"));
    let far_since = humantime::format_rfc3339(start + Duration::from_secs(86_400)).to_string();
    let far_until =
        humantime::format_rfc3339(start + Duration::from_secs(86_400 + 3_600)).to_string();
    // A call in the first file, as a permalink would look it up.
    let old_id = call_id(records / 40);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no filter", vec![]),
        ("action=block", vec![("action", "block")]),
        ("user=rare (50 calls in all)", vec![("user", "rare-user")]),
        (
            "time range far back (1 h, 29 days ago)",
            vec![("since", &far_since), ("until", &far_until)],
        ),
        ("id (permalink of an old call)", vec![("id", &old_id)]),
        (
            "tool=codex-cli, action=block, workflow=payments",
            vec![
                ("tool", "codex-cli"),
                ("action", "block"),
                ("workflow", "payments"),
            ],
        ),
        (
            "path contains /v1/responses (not indexed)",
            vec![("path", "/v1/responses")],
        ),
    ];
    println!();
    println!(
        "| filter | rows | warm, index in memory | index read from its file | cold page cache |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, params) in &cases {
        let filter = Filter::parse(params.iter().copied(), SystemTime::now())
            .unwrap_or_else(|e| panic!("{name}: {}", e.for_api()));
        let run = || newest_first(&log, &filter, None, 100).unwrap_or_else(|e| panic!("{e}"));
        let rows = run().0.len();
        let warm = median(9, || {
            run();
        });
        let from_file = median(5, || {
            files.iter().for_each(|f| index::forget(f));
            run();
        });
        let cold = median(3, || {
            files.iter().for_each(|f| {
                index::forget(f);
                drop_cache(f);
                drop_cache(&index::index_path(f));
            });
            run();
        });
        println!(
            "| {name} | {rows} | {} | {} | {} |",
            ms(warm),
            ms(from_file),
            ms(cold)
        );
    }
}

fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Ask the kernel to drop a file's pages: the next read comes from the disk.
fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
}

fn call_id(n: u64) -> String {
    format!("01937a6e-{:04x}-7000-8000-{n:012x}", n % 0xffff)
}

/// A reproducible mix, roughly as a company's gateway sees it: most calls allowed and
/// forwarded (a decision and an outcome), some monitored, 5% blocked, tunnels, some to AI hosts.
/// `records` lines in all (1.9 a call on average), checkpoints included.
fn generate(log: &Path, records: u64) {
    let calls = records * 10 / 19;
    let rare_every = (calls / RARE_CALLS).max(1);
    let dir = log.parent().unwrap_or_else(|| Path::new("."));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
    let integrity = AuditIntegrity {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::from_secs(3600),
        signing_key: dir.join("audit-signing.key"),
        generate_key: true,
        rotate_size: Some(1 << 30),
        rotate_interval: None,
        on_gap: OnGap::Record,
    };
    let audit = AuditLog::open_with(log, Fsync::Never, Arc::default(), None, Some(&integrity))
        .unwrap_or_else(|e| panic!("cannot open the audit log: {e}"));
    let start = humantime::parse_rfc3339(START).unwrap_or_else(|e| panic!("{e}"));
    let tools = [
        (
            "claude-code",
            "anthropic",
            "api.anthropic.com",
            "/v1/messages?beta=true",
            "claude-sonnet-4-5",
        ),
        (
            "codex-cli",
            "openai",
            "chatgpt.com",
            "/backend-api/codex/responses",
            "gpt-5-codex",
        ),
        (
            "gemini-cli",
            "google",
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "gemini-2.5-pro",
        ),
        (
            "copilot",
            "github",
            "api.githubcopilot.com",
            "/chat/completions",
            "gpt-4.1",
        ),
        (
            "openai-sdk",
            "openai",
            "api.openai.com",
            "/v1/responses",
            "gpt-5",
        ),
        (
            "anthropic-sdk",
            "anthropic",
            "api.anthropic.com",
            "/v1/messages",
            "claude-opus-4-1",
        ),
        (
            "aider",
            "openai",
            "api.openai.com",
            "/v1/chat/completions",
            "gpt-4.1",
        ),
        (
            "unknown",
            "openai",
            "api.openai.com",
            "/v1/responses",
            "gpt-5-mini",
        ),
    ];
    let workflows = ["untagged", "payments", "research", "ml-training", "sandbox"];
    // Forwarded calls whose outcome is still to be written: (due at call n, record).
    let mut open: std::collections::VecDeque<(u64, AuditRecord)> = Default::default();
    let t = Instant::now();
    let mut n = 0u64;
    // Records submitted, and one checkpoint record every 1000.
    let sent = std::cell::Cell::new(0u64);
    let submit = |r: AuditRecord| {
        sent.set(sent.get() + 1);
        audit.submit(r);
    };
    while sent.get() + sent.get() / 1000 < records {
        n += 1;
        while open.front().is_some_and(|(due, _)| *due <= n) {
            if let Some((_, r)) = open.pop_front() {
                submit(r);
            }
        }
        // A cheap mix of n, so neighbouring calls differ.
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
        let user: Arc<str> = if n % rare_every == rare_every / 2 {
            Arc::from("rare-user")
        } else {
            Arc::from(format!("u{:04}", h % USERS).as_str())
        };
        let at = start + SPAN.mul_f64(n as f64 / calls as f64);
        let (tool, vendor, host, path, model) = tools[(h % 97 % tools.len() as u64) as usize];
        let workflow = workflows[(h / 97 % workflows.len() as u64) as usize];
        let roll = h / 977 % 100;
        let mut r = AuditRecord::new(
            call_id(n),
            Kind::Request,
            format!(
                "10.{}.{}.{}:{}",
                h % 200,
                h / 7 % 250,
                h / 11 % 250,
                40_000 + h % 20_000
            ),
            user,
            host.into(),
            443,
        );
        r.time = humantime::format_rfc3339_millis(at).to_string();
        r.user_source = Some(IdentitySource::ProxyAuth);
        if roll < 5 {
            // A tunnel to a host that is no vendor, some to an AI host aigate does not inspect.
            r.kind = Kind::Tunnel;
            r.host = if roll < 2 {
                "api.mistral.ai".into()
            } else {
                "github.com".into()
            };
            r.ai_host = (roll < 2).then(|| Arc::from("inference-apis"));
            r.action = if roll < 2 {
                Action::Monitor
            } else {
                Action::Allow
            };
            r.reason = if roll < 2 {
                Reason::AiHost
            } else {
                Reason::NotVendor
            };
            r.bytes_up = 2_000 + h % 50_000;
            r.bytes_down = 10_000 + h % 500_000;
            r.duration_ms = (h % 60_000) as f64;
            submit(r);
            continue;
        }
        r.tool = Some(Arc::from(tool));
        r.tool_confidence = Some(if tool == "unknown" {
            Confidence::None
        } else {
            Confidence::High
        });
        r.evidence = if tool == "unknown" {
            Vec::new()
        } else {
            vec![
                format!("user-agent ~ {tool}"),
                "header:x-stainless-lang".into(),
            ]
        };
        r.vendor = Some(Arc::from(vendor));
        r.method = Some("POST".into());
        r.path = Some(path.into());
        r.model = Some(model.into());
        r.workflow = Some(workflow.into());
        r.workflow_source = Some(if workflow == "untagged" {
            WorkflowSource::None
        } else {
            WorkflowSource::Header
        });
        r.policy_version = Some(Arc::from("3f2a9c1e"));
        if roll < 10 {
            r.action = Action::Block;
            r.reason = Reason::RuleMatched;
            r.rule = Some(Arc::from("rival-tools-outside-sandbox"));
            r.status = Some(403);
            r.duration_ms = 0.4;
            submit(r);
            continue;
        }
        if roll < 25 {
            r.action = Action::Monitor;
            r.reason = Reason::RuleMatched;
            r.rule = Some(Arc::from("watch-sdk-in-ml-training"));
            r.would_block = true;
        } else {
            r.action = Action::Allow;
            r.reason = Reason::RuleMatched;
            r.rule = Some(Arc::from("sanctioned-tools"));
        }
        r.outcome_follows = true;
        let mut outcome = r.clone();
        submit(r);
        outcome.kind = Kind::Outcome;
        outcome.outcome_follows = false;
        outcome.status = Some(200);
        outcome.bytes_up = 4_000 + h % 200_000;
        outcome.bytes_down = 1_000 + h % 80_000;
        outcome.duration_ms = 800.0 + (h % 30_000) as f64;
        outcome.ttfb_ms = Some(300.0 + (h % 900) as f64);
        open.push_back((n + 1 + h % 6, outcome));
        if n % 1_000_000 == 0 {
            eprintln!("  {n} calls written, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    for (_, r) in open {
        submit(r);
    }
    if !audit.flush_blocking() {
        panic!("the audit writer failed");
    }
    audit.checkpoint_on_shutdown();
    eprintln!("generated {n} calls in {:.0} s", t.elapsed().as_secs_f64());
}
