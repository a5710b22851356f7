//! A scan's findings as a table, as the stable JSON document of docs/provenance.md, or as SARIF
//! 2.1.0 for code-scanning UIs.

use std::io::Write;

use serde_json::{Value, json};

use super::matcher::{Finding, Thresholds, Tier};
use super::sources::{Origin, Tally};

/// A finding with where it was found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Located {
    #[serde(flatten)]
    pub origin: Origin,
    #[serde(flatten)]
    pub finding: Finding,
}

/// The JSON document's version: bumped only for changes that would break a reader.
pub const SCHEMA_VERSION: u32 = 1;

fn ranges(lines: &[(usize, usize)]) -> String {
    lines
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn table(out: &mut impl Write, findings: &[Located], tally: &Tally) -> std::io::Result<()> {
    let header: Vec<String> = ["TIER", "MATCHED", "SHARE", "LINES", "WHERE", "RESPONSES"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|l| {
            let f = &l.finding;
            let responses = f
                .responses
                .iter()
                .map(|m| {
                    let r = &m.response;
                    format!(
                        "{} ({}, {}, {})",
                        r.record_id,
                        r.tool.as_deref().unwrap_or("-"),
                        r.user.as_deref().unwrap_or("-"),
                        r.time
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                f.tier.as_str().to_string(),
                f.matched_chars.to_string(),
                format!("{:.0}%", f.share * 100.0),
                ranges(&f.lines),
                l.origin.label(),
                responses,
            ]
        })
        .collect();
    if !rows.is_empty() {
        crate::table::write(out, &header, &rows)?;
    }
    writeln!(
        out,
        "{} finding(s) ({} strong) in {} document(s), {} bytes scanned, {} skipped",
        findings.len(),
        findings
            .iter()
            .filter(|l| l.finding.tier == Tier::Strong)
            .count(),
        tally.documents,
        tally.bytes,
        tally.skipped
    )
}

/// The `--format json` document (docs/provenance.md), serialised straight from the scan's own
/// types in the order the docs show: built as a `serde_json::Value` first, it cost about 5 % of
/// a scan of a tree full of findings.
#[derive(serde::Serialize)]
pub struct Document<'a> {
    version: u32,
    scanned: &'a Tally,
    thresholds: Limits,
    ledger: LedgerUse,
    findings: &'a [Located],
}

/// The thresholds a reader needs to interpret the findings.
#[derive(serde::Serialize)]
struct Limits {
    min_chars: usize,
    min_fingerprints: usize,
    strong_chars: usize,
    strong_share: f64,
}

/// Which ledger the scan read, and how often it asked it.
#[derive(serde::Serialize)]
pub struct LedgerUse {
    /// `file`, `api` or `postgres`.
    pub access: &'static str,
    pub location: String,
    pub lookups: u64,
    pub screens: u64,
}

impl<'a> Document<'a> {
    pub fn new(
        findings: &'a [Located],
        tally: &'a Tally,
        thresholds: &Thresholds,
        ledger: LedgerUse,
    ) -> Document<'a> {
        Document {
            version: SCHEMA_VERSION,
            scanned: tally,
            thresholds: Limits {
                min_chars: thresholds.min_chars,
                min_fingerprints: thresholds.min_fingerprints,
                strong_chars: thresholds.strong_chars,
                strong_share: thresholds.strong_share,
            },
            ledger,
            findings,
        }
    }

    /// Pretty-printed, with a final newline.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512 * self.findings.len() + 512);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.push(b'\n');
        Ok(out)
    }
}

const RULE_STRONG: &str = "aigate.provenance.strong";
const RULE_REVIEW: &str = "aigate.provenance.needs-review";

/// SARIF 2.1.0: one result per finding, one location per matched line range. File paths are
/// made relative to the current directory when they are under it, as code-scanning UIs expect.
pub fn sarif(findings: &[Located]) -> Value {
    let cwd = std::env::current_dir().ok();
    let results: Vec<Value> = findings
        .iter()
        .map(|l| {
            let f = &l.finding;
            let (rule, level) = match f.tier {
                Tier::Strong => (RULE_STRONG, "error"),
                Tier::NeedsReview => (RULE_REVIEW, "warning"),
            };
            let path = l.origin.path();
            let uri = cwd
                .as_deref()
                .and_then(|c| std::path::Path::new(path).strip_prefix(c).ok())
                .map_or_else(|| path.to_string(), |p| p.display().to_string());
            let uri = uri.strip_prefix("./").unwrap_or(&uri).to_string();
            let who = f
                .responses
                .iter()
                .map(|m| {
                    format!(
                        "record {} ({}, {}, {})",
                        m.response.record_id,
                        m.response.tool.as_deref().unwrap_or("unknown tool"),
                        m.response.user.as_deref().unwrap_or("unknown user"),
                        m.response.time
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let locations: Vec<Value> = if f.lines.is_empty() {
                vec![json!({"physicalLocation": {"artifactLocation": {"uri": uri}}})]
            } else {
                f.lines
                    .iter()
                    .map(|&(a, b)| {
                        json!({"physicalLocation": {
                            "artifactLocation": {"uri": uri},
                            "region": {"startLine": a.max(1), "endLine": b.max(a).max(1)}
                        }})
                    })
                    .collect()
            };
            json!({
                "ruleId": rule,
                "level": level,
                "message": {"text": format!(
                    "{} characters ({:.0}% of {}) match model output captured by aigate: {who}",
                    f.matched_chars, f.share * 100.0, l.origin.label()
                )},
                "locations": locations,
                "properties": {
                    "matched_chars": f.matched_chars,
                    "share": f.share,
                    "records": f.responses.iter().map(|m| m.response.record_id.clone()).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "aigate",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": [
                    {"id": RULE_STRONG, "name": "CapturedModelOutput",
                     "shortDescription": {"text": "Code or text that came back from an AI vendor through the gateway (400+ characters, or most of the file)"},
                     "defaultConfiguration": {"level": "error"}},
                    {"id": RULE_REVIEW, "name": "PossibleModelOutput",
                     "shortDescription": {"text": "200 to 400 characters matching output captured by the gateway; a person decides"},
                     "defaultConfiguration": {"level": "warning"}},
                ],
            }},
            "results": results,
        }],
    })
}
