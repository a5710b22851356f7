//! `aigate explain`: what the gateway would decide for a described request, and why.
//!
//! Runs the same identification and `policy::explain` as the data path, on plain data, so the
//! answer cannot drift from what the proxy does.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::catalog::AiHostAction;
use crate::config::Config;
use crate::exemptions::Snapshot;
use crate::host::{Host, normalise};
use crate::identify::tools::RequestFacts;
use crate::identify::{identify_tool, model, normalise, workflow};
use crate::policy::{self, Call, Reason, UnknownWorkflow};

/// A described request.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub user: Option<String>,
    pub workflow: Option<String>,
    /// The body as sent: when the headers carry a `Content-Encoding`, encoded bytes (the CLI's
    /// `--body-file`), decoded here as the data path decodes them.
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleLine {
    pub rule: String,
    pub action: String,
    pub matched: bool,
    pub mismatch: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport {
    pub host: String,
    pub vendor: Option<String>,
    /// The AI host catalog group of a host that is not a vendor (a model API outside inspection).
    pub ai_host: Option<String>,
    pub route: String,
    pub user: String,
    pub groups: Vec<String>,
    pub tool: String,
    pub tool_confidence: String,
    pub evidence: Vec<String>,
    /// Other tools that matched and why (`"<tool>: <signals>"`).
    pub tool_conflicts: Vec<String>,
    /// The tag that decides.
    pub workflow: String,
    /// The tag claimed, when it does not count; and why (`workflow_unknown`, …).
    pub workflow_claimed: Option<String>,
    pub workflow_reason: Option<String>,
    pub model: Option<String>,
    pub rules: Vec<RuleLine>,
    pub action: String,
    pub reason: String,
    pub rule: Option<String>,
    pub exemptable: bool,
    /// The workflow catalog: which tags count, and who may claim them.
    pub workflows: Vec<WorkflowLine>,
    /// `policy.unknown_workflow`: what a tag that does not count gets.
    pub unknown_workflow: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkflowLine {
    pub id: String,
    pub description: String,
    pub claimable_by: String,
    pub protected: bool,
}

pub fn explain(
    cfg: &Config,
    req: &ExplainRequest,
    exemptions: &Snapshot,
    now: SystemTime,
) -> Result<ExplainReport, String> {
    let host = normalise(&req.host).map_err(|e| format!("--host {:?}: {e}", req.host))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let n = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        let v = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header {name:?} has an invalid value"))?;
        headers.append(n, v);
    }
    let user_id = req
        .user
        .clone()
        .unwrap_or_else(|| crate::identify::user::ANONYMOUS.to_string());
    let user = cfg.identity.directory.get(&user_id);
    let groups: Vec<String> = user.map(|u| u.groups.to_vec()).unwrap_or_default();
    let vendor = match &host {
        Host::Name(n) => cfg.vendor_for(n).cloned(),
        Host::Ip(_) => None,
    };
    let Some(vendor) = vendor else {
        let group = match &host {
            Host::Name(n) => cfg.ai_hosts.group_for(n).cloned(),
            Host::Ip(_) => None,
        };
        let (route, action, reason) = match &group {
            Some(g) if g.action == AiHostAction::Block => (
                format!(
                    "refused: an AI host outside inspection, ai_hosts group \"{}\" ({}) is blocked",
                    g.id, g.name
                ),
                "block",
                Reason::AiHost,
            ),
            Some(g) => (
                format!(
                    "tunnel to an AI host outside inspection: ai_hosts group \"{}\" ({}); bytes pass untouched, recorded as monitor with ai_host = \"{}\"",
                    g.id, g.name, g.id
                ),
                "monitor",
                Reason::AiHost,
            ),
            None => (
                "tunnel: not a vendor host, bytes pass untouched (audited as a tunnel)".to_string(),
                "allow",
                Reason::NotVendor,
            ),
        };
        return Ok(ExplainReport {
            host: host.to_string(),
            vendor: None,
            ai_host: group.map(|g| g.id.to_string()),
            route,
            user: user_id,
            groups,
            tool: "-".into(),
            tool_confidence: "none".into(),
            evidence: vec![],
            tool_conflicts: vec![],
            workflow: "-".into(),
            workflow_claimed: None,
            workflow_reason: None,
            model: None,
            rules: vec![],
            action: action.into(),
            reason: reason.to_string(),
            rule: None,
            exemptable: false,
            workflows: catalog(cfg),
            unknown_workflow: unknown_workflow(cfg),
        });
    };
    let raw_body = req.body.as_deref().unwrap_or_default();
    // Decoded by its Content-Encoding, as the data path does; what it would refuse, say so.
    let body = normalise::decode_body(
        &normalise::content_encoding(&headers),
        raw_body,
        normalise::MAX_DECODED_PEEK,
    )
    .map_err(|e| {
        format!(
            "the body cannot be read: {e}; the gateway refuses such a request (reason body_undecodable, error {})",
            e.code()
        )
    })?;
    let body = &body[..];
    let path = if req.path.is_empty() {
        "/"
    } else {
        req.path.as_str()
    };
    // The same normalisation as the data path (identify/normalise.rs).
    let raw_path = path;
    let path = normalise::path(path);
    let body_text = normalise::fold_json_escapes(body);
    let facts = RequestFacts {
        vendor: &vendor.id,
        path: &path,
        headers: &headers,
        body_prefix: &body_text,
        body_later: &[],
    };
    let tool = identify_tool(&cfg.tools, &facts);
    let model = model::from_body(body)
        .or_else(|| model::from_path(raw_path))
        .or_else(|| model::from_path(&path));
    // `--workflow` is a claim like the header: the catalog decides whether it counts.
    if let Some(w) = &req.workflow {
        let v = HeaderValue::from_str(w.trim())
            .map_err(|_| format!("--workflow {w:?} has characters a header cannot carry"))?;
        headers.insert(cfg.identity.workflow_header.clone(), v);
    }
    let wf = workflow::workflow(
        &headers,
        &cfg.identity.workflow_header,
        &cfg.policy.workflows,
        workflow::Claimant {
            user: &user_id,
            groups: &groups,
            default: user.and_then(|u| u.default_workflow.as_deref()),
        },
    );
    let call = Call {
        tool: &tool.tool,
        vendor: &vendor.id,
        workflow: &wf.tag,
        user: &user_id,
        groups: &groups,
        model: model.as_deref(),
        untrusted_workflow: wf.untrusted,
        // `explain` has no method: a request without a body is taken as the GET it would be.
        side_call: vendor.side_calls.matches(
            if raw_body.is_empty() {
                &http::Method::GET
            } else {
                &http::Method::POST
            },
            &path,
            false,
        ),
    };
    let (decision, trace) = policy::explain(&cfg.policy, &call, exemptions, now);
    Ok(ExplainReport {
        host: host.to_string(),
        vendor: Some(vendor.id.to_string()),
        ai_host: None,
        route: "intercept".into(),
        user: user_id.clone(),
        groups,
        tool: tool.tool.to_string(),
        tool_confidence: format!("{:?}", tool.confidence).to_lowercase(),
        evidence: tool.evidence,
        tool_conflicts: tool.conflict_evidence,
        workflow: wf.tag,
        workflow_claimed: wf.claimed,
        workflow_reason: wf.untrusted.map(|u| Reason::from(u).to_string()),
        model,
        rules: rule_lines(trace),
        action: decision.action.to_string(),
        reason: decision.reason.to_string(),
        rule: decision.rule.map(|r| r.to_string()),
        exemptable: decision.exemptable,
        workflows: catalog(cfg),
        unknown_workflow: unknown_workflow(cfg),
    })
}

fn unknown_workflow(cfg: &Config) -> String {
    match cfg.policy.unknown_workflow {
        UnknownWorkflow::Untagged => "untagged",
        UnknownWorkflow::Block => "block",
    }
    .to_string()
}

fn catalog(cfg: &Config) -> Vec<WorkflowLine> {
    cfg.policy
        .workflows
        .entries
        .iter()
        .map(|e| {
            let mut who: Vec<String> = Vec::new();
            who.extend(e.users.iter().flatten().map(|u| format!("user {u}")));
            who.extend(e.groups.iter().flatten().map(|g| format!("group {g}")));
            WorkflowLine {
                id: e.id.clone(),
                description: e.description.clone(),
                claimable_by: if who.is_empty() {
                    "anyone".into()
                } else {
                    who.join(", ")
                },
                protected: e.protected,
            }
        })
        .collect()
}

impl ExplainReport {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "host:      {} ({})",
            self.host,
            self.vendor
                .as_deref()
                .map_or("not a vendor".to_string(), |v| format!("vendor {v}"))
        );
        let _ = writeln!(out, "route:     {}", self.route);
        let _ = writeln!(
            out,
            "user:      {}{}",
            self.user,
            if self.groups.is_empty() {
                String::new()
            } else {
                format!(" (groups: {})", self.groups.join(", "))
            }
        );
        if self.vendor.is_some() {
            let evidence = if self.evidence.is_empty() {
                "no signature matched".to_string()
            } else {
                self.evidence.join(", ")
            };
            let _ = writeln!(
                out,
                "tool:      {} (confidence {}; evidence: {})",
                self.tool, self.tool_confidence, evidence
            );
            if !self.tool_conflicts.is_empty() {
                let _ = writeln!(out, "conflicts: {}", self.tool_conflicts.join("; "));
            }
            match (&self.workflow_claimed, &self.workflow_reason) {
                (Some(claimed), Some(why)) => {
                    let _ = writeln!(
                        out,
                        "workflow:  {} (claimed {claimed:?}, which does not count: {why})",
                        self.workflow
                    );
                }
                _ => {
                    let _ = writeln!(out, "workflow:  {}", self.workflow);
                }
            }
            let _ = writeln!(out, "model:     {}", self.model.as_deref().unwrap_or("-"));
            let _ = writeln!(out, "rules considered:");
            let width = self
                .rules
                .iter()
                .map(|r| r.rule.len())
                .max()
                .unwrap_or(0)
                .max(40);
            for (i, r) in self.rules.iter().enumerate() {
                let verdict = if r.matched {
                    "MATCH".to_string()
                } else {
                    format!("skip: {}", r.mismatch.as_deref().unwrap_or(""))
                };
                let _ = writeln!(
                    out,
                    "  {:>2}. {:<width$} {:<8} {}",
                    i + 1,
                    r.rule,
                    r.action,
                    verdict
                );
            }
            if self.rules.is_empty() {
                let _ = writeln!(out, "  (no rules)");
            }
        }
        if !self.workflows.is_empty() {
            let _ = writeln!(
                out,
                "workflow catalog (a tag outside it, or one the user may not claim: {}):",
                match self.unknown_workflow.as_str() {
                    "block" => "blocked",
                    _ => "decided as untagged",
                }
            );
            for w in &self.workflows {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<11} claimable by {}: {}",
                    w.id,
                    if w.protected {
                        "protected"
                    } else {
                        "unprotected"
                    },
                    w.claimable_by,
                    w.description
                );
            }
        }
        let _ = write!(out, "decision:  {} (reason {}", self.action, self.reason);
        if let Some(rule) = &self.rule {
            let _ = write!(out, ", rule \"{rule}\"");
        }
        let _ = write!(
            out,
            "){}",
            if self.exemptable {
                "; an exemption can lift this block"
            } else {
                ""
            }
        );
        out
    }
}

