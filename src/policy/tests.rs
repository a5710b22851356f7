//! Decision tables: each row is a call and the exact decision it must get.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::exemptions::{Exemption, Snapshot, Subject};
use crate::identify::workflow::Untrusted;

fn rule(name: &str, action: Action) -> Rule {
    Rule {
        name: name.into(),
        description: None,
        action,
        exemptable: false,
        tools: None,
        vendors: None,
        workflows: None,
        users: None,
        groups: None,
        models: None,
    }
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn policy() -> Policy {
    let mut ban = rule("ban-rivals", Action::Block);
    ban.tools = strings(&["claude-code", "codex-cli"]);
    ban.workflows = strings(&["training-data", "code-analysis", "untagged"]);
    ban.exemptable = true;
    let mut research = rule("research-group", Action::Allow);
    research.groups = strings(&["research"]);
    let mut big = rule("no-big-models", Action::Block);
    big.models = Some(vec![ModelPattern::parse("gpt-5*")]);
    Policy::new(vec![ban, research, big], Action::Monitor)
}

fn call<'a>(
    tool: &'a str,
    workflow: &'a str,
    groups: &'a [String],
    model: Option<&'a str>,
) -> Call<'a> {
    Call {
        tool,
        vendor: "anthropic",
        workflow,
        user: "alice",
        groups,
        model,
        untrusted_workflow: None,
        side_call: false,
    }
}

#[test]
fn decision_table() {
    let research = vec!["research".to_string()];
    let none: Vec<String> = vec![];
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cases: Vec<(Call<'_>, Action, Reason, Option<&str>)> = vec![
        (
            call("claude-code", "untagged", &none, None),
            Action::Block,
            Reason::RuleMatched,
            Some("ban-rivals"),
        ),
        (
            call("codex-cli", "training-data", &none, None),
            Action::Block,
            Reason::RuleMatched,
            Some("ban-rivals"),
        ),
        (
            call("claude-code", "docs", &none, None),
            Action::Monitor,
            Reason::DefaultAction,
            None,
        ),
        (
            call("claude-code", "untagged", &research, None),
            Action::Block,
            Reason::RuleMatched,
            Some("ban-rivals"),
        ),
        (
            call("anthropic-sdk", "untagged", &research, None),
            Action::Allow,
            Reason::RuleMatched,
            Some("research-group"),
        ),
        (
            call("openai-sdk", "docs", &none, Some("gpt-5-mini")),
            Action::Block,
            Reason::RuleMatched,
            Some("no-big-models"),
        ),
        (
            call("openai-sdk", "docs", &none, Some("gpt-4o")),
            Action::Monitor,
            Reason::DefaultAction,
            None,
        ),
        (
            call("openai-sdk", "docs", &none, None),
            Action::Monitor,
            Reason::DefaultAction,
            None,
        ),
    ];
    for (c, action, reason, rule) in cases {
        let d = decide(&policy(), &c, &Snapshot::default(), now);
        assert_eq!(
            (d.action, d.reason, d.rule.as_deref()),
            (action, reason, rule),
            "{c:?}"
        );
    }
}

#[test]
fn exemption_turns_exemptable_block_into_allow_only_inside_its_window() {
    let none: Vec<String> = vec![];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let snapshot = Snapshot::new([Exemption {
        id: Arc::from("ex-1"),
        subject: Subject::User("alice".into()),
        tools: vec!["claude-code".into()],
        workflows: Some(vec!["untagged".into()]),
        starts_at: t0,
        expires_at: t0 + Duration::from_secs(60),
        revoked_at: None,
        reason: "testing".into(),
        ticket: None,
        granted_by: "bob".into(),
        created_at: None,
        revoked_by: None,
        request: None,
    }]);
    let c = call("claude-code", "untagged", &none, None);
    let before = decide(&policy(), &c, &snapshot, t0 - Duration::from_secs(1));
    assert_eq!(before.action, Action::Block);
    let during = decide(&policy(), &c, &snapshot, t0 + Duration::from_secs(59));
    assert_eq!(
        (during.action, during.reason, during.exemption.as_deref()),
        (Action::Allow, Reason::Exempted, Some("ex-1"))
    );
    let after = decide(&policy(), &c, &snapshot, t0 + Duration::from_secs(60));
    assert_eq!(after.action, Action::Block);
    // Another tool is not covered.
    let codex = call("codex-cli", "untagged", &none, None);
    assert_eq!(
        decide(&policy(), &codex, &snapshot, t0).action,
        Action::Block
    );
}

