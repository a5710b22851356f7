//! Tool signatures: which client made a request.
//!
//! A signature applies to some vendors and path prefixes, and lists signals: a regex on
//! `user-agent`, regexes on named headers, a regex on the peeked start of the body. It matches
//! when at least `min_signals` of them do. Signatures are tried in config order and the first
//! match names the tool; later matches are kept as conflicting evidence, because a request that
//! says "SDK" in its user agent but carries Claude Code's body marks is worth a reviewer's look.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::normalise::header_matches;

/// The tool id used when no signature matches.
pub const UNKNOWN_TOOL: &str = "unknown";

#[derive(Debug, Clone)]
pub enum Signal {
    /// A regex on the request path (a client's own side-call endpoints).
    Path(Regex),
    UserAgent(Regex),
    Header(HeaderName, Regex),
    Body(regex::bytes::Regex),
}

impl Signal {
    /// The evidence label written to the audit record when this signal matches.
    pub fn label(&self) -> String {
        match self {
            Signal::Path(_) => "path".to_string(),
            Signal::UserAgent(_) => "user-agent".to_string(),
            Signal::Header(name, _) => format!("header:{name}"),
            Signal::Body(_) => "body".to_string(),
        }
    }

    fn matches(&self, req: &RequestFacts<'_>) -> bool {
        match self {
            Signal::Path(re) => re.is_match(req.path),
            Signal::UserAgent(re) => req
                .headers
                .get_all(http::header::USER_AGENT)
                .iter()
                .any(|v| header_matches(v, re)),
            Signal::Header(name, re) => req
                .headers
                .get_all(name)
                .iter()
                .any(|v| header_matches(v, re)),
            Signal::Body(re) => {
                re.is_match(req.body_prefix) || req.body_later.contains(&re.as_str())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ToolSignature {
    pub id: Arc<str>,
    pub name: Arc<str>,
    /// Vendor ids this signature applies to; empty means every vendor.
    pub vendors: Vec<String>,
    /// Path prefixes this signature applies to; empty means every path.
    pub paths: Vec<String>,
    pub signals: Vec<Signal>,
    pub min_signals: usize,
}

/// What the matcher looks at, already normalised (normalise.rs): `path` decoded and resolved,
/// `body_prefix` decoded by its `Content-Encoding` with JSON escapes folded. Header values are
/// read through `normalise::header_text` here.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub vendor: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The peeked start of the request body (may be empty).
    pub body_prefix: &'a [u8],
    /// Body signals (their patterns) found after the peek while the body streamed
    /// (`identify::scan`); empty when deciding on the peek.
    pub body_later: &'a [&'a str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Nothing matched.
    None,
    /// One signal matched (or fewer than two where the signature has one).
    Medium,
    /// Two or more independent signals matched (or the only one a signature has).
    High,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolMatch {
    pub tool: Arc<str>,
    pub name: Arc<str>,
    pub confidence: Confidence,
    /// The signals that matched, e.g. `user-agent`, `header:x-app`.
    pub evidence: Vec<String>,
    /// Other tools whose signatures also matched (forged or mixed signals).
    pub conflicts: Vec<Arc<str>>,
}

impl ToolMatch {
    pub fn unknown() -> ToolMatch {
        ToolMatch {
            tool: Arc::from(UNKNOWN_TOOL),
            name: Arc::from("unknown tool"),
            confidence: Confidence::None,
            evidence: Vec::new(),
            conflicts: Vec::new(),
        }
    }
}

impl ToolSignature {
    fn applies(&self, req: &RequestFacts<'_>) -> bool {
        (self.vendors.is_empty() || self.vendors.iter().any(|v| v == req.vendor))
            && (self.paths.is_empty()
                || self.paths.iter().any(|p| req.path.starts_with(p.as_str())))
    }

    /// The labels of the matched signals, if enough of them matched.
    fn evidence(&self, req: &RequestFacts<'_>) -> Option<Vec<String>> {
        if !self.applies(req) {
            return None;
        }
        let matched: Vec<String> = self
            .signals
            .iter()
            .filter(|s| s.matches(req))
            .map(Signal::label)
            .collect();
        (matched.len() >= self.min_signals.max(1)).then_some(matched)
    }
}

/// The first signature that matches names the tool; later matches are conflicts.
pub fn identify_tool(signatures: &[ToolSignature], req: &RequestFacts<'_>) -> ToolMatch {
    let mut found: Option<ToolMatch> = None;
    for sig in signatures {
        let Some(evidence) = sig.evidence(req) else {
            continue;
        };
        match &mut found {
            None => {
                let confidence = if evidence.len() >= 2.min(sig.signals.len()) {
                    Confidence::High
                } else {
                    Confidence::Medium
                };
                found = Some(ToolMatch {
                    tool: sig.id.clone(),
                    name: sig.name.clone(),
                    confidence,
                    evidence,
                    conflicts: Vec::new(),
                });
            }
            Some(m) => m.conflicts.push(sig.id.clone()),
        }
    }
    found.unwrap_or_else(ToolMatch::unknown)
}
