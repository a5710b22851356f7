//! The embedded ledger: one redb file in the state directory (`provenance/ledger.redb`).
//!
//! redb is a copy-on-write B-tree store: a write transaction that returned from `commit` is on
//! disk (fsynced), and a `kill -9` at any point leaves the last committed state, which the next
//! open recovers. Lookups read pages on demand, so the ledger is never loaded whole. It is
//! opened by one process at a time (the running gateway); other readers ask the gateway.
//!
//! Tables:
//! - `entries`: entry number → the entry (JSON); numbers rise in the order entries are written.
//! - `ids`: audit record id → entry number.
//! - `fingerprints` (multimap): fingerprint → entry numbers. Numbers, not ids, keep the index
//!   at 16 bytes a fingerprint.
//! - `entry_fingerprints`: entry number → its fingerprints (packed u64), for the retention sweep.
//! - `meta`: the next entry number.

#![expect(
    clippy::result_large_err,
    reason = "redb's own error type, held only until write() turns it into a LedgerError"
)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::{Entry, Ledger, LedgerError, Matches};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
const PRINTS: MultimapTableDefinition<u64, u64> = MultimapTableDefinition::new("fingerprints");
const ENTRY_PRINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("entry_fingerprints");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT: &str = "next_entry";

/// Where the ledger lives in the state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("provenance").join("ledger.redb")
}

pub struct EmbeddedLedger {
    db: Database,
    path: String,
}

impl EmbeddedLedger {
    /// Open (or create) the ledger file, recovering it after a crash.
    pub fn open(path: &Path) -> Result<EmbeddedLedger, LedgerError> {
        let shown = path.display().to_string();
        let fail = |message: String| LedgerError::Embedded {
            path: shown.clone(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        let db = Database::create(path).map_err(|e| {
            fail(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "already open in another process (a running gateway); ask it through the admin API, or stop it".into()
                }
                e => e.to_string(),
            })
        })?;
        let ledger = EmbeddedLedger { db, path: shown };
        // Every table exists from the start, so readers never meet a missing one.
        ledger.write(|tx| {
            tx.open_table(ENTRIES)?;
            tx.open_table(IDS)?;
            tx.open_multimap_table(PRINTS)?;
            tx.open_table(ENTRY_PRINTS)?;
            tx.open_table(META)?;
            Ok(())
        })?;
        Ok(ledger)
    }

    /// For `aigate provenance scan` while the gateway is stopped: an existing ledger, never
    /// created, and only read from. redb 2 has no read-only mode, so the scan holds the file's
    /// lock while it runs (a gateway started meanwhile is told the file is open) and a file
    /// left by a crash is recovered on open, as the gateway would.
    pub fn open_existing(path: &Path) -> Result<EmbeddedLedger, OpenExisting> {
        let shown = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenExisting::Missing);
            }
            Err(e) => {
                return Err(OpenExisting::Failed(LedgerError::Embedded {
                    path: shown,
                    message: e.to_string(),
                }));
            }
            Ok(_) => {}
        }
        match Database::open(path) {
            Ok(db) => Ok(EmbeddedLedger { db, path: shown }),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenExisting::Held),
            Err(e) => Err(OpenExisting::Failed(LedgerError::Embedded {
                path: shown,
                message: e.to_string(),
            })),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Embedded {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, LedgerError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Entries in the ledger.
    pub fn len(&self) -> Result<u64, LedgerError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(IDS).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        Ok(self.len()? == 0)
    }
}

/// Why [`EmbeddedLedger::open_existing`] could not open the file.
#[derive(Debug)]
pub enum OpenExisting {
    /// No ledger file: nothing captured yet here, or another state directory.
    Missing,
    /// Another process (the running gateway) holds it.
    Held,
    Failed(LedgerError),
}

fn parse(raw: &[u8]) -> Result<Entry, LedgerError> {
    serde_json::from_slice(raw).map_err(|e| LedgerError::Damaged("?".into(), e.to_string()))
}