#[test]
fn non_exemptable_block_ignores_exemptions() {
    let none: Vec<String> = vec![];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let snapshot = Snapshot::new([Exemption {
        id: Arc::from("ex-2"),
        subject: Subject::User("alice".into()),
        tools: vec!["openai-sdk".into()],
        workflows: None,
        starts_at: t0,
        expires_at: t0 + Duration::from_secs(60),
        revoked_at: None,
        reason: "testing".into(),
        ticket: None,
        granted_by: "bob".into(),
        created_at: None,
        revoked_by: None,
        request: None,
    }]);
    let c = call("openai-sdk", "docs", &none, Some("gpt-5"));
    assert_eq!(decide(&policy(), &c, &snapshot, t0).action, Action::Block);
}

#[test]
fn explain_reports_every_rule_considered() {
    let none: Vec<String> = vec![];
    let c = call("openai-sdk", "docs", &none, Some("gpt-5"));
    let (d, trace) = explain(&policy(), &c, &Snapshot::default(), SystemTime::UNIX_EPOCH);
    assert_eq!(d.rule.as_deref(), Some("no-big-models"));
    let lines: Vec<(String, Option<String>)> = trace
        .iter()
        .map(|t| (t.rule.to_string(), t.mismatch.clone()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("ban-rivals".into(), Some("tool not listed".into())),
            (
                "research-group".into(),
                Some("user and groups not listed".into())
            ),
            ("no-big-models".into(), None),
        ]
    );
}

#[test]
fn the_tool_index_keeps_file_order_and_tool_agnostic_rules() {
    // A tool-agnostic rule before a tool rule must still win for that tool.
    let mut everyone = rule("everyone-monitored", Action::Monitor);
    everyone.workflows = strings(&["docs"]);
    let mut ban = rule("ban", Action::Block);
    ban.tools = strings(&["claude-code"]);
    let p = Policy::new(vec![everyone, ban], Action::Allow);
    let none: Vec<String> = vec![];
    let now = SystemTime::UNIX_EPOCH;
    let d = decide(
        &p,
        &call("claude-code", "docs", &none, None),
        &Snapshot::default(),
        now,
    );
    assert_eq!(d.rule.as_deref(), Some("everyone-monitored"));
    let d = decide(
        &p,
        &call("claude-code", "untagged", &none, None),
        &Snapshot::default(),
        now,
    );
    assert_eq!(d.rule.as_deref(), Some("ban"));
    let d = decide(
        &p,
        &call("some-tool-no-rule-names", "docs", &none, None),
        &Snapshot::default(),
        now,
    );
    assert_eq!(d.rule.as_deref(), Some("everyone-monitored"));
    let d = decide(
        &p,
        &call("some-tool-no-rule-names", "x", &none, None),
        &Snapshot::default(),
        now,
    );
    assert_eq!((d.reason, d.action), (Reason::DefaultAction, Action::Allow));
}

#[test]
fn only_a_rules_monitor_would_block_not_the_default_actions() {
    let mut watch = rule("watch-docs", Action::Monitor);
    watch.workflows = strings(&["docs"]);
    let p = Policy::new(vec![watch], Action::Monitor);
    let none: Vec<String> = vec![];
    let decide_in = |workflow| {
        decide(
            &p,
            &call("claude-code", workflow, &none, None),
            &Snapshot::default(),
            SystemTime::UNIX_EPOCH,
        )
    };
    let by_rule = decide_in("docs");
    assert_eq!(
        (by_rule.action, by_rule.reason, by_rule.would_block()),
        (Action::Monitor, Reason::RuleMatched, true)
    );
    let by_default = decide_in("untagged");
    assert_eq!(
        (
            by_default.action,
            by_default.reason,
            by_default.would_block()
        ),
        (Action::Monitor, Reason::DefaultAction, false)
    );
}

