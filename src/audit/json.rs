//! The record's JSON, written field by field. Every request writes one, and the derived
//! `Serialize` spent about 9,300 instructions on it (a map state machine, every key escaped at
//! run time); this takes about 1,700 (callgrind). The output is byte for byte what `serde_json`
//! writes for the derived impl, which a test checks: the hash chain covers these bytes, and
//! `audit verify` and the readers must see the same lines as before.

use std::sync::Arc;

use serde::Serialize;

use super::record::AuditRecord;

/// `,"name":` (without the comma for the first), put together at compile time: one copy.
/// Names are ASCII identifiers and need no escaping.
macro_rules! key {
    ($out:expr, $name:literal, first) => {
        $out.extend_from_slice(concat!("\"", $name, "\":").as_bytes())
    };
    ($out:expr, $name:literal) => {
        $out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes())
    };
}

impl AuditRecord {
    /// Append the record as one JSON object (no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        // A slim outcome (audit/outcome.rs) is the whole record's fields in the same order,
        // without the ones its decision holds (`outcome::DECISION_ONLY`).
        let whole = !self.is_slim_outcome();
        out.push(b'{');
        key!(out, "time", first);
        string(out, &self.time)?;
        key!(out, "id");
        string(out, &self.id)?;
        key!(out, "kind");
        value(out, &self.kind)?;
        if whole {
            key!(out, "client");
            string(out, &self.client)?;
        }
        key!(out, "user");
        string(out, &self.user)?;
        if whole {
            key!(out, "user_source");
            value(out, &self.user_source)?;
        }
        key!(out, "tool");
        opt_string(out, self.tool.as_deref())?;
        if whole {
            key!(out, "tool_confidence");
            value(out, &self.tool_confidence)?;
            key!(out, "evidence");
            strings(out, self.evidence.iter().map(String::as_str))?;
            key!(out, "tool_conflicts");
            strings(out, self.tool_conflicts.iter().map(|c: &Arc<str>| &**c))?;
            // Written only when there is something to say, so a plain record stays as short as
            // it was before these fields existed.
            if !self.tool_conflict_evidence.is_empty() {
                key!(out, "tool_conflict_evidence");
                strings(out, self.tool_conflict_evidence.iter().map(String::as_str))?;
            }
            if let Some(ua) = &self.user_agent {
                key!(out, "user_agent");
                string(out, ua)?;
            }
        }
        key!(out, "vendor");
        opt_string(out, self.vendor.as_deref())?;
        key!(out, "host");
        string(out, &self.host)?;
        if whole {
            key!(out, "port");
            out.extend_from_slice(itoa::Buffer::new().format(self.port).as_bytes());
            key!(out, "method");
            opt_string(out, self.method.as_deref())?;
        }
        key!(out, "path");
        opt_string(out, self.path.as_deref())?;
        key!(out, "model");
        opt_string(out, self.model.as_deref())?;
        key!(out, "workflow");
        opt_string(out, self.workflow.as_deref())?;
        if whole {
            key!(out, "workflow_source");
            value(out, &self.workflow_source)?;
            if let Some(claimed) = &self.workflow_claimed {
                key!(out, "workflow_claimed");
                string(out, claimed)?;
            }
            if let Some(why) = &self.workflow_reason {
                key!(out, "workflow_reason");
                value(out, why)?;
            }
        }
        self.write_end(out, whole)
    }
}