impl EmbeddedLedger {
    /// Entries and their fingerprints in one write transaction: one commit, one fsync.
    fn write_entries(&self, rows: &[(&Entry, &[u64])]) -> Result<(), LedgerError> {
        let mut encoded = Vec::with_capacity(rows.len());
        for (entry, fingerprints) in rows {
            let json = serde_json::to_vec(entry).map_err(|e| self.err(e))?;
            let packed: Vec<u8> = fingerprints.iter().flat_map(|h| h.to_le_bytes()).collect();
            encoded.push((json, packed));
        }
        self.write(|tx| {
            let mut ids = tx.open_table(IDS)?;
            let mut meta = tx.open_table(META)?;
            let mut entries = tx.open_table(ENTRIES)?;
            let mut entry_prints = tx.open_table(ENTRY_PRINTS)?;
            let mut prints = tx.open_multimap_table(PRINTS)?;
            let first = meta.get(NEXT)?.map_or(0, |v| v.value());
            let mut n = first;
            for ((entry, fingerprints), (json, packed)) in rows.iter().zip(&encoded) {
                if ids.get(entry.id.as_str())?.is_some() {
                    continue;
                }
                ids.insert(entry.id.as_str(), n)?;
                entries.insert(n, json.as_slice())?;
                entry_prints.insert(n, packed.as_slice())?;
                for h in *fingerprints {
                    prints.insert(*h, n)?;
                }
                n += 1;
            }
            if n != first {
                meta.insert(NEXT, n)?;
            }
            Ok(())
        })
    }
}

impl Ledger for EmbeddedLedger {
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError> {
        self.write_entries(&[(entry, fingerprints)])
    }

