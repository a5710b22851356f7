//! A forwarded call's records joined into one row: its decision (written before the call went
//! upstream), its progress records and its outcome share one `id`.
//!
//! The outcome is a copy of the decision with the end filled in (status, bytes, timings,
//! error), so the joined row of a finished call is its outcome, shown with the decision's kind.
//! A call without an outcome yet is shown by its decision, or by its latest progress record,
//! with `outcome_follows = true`: it is still open (or the log ends before its outcome). Every
//! other record (a deny, a tunnel, an admin action) is its own row. `audit query`, the admin
//! API and the PostgreSQL copy all read through here.

use std::collections::{HashMap, HashSet};

use super::record::{AuditRecord, Kind, StoredRecord};

impl AuditRecord {
    /// The kind of the call a record belongs to: an outcome or progress record is the
    /// continuation of an intercepted request (which always names its vendor) or of a
    /// plain-HTTP passthrough (which never does).
    pub fn call_kind(&self) -> Kind {
        match self.kind {
            Kind::Outcome | Kind::Progress if self.vendor.is_some() => Kind::Request,
            Kind::Outcome | Kind::Progress => Kind::Tunnel,
            k => k,
        }
    }

    /// A decision whose call went upstream and has no outcome in this row.
    pub fn is_open(&self) -> bool {
        self.outcome_follows
    }
}

/// A record as a reader holds it: what the join needs to know of it.
pub trait Part: Sized {
    fn id(&self) -> &str;
    /// `None` for a kind this version does not know: its own row.
    fn kind(&self) -> Option<Kind>;
    fn outcome_follows(&self) -> bool;
    /// `(time, seq)`: the order calls started in.
    fn started(&self) -> (String, u64);
    /// The row an outcome or progress record stands for: the call's kind (`call_kind`), and a
    /// progress record still open (`outcome_follows = true`).
    fn into_row(self) -> Self;
}

impl Part for StoredRecord {
    fn id(&self) -> &str {
        &self.record.id
    }

    fn kind(&self) -> Option<Kind> {
        Some(self.record.kind)
    }

    fn outcome_follows(&self) -> bool {
        self.record.outcome_follows
    }

    fn started(&self) -> (String, u64) {
        (self.record.time.clone(), self.seq)
    }

    fn into_row(mut self) -> Self {
        if self.record.kind == Kind::Progress {
            self.record.outcome_follows = true;
        }
        self.record.kind = self.record.call_kind();
        self
    }
}

/// Joins a log read from its start. Rows come out as calls end (a finished call at its
/// outcome's place); calls still open come out of `finish`.
pub struct Calls<T> {
    open: HashMap<String, T>,
}

impl<T> Default for Calls<T> {
    fn default() -> Self {
        Calls {
            open: HashMap::new(),
        }
    }
}

impl<T: Part> Calls<T> {
    /// The row this record completes, if any.
    pub fn push(&mut self, s: T) -> Option<T> {
        match s.kind() {
            Some(Kind::Outcome) => {
                self.open.remove(s.id());
                Some(s.into_row())
            }
            Some(Kind::Progress) => {
                self.open.insert(s.id().to_string(), s.into_row());
                None
            }
            _ if s.outcome_follows() => {
                self.open.insert(s.id().to_string(), s);
                None
            }
            _ => Some(s),
        }
    }

    /// The calls without an outcome at the end of the log, in the order they started.
    pub fn finish(self) -> Vec<T> {
        let mut open: Vec<T> = self.open.into_values().collect();
        // Every record of a call carries the call's start time.
        open.sort_by_cached_key(Part::started);
        open
    }
}

/// Joins a log read from its end backwards: a call's outcome comes before its decision, so the
/// finished call is shown once, at its outcome, and an open one at its latest record.
#[derive(Default)]
pub struct NewestFirst {
    /// Calls shown already (by their outcome or latest progress) whose decision is still ahead.
    shown: HashSet<String>,
}

impl NewestFirst {
    /// The row to show for this record, if it is the first of its call met.
    pub fn push<T: Part>(&mut self, s: T) -> Option<T> {
        match s.kind() {
            Some(Kind::Outcome | Kind::Progress) => {
                if self.shown.insert(s.id().to_string()) {
                    Some(s.into_row())
                } else {
                    None
                }
            }
            // A call has one decision: nothing of it lies further back.
            _ if s.outcome_follows() => {
                if self.shown.remove(s.id()) {
                    None
                } else {
                    Some(s)
                }
            }
            _ => Some(s),
        }
    }
}

