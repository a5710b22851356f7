//! The slim outcome record (docs/audit-schema.md, "Decision and outcome").
//!
//! A forwarded call writes its decision before it goes upstream and its outcome when it ends.
//! The outcome used to be a whole copy of the decision with the end filled in; every call then
//! hashed and wrote the bulky identification detail twice (the evidence, the conflicts, the
//! user agent, the client, how the user and the workflow were found), although none of it
//! changes between the two. The outcome now leaves those fields out ([`DECISION_ONLY`]) and
//! keeps every field a SIEM filters or counts on (id, kind, time, user, tool, vendor, host,
//! path, model, workflow, action, reason, rule, exemption, would_block, status, error, bytes,
//! timings, provenance), which also covers every field a query can filter on, so a query
//! never has to join before it knows whether a row matches. Readers that show a call (the
//! joined rows of `audit query`, `/v1/audit`, the console, the PostgreSQL copy) take the left
//! out fields from the call's decision (audit/calls.rs).
//!
//! When the identification was revised after the decision (`late_body_signal`: a body signal
//! found after the peek), the outcome is written whole, as before: it carries the revised
//! evidence, and it needs no decision to be shown. A reader tells a slim outcome by its missing
//! `client` (every whole record has one).

use super::record::{AuditRecord, Kind};
use crate::policy::Reason;

/// The fields a slim outcome leaves out: its decision (or any earlier record of the call) has
/// them, with the same values. In the order of docs/audit-schema.md.
pub const DECISION_ONLY: &[&str] = &[
    "client",
    "user_source",
    "tool_confidence",
    "evidence",
    "tool_conflicts",
    "tool_conflict_evidence",
    "user_agent",
    "port",
    "method",
    "workflow_source",
    "workflow_claimed",
    "workflow_reason",
    "policy_version",
    "admin",
    "signed_headers_kept",
    "side_call_tool",
];

/// The field whose absence marks a slim outcome.
pub const SLIM_MARKER: &str = "client";

impl AuditRecord {
    /// Whether this record is written as a slim outcome: an outcome whose identification is
    /// the decision's (not revised by `late_body_signal`).
    pub fn is_slim_outcome(&self) -> bool {
        self.kind == Kind::Outcome && self.reason != Reason::LateBodySignal
    }

    /// An outcome read back without the decision's fields (`client` empty): it must be
    /// completed from an earlier record of its call before it is shown.
    pub fn is_slim_read(&self) -> bool {
        self.kind == Kind::Outcome && self.client.is_empty()
    }

    /// Fill in what a slim outcome leaves out ([`DECISION_ONLY`]) from an earlier record of the
    /// same call (its decision, or a progress record, which is whole).
    pub fn complete_from(&mut self, earlier: &AuditRecord) {
        let AuditRecord {
            client,
            user_source,
            tool_confidence,
            evidence,
            tool_conflicts,
            tool_conflict_evidence,
            user_agent,
            port,
            method,
            workflow_source,
            workflow_claimed,
            workflow_reason,
            policy_version,
            admin,
            signed_headers_kept,
            side_call_tool,
            ..
        } = earlier;
        self.client.clone_from(client);
        self.user_source = *user_source;
        self.tool_confidence = *tool_confidence;
        self.evidence.clone_from(evidence);
        self.tool_conflicts.clone_from(tool_conflicts);
        self.tool_conflict_evidence
            .clone_from(tool_conflict_evidence);
        self.user_agent.clone_from(user_agent);
        self.port = *port;
        self.method.clone_from(method);
        self.workflow_source = *workflow_source;
        self.workflow_claimed.clone_from(workflow_claimed);
        self.workflow_reason = *workflow_reason;
        self.policy_version.clone_from(policy_version);
        self.admin.clone_from(admin);
        self.signed_headers_kept.clone_from(signed_headers_kept);
        self.side_call_tool.clone_from(side_call_tool);
    }
}

