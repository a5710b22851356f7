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

    fn matches(&self, req: &RequestFacts<'_>, names: NameSketch) -> bool {
        match self {
            Signal::Path(re) => re.is_match(req.path),
            Signal::UserAgent(re) => {
                names.may_have(http::header::USER_AGENT.as_str())
                    && req
                        .headers
                        .get_all(http::header::USER_AGENT)
                        .iter()
                        .any(|v| header_matches(v, re))
            }
            Signal::Header(name, re) => {
                names.may_have(name.as_str())
                    && req
                        .headers
                        .get_all(name)
                        .iter()
                        .any(|v| header_matches(v, re))
            }
            Signal::Body(re) => {
                re.is_match(req.body_prefix) || req.body_later.contains(&re.as_str())
            }
        }
    }
}

/// Which header names a request carries, as 64 bits (one per name, from its length and last
/// byte): a header signal whose name's bit is clear cannot match and skips its `HeaderMap`
/// lookup. The shipped signatures that apply on every vendor name ten headers (user agent
/// included) and most requests carry few of them; the lookups, each a hash of the name, were a
/// third of identification's instructions (docs/performance.md, 2026-12-05). A bit set by
/// another name only costs the lookup, so matching is the same either way.
#[derive(Debug, Clone, Copy)]
struct NameSketch(u64);

impl NameSketch {
    fn of(headers: &HeaderMap) -> NameSketch {
        NameSketch(
            headers
                .keys()
                .fold(0, |bits, name| bits | NameSketch::bit(name.as_str())),
        )
    }

    fn bit(name: &str) -> u64 {
        let last = name.as_bytes().last().copied().unwrap_or(0) as usize;
        1 << ((name.len() + 7 * last) & 63)
    }

