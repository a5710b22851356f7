//! `aigate explain`: what the gateway would decide for a described request, and why.
//!
//! Runs the same identification and `policy::explain` as the data path, on plain data, so the
//! answer cannot drift from what the proxy does.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::config::Config;
use crate::exemptions::Snapshot;
use crate::host::{Host, normalise};
use crate::identify::tools::RequestFacts;
use crate::identify::{identify_tool, model, normalise, workflow};
use crate::policy::{self, Call};

/// A described request.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub user: Option<String>,
    pub workflow: Option<String>,
    pub body: Option<String>,
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
    pub route: String,
    pub user: String,
    pub groups: Vec<String>,
    pub tool: String,
    pub tool_confidence: String,
    pub evidence: Vec<String>,
    pub workflow: String,
    pub model: Option<String>,
    pub rules: Vec<RuleLine>,
    pub action: String,
    pub reason: String,
    pub rule: Option<String>,
    pub exemptable: bool,
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
        return Ok(ExplainReport {
            host: host.to_string(),
            vendor: None,
            route: "tunnel: not a vendor host, bytes pass untouched (audited as a tunnel)".into(),
            user: user_id,
            groups,
            tool: "-".into(),
            tool_confidence: "none".into(),
            evidence: vec![],
            workflow: "-".into(),
            model: None,
            rules: vec![],
            action: "allow".into(),
            reason: "not_vendor".into(),
            rule: None,
            exemptable: false,
        });
    };
    let body = req.body.as_deref().unwrap_or("").as_bytes();
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
    let wf = match &req.workflow {
        Some(w) => w.clone(),
        None => {
            workflow::workflow(
                &headers,
                &cfg.identity.workflow_header,
                user.and_then(|u| u.default_workflow.as_deref()),
            )
            .tag
        }
    };
    let call = Call {
        tool: &tool.tool,
        vendor: &vendor.id,
        workflow: &wf,
        user: &user_id,
        groups: &groups,
        model: model.as_deref(),
    };
    let (decision, trace) = policy::explain(&cfg.policy, &call, exemptions, now);
    Ok(ExplainReport {
        host: host.to_string(),
        vendor: Some(vendor.id.to_string()),
        route: "intercept".into(),
        user: user_id.clone(),
        groups,
        tool: tool.tool.to_string(),
        tool_confidence: format!("{:?}", tool.confidence).to_lowercase(),
        evidence: tool.evidence,
        workflow: wf,
        model,
        rules: trace
            .into_iter()
            .map(|t| RuleLine {
                rule: t.rule.to_string(),
                action: t.action.to_string(),
                matched: t.mismatch.is_none(),
                mismatch: t.mismatch,
            })
            .collect(),
        action: decision.action.to_string(),
        reason: decision.reason.to_string(),
        rule: decision.rule.map(|r| r.to_string()),
        exemptable: decision.exemptable,
    })
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
            let _ = writeln!(out, "workflow:  {}", self.workflow);
            let _ = writeln!(out, "model:     {}", self.model.as_deref().unwrap_or("-"));
            let _ = writeln!(out, "rules considered:");
            for (i, r) in self.rules.iter().enumerate() {
                let verdict = if r.matched {
                    "MATCH".to_string()
                } else {
                    format!("skip: {}", r.mismatch.as_deref().unwrap_or(""))
                };
                let _ = writeln!(
                    out,
                    "  {:>2}. {:<40} {:<8} {}",
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
