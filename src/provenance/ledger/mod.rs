//! The provenance ledger: one entry per captured response, and an index from fingerprint to
//! entries. It holds fingerprints (keyed hashes), never the text: without the key in the state
//! directory it says nothing about what the model wrote.
//!
//! Two stores behind one trait: `embedded` (a fjall keyspace in the state directory with a
//! membership filter in memory, the default)
//! and `postgres` (shared by replicas, with `storage.backend = "postgres"`). The capture worker
//! writes an entry before the call's outcome record goes out, so an outcome that says
//! `provenance_fingerprints = n` always has its entry (docs/provenance.md, "The ledger").
//! `aigate provenance scan` reads it through [`Ledger::find`].

pub mod embedded;
mod filter;
mod pending;
pub mod postgres;
mod replica_filter;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Capture;
use super::capture::Recorder;
use crate::audit::AuditRecord;

/// One captured response: who asked which tool what, and how much came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The audit record id of the call (decision and outcome share it).
    pub id: String,
    /// The call's start, RFC 3339 UTC (the audit record's `time`).
    pub time: String,
    /// Milliseconds since the epoch, for retention and ordering.
    pub time_ms: i64,
    pub user: String,
    pub tool: String,
    pub vendor: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub exemption: Option<String>,
    /// Distinct fingerprints recorded for it.
    pub fingerprints: u64,
    /// Characters of output captured.
    pub chars: u64,
    /// The capture is a prefix of the output (the output cap, an oversized event).
    #[serde(default)]
    pub truncated: bool,
}

impl Entry {
    /// The entry of a call from its outcome record.
    pub fn of(record: &AuditRecord, fingerprints: u64, chars: u64, truncated: bool) -> Entry {
        let time_ms = humantime::parse_rfc3339(&record.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Entry {
            id: record.id.clone(),
            time: record.time.clone(),
            time_ms,
            user: record.user.to_string(),
            tool: record.tool.as_deref().unwrap_or("unknown").to_string(),
            vendor: record.vendor.as_deref().unwrap_or("").to_string(),
            model: record.model.clone(),
            workflow: record.workflow.clone(),
            exemption: record.exemption.as_deref().map(str::to_owned),
            fingerprints,
            chars,
            truncated,
        }
    }
}

/// What a batch lookup found: for each fingerprint asked about that is in the ledger, the
/// entries that hold it, and those entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    /// `(fingerprint, entry id)`, sorted by fingerprint then entry id.
    pub hits: Vec<(u64, String)>,
    pub entries: HashMap<String, Entry>,
}

impl Matches {
    /// Drop the hits whose entry was not read: in PostgreSQL a month of the fingerprint index
    /// outlives the days of entries the sweep dropped (migration 7).
    fn keep_read(&mut self) {
        let entries = &self.entries;
        self.hits.retain(|(_, id)| entries.contains_key(id));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("provenance ledger {path}: {message}")]
    Embedded { path: String, message: String },
    #[error("provenance ledger (PostgreSQL): {0}")]
    Postgres(String),
    #[error("provenance ledger: entry {0} is damaged: {1}")]
    Damaged(String, String),
}

/// Fingerprints are keyed SipHash outputs, uniform already: maps keyed by them are probed with
/// every fingerprint of a document or an answer, and hashing them again (std's SipHash,
/// ~20 ns) would cost more than the probe.
#[derive(Default, Clone, Copy)]
pub struct Uniform(u64);

