//! A blocked tool's body signal after the peek: the request is cancelled before its last byte.
//!
//! The decision is made on the peeked start of the body, and the rest streams to the vendor as
//! it arrives. A vendor cannot act on a JSON request before its last byte, so the rest is
//! searched on its way (`identify::scan`, over each chunk where it lies). When it reveals a body
//! signal the peek did not have, the request is identified and decided again, with the same
//! `identify_tool` and `policy::decide`; if that decision blocks, the chunk that revealed it is
//! not sent, the upstream request is aborted (its body ends in an error, so hyper never writes
//! the final bytes or the closing chunk and drops the connection), and `forward` answers the
//! client with the deny, recorded with reason `late_body_signal`.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, Response, StatusCode};
use regex::bytes::Regex;

use super::Shared;
use super::deny::{self, DenyContext};
use super::pipeline::ConnCtx;
use crate::config::{Config, ErrorFormat};
use crate::identify::body_stream::BodyStream;
use crate::identify::identify_tool;
use crate::identify::normalise::BodyDecodeError;
use crate::identify::scan::BodyScanner;
use crate::identify::tools::{RequestFacts, ToolMatch};
use crate::policy::{self, Action, Call, Decision, Reason};
use crate::tls::upstream::ProxyBody;

/// What deciding again needs, as it was when the peek was decided.
pub struct Inputs {
    pub shared: Arc<Shared>,
    pub cfg: Arc<Config>,
    pub conn: Arc<ConnCtx>,
    pub headers: HeaderMap,
    pub path: String,
    pub workflow: String,
    /// The claimed tag that did not count, and why (for the deny message).
    pub claim: Option<(String, crate::identify::workflow::Untrusted)>,
    pub model: Option<String>,
    pub request_id: String,
    pub format: ErrorFormat,
    /// Body signals the peek already matched (they still count).
    pub in_prefix: Vec<String>,
}

/// The revised decision, for `forward` to answer and record.
pub struct LateBlock {
    pub tool: ToolMatch,
    pub decision: Decision,
    pub response: Response<ProxyBody>,
    /// Why the rest of the body could not be read, for the record's `error`.
    pub error: Option<&'static str>,
}

/// Where the body leaves the revised decision for `forward`.
pub type Verdict = Arc<Mutex<Option<LateBlock>>>;

pub struct LateScan {
    scanner: BodyScanner,
    /// The rest of the body as the signatures read it; an error if the peek's encoding could
    /// not be taken up where the peek ended (the first chunk of the rest is then refused).
    stream: Result<BodyStream, BodyDecodeError>,
    inputs: Inputs,
    verdict: Verdict,
}

/// Body signals in `cfg.tools` that `prefix` does not match, each once, and those it does.
pub fn split_signals(cfg: &Config, prefix: &[u8]) -> (Vec<Regex>, Vec<String>) {
    let mut todo: Vec<Regex> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for sig in &cfg.tools {
        for signal in &sig.signals {
            let crate::identify::tools::Signal::Body(re) = signal else {
                continue;
            };
            let known = todo.iter().any(|r| r.as_str() == re.as_str())
                || seen.iter().any(|s| s == re.as_str());
            if known {
                continue;
            }
            if re.is_match(prefix) {
                seen.push(re.as_str().to_string());
            } else {
                todo.push(re.clone());
            }
        }
    }
    (todo, seen)
}

impl LateScan {
    /// `stream` comes with the searchable text of the peek it was fed (the scanner's start).
    pub fn new(
        patterns: Vec<Regex>,
        stream: Result<(BodyStream, Vec<u8>), BodyDecodeError>,
        inputs: Inputs,
    ) -> LateScan {
        let (stream, searched) = match stream {
            Ok((s, searched)) => (Ok(s), searched),
            Err(e) => (Err(e), Vec::new()),
        };
        LateScan {
            scanner: BodyScanner::new(patterns, &searched),
            stream,
            inputs,
            verdict: Arc::new(Mutex::new(None)),
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict.clone()
    }

    /// Search the next chunk before it goes upstream; true if it must not go (the revised
    /// decision blocks, and is left in the verdict).
    pub fn blocks(&mut self, chunk: &[u8]) -> bool {
        let text = match self
            .stream
            .as_mut()
            .map_err(|e| e.clone())
            .and_then(|s| s.push(chunk))
        {
            Ok(text) => text,
            // Undecodable past the peek: the signals there cannot be read, so the request goes
            // no further, as an undecodable peek does not.
            Err(e) => return self.refuse(Some(e)),
        };
        if !self.scanner.feed(&text) {
            return false;
        }
        self.refuse(None)
    }

    /// Decide again with the signals found so far, or refuse a body undecodable past the peek.
    fn refuse(&mut self, undecodable: Option<BodyDecodeError>) -> bool {
        let r = &self.inputs;
        let later: Vec<&str> = r
            .in_prefix
            .iter()
            .map(String::as_str)
            .chain(self.scanner.found())
            .collect();
        let facts = RequestFacts {
            vendor: &r.conn.vendor.id,
            path: &r.path,
            headers: &r.headers,
            body_prefix: &[],
            body_later: &later,
        };
        let tool = identify_tool(&r.cfg.tools, &facts);
        let call = Call {
            tool: &tool.tool,
            vendor: &r.conn.vendor.id,
            workflow: &r.workflow,
            user: &r.conn.identity.user,
            groups: &r.conn.identity.groups,
            model: r.model.as_deref(),
            // The first decision already settled the claimed tag: with unknown_workflow = "block"
            // an untrusted one never got this far, and otherwise `workflow` is already untagged.
            untrusted_workflow: None,
            // A side call is a GET or HEAD: it has no body to reveal a tool later.
            side_call: false,
        };
        let (decision, status) = match &undecodable {
            Some(e) => {
                tracing::info!(error = %e, "request body not decodable past the peek; cancelled");
                (
                    Decision::refused(Reason::BodyUndecodable),
                    StatusCode::BAD_REQUEST,
                )
            }
            None => {
                let snapshot = r.shared.exemptions.load();
                let mut decision =
                    policy::decide(&r.cfg.policy, &call, &snapshot, r.shared.clock.now());
                if decision.action != Action::Block {
                    return false;
                }
                decision.reason = Reason::LateBodySignal;
                (
                    decision,
                    deny::status_for(&r.cfg, &tool.tool, &r.conn.vendor),
                )
            }
        };
        let rule = decision
            .rule
            .as_deref()
            .and_then(|name| r.cfg.policy.rules.iter().find(|rule| &*rule.name == name));
        let extras = super::pipeline::deny_extras(
            &r.shared,
            &r.cfg,
            &r.conn,
            &r.request_id,
            &tool.tool,
            &tool.name,
            &r.workflow,
            &decision,
            rule,
        );
        let ctx = DenyContext {
            request_id: &r.request_id,
            tool_name: &tool.name,
            tool: &tool.tool,
            workflow: &r.workflow,
            user: &r.conn.identity.user,
            vendor_name: &r.conn.vendor.name,
            exemption_url: &r.cfg.exemption_url,
            rule,
            claim: r.claim.as_ref().map(|(tag, why)| (tag.as_str(), *why)),
            link: extras.link.as_deref(),
            request_status: extras.status.as_deref(),
        };
        let response = deny::deny(r.format, status, &decision, &ctx);
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(LateBlock {
                tool,
                decision,
                response,
                error: undecodable.map(|e| e.code()),
            });
        }
        true
    }
}