/// Issue 18: "roll out as monitor first" made the file invalid for an `exemptable` rule. A
/// monitor rule keeps `exemptable`: an exemption lifts it as it will lift the block, and a call
/// without one is monitored with `would_block`.
#[test]
fn an_exemptable_monitor_rule_yields_to_an_exemption_like_its_block() {
    let none: Vec<String> = vec![];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let snapshot = Snapshot::new([Exemption {
        id: Arc::from("ex-3"),
        subject: Subject::User("alice".into()),
        tools: vec!["claude-code".into()],
        workflows: None,
        starts_at: t0,
        expires_at: t0 + Duration::from_secs(60),
        revoked_at: None,
        reason: "testing".into(),
        ticket: None,
        granted_by: "bob".into(),
        created_at: None,
        revoked_by: None,
        request: None,
    }]);
    let mut rollout = rule("ban-rivals", Action::Monitor);
    rollout.tools = strings(&["claude-code"]);
    rollout.exemptable = true;
    let policy = Policy::new(vec![rollout], Action::Allow);
    let alice = call("claude-code", "untagged", &none, None);
    let exempted = decide(&policy, &alice, &snapshot, t0);
    assert_eq!(
        (
            exempted.action,
            exempted.reason,
            exempted.exemption.as_deref()
        ),
        (Action::Allow, Reason::Exempted, Some("ex-3"))
    );
    assert!(!exempted.would_block());
    let later = decide(&policy, &alice, &snapshot, t0 + Duration::from_secs(60));
    assert_eq!(
        (later.action, later.reason),
        (Action::Monitor, Reason::RuleMatched)
    );
    assert!(later.would_block());
}

/// The shipped policy, from the claimed tag to the decision: allow-list shaped, so rival tools
/// are blocked in every workflow but the sanctioned one, and a tag only counts when the catalog
/// lists it and the user may claim it (issue #14).
#[test]
fn the_shipped_policy_is_an_allow_list_over_the_workflow_catalog() {
    use crate::identify::workflow::{Claimant, workflow};

    let cfg = crate::config::load_str(
        crate::config::DEFAULT_CONFIG,
        "shipped",
        std::path::Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let eval = vec!["ai-evaluation".to_string()];
    let none: Vec<String> = vec![];
    let now = SystemTime::UNIX_EPOCH;
    let rival = Some("rival-coding-tools-in-protected-workflows");
    let sanctioned = Some("rival-coding-tools-in-sanctioned-evaluation");
    // tool, claimed tag, groups, action, reason, rule, workflow_reason
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [String],
        Action,
        Reason,
        Option<&'a str>,
        Option<Reason>,
    );
    let rows: Vec<Row<'_>> = vec![
        (
            "claude-code",
            None,
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            None,
        ),
        (
            "claude-code",
            Some("docs"),
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            None,
        ),
        (
            "codex-cli",
            Some("training-data"),
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            None,
        ),
        (
            "claude-code",
            Some("training_data"),
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            Some(Reason::WorkflowUnknown),
        ),
        (
            "claude-code",
            Some("code-analysis."),
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            Some(Reason::WorkflowUnknown),
        ),
        (
            "claude-code",
            Some("vendor-evaluation"),
            &none,
            Action::Block,
            Reason::RuleMatched,
            rival,
            Some(Reason::WorkflowNotPermitted),
        ),
        (
            "claude-code",
            Some("vendor-evaluation"),
            &eval,
            Action::Monitor,
            Reason::RuleMatched,
            sanctioned,
            None,
        ),
        (
            "codex-cli",
            Some("vendor-evaluation"),
            &eval,
            Action::Monitor,
            Reason::RuleMatched,
            sanctioned,
            None,
        ),
        // Unknown tools: policy.unknown_tool in protected workflows, the default elsewhere.
        (
            "unknown",
            Some("docs"),
            &none,
            Action::Monitor,
            Reason::UnknownTool,
            None,
            None,
        ),
        (
            "unknown",
            Some("made-up"),
            &none,
            Action::Monitor,
            Reason::UnknownTool,
            None,
            Some(Reason::WorkflowUnknown),
        ),
        (
            "unknown",
            Some("vendor-evaluation"),
            &eval,
            Action::Monitor,
            Reason::DefaultAction,
            None,
            None,
        ),
        (
            "anthropic-sdk",
            Some("docs"),
            &none,
            Action::Monitor,
            Reason::DefaultAction,
            None,
            None,
        ),
    ];
    for (i, (tool, claimed, groups, action, reason, rule, why)) in rows.into_iter().enumerate() {
        let mut h = http::HeaderMap::new();
        if let Some(tag) = claimed {
            h.insert(&cfg.identity.workflow_header, tag.parse().unwrap());
        }
        let wf = workflow(
            &h,
            &cfg.identity.workflow_header,
            &cfg.policy.workflows,
            Claimant {
                user: "alice",
                groups,
                default: None,
            },
        );
        let c = Call {
            tool,
            vendor: "anthropic",
            workflow: &wf.tag,
            user: "alice",
            groups,
            model: None,
            untrusted_workflow: wf.untrusted,
            side_call: false,
        };
        let d = decide(&cfg.policy, &c, &Snapshot::default(), now);
        assert_eq!(
            (
                d.action,
                d.reason,
                d.rule.as_deref(),
                wf.untrusted.map(Reason::from)
            ),
            (action, reason, rule, why),
            "row {i}: {c:?}"
        );
        assert!(
            d.action != Action::Allow,
            "row {i}: nothing is silently allowed"
        );
    }
}