/// As [`AuditRecord::complete_from`], for a record read as a JSON object (audit/query.rs).
pub fn complete_fields(
    outcome: &mut serde_json::Map<String, serde_json::Value>,
    earlier: &serde_json::Map<String, serde_json::Value>,
) {
    for field in DECISION_ONLY {
        if !outcome.contains_key(*field) {
            if let Some(v) = earlier.get(*field) {
                outcome.insert((*field).to_string(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::audit::chain::{GENESIS, seal};
    use crate::audit::record::StoredRecord;
    use crate::identify::user::IdentitySource;
    use crate::identify::{Confidence, WorkflowSource};
    use crate::policy::Action;

    fn call() -> AuditRecord {
        let mut r = AuditRecord::new(
            "0190f5c2-7a1b-7c3d-8e4f-a1b2c3d4e5f6".into(),
            Kind::Request,
            "10.0.0.7:51234".into(),
            Arc::from("alice@example.com"),
            "api.anthropic.com".into(),
            443,
        );
        r.user_source = Some(IdentitySource::ProxyAuth);
        r.tool = Some(Arc::from("claude-code"));
        r.tool_confidence = Some(Confidence::Medium);
        r.evidence = vec!["user-agent".into()];
        r.tool_conflicts = vec![Arc::from("anthropic-sdk")];
        r.tool_conflict_evidence = vec!["anthropic-sdk: header:x-stainless-lang".into()];
        r.user_agent = Some("claude-cli/2.1".into());
        r.vendor = Some(Arc::from("anthropic"));
        r.method = Some("POST".into());
        r.path = Some("/v1/messages".into());
        r.model = Some("claude-opus-4".into());
        r.workflow = Some("untagged".into());
        r.workflow_source = Some(WorkflowSource::Invalid);
        r.workflow_claimed = Some("nope".into());
        r.workflow_reason = Some(Reason::WorkflowUnknown);
        r.action = Action::Monitor;
        r.reason = Reason::RuleMatched;
        r.rule = Some(Arc::from("watch"));
        r.policy_version = Some(Arc::from("3f2a9c1d"));
        r.would_block = true;
        r.signed_headers_kept = vec!["x-aigate-workflow".into()];
        r.side_call_tool = Some(Arc::from("codex-cli"));
        r.replica = Some(Arc::from("gw-1"));
        r
    }

    fn line(r: &AuditRecord) -> String {
        let mut out = Vec::new();
        seal(r, 1, GENESIS, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_slim_outcome_leaves_out_exactly_the_decision_only_fields_and_is_completed_by_its_decision()
    {
        let mut decision = call();
        decision.outcome_follows = true;
        let mut outcome = call();
        outcome.kind = Kind::Outcome;
        outcome.status = Some(200);
        outcome.bytes_up = 158;
        outcome.bytes_down = 1024;
        outcome.ttfb_ms = Some(1.5);

        let whole: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line(&decision)).unwrap();
        let slim_line = line(&outcome);
        let slim: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&slim_line).unwrap();
        let mut missing: Vec<&str> = whole
            .keys()
            .map(String::as_str)
            .filter(|k| !slim.contains_key(*k) && *k != "outcome_follows")
            .collect();
        let mut expected = DECISION_ONLY.to_vec();
        missing.sort_unstable();
        expected.sort_unstable();
        assert_eq!(missing, expected, "{slim_line}");
        assert!(!slim.contains_key(SLIM_MARKER));
        assert!(
            slim_line.len() < line(&decision).len() * 2 / 3,
            "{slim_line}"
        );

        // Read back, it is a slim outcome, and its decision completes it to the whole record.
        let mut read: StoredRecord = serde_json::from_str(&slim_line).unwrap();
        assert!(read.record.is_slim_read());
        let earlier: StoredRecord = serde_json::from_str(&line(&decision)).unwrap();
        read.record.complete_from(&earlier.record);
        assert_eq!(read.record, outcome);

        // The same as JSON objects: the completed object is the whole outcome's.
        let mut fields = slim.clone();
        complete_fields(&mut fields, &whole);
        let mut full_outcome = outcome.clone();
        full_outcome.reason = Reason::LateBodySignal;
        let mut want: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line(&full_outcome)).unwrap();
        want.insert("reason".into(), "rule_matched".into());
        fields.remove("hash");
        want.remove("hash");
        assert_eq!(fields, want);
    }

    #[test]
    fn an_outcome_revised_by_a_late_body_signal_is_written_whole() {
        let mut outcome = call();
        outcome.kind = Kind::Outcome;
        outcome.reason = Reason::LateBodySignal;
        outcome.action = Action::Block;
        outcome.evidence = vec!["user-agent".into(), "body".into()];
        let text = line(&outcome);
        let read: StoredRecord = serde_json::from_str(&text).unwrap();
        assert!(!read.record.is_slim_read(), "{text}");
        assert_eq!(read.record, outcome);
    }
}