/// What `audit verify` says about the calls in a log.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Decisions of calls that went upstream.
    pub forwarded: u64,
    /// Of those, with an outcome.
    pub finished: u64,
    /// Outcomes that say the gateway ended first (`outcome_lost`).
    pub lost: u64,
    /// Decisions without an outcome at the end of the log (still open, or the gateway ended
    /// and has not started since): `(seq, id)`, oldest first.
    pub open: Vec<(u64, String)>,
    /// Outcomes whose decision is not in the log before them: `(seq, id)`.
    pub orphans: Vec<(u64, String)>,
    #[serde(skip)]
    pending: HashMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, s: &StoredRecord) {
        let r = &s.record;
        match r.kind {
            Kind::Outcome => {
                if self.pending.remove(&r.id).is_some() {
                    self.finished += 1;
                } else {
                    self.orphans.push((s.seq, r.id.clone()));
                }
                if r.error.as_deref() == Some(OUTCOME_LOST) {
                    self.lost += 1;
                }
            }
            Kind::Progress => {}
            _ if r.outcome_follows => {
                self.forwarded += 1;
                self.pending.insert(r.id.clone(), s.seq);
            }
            _ => {}
        }
    }

    /// The summary once the whole log is read.
    pub fn finish(mut self) -> Summary {
        self.open = self.pending.drain().map(|(id, seq)| (seq, id)).collect();
        self.open.sort();
        self
    }
}

/// Read a log (its files in chain order, when rotated) and summarise its calls. Lines that are
/// not records are skipped (`verify` names them).
pub fn summarize_files(files: &[&std::path::Path]) -> std::io::Result<Summary> {
    use std::io::BufRead;
    let mut summary = Summary::default();
    for file in files {
        let reader = std::io::BufReader::new(std::fs::File::open(file)?);
        for line in reader.split(b'\n') {
            if let Ok(s) = serde_json::from_slice::<StoredRecord>(&line?) {
                summary.add(&s);
            }
        }
    }
    Ok(summary.finish())
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "calls: {} forwarded, {} with an outcome ({} outcome_lost), {} without one",
            self.forwarded,
            self.finished,
            self.lost,
            self.open.len()
        )?;
        let ids = |v: &[(u64, String)]| {
            let mut s: Vec<String> = v
                .iter()
                .take(5)
                .map(|(seq, id)| format!("{id} (seq {seq})"))
                .collect();
            if v.len() > 5 {
                s.push(format!("and {} more", v.len() - 5));
            }
            s.join(", ")
        };
        if !self.open.is_empty() {
            write!(
                f,
                "\n  without an outcome (still open, or the gateway ended and has not started since): {}",
                ids(&self.open)
            )?;
        }
        if !self.orphans.is_empty() {
            write!(
                f,
                "\n  warning: {} outcome(s) without their decision earlier in this file (an older file of the log, or a decision removed): {}",
                self.orphans.len(),
                ids(&self.orphans)
            )?;
        }
        Ok(())
    }
}

/// The `error` of an outcome written at start for a decision left without one.
pub const OUTCOME_LOST: &str = "outcome_lost";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rec(id: &str, kind: Kind, follows: bool, seq: u64) -> StoredRecord {
        let mut r = AuditRecord::new(
            id.into(),
            kind,
            "127.0.0.1:1".into(),
            Arc::from("alice"),
            "api.openai.com".into(),
            443,
        );
        r.vendor = Some(Arc::from("openai"));
        r.outcome_follows = follows;
        StoredRecord {
            v: 1,
            seq,
            prev: String::new(),
            hash: String::new(),
            record: r,
        }
    }

    #[test]
    fn a_finished_call_is_one_row_either_way_and_an_open_one_shows_its_progress() {
        let log = [
            rec("a", Kind::Request, true, 1),
            rec("deny", Kind::Request, false, 2),
            rec("b", Kind::Request, true, 3),
            rec("b", Kind::Progress, false, 4),
            rec("a", Kind::Outcome, false, 5),
        ];
        let mut calls = Calls::default();
        let rows: Vec<_> = log.iter().filter_map(|s| calls.push(s.clone())).collect();
        let open = calls.finish();
        let ids = |v: &[StoredRecord]| {
            v.iter()
                .map(|s| {
                    (
                        s.record.id.clone(),
                        s.seq,
                        s.record.kind,
                        s.record.outcome_follows,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&rows),
            [
                ("deny".to_string(), 2, Kind::Request, false),
                ("a".to_string(), 5, Kind::Request, false)
            ]
        );
        assert_eq!(ids(&open), [("b".to_string(), 4, Kind::Request, true)]);

        let mut newest = NewestFirst::default();
        let rows: Vec<_> = log
            .iter()
            .rev()
            .filter_map(|s| newest.push(s.clone()))
            .collect();
        assert_eq!(
            ids(&rows),
            [
                ("a".to_string(), 5, Kind::Request, false),
                ("b".to_string(), 4, Kind::Request, true),
                ("deny".to_string(), 2, Kind::Request, false)
            ]
        );
        assert!(newest.shown.is_empty(), "every decision was met");
    }
}