#[test]
fn unknown_workflow_block_refuses_whatever_the_tool() {
    let mut p = policy();
    p.unknown_workflow = UnknownWorkflow::Block;
    let none: Vec<String> = vec![];
    let research = vec!["research".to_string()];
    let now = SystemTime::UNIX_EPOCH;
    for (untrusted, reason) in [
        (Untrusted::Unknown, Reason::WorkflowUnknown),
        (Untrusted::NotPermitted, Reason::WorkflowNotPermitted),
    ] {
        for (tool, groups) in [("openai-sdk", &none), ("anthropic-sdk", &research)] {
            let mut c = call(tool, "untagged", groups, None);
            c.untrusted_workflow = Some(untrusted);
            let d = decide(&p, &c, &Snapshot::default(), now);
            assert_eq!((d.action, d.reason, d.rule), (Action::Block, reason, None));
        }
    }
    // With "untagged" the same calls are decided by the rules as untagged.
    let mut c = call("anthropic-sdk", "untagged", &research, None);
    c.untrusted_workflow = Some(Untrusted::Unknown);
    let d = decide(&policy(), &c, &Snapshot::default(), now);
    assert_eq!(d.rule.as_deref(), Some("research-group"));
}

/// Step 2b: a start-up side call of a blocked tool passes as monitored, the rule kept; the
/// same call not marked as one, an allowed tool's, and an exempted one are unchanged.
#[test]
fn a_blocked_tools_side_call_is_monitored_with_its_rule() {
    let p = policy();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let none: Vec<String> = Vec::new();
    let mut c = call("codex-cli", "untagged", &none, None);
    assert_eq!(
        decide(&p, &c, &Snapshot::default(), now).action,
        Action::Block
    );
    c.side_call = true;
    let d = decide(&p, &c, &Snapshot::default(), now);
    assert_eq!(
        (d.action, d.reason, d.rule.as_deref()),
        (Action::Monitor, Reason::SideCall, Some("ban-rivals"))
    );
    assert!(d.would_block());
    let mut allowed = call("aider", "untagged", &none, None);
    allowed.side_call = true;
    assert_eq!(
        decide(&p, &allowed, &Snapshot::default(), now).reason,
        Reason::DefaultAction
    );
}