impl AuditRecord {
    /// Every record from `action` on: the outcome's own fields, in both shapes. `whole` adds
    /// the ones a slim outcome leaves to its decision (`outcome::DECISION_ONLY`), in their place.
    fn write_end(&self, out: &mut Vec<u8>, whole: bool) -> Result<(), serde_json::Error> {
        key!(out, "action");
        value(out, &self.action)?;
        key!(out, "reason");
        value(out, &self.reason)?;
        key!(out, "rule");
        opt_string(out, self.rule.as_deref())?;
        if whole {
            key!(out, "policy_version");
            opt_string(out, self.policy_version.as_deref())?;
        }
        key!(out, "exemption");
        opt_string(out, self.exemption.as_deref())?;
        key!(out, "would_block");
        out.extend_from_slice(if self.would_block { b"true" } else { b"false" });
        key!(out, "status");
        match self.status {
            Some(s) => out.extend_from_slice(itoa::Buffer::new().format(s).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "error");
        opt_string(out, self.error.as_deref())?;
        key!(out, "bytes_up");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_up).as_bytes());
        key!(out, "bytes_down");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_down).as_bytes());
        // Floats and the free-form admin details go through serde_json: its float formatting
        // (shortest round-trip, NaN as null) is the one the log has always had.
        key!(out, "duration_ms");
        value(out, &self.duration_ms)?;
        key!(out, "ttfb_ms");
        value(out, &self.ttfb_ms)?;
        if whole {
            key!(out, "admin");
            value(out, &self.admin)?;
            if !self.signed_headers_kept.is_empty() {
                key!(out, "signed_headers_kept");
                strings(out, self.signed_headers_kept.iter().map(String::as_str))?;
            }
            if let Some(tool) = &self.side_call_tool {
                key!(out, "side_call_tool");
                string(out, tool)?;
            }
        }
        if let Some(group) = &self.ai_host {
            key!(out, "ai_host");
            string(out, group)?;
        }
        if self.outcome_follows {
            key!(out, "outcome_follows");
            out.extend_from_slice(b"true");
        }
        self.write_tail(out)
    }

    /// `replica` and the provenance fields, the last of every record.
    fn write_tail(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        if let Some(replica) = &self.replica {
            key!(out, "replica");
            string(out, replica)?;
        }
        if let Some(mark) = &self.provenance {
            key!(out, "provenance");
            value(out, mark)?;
        }
        if let Some(n) = self.provenance_fingerprints {
            key!(out, "provenance_fingerprints");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        if let Some(n) = self.provenance_chars {
            key!(out, "provenance_chars");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        out.push(b'}');
        Ok(())
    }
}

/// A JSON string. Most values need no escaping and are copied whole; the rest go through
/// serde_json's escaper, so both paths write what serde_json writes.
fn string(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(&mut *out, s);
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether `s` holds a control character, `"` or `\\`: eight bytes at a time (the byte-wise
/// loop was a quarter of the record's cost).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The classic bit tricks: nonzero exactly when some byte of `x` is zero, or below `n`
    // (for `n` up to 128).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if less(x, 0x20) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), serde_json::Error> {
    match s {
        Some(s) => string(out, s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn strings<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = &'a str>,
) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s)?;
    }
    out.push(b']');
    Ok(())
}

fn value(out: &mut Vec<u8>, v: &impl Serialize) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::audit::Kind;
    use crate::audit::record::ProvenanceMark;
    use crate::identify::user::IdentitySource;
    use crate::identify::{Confidence, WorkflowSource};
    use crate::policy::{Action, Reason};

    use super::*;

    /// The slim outcome as serde would write it: the record's fields without
    /// `outcome::DECISION_ONLY`, in the record's order.
    #[derive(serde::Serialize)]
    struct SlimOutcome<'a> {
        time: &'a str,
        id: &'a str,
        kind: Kind,
        user: &'a str,
        tool: Option<&'a str>,
        vendor: Option<&'a str>,
        host: &'a str,
        path: Option<&'a str>,
        model: Option<&'a str>,
        workflow: Option<&'a str>,
        action: Action,
        reason: Reason,
        rule: Option<&'a str>,
        exemption: Option<&'a str>,
        would_block: bool,
        status: Option<u16>,
        error: Option<&'a str>,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: f64,
        ttfb_ms: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ai_host: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        outcome_follows: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        replica: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        provenance: Option<ProvenanceMark>,
        #[serde(skip_serializing_if = "Option::is_none")]
        provenance_fingerprints: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        provenance_chars: Option<u64>,
    }

    fn slim(r: &AuditRecord) -> SlimOutcome<'_> {
        SlimOutcome {
            time: &r.time,
            id: &r.id,
            kind: r.kind,
            user: &r.user,
            tool: r.tool.as_deref(),
            vendor: r.vendor.as_deref(),
            host: &r.host,
            path: r.path.as_deref(),
            model: r.model.as_deref(),
            workflow: r.workflow.as_deref(),
            action: r.action,
            reason: r.reason,
            rule: r.rule.as_deref(),
            exemption: r.exemption.as_deref(),
            would_block: r.would_block,
            status: r.status,
            error: r.error.as_deref(),
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            duration_ms: r.duration_ms,
            ttfb_ms: r.ttfb_ms,
            ai_host: r.ai_host.as_deref(),
            outcome_follows: r.outcome_follows,
            replica: r.replica.as_deref(),
            provenance: r.provenance,
            provenance_fingerprints: r.provenance_fingerprints,
            provenance_chars: r.provenance_chars,
        }
    }

    fn same_as_serde(r: &AuditRecord) {
        let mut ours = Vec::new();
        r.write_json(&mut ours).expect("write_json");
        let theirs = if r.is_slim_outcome() {
            serde_json::to_vec(&slim(r)).expect("serde_json")
        } else {
            serde_json::to_vec(r).expect("serde_json")
        };
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn finds_every_byte_that_needs_escaping_wherever_it_is() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        needs_escape(&s),
                        naive(&s),
                        "byte {b:#04x} at {at} of {len}"
                    );
                    // A neighbour just above a borrow must not hide or invent one.
                    if at + 1 < len {
                        s[at + 1] = 0x80;
                        assert_eq!(
                            needs_escape(&s),
                            naive(&s),
                            "byte {b:#04x} at {at}, 0x80 after"
                        );
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let empty = AuditRecord::placeholder();
        same_as_serde(&empty);

        let mut r = AuditRecord::new(
            "0190f5c2-7a1b-7c3d-8e4f-a1b2c3d4e5f6".into(),
            Kind::Admin,
            "10.0.0.7:51234".into(),
            Arc::from("alice@example.com"),
            "api.anthropic.com".into(),
            443,
        );
        r.user_source = Some(IdentitySource::ProxyAuth);
        r.tool = Some(Arc::from("claude-code"));
        r.tool_confidence = Some(Confidence::High);
        r.evidence = vec!["user-agent: claude-cli/2.1".into(), "x-app: cli".into()];
        r.tool_conflicts = vec![Arc::from("codex-cli"), Arc::from("gemini-cli")];
        r.tool_conflict_evidence = vec!["codex-cli: user-agent".into(), "gemini-cli: body".into()];
        r.user_agent = Some("claude-cli/2.1 \"quoted\"".into());
        r.vendor = Some(Arc::from("anthropic"));
        r.method = Some("POST".into());
        r.path = Some("/v1/messages?beta=<redacted>".into());
        r.model = Some("claude-opus-4".into());
        r.workflow = Some("training-data".into());
        r.workflow_source = Some(WorkflowSource::Header);
        r.workflow_claimed = Some("training_data".into());
        r.workflow_reason = Some(Reason::WorkflowUnknown);
        r.action = Action::Block;
        r.reason = Reason::RuleMatched;
        r.rule = Some(Arc::from("no-rival-tools"));
        r.policy_version = Some(Arc::from("3f2a9c1d"));
        r.exemption = Some(Arc::from("ex-42"));
        r.would_block = true;
        r.status = Some(403);
        r.error = Some("upstream_connect".into());
        r.bytes_up = u64::MAX;
        r.bytes_down = 0;
        r.duration_ms = 12.345_678_9;
        r.ttfb_ms = Some(0.1);
        r.admin = Some(serde_json::json!({"subject": "bob", "until": null, "n": [1, 2.5]}));
        r.signed_headers_kept = vec!["x-aigate-workflow".into()];
        r.side_call_tool = Some(Arc::from("claude-code"));
        r.ai_host = Some(Arc::from("inference-apis"));
        r.replica = Some(Arc::from("gw-2"));
        same_as_serde(&r);
        r.provenance = Some(ProvenanceMark::Captured);
        r.provenance_fingerprints = Some(1234);
        r.provenance_chars = Some(56_789);
        same_as_serde(&r);
        r.provenance = Some(ProvenanceMark::Dropped);
        r.provenance_fingerprints = None;
        same_as_serde(&r);
        r.outcome_follows = true;
        same_as_serde(&r);
        r.kind = Kind::Outcome;
        same_as_serde(&r);
        r.outcome_follows = false;
        same_as_serde(&r);
        // An outcome whose identification was revised is written whole.
        r.reason = Reason::LateBodySignal;
        same_as_serde(&r);
        r.reason = Reason::RuleMatched;
        r.kind = Kind::Progress;
        same_as_serde(&r);

        // Strings that need escaping, and some that do not but look close to it.
        r.path = Some("/v1/\"quoted\"\\back\u{1}\n\t\u{1f}".into());
        r.model = Some("mödel-✓-😀 / \u{7f}".into());
        r.evidence = vec![String::new(), "\"".into(), "\\".into()];
        r.user = Arc::from("DOMAIN\\user");
        r.duration_ms = f64::NAN;
        r.ttfb_ms = Some(1e21);
        r.replica = None;
        same_as_serde(&r);
        r.error = Some(format!("{}\"{}", "x".repeat(37), "y".repeat(20)));
        same_as_serde(&r);
        r.kind = Kind::Outcome;
        same_as_serde(&r);
        r.ai_host = None;
        r.provenance = None;
        same_as_serde(&r);
    }
}