    fn record_many(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        let rows: Vec<(&Entry, &[u64])> = batch.iter().map(|(e, f)| (e, f.as_slice())).collect();
        self.write_entries(&rows)
    }

    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError> {
        // Sorted and distinct: neighbouring keys share B-tree pages.
        let wanted: BTreeSet<u64> = fingerprints.iter().copied().collect();
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let prints = tx.open_multimap_table(PRINTS).map_err(|e| self.err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        let mut by_number: HashMap<u64, Entry> = HashMap::new();
        let mut hits = Vec::new();
        for h in wanted {
            for n in prints.get(h).map_err(|e| self.err(e))? {
                let n = n.map_err(|e| self.err(e))?.value();
                let e = match by_number.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let Some(raw) = entries.get(n).map_err(|e| self.err(e))? else {
                            continue;
                        };
                        v.insert(parse(raw.value())?)
                    }
                };
                hits.push((h, e.id.clone()));
            }
        }
        hits.sort();
        Ok(Matches {
            hits,
            entries: by_number.into_values().map(|e| (e.id.clone(), e)).collect(),
        })
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let ids = tx.open_table(IDS).map_err(|e| self.err(e))?;
        let Some(n) = ids.get(id).map_err(|e| self.err(e))?.map(|v| v.value()) else {
            return Ok(None);
        };
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        match entries.get(n).map_err(|e| self.err(e))? {
            Some(raw) => parse(raw.value()).map(Some),
            None => Ok(None),
        }
    }

    fn sweep(&self, before_ms: i64) -> Result<u64, LedgerError> {
        // Entry numbers follow the order of writing, which is close to time order: the sweep
        // stops at the first entry young enough (a long call written late waits a little).
        let old: Vec<(u64, Entry)> = {
            let tx = self.db.begin_read().map_err(|e| self.err(e))?;
            let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
            let mut old = Vec::new();
            for row in entries.iter().map_err(|e| self.err(e))? {
                let (n, raw) = row.map_err(|e| self.err(e))?;
                let e = parse(raw.value())?;
                if e.time_ms >= before_ms {
                    break;
                }
                old.push((n.value(), e));
                if old.len() >= 10_000 {
                    break;
                }
            }
            old
        };
        if old.is_empty() {
            return Ok(0);
        }
        let removed = old.len() as u64;
        self.write(|tx| {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut ids = tx.open_table(IDS)?;
            let mut entry_prints = tx.open_table(ENTRY_PRINTS)?;
            let mut prints = tx.open_multimap_table(PRINTS)?;
            for (n, e) in &old {
                if let Some(packed) = entry_prints.remove(*n)? {
                    for chunk in packed.value().chunks_exact(8) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(chunk);
                        prints.remove(u64::from_le_bytes(b), *n)?;
                    }
                }
                entries.remove(*n)?;
                ids.remove(e.id.as_str())?;
            }
            Ok(())
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(id: &str, time_ms: i64) -> Entry {
        Entry {
            id: id.into(),
            time: "2026-12-04T17:00:00.000Z".into(),
            time_ms,
            user: "alice".into(),
            tool: "claude-code".into(),
            vendor: "anthropic".into(),
            model: Some("claude-sonnet-4-5".into()),
            workflow: Some("vendor-evaluation".into()),
            exemption: Some("ex-1".into()),
            fingerprints: 3,
            chars: 1200,
            truncated: false,
        }
    }

    #[test]
    fn entries_are_found_by_their_fingerprints_and_by_id_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2, 3]).unwrap();
            l.record(&entry("b", 2000), &[3, 4]).unwrap();
            // The same id again is not a second entry.
            l.record(&entry("b", 2000), &[9]).unwrap();
            assert_eq!(l.len().unwrap(), 2);
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        let m = l.find(&[3, 4, 3, 7]).unwrap();
        assert_eq!(
            m.hits,
            [
                (3, "a".to_string()),
                (3, "b".to_string()),
                (4, "b".to_string())
            ]
        );
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries["a"], entry("a", 1000));
        assert!(l.find(&[9, 100]).unwrap().hits.is_empty());
        assert_eq!(l.entry("b").unwrap(), Some(entry("b", 2000)));
        assert_eq!(l.entry("zzz").unwrap(), None);
    }

    #[test]
    fn a_batch_is_one_transaction_and_reads_back_like_single_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2]).unwrap();
            l.record_many(&[
                (entry("b", 2000), vec![2, 3]),
                // Already there, and twice in one batch: recorded once.
                (entry("a", 1000), vec![9]),
                (entry("c", 3000), vec![3, 4]),
                (entry("c", 3000), vec![8]),
            ])
            .unwrap();
            assert_eq!(l.len().unwrap(), 3);
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        let m = l.find(&[1, 2, 3, 4, 8, 9]).unwrap();
        let hits: Vec<(u64, &str)> = m.hits.iter().map(|(h, id)| (*h, id.as_str())).collect();
        assert_eq!(
            hits,
            [(1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "c"), (4, "c")]
        );
        // Numbers went on from the batch: a later entry gets its own.
        l.record(&entry("d", 4000), &[5]).unwrap();
        assert_eq!(l.find(&[5]).unwrap().hits, [(5, "d".to_string())]);
        assert_eq!(l.len().unwrap(), 4);
    }

    #[test]
    fn the_sweep_removes_old_entries_and_their_fingerprints_only() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.record(&entry("old", 1000), &[1, 2]).unwrap();
        l.record(&entry("new", 5000), &[2, 3]).unwrap();
        assert_eq!(l.sweep(3000).unwrap(), 1);
        assert_eq!(l.sweep(3000).unwrap(), 0);
        assert_eq!(l.entry("old").unwrap(), None);
        let m = l.find(&[1, 2, 3]).unwrap();
        assert_eq!(m.hits, [(2, "new".to_string()), (3, "new".to_string())]);
    }

    #[test]
    fn a_second_opener_is_told_who_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let _held = EmbeddedLedger::open(&p).unwrap();
        let e = EmbeddedLedger::open(&p).err().unwrap().to_string();
        assert!(e.contains("already open in another process"), "{e}");
    }
}
