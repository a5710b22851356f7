//! The review queue: findings of `aigate provenance scan --record`, each decided by a person.
//!
//! A reviewer **confirms** a finding (quarantine: the file or record must be removed or
//! rewritten) or **clears** it as a false positive, with a reason. Nothing is cleared
//! automatically, and a decision is final: a decided finding is not decided again. A re-scan
//! that finds the same thing (same file or record, same responses) while its finding is still
//! open does not add a second one; it counts `seen` on the open one. Found again after a
//! decision, it is a new open finding that names the earlier one (`previous`): a confirmed
//! finding still present means the quarantine was not done.
//!
//! The rules live here; the admin API (`admin/findings.rs`) and the console page are clients,
//! and write the audit record of each decision. Stores: `embedded.rs` (a redb file, one
//! replica) and `postgres.rs` (one table every replica shares).

pub mod embedded;
pub mod postgres;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Confirmed,
    Cleared,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "open" => Some(Status::Open),
            "confirmed" => Some(Status::Confirmed),
            "cleared" => Some(Status::Cleared),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Confirmed => "confirmed",
            Status::Cleared => "cleared",
        }
    }
}

/// One finding in the queue. `finding` is the scan's own JSON for it (docs/provenance.md,
/// `findings[]`: where, tier, characters, lines, responses), kept as the scan wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub status: Status,
    /// Same file or record and same responses: the identity a re-scan is matched on.
    pub key: String,
    /// The file, record, diff or blob, for people (`path`, `path:line (id …)`).
    pub location: String,
    pub tier: String,
    /// The audit record ids of the responses it matches, sorted.
    pub records: Vec<String>,
    pub finding: Value,
    pub recorded_at: String,
    pub recorded_by: String,
    /// Scans that found it while it was open (1 at first).
    pub seen: u64,
    pub last_seen_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Why it was cleared (required), or a note on the quarantine (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The decided finding this one repeats, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// Why a finding sent by a scan cannot be queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("findings[{index}]: {problem}")]
pub struct Invalid {
    pub index: usize,
    pub problem: String,
}

/// Reads what the queue needs from one element of a scan's `findings`; the rest is kept as is.
pub fn from_scan(
    index: usize,
    v: &Value,
    by: &str,
    now: &str,
    id: String,
) -> Result<Finding, Invalid> {
    let bad = |problem: &str| Invalid {
        index,
        problem: problem.to_string(),
    };
    let source = v["source"]
        .as_str()
        .ok_or_else(|| bad("no \"source\" (file, record, git_diff, git_blob)"))?;
    let path = v["path"].as_str().ok_or_else(|| bad("no \"path\""))?;
    let tier = v["tier"]
        .as_str()
        .filter(|t| matches!(*t, "strong" | "needs_review"))
        .ok_or_else(|| bad("\"tier\" must be strong or needs_review"))?;
    let location = match source {
        "file" => path.to_string(),
        "record" => match (v["line"].as_u64(), v["id"].as_str()) {
            (Some(line), Some(rid)) => format!("{path}:{line} (id {rid})"),
            (Some(line), None) => format!("{path}:{line}"),
            _ => return Err(bad("a record needs its \"line\"")),
        },
        // A pull request's diff and the file it lands in are the same place.
        "git_diff" => path.to_string(),
        "git_blob" => format!(
            "{path} (blob {})",
            v["blob"]
                .as_str()
                .ok_or_else(|| bad("a git_blob needs its \"blob\""))?
        ),
        other => return Err(bad(&format!("unknown source {other:?}"))),
    };
    let mut records: Vec<String> = v["responses"]
        .as_array()
        .ok_or_else(|| bad("no \"responses\""))?
        .iter()
        .map(|r| r["record_id"].as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a response without its \"record_id\""))?;
    if records.is_empty() {
        return Err(bad("no responses: a finding matches at least one"));
    }
    records.sort();
    records.dedup();
    let mut h = Sha256::new();
    // A record is its dataset's line; the rest are paths (a blob adds its hash).
    h.update(if source == "record" { "record" } else { "file" });
    h.update([0]);
    h.update(location.as_bytes());
    for r in &records {
        h.update([0]);
        h.update(r.as_bytes());
    }
    Ok(Finding {
        id,
        status: Status::Open,
        key: hex::encode(h.finalize()),
        location,
        tier: tier.to_string(),
        records,
        finding: v.clone(),
        recorded_at: now.to_string(),
        recorded_by: by.to_string(),
        seen: 1,
        last_seen_at: now.to_string(),
        decided_at: None,
        decided_by: None,
        reason: None,
        previous: None,
    })
}

