//! Audit record schema v1. Field names and reason codes are a public interface: security
//! reviewers' queries and SIEM mappings depend on them (docs/audit-schema.md).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identify::Confidence;
use crate::identify::WorkflowSource;
use crate::identify::user::IdentitySource;
use crate::policy::{Action, Reason};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Request,
    Tunnel,
    Admin,
    /// The end of a forwarded call whose decision record (same `id`) was written before the
    /// first byte went upstream: status, bytes, timings, error (`outcome_lost` when the
    /// gateway ended first).
    Outcome,
    /// A forwarded call still open (a long stream or WebSocket): bytes so far.
    Progress,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Tunnel => "tunnel",
            Kind::Admin => "admin",
            Kind::Outcome => "outcome",
            Kind::Progress => "progress",
        }
    }
}

/// One audit record as the pipeline fills it. `seq`, `prev` and `hash` are added by the writer,
/// which alone knows the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub id: String,
    pub kind: Kind,
    /// Absent from a slim outcome (`DECISION_ONLY`), as are the defaulted fields below.
    #[serde(default)]
    pub client: String,
    pub user: Arc<str>,
    pub user_source: Option<IdentitySource>,
    pub tool: Option<Arc<str>>,
    pub tool_confidence: Option<Confidence>,
    #[serde(default)]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub tool_conflicts: Vec<Arc<str>>,
    /// Why each of `tool_conflicts` is one: `"<tool>: <signal>, …"`, the signals that matched it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_conflict_evidence: Vec<String>,
    /// The client's `user-agent`, when the tool is unknown or conflicted, so IT can write a
    /// signature: printable ASCII only, at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub vendor: Option<Arc<str>>,
    pub host: String,
    #[serde(default)]
    pub port: u16,
    pub method: Option<String>,
    /// Path with query values redacted (see `redact`).
    pub path: Option<String>,
    pub model: Option<String>,
    pub workflow: Option<String>,
    pub workflow_source: Option<WorkflowSource>,
    /// The tag the request claimed, when it differs from `workflow` (the tag that decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_claimed: Option<String>,
    /// Why the claimed tag was not used: `workflow_unknown` or `workflow_not_permitted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_reason: Option<Reason>,
    pub action: Action,
    pub reason: Reason,
    pub rule: Option<Arc<str>>,
    /// The version of the policy that decided (a short hash of the config file).
    #[serde(default)]
    pub policy_version: Option<Arc<str>>,
    pub exemption: Option<Arc<str>>,
    pub would_block: bool,
    pub status: Option<u16>,
    /// What went wrong, when something did: `upstream_connect`, `upstream_tls`, `client_gone`, …
    pub error: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: f64,
    pub ttfb_ms: Option<f64>,
    /// `kind = admin`: what was done (subject, tools, workflows, until when, why, ticket).
    #[serde(default)]
    pub admin: Option<serde_json::Value>,
    /// Gateway headers (the workflow tag) that the client signed (AWS SigV4 `SignedHeaders`), so
    /// they went upstream unchanged instead of being removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signed_headers_kept: Vec<String>,
    /// On an `ai_host` record: the tool this user was identified with on an inspected vendor in
    /// the 15 minutes before (a banned tool's side calls next to its uninspected model traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_call_tool: Option<Arc<str>>,
    /// `kind = tunnel` to a model API that aigate does not inspect: the AI host catalog group
    /// (`inference-apis`, `aggregators`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_host: Option<Arc<str>>,
    /// A decision record whose call went upstream: an `outcome` record with the same `id`
    /// follows (docs/audit-schema.md, "Decision and outcome"). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_follows: bool,
    /// The replica that wrote it, when several share PostgreSQL (its chain in the audit table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<Arc<str>>,
    /// On the outcome of a captured call: what became of the capture of its response
    /// (docs/provenance.md). Absent when the call was not captured at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceMark>,
    /// Fingerprints of the captured output recorded in the provenance ledger under this `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_fingerprints: Option<u64>,
    /// Characters of model output captured (text and code; thinking only when configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_chars: Option<u64>,
}

/// What became of a forwarded response's provenance capture (`provenance` on its outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvenanceMark {
    /// Reassembled, and its fingerprints recorded in the ledger before this record was written.
    Captured,
    /// The capture queue was full: nothing of this response was captured (never the client
    /// slowed instead).
    Dropped,
    /// The response cannot be read for capture (an unsupported `Content-Encoding` or body type).
    Unreadable,
    /// Reassembled, but the ledger could not be written.
    Unrecorded,
}

/// The placeholder's user: one shared empty string, so a placeholder (one per request) costs no
/// allocation.
fn no_user() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

impl AuditRecord {
    /// An empty record, left behind when a guard hands its record to the writer.
    pub fn placeholder() -> AuditRecord {
        AuditRecord {
            time: String::new(),
            id: String::new(),
            kind: Kind::Request,
            client: String::new(),
            user: no_user(),
            user_source: None,
            tool: None,
            tool_confidence: None,
            evidence: Vec::new(),
            tool_conflicts: Vec::new(),
            tool_conflict_evidence: Vec::new(),
            user_agent: None,
            vendor: None,
            host: String::new(),
            port: 0,
            method: None,
            path: None,
            model: None,
            workflow: None,
            workflow_source: None,
            workflow_claimed: None,
            workflow_reason: None,
            action: Action::Allow,
            reason: Reason::NotVendor,
            rule: None,
            policy_version: None,
            exemption: None,
            would_block: false,
            status: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            ttfb_ms: None,
            admin: None,
            signed_headers_kept: Vec::new(),
            side_call_tool: None,
            ai_host: None,
            outcome_follows: false,
            replica: None,
            provenance: None,
            provenance_fingerprints: None,
            provenance_chars: None,
        }
    }

    /// A record with the connection facts filled in and everything else empty.
    pub fn new(
        id: String,
        kind: Kind,
        client: String,
        user: Arc<str>,
        host: String,
        port: u16,
    ) -> AuditRecord {
        AuditRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            id,
            kind,
            client,
            user,
            host,
            port,
            ..AuditRecord::placeholder()
        }
    }
}

/// What `verify` and `query` read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRecord {
    pub v: u32,
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    #[serde(flatten)]
    pub record: AuditRecord,
}
