//! `aigate provenance scan`: find captured model output in files, git history and datasets.
//!
//! ```text
//! sources.rs (directories through `ignore`, git blobs and diffs, JSON Lines records),
//! parquet.rs (Parquet rows)
//!   ─▶ Document { name, text, line_offset }
//!   ─▶ repeats.rs (a copy of a document matched already takes its finding)
//!   ─▶ matcher.rs (fingerprints of both channels − stop-list ─▶ Lookup ─▶ per response: spans)
//!   ─▶ Finding (line ranges, share, characters, the responses: record id, tool, user, time)
//!   ─▶ report.rs (table, the JSON document of docs/provenance.md, SARIF 2.1.0)
//! ```
//!
//! The ledger is behind [`Lookup`], so the matching is tested on plain data and the store can
//! change (embedded files, PostgreSQL) without touching it.

pub mod access;
pub mod matcher;
pub mod parquet;
pub mod repeats;
pub mod report;
pub mod run;
pub mod sources;

#[cfg(test)]
mod tests;

pub use matcher::{Finding, Matcher, ResponseMatch, Thresholds, Tier};

/// What a scan knows about a captured response (a ledger entry). Times are RFC 3339, UTC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Response {
    /// The audit record of the call the response answered.
    pub record_id: String,
    pub time: String,
    pub user: Option<String>,
    pub tool: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
}

/// The ledger, as the scan sees it.
pub trait Lookup {
    /// Appends to `out` the ledger's ids of the responses that produced fingerprint `hash`.
    fn responses(&self, hash: u64, out: &mut Vec<u64>) -> anyhow::Result<()>;
    /// [`Lookup::responses`] of each of `hashes` (a document's, after [`Lookup::prefetch`]):
    /// appends `(i, id)` for each response id of `hashes[i]`, in the order of `hashes`. One call
    /// a document, so a ledger behind a lock takes it once, not once per fingerprint.
    fn responses_each(&self, hashes: &[u64], out: &mut Vec<(u32, u64)>) -> anyhow::Result<()> {
        let mut ids = Vec::new();
        for (i, &hash) in hashes.iter().enumerate() {
            ids.clear();
            self.responses(hash, &mut ids)?;
            out.extend(ids.iter().map(|&id| (i as u32, id)));
        }
        Ok(())
    }
    /// The entry of a response id returned by [`Lookup::responses`].
    fn response(&self, id: u64) -> anyhow::Result<Option<Response>>;
    /// Called with a document's fingerprints before its lookups (or a group's: a directory's
    /// files with a remote ledger, `run::Group`), so a remote ledger is asked once for them,
    /// not once per fingerprint. The answers stand until the next call. Without the
    /// stop-list's fingerprints, unless [`Lookup::filters_first`].
    fn prefetch(&self, _hashes: &[u64]) -> anyhow::Result<()> {
        Ok(())
    }
    /// Fetches that can run on another thread ([`access::Pipelined`]): the scan fetches the
    /// next group of documents while it matches the one before. `None`: one after the other,
    /// with [`Lookup::prefetch`].
    fn pipelined(&self) -> Option<&dyn access::Pipelined> {
        None
    }
    /// The ledger answers most absent fingerprints in this process (a membership filter), so
    /// the matcher probes the stop-list only for the few it finds, not before for all, and
    /// documents are matched one at a time rather than looked up a group at a time.
    fn filters_first(&self) -> bool {
        false
    }
    /// The stop-list may be left until after the ledger's filter, in this process or the
    /// gateway's, has passed the few fingerprints it may hold: the matcher then probes it only
    /// for those it finds.
    fn stops_after(&self) -> bool {
        self.filters_first()
    }
}