impl std::hash::Hasher for Uniform {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; any other key still hashes (FNV-1a), just not as fast.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by fingerprint, hashed by [`Uniform`].
pub type ByPrint<V> = HashMap<u64, V, std::hash::BuildHasherDefault<Uniform>>;

/// [`Ledger::may_hold`] of a ledger without a filter: all of them, sorted and distinct.
fn all_may_be_held(fingerprints: &[u64], out: &mut Vec<u64>) {
    out.clear();
    out.extend_from_slice(fingerprints);
    out.sort_unstable();
    out.dedup();
}

/// Fingerprints packed as little-endian u64s, 8 bytes each: an entry's list in the embedded
/// ledger (`entry_prints`) and the admin API's binary lookup body.
pub fn pack(prints: &[u64]) -> Vec<u8> {
    // A slice of 8 bytes per fingerprint, written in place: `flat_map` into `collect` was
    // not inlined and cost a scan through the admin API a twentieth of its time.
    let mut out = vec![0u8; prints.len() * 8];
    for (bytes, h) in out.chunks_exact_mut(8).zip(prints) {
        bytes.copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// [`unpack`] into a buffer kept across calls. A trailing partial fingerprint is ignored: the
/// admin API refuses such a body before it unpacks.
pub fn unpack_into(raw: &[u8], out: &mut Vec<u64>) {
    out.clear();
    out.resize(raw.len() / 8, 0);
    for (h, bytes) in out.iter_mut().zip(raw.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *h = u64::from_le_bytes(b);
    }
}

/// The fingerprints [`pack`] packed.
pub fn unpack(raw: &[u8]) -> Vec<u64> {
    let mut out = Vec::with_capacity(raw.len() / 8);
    unpack_into(raw, &mut out);
    out
}

/// A ledger store.
pub trait Ledger: Send + Sync {
    /// Record a response's entry and its fingerprints, durably (on disk, or committed) when it
    /// returns. Recording the same id again replaces nothing and is not an error.
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError>;

    /// Record several responses' entries, durably when it returns: the capture worker's group
    /// commit, so a burst of finished captures costs one commit (one fsync with the embedded
    /// ledger), not one each. The embedded ledger writes them in one transaction (all or none);
    /// the default records them one by one.
    fn record_many(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        batch.iter().try_for_each(|(e, f)| self.record(e, f))
    }

    /// [`Ledger::record_many`], in the operating system's hands when it returns (a `kill -9`
    /// loses none of it) and on disk after the next [`Ledger::sync`]. The capture worker records
    /// this way and leaves the fsync to a thread of its own, at most one every 100 ms: an fsync
    /// per group commit cost the forwarding a few points of throughput on a two-core machine
    /// (docs/provenance.md, "Capture cost"). A store whose commits are durable anyway
    /// (PostgreSQL) records as `record_many` does.
    fn record_many_buffered(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        self.record_many(batch)
    }

    /// Everything recorded so far on disk: the fsync [`Ledger::record_many_buffered`] left out.
    fn sync(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Whether [`Ledger::record_many_buffered`] leaves the fsync to [`Ledger::sync`]; when it
    /// does not, outcome records need not wait for a sync.
    fn buffers(&self) -> bool {
        false
    }

    /// The entries holding any of `fingerprints`, with the hits. One call for a whole file or
    /// batch of files: the lookups are sorted and made in one read transaction.
    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError>;

    /// Fills `out` (cleared first) with those of `fingerprints` the ledger may hold, sorted and
    /// distinct: every one it holds, and a few it does not (its membership filter's false
    /// positives). A
    /// scan through the admin API asks this for every fingerprint and [`Ledger::find`] for
    /// what is left, about one in a hundred: the scan then sorts and probes its own memory
    /// for those alone (docs/provenance.md, "Scan speed"). Without a filter (not built yet,
    /// or none), all of them.
    fn may_hold(&self, fingerprints: &[u64], out: &mut Vec<u64>) -> Result<(), LedgerError> {
        all_may_be_held(fingerprints, out);
        Ok(())
    }

    /// Fingerprints recorded and not yet in the store's index, held in memory meanwhile (the
    /// embedded ledger writes its index in runs); 0 for a store that indexes as it writes. A
    /// figure that keeps growing says the runs are not keeping up.
    fn held(&self) -> u64 {
        0
    }

    /// One entry by its audit record id.
    fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError>;

    /// Remove entries older than `before_ms` (milliseconds since the epoch) with their
    /// fingerprints; the number removed.
    fn sweep(&self, before_ms: i64) -> Result<u64, LedgerError>;
}

/// Turns a captured output into the fingerprints the ledger keeps.
pub trait Fingerprints: Send + Sync {
    fn fingerprints(&self, text: &str, out: &mut Vec<u64>);
}

impl Fingerprints for super::fingerprint::Fingerprinter {
    /// Both channels (code, text) of every part: a code block in prose, or prose in a file
    /// written, is found either way; the scan decides what a match means.
    fn fingerprints(&self, text: &str, out: &mut Vec<u64>) {
        out.extend(self.all(text).iter().map(|f| f.hash));
    }
}

/// The capture worker's recorder: fingerprint the output, write the entry.
pub struct LedgerRecorder {
    pub ledger: Arc<dyn Ledger>,
    pub fingerprints: Arc<dyn Fingerprints>,
    /// Counts the ledger commits (`aigate_provenance_ledger_commits_total`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl LedgerRecorder {
    /// The entry and distinct fingerprints of one capture; `None` when the model wrote nothing
    /// (a token count, an empty answer): no entry to find.
    fn prepare(&self, record: &AuditRecord, capture: &Capture) -> Option<(Entry, Vec<u64>)> {
        let mut all = Vec::new();
        let mut chars = 0u64;
        for part in &capture.parts {
            chars += part.text.chars().count() as u64;
            self.fingerprints.fingerprints(&part.text, &mut all);
        }
        if chars == 0 {
            return None;
        }
        // Sorted, then distinct: cheaper than a hash set for a response's few hundred, and the
        // index keys go to the journal and the memtable in order.
        all.sort_unstable();
        all.dedup();
        let entry = Entry::of(record, all.len() as u64, chars, capture.truncated);
        Some((entry, all))
    }
}

impl Recorder for LedgerRecorder {
    fn record(&self, record: &AuditRecord, capture: &Capture) -> Result<u64, String> {
        self.record_batch(&[(record, capture)])
            .pop()
            .unwrap_or_else(|| Err("no result for the capture".into()))
    }

    fn sync(&self) -> Result<(), String> {
        self.ledger.sync().map_err(|e| e.to_string())
    }

    fn defers_sync(&self) -> bool {
        self.ledger.buffers()
    }

    fn record_batch(&self, batch: &[(&AuditRecord, &Capture)]) -> Vec<Result<u64, String>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (i, (record, capture)) in batch.iter().enumerate() {
            match self.prepare(record, capture) {
                Some((entry, prints)) => {
                    results.push(Ok(entry.fingerprints));
                    writes.push((entry, prints));
                    written.push(i);
                }
                None => results.push(Ok(0)),
            }
        }
        if writes.is_empty() {
            return results;
        }
        match self.ledger.record_many_buffered(&writes) {
            Ok(()) => {
                self.metrics
                    .provenance_ledger_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.metrics
                    .provenance_ledger_held
                    .store(self.ledger.held(), std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                // Every capture that had an entry to write is unrecorded; the others stand.
                let message = e.to_string();
                for i in written {
                    results[i] = Err(message.clone());
                }
            }
        }
        results
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
