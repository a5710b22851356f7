//! Microbenchmarks of the per-request work (issue #4): `decide()` at scale, tool
//! identification on the real clients' header sets, and the audit writer's throughput with the
//! hash chain and its fsync policy. Run: `cargo bench --bench core`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use aigate::audit::{AuditLog, AuditRecord, Kind};
use aigate::config::{AuditIntegrity, Fsync, OnGap};
use aigate::exemptions::{Exemption, Snapshot, Subject};
use aigate::identify::identify_tool;
use aigate::identify::tools::RequestFacts;
use aigate::policy::{self, Action, Call, ModelPattern, Policy, Rule};

fn big_policy() -> Policy {
    let mut rules = Vec::new();
    for i in 0..1000 {
        rules.push(Rule {
            name: Arc::from(format!("rule-{i}").as_str()),
            description: None,
            action: if i % 3 == 0 {
                Action::Block
            } else {
                Action::Monitor
            },
            exemptable: i % 3 == 0,
            tools: Some(vec![format!("tool-{i}")]),
            vendors: Some(vec!["anthropic".into()]),
            workflows: Some(vec![format!("wf-{}", i % 50), "untagged".into()]),
            users: None,
            groups: Some(vec![format!("group-{}", i % 200)]),
            models: Some(vec![ModelPattern::parse("claude-*")]),
        });
    }
    // The rule that decides the benchmarked call comes last: every rule is considered.
    rules.push(Rule {
        name: Arc::from("ban"),
        description: None,
        action: Action::Block,
        exemptable: true,
        tools: Some(vec!["claude-code".into()]),
        vendors: None,
        workflows: Some(vec!["untagged".into()]),
        users: None,
        groups: None,
        models: None,
    });
    Policy::new(rules, Action::Monitor)
}

fn big_snapshot(now: SystemTime) -> Snapshot {
    Snapshot::new((0..100_000).map(|i| Exemption {
        id: Arc::from(format!("ex-{i}").as_str()),
        subject: if i % 10 == 0 {
            Subject::Group(format!("group-{}", i % 500))
        } else {
            Subject::User(format!("user-{i}"))
        },
        tools: vec!["claude-code".into()],
        workflows: None,
        starts_at: now - Duration::from_secs(60),
        expires_at: now + Duration::from_secs(3600),
        revoked_at: None,
        reason: String::new(),
        ticket: None,
        granted_by: "bench".into(),
        created_at: None,
        revoked_by: None,
        request: None,
    }))
}

fn decide(c: &mut Criterion) {
    let now = SystemTime::now();
    let policy = big_policy();
    let snapshot = big_snapshot(now);
    let groups = vec!["group-7".to_string(), "group-8".to_string()];
    let exempted = Call {
        tool: "claude-code",
        vendor: "anthropic",
        workflow: "untagged",
        user: "user-12345",
        groups: &groups,
        model: Some("claude-opus-4-1"),
        untrusted_workflow: None,
        side_call: false,
    };
    let blocked = Call {
        user: "nobody",
        ..exempted
    };
    let mut g = c.benchmark_group("decide_1000_rules_100k_exemptions");
    g.bench_function("exempted", |b| {
        b.iter(|| policy::decide(&policy, black_box(&exempted), &snapshot, now))
    });
    g.bench_function("blocked", |b| {
        b.iter(|| policy::decide(&policy, black_box(&blocked), &snapshot, now))
    });
    g.finish();
}

fn identify(c: &mut Criterion) {
    let Ok(cfg) = aigate::config::load(None) else {
        panic!("the shipped config must load")
    };
    type HeaderSet = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );
    let header_sets: Vec<HeaderSet> = vec![
        (
            "claude-code",
            "anthropic",
            vec![
                ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
                ("x-app", "cli"),
                (
                    "anthropic-beta",
                    "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14",
                ),
                ("x-claude-code-session-id", "7d2f"),
                ("x-stainless-lang", "js"),
                ("anthropic-version", "2023-06-01"),
            ],
        ),
        (
            "codex-cli",
            "openai",
            vec![
                (
                    "user-agent",
                    "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)",
                ),
                ("originator", "codex_exec"),
                ("x-codex-window-id", "1"),
                ("x-codex-turn-metadata", "{}"),
                ("session-id", "s"),
            ],
        ),
        (
            "anthropic-sdk",
            "anthropic",
            vec![
                ("user-agent", "Anthropic/Python 2.11.0"),
                ("x-stainless-lang", "python"),
                ("anthropic-version", "2023-06-01"),
            ],
        ),
        (
            "unknown",
            "openai",
            vec![("user-agent", "curl/8.5.0"), ("accept", "*/*")],
        ),
    ];
    let mut g = c.benchmark_group("identify_tool");
    for (name, vendor, headers) in &header_sets {
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_static(n),
                http::HeaderValue::from_static(v),
            );
        }
        let body = br#"{"model":"claude-opus-4-1","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#;
        g.bench_function(*name, |b| {
            b.iter(|| {
                identify_tool(
                    &cfg.tools,
                    black_box(&RequestFacts {
                        vendor,
                        path: "/v1/messages",
                        headers: &map,
                        body_prefix: body,
                        body_later: &[],
                    }),
                )
            })
        });
    }
    g.finish();
}