/// A reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Quarantine: the file or record must be removed or rewritten. A note is optional.
    Confirm { note: Option<String> },
    /// A false positive; the reason is required.
    Clear { reason: String },
}

impl Decision {
    /// A clear without a reason is refused: the decision must be documented.
    pub fn clear(reason: &str) -> Result<Decision, String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(
                "a reason is required to clear a finding: say why it is not model output".into(),
            );
        }
        Ok(Decision::Clear {
            reason: reason.to_string(),
        })
    }

    pub fn confirm(note: Option<&str>) -> Decision {
        Decision::Confirm {
            note: note
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Decision::Confirm { .. } => Status::Confirmed,
            Decision::Clear { .. } => Status::Cleared,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no finding {0}")]
    NotFound(String),
    #[error("finding {id} is already {status}: a decision is final")]
    Decided { id: String, status: &'static str },
    #[error("the findings store {0}")]
    Failed(String),
}

/// Where findings are kept. Each method is one transaction.
pub trait FindingStore: Send + Sync {
    /// Queue `new`, or, when an open finding has its key, count it seen again and return
    /// that one; `true` when `new` was added.
    fn record(&self, new: Finding) -> Result<(Finding, bool), StoreError>;
    /// Findings, oldest first, optionally of one status.
    fn list(&self, status: Option<Status>) -> Result<Vec<Finding>, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Finding>, StoreError>;
    /// Decide an open finding.
    fn decide(
        &self,
        id: &str,
        decision: &Decision,
        by: &str,
        now: &str,
    ) -> Result<Finding, StoreError>;
}

/// Applies a decision to an open finding (the stores call this inside their transaction).
pub fn apply(f: &mut Finding, decision: &Decision, by: &str, now: &str) -> Result<(), StoreError> {
    if f.status != Status::Open {
        return Err(StoreError::Decided {
            id: f.id.clone(),
            status: f.status.as_str(),
        });
    }
    f.status = decision.status();
    f.decided_at = Some(now.to_string());
    f.decided_by = Some(by.to_string());
    f.reason = match decision {
        Decision::Confirm { note } => note.clone(),
        Decision::Clear { reason } => Some(reason.clone()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan_finding(path: &str, records: &[&str]) -> Value {
        json!({
            "source": "file", "path": path, "tier": "strong", "matched_chars": 600,
            "total_chars": 900, "share": 0.66, "lines": [[3, 20]],
            "responses": records.iter().map(|r| json!({"record_id": r, "time": "t"})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn the_key_is_the_place_and_the_responses_in_any_order() {
        let a = from_scan(
            0,
            &scan_finding("src/a.rs", &["r1", "r2"]),
            "sam",
            "t",
            "1".into(),
        )
        .unwrap();
        let b = from_scan(
            0,
            &scan_finding("src/a.rs", &["r2", "r1"]),
            "sam",
            "t",
            "2".into(),
        )
        .unwrap();
        let c = from_scan(
            0,
            &scan_finding("src/a.rs", &["r1"]),
            "sam",
            "t",
            "3".into(),
        )
        .unwrap();
        let d = from_scan(
            0,
            &scan_finding("src/b.rs", &["r1", "r2"]),
            "sam",
            "t",
            "4".into(),
        )
        .unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_ne!(a.key, d.key);
        assert_eq!(a.records, ["r1", "r2"]);
    }

    #[test]
    fn a_scan_finding_without_what_the_queue_needs_is_named() {
        let mut v = scan_finding("a.rs", &["r1"]);
        v["responses"] = json!([]);
        assert_eq!(
            from_scan(2, &v, "sam", "t", "1".into())
                .unwrap_err()
                .to_string(),
            "findings[2]: no responses: a finding matches at least one"
        );
        let mut v = scan_finding("a.rs", &["r1"]);
        v["tier"] = json!("meh");
        assert!(
            from_scan(0, &v, "sam", "t", "1".into())
                .unwrap_err()
                .problem
                .contains("tier")
        );
    }

    #[test]
    fn clearing_needs_a_reason_and_a_decision_is_final() {
        assert!(Decision::clear("  ").is_err());
        let mut f = from_scan(0, &scan_finding("a.rs", &["r1"]), "sam", "t", "1".into()).unwrap();
        apply(
            &mut f,
            &Decision::confirm(Some(" removed in PR 7 ")),
            "kim",
            "t2",
        )
        .unwrap();
        assert_eq!(f.status, Status::Confirmed);
        assert_eq!(f.reason.as_deref(), Some("removed in PR 7"));
        let again = apply(&mut f, &Decision::clear("oops").unwrap(), "kim", "t3");
        assert!(matches!(again, Err(StoreError::Decided { .. })));
        assert_eq!(f.status, Status::Confirmed);
    }
}