/// A call as the audit log recorded it: the identification the policy decided on.
#[derive(Debug, Clone, Copy)]
pub struct RecordedCall<'a> {
    pub tool: &'a str,
    pub vendor: &'a str,
    pub workflow: &'a str,
    pub user: &'a str,
    pub model: Option<&'a str>,
    /// `workflow_unknown` or `workflow_not_permitted` when the claimed tag did not count.
    pub workflow_reason: Option<&'a str>,
    /// Recorded with reason `side_call`: one of its vendor's start-up side calls (policy step
    /// 2b), which the record does not otherwise say.
    pub side_call: bool,
}

/// What the policy answers for a recorded call: every rule considered, and the decision.
#[derive(Debug, Clone, Serialize)]
pub struct Considered {
    pub rules: Vec<RuleLine>,
    pub action: String,
    pub reason: String,
    pub rule: Option<String>,
    pub exemptable: bool,
}

/// The rules `explain` would show for a call already identified (the console's record page):
/// the same `policy::explain`, fed from the record instead of from headers, with the user's
/// groups from today's directory.
pub fn of_record(
    cfg: &Config,
    call: &RecordedCall<'_>,
    exemptions: &Snapshot,
    at: SystemTime,
) -> Considered {
    let groups: Vec<String> = cfg
        .identity
        .directory
        .get(call.user)
        .map(|u| u.groups.to_vec())
        .unwrap_or_default();
    let untrusted = match call.workflow_reason {
        Some("workflow_unknown") => Some(workflow::Untrusted::Unknown),
        Some("workflow_not_permitted") => Some(workflow::Untrusted::NotPermitted),
        _ => None,
    };
    let policy_call = Call {
        tool: call.tool,
        vendor: call.vendor,
        workflow: call.workflow,
        user: call.user,
        groups: &groups,
        model: call.model,
        untrusted_workflow: untrusted,
        side_call: call.side_call,
    };
    let (decision, trace) = policy::explain(&cfg.policy, &policy_call, exemptions, at);
    Considered {
        rules: rule_lines(trace),
        action: decision.action.to_string(),
        reason: decision.reason.to_string(),
        rule: decision.rule.map(|r| r.to_string()),
        exemptable: decision.exemptable,
    }
}

fn rule_lines(trace: Vec<policy::RuleTrace>) -> Vec<RuleLine> {
    trace
        .into_iter()
        .map(|t| RuleLine {
            rule: t.rule.to_string(),
            action: t.action.to_string(),
            matched: t.mismatch.is_none(),
            mismatch: t.mismatch,
        })
        .collect()
}
