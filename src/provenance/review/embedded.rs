//! The review queue in a redb file next to the ledger (`<state_dir>/provenance/findings.redb`).
//! Each record or decision is one write transaction, on disk when it returns: a decision the
//! reviewer saw acknowledged survives a crash.
//!
//! Tables: `findings` (id → the finding, JSON; ids are UUIDv7, so the table's order is the
//! order of recording) and `open` (key → id of the open finding with that key).

#![expect(
    clippy::result_large_err,
    reason = "redb's own error type, held only until it becomes a StoreError"
)]

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::{Decision, Finding, FindingStore, Status, StoreError, apply};

const FINDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("findings");
const OPEN: TableDefinition<&str, &str> = TableDefinition::new("open");

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("provenance").join("findings.redb")
}

pub struct EmbeddedFindings {
    db: Database,
    path: String,
}

fn failed(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{path}: {e}"))
}

enum TxError {
    Redb(redb::Error),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for TxError {
    fn from(e: E) -> Self {
        TxError::Redb(e.into())
    }
}

impl EmbeddedFindings {
    pub fn open(path: &Path) -> Result<EmbeddedFindings, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(&shown, format!("cannot create its directory: {e}")))?;
        }
        let db = Database::create(path).map_err(|e| failed(&shown, e))?;
        let store = EmbeddedFindings { db, path: shown };
        store.write(|tx| {
            tx.open_table(FINDINGS)?;
            tx.open_table(OPEN)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(|e| failed(&self.path, e))?;
        match f(&tx) {
            Ok(out) => {
                tx.commit().map_err(|e| failed(&self.path, e))?;
                Ok(out)
            }
            Err(TxError::Store(e)) => Err(e),
            Err(TxError::Redb(e)) => Err(failed(&self.path, e)),
        }
    }

    fn parse(&self, raw: &[u8]) -> Result<Finding, StoreError> {
        serde_json::from_slice(raw).map_err(|e| failed(&self.path, format!("damaged: {e}")))
    }
}

fn encode(f: &Finding) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(f).map_err(|e| TxError::Store(StoreError::Failed(e.to_string())))
}

fn parse_tx(raw: &[u8]) -> Result<Finding, TxError> {
    serde_json::from_slice(raw)
        .map_err(|e| TxError::Store(StoreError::Failed(format!("a finding is damaged: {e}"))))
}

impl FindingStore for EmbeddedFindings {
    fn record(&self, mut new: Finding) -> Result<(Finding, bool), StoreError> {
        self.write(|tx| {
            let mut open = tx.open_table(OPEN)?;
            let mut findings = tx.open_table(FINDINGS)?;
            let existing = open.get(new.key.as_str())?.map(|v| v.value().to_string());
            if let Some(id) = existing {
                let raw = findings.get(id.as_str())?.map(|v| v.value().to_vec());
                if let Some(raw) = raw {
                    let mut f = parse_tx(&raw)?;
                    f.seen += 1;
                    f.last_seen_at = new.recorded_at.clone();
                    findings.insert(f.id.as_str(), encode(&f)?.as_slice())?;
                    return Ok((f, false));
                }
            }
            // The last decided finding with this key, if any, for `previous`.
            let mut previous = None;
            for row in findings.iter()? {
                let (id, raw) = row?;
                let f = parse_tx(raw.value())?;
                if f.key == new.key && f.status != Status::Open {
                    previous = Some(id.value().to_string());
                }
            }
            new.previous = previous;
            findings.insert(new.id.as_str(), encode(&new)?.as_slice())?;
            open.insert(new.key.as_str(), new.id.as_str())?;
            Ok((new, true))
        })
    }

    fn list(&self, status: Option<Status>) -> Result<Vec<Finding>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| failed(&self.path, e))?;
        let t = tx.open_table(FINDINGS).map_err(|e| failed(&self.path, e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| failed(&self.path, e))? {
            let (_, raw) = row.map_err(|e| failed(&self.path, e))?;
            let f = self.parse(raw.value())?;
            if status.is_none_or(|s| s == f.status) {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| failed(&self.path, e))?;
        let t = tx.open_table(FINDINGS).map_err(|e| failed(&self.path, e))?;
        match t.get(id).map_err(|e| failed(&self.path, e))? {
            Some(raw) => self.parse(raw.value()).map(Some),
            None => Ok(None),
        }
    }

    fn decide(
        &self,
        id: &str,
        decision: &Decision,
        by: &str,
        now: &str,
    ) -> Result<Finding, StoreError> {
        self.write(|tx| {
            let mut findings = tx.open_table(FINDINGS)?;
            let raw = findings.get(id)?.map(|v| v.value().to_vec());
            let Some(raw) = raw else {
                return Err(TxError::Store(StoreError::NotFound(id.to_string())));
            };
            let mut f = parse_tx(&raw)?;
            apply(&mut f, decision, by, now).map_err(TxError::Store)?;
            findings.insert(id, encode(&f)?.as_slice())?;
            tx.open_table(OPEN)?.remove(f.key.as_str())?;
            Ok(f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::review::from_scan;
    use serde_json::json;

    fn finding(path: &str, id: &str) -> Finding {
        let v = json!({"source": "file", "path": path, "tier": "strong",
            "responses": [{"record_id": "r1"}]});
        from_scan(0, &v, "sam", "2026-12-04T10:00:00.000Z", id.into()).unwrap()
    }

    #[test]
    fn a_rescan_counts_the_open_finding_and_a_decision_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let s = EmbeddedFindings::open(&p).unwrap();
            assert!(s.record(finding("a.rs", "f1")).unwrap().1);
            let (again, added) = s.record(finding("a.rs", "f2")).unwrap();
            assert!(!added);
            assert_eq!((again.id.as_str(), again.seen), ("f1", 2));
            assert!(s.record(finding("b.rs", "f3")).unwrap().1);
            let f = s
                .decide(
                    "f1",
                    &Decision::clear("licence header").unwrap(),
                    "kim",
                    "t",
                )
                .unwrap();
            assert_eq!(f.status, Status::Cleared);
            assert!(matches!(
                s.decide("f1", &Decision::confirm(None), "kim", "t"),
                Err(StoreError::Decided { .. })
            ));
            assert!(matches!(
                s.decide("nope", &Decision::confirm(None), "kim", "t"),
                Err(StoreError::NotFound(_))
            ));
        }
        let s = EmbeddedFindings::open(&p).unwrap();
        assert_eq!(s.list(Some(Status::Cleared)).unwrap().len(), 1);
        assert_eq!(s.list(Some(Status::Open)).unwrap().len(), 1);
        // Found again after the decision: a new open finding naming the cleared one.
        let (f, added) = s.record(finding("a.rs", "f4")).unwrap();
        assert!(added);
        assert_eq!(f.previous.as_deref(), Some("f1"));
        assert_eq!(s.list(None).unwrap().len(), 3);
    }
}