    fn may_have(self, name: &str) -> bool {
        self.0 & NameSketch::bit(name) != 0
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
    /// Tools this one is built on (an SDK): their matches are expected, not conflicts.
    pub built_on: Vec<Arc<str>>,
    /// The status of a policy deny for this tool, over its vendor's: for a client that retries a
    /// 403 (Codex) or hides its body (docs/clients.md "What a blocked engineer sees").
    pub deny_status: Option<http::StatusCode>,
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
    /// Why each conflict is one, in the same order: `"<tool>: <signal>, …"`, the signals that
    /// matched the other tool.
    pub conflict_evidence: Vec<String>,
}

impl ToolMatch {
    pub fn unknown() -> ToolMatch {
        ToolMatch {
            tool: Arc::from(UNKNOWN_TOOL),
            name: Arc::from("unknown tool"),
            confidence: Confidence::None,
            evidence: Vec::new(),
            conflicts: Vec::new(),
            conflict_evidence: Vec::new(),
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
    fn evidence(&self, req: &RequestFacts<'_>, names: NameSketch) -> Option<Vec<String>> {
        if !self.applies(req) {
            return None;
        }
        let matched: Vec<String> = self
            .signals
            .iter()
            .filter(|s| s.matches(req, names))
            .map(Signal::label)
            .collect();
        (matched.len() >= self.min_signals.max(1)).then_some(matched)
    }

    /// Whether a later match of `other` (with `other_evidence`) is expected of this tool rather
    /// than a conflict: this tool is built on it, this match is certain, and none of the other
    /// tool's signals stands where this tool's own signal should have matched.
    fn contains(
        &self,
        confidence: Confidence,
        evidence: &[String],
        other: &str,
        other_evidence: &[String],
    ) -> bool {
        confidence == Confidence::High
            && self.built_on.iter().any(|b| &**b == other)
            && other_evidence.iter().all(|label| {
                evidence.contains(label) || !self.signals.iter().any(|s| s.label() == *label)
            })
    }
}

/// The first signature that matches names the tool; later matches are conflicts unless the tool
/// contains them (see the module comment).
pub fn identify_tool(signatures: &[ToolSignature], req: &RequestFacts<'_>) -> ToolMatch {
    let mut found: Option<(ToolMatch, &ToolSignature)> = None;
    let names = NameSketch::of(req.headers);
    for sig in signatures {
        let Some(evidence) = sig.evidence(req, names) else {
            continue;
        };
        match &mut found {
            None => {
                let confidence = if evidence.len() >= 2.min(sig.signals.len()) {
                    Confidence::High
                } else {
                    Confidence::Medium
                };
                found = Some((
                    ToolMatch {
                        tool: sig.id.clone(),
                        name: sig.name.clone(),
                        confidence,
                        evidence,
                        conflicts: Vec::new(),
                        conflict_evidence: Vec::new(),
                    },
                    sig,
                ));
            }
            Some((m, first)) => {
                if first.contains(m.confidence, &m.evidence, &sig.id, &evidence) {
                    continue;
                }
                m.conflicts.push(sig.id.clone());
                m.conflict_evidence
                    .push(format!("{}: {}", sig.id, evidence.join(", ")));
            }
        }
    }
    found.map_or_else(ToolMatch::unknown, |(m, _)| m)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{DEFAULT_CONFIG, load_str};

    /// The shipped signatures, as the gateway runs them.
    fn shipped() -> Vec<ToolSignature> {
        load_str(DEFAULT_CONFIG, "shipped", Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
            .tools
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    /// Each row: vendor, headers, body, and the tool, confidence, conflicts and conflict
    /// evidence it must get.
    #[test]
    fn conflicts_mean_something() {
        let sigs = shipped();
        let claude_body = br#"{"system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.197"}]}"#;
        type Row<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            &'a [u8],
            &'a str,
            Confidence,
            Vec<&'a str>,
            Vec<&'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            // Real Claude Code: built on the Anthropic JS SDK, whose x-stainless headers it
            // sends. Not a conflict.
            (
                "anthropic",
                vec![
                    ("user-agent", "claude-cli/2.1.197 (external, cli)"),
                    ("x-app", "cli"),
                    ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
                    ("x-claude-code-session-id", "4f1c"),
                    ("x-stainless-lang", "js"),
                    ("x-stainless-package-version", "0.60.0"),
                ],
                claude_body,
                "claude-code",
                Confidence::High,
                vec![],
                vec![],
            ),
            // The Python SDK's user agent on a request with Claude Code's marks: the user agent
            // contradicts Claude Code's own, so the SDK match is a conflict.
            (
                "anthropic",
                vec![
                    ("user-agent", "Anthropic/Python 0.69.0"),
                    ("x-stainless-lang", "python"),
                    ("anthropic-beta", "claude-code-20250219"),
                ],
                claude_body,
                "claude-code",
                Confidence::High,
                vec!["anthropic-sdk"],
                vec!["anthropic-sdk: user-agent, header:x-stainless-lang"],
            ),
            // Claude Code's user agent alone on the SDK: not certain, so the SDK stays a
            // conflict even though Claude Code is built on it.
            (
                "anthropic",
                vec![
                    ("user-agent", "claude-cli/2.1.197 (external, cli)"),
                    ("x-stainless-lang", "python"),
                ],
                b"{}",
                "claude-code",
                Confidence::Medium,
                vec!["anthropic-sdk"],
                vec!["anthropic-sdk: header:x-stainless-lang"],
            ),
            // A forged user agent: the Python OpenAI SDK saying codex_exec. Codex is not built
            // on the OpenAI SDK.
            (
                "openai",
                vec![
                    ("user-agent", "codex_exec/0.1"),
                    ("x-stainless-lang", "python"),
                    ("x-stainless-package-version", "2.1.0"),
                ],
                b"{}",
                "codex-cli",
                Confidence::Medium,
                vec!["openai-sdk"],
                vec!["openai-sdk: header:x-stainless-lang"],
            ),
            // Real Codex: no SDK underneath.
            (
                "openai",
                vec![
                    ("user-agent", "codex_exec/0.171.0 (Debian 12; x86_64)"),
                    ("originator", "codex_exec"),
                    ("x-codex-window-id", "w1"),
                ],
                b"{}",
                "codex-cli",
                Confidence::High,
                vec![],
                vec![],
            ),
            // Real Gemini CLI, built on the Gen AI SDK (as captured by tests/clients/run.sh).
            (
                "google",
                vec![
                    (
                        "user-agent",
                        "GeminiCLI-tui/0.61.0/gemini-2.5-pro (linux; x64; terminal)",
                    ),
                    (
                        "x-goog-api-client",
                        "google-genai-sdk/1.30.0 gl-node/v20.20.2",
                    ),
                ],
                b"{}",
                "gemini-cli",
                Confidence::High,
                vec![],
                vec![],
            ),
            // The plain SDK: no conflict.
            (
                "openai",
                vec![
                    ("user-agent", "OpenAI/Python 2.1.0"),
                    ("x-stainless-lang", "python"),
                ],
                b"{}",
                "openai-sdk",
                Confidence::High,
                vec![],
                vec![],
            ),
        ];
        for (i, (vendor, hs, body, tool, confidence, conflicts, why)) in rows.iter().enumerate() {
            let h = headers(hs);
            let m = identify_tool(
                &sigs,
                &RequestFacts {
                    vendor,
                    path: "/v1/messages",
                    headers: &h,
                    body_prefix: body,
                    body_later: &[],
                },
            );
            assert_eq!(&*m.tool, *tool, "row {i}");
            assert_eq!(m.confidence, *confidence, "row {i}");
            let got: Vec<&str> = m.conflicts.iter().map(|c| &**c).collect();
            assert_eq!(&got, conflicts, "row {i}");
            assert_eq!(&m.conflict_evidence, why, "row {i}");
        }
    }

    /// The sketch only ever skips lookups of names a request does not carry: every header
    /// signal of the shipped signatures still matches when its header comes among many others,
    /// and when it comes alone.
    #[test]
    fn header_signals_see_their_header_among_any_others() {
        let sigs = shipped();
        let crowd: Vec<(String, &str)> = (0..40)
            .map(|i| (format!("x-other-{}", "y".repeat(i)), "v"))
            .chain(
                [
                    "host",
                    "content-type",
                    "content-length",
                    "accept-encoding",
                    "anthropic-version",
                    "x-api-key",
                ]
                .map(|n| (n.to_string(), "v")),
            )
            .collect();
        let mut checked = 0;
        for sig in &sigs {
            for signal in &sig.signals {
                let Signal::Header(name, _) = signal else {
                    continue;
                };
                let mut alone = HeaderMap::new();
                let mut among = headers(
                    &crowd
                        .iter()
                        .map(|(n, v)| (n.as_str(), *v))
                        .collect::<Vec<_>>(),
                );
                // A value each shipped header regex accepts.
                let value = match name.as_str() {
                    "x-app" => "cli",
                    "anthropic-beta" => "claude-code-20250219",
                    "originator" => "codex_cli_rs",
                    "copilot-integration-id" => "copilot-developer-cli",
                    "editor-version" => "copilot/1.0",
                    "x-title" => "Aider",
                    "x-goog-api-client" => "genai-js/1.0",
                    _ => "1",
                };
                for h in [&mut alone, &mut among] {
                    h.insert(name.clone(), value.parse().unwrap());
                }
                for h in [&alone, &among] {
                    let facts = RequestFacts {
                        vendor: sig.vendors.first().map_or("anthropic", String::as_str),
                        path: "/v1/messages",
                        headers: h,
                        body_prefix: b"{}",
                        body_later: &[],
                    };
                    let names = NameSketch::of(h);
                    assert!(names.may_have(name.as_str()), "{name}");
                    assert!(signal.matches(&facts, names), "{}: {name}", sig.id);
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 10,
            "only {checked} header signals in the shipped signatures"
        );
    }
}