/// The streaming search of a body after the peek (`identify::scan`), with the shipped body
/// signals, over a 1 MiB body without them in chunks of 16 KiB (what TLS records bring).
fn body_scan(c: &mut Criterion) {
    let Ok(cfg) = aigate::config::load(None) else {
        panic!("the shipped config must load")
    };
    let (todo, _) = aigate::proxy::late::split_signals(&cfg, b"");
    let body: Vec<u8> = br#"{"role":"user","content":"fix the failing test in src/lib.rs"},"#
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let mut g = c.benchmark_group("body_scan");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("1MiB_in_16KiB_chunks", |b| {
        b.iter(|| {
            let mut s = aigate::identify::scan::BodyScanner::new(todo.clone(), b"");
            for chunk in body.chunks(16 * 1024) {
                black_box(s.feed(black_box(chunk)));
            }
        })
    });
    g.finish();
}

fn audit_writer(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("no temp dir")
    };
    let mut g = c.benchmark_group("audit_writer");
    const BATCH: u64 = 10_000;
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    // The last: as the gateway runs it, with a signed checkpoint every 1000 records
    // (docs/audit-schema.md, "Checkpoints"), against the same without.
    let integrity = AuditIntegrity {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::from_secs(60),
        signing_key: dir.path().join("audit-signing.key"),
        generate_key: true,
        rotate_size: None,
        rotate_interval: None,
        on_gap: OnGap::Record,
    };
    for (name, fsync, integrity) in [
        ("fsync_batch", Fsync::Batch, None),
        ("fsync_never", Fsync::Never, None),
        ("fsync_batch_checkpoints", Fsync::Batch, Some(&integrity)),
    ] {
        let Ok(log) = AuditLog::open_with(
            &dir.path().join(format!("{name}.jsonl")),
            fsync,
            Arc::default(),
            None,
            integrity,
        ) else {
            panic!("cannot open the audit log")
        };
        let template = {
            let mut r = AuditRecord::new(
                "01a1fbe7-87e1-7c3e-9a61-3b3c2b7f0e11".into(),
                Kind::Request,
                "10.1.2.3:51234".into(),
                Arc::from("alice"),
                "api.anthropic.com".into(),
                443,
            );
            r.tool = Some(Arc::from("claude-code"));
            r.evidence = vec!["user-agent".into(), "header:x-app".into()];
            r.vendor = Some(Arc::from("anthropic"));
            r.method = Some("POST".into());
            r.path = Some("/v1/messages?beta=true".into());
            r.model = Some("claude-opus-4-1".into());
            r.workflow = Some("untagged".into());
            r.status = Some(403);
            r
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    log.submit(template.clone());
                }
                assert!(log.flush_blocking());
            })
        });
    }
    g.finish();
}

/// The request loop's cost on a blocked call (issue 16): the draft for a repeated block (the
/// common case: a client retrying) and a first block of a new user (a new draft).
fn request_drafts(c: &mut Criterion) {
    use aigate::requests::{DraftFacts, Drafts};
    let now = SystemTime::now();
    let ttl = std::time::Duration::from_secs(86_400);
    let drafts = Drafts::default();
    let facts = |user: &'static str| DraftFacts {
        record_id: "01a2421f-2562-7406-8958-81be049bf021",
        user,
        anonymous: false,
        tool: "claude-code",
        tool_name: "Claude Code",
        vendor: "anthropic",
        vendor_name: "Anthropic",
        workflow: "untagged",
        rule: Some("rival-coding-tools-in-protected-workflows"),
        rule_description: None,
        exemptable: true,
    };
    let mut g = c.benchmark_group("request_drafts");
    g.bench_function("repeated_block", |b| {
        let f = facts("alice");
        b.iter(|| drafts.draft_for(&f, now, ttl))
    });
    let fresh = Drafts::new(usize::MAX);
    let users: Vec<&'static str> = (0..1_000_000)
        .map(|i| &*Box::leak(format!("user-{i}").into_boxed_str()))
        .collect();
    let mut i = 0;
    g.bench_function("new_draft", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            fresh.draft_for(&facts(users[i]), now, ttl)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    decide,
    identify,
    body_scan,
    audit_writer,
    request_drafts
);
criterion_main!(benches);
