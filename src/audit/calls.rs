//! A forwarded call's records joined into one row: its decision (written before the call went
//! upstream), its progress records and its outcome share one `id`.
//!
//! The outcome has the end (status, bytes, timings, error) and every field a filter can name,
//! but not the decision's bulky detail (audit/outcome.rs): the joined row of a finished call is
//! its outcome completed by its decision (or its latest progress record, which is whole), shown
//! with the decision's kind. A call without an outcome yet is shown by its decision, or by its latest progress record,
//! with `outcome_follows = true`: it is still open (or the log ends before its outcome). Every
//! other record (a deny, a tunnel, an admin action) is its own row. `audit query`, the admin
//! API and the PostgreSQL copy all read through here.

use std::collections::{HashMap, HashSet, VecDeque};

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
    /// A slim outcome (audit/outcome.rs): shown only once completed by an earlier record of
    /// its call.
    fn is_slim(&self) -> bool;
    /// Fill in what a slim outcome leaves out from `earlier`, the call's decision or progress.
    fn complete_from(&mut self, earlier: &Self);
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

    fn is_slim(&self) -> bool {
        self.record.is_slim_read()
    }

    fn complete_from(&mut self, earlier: &Self) {
        self.record.complete_from(&earlier.record);
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
                let earlier = self.open.remove(s.id());
                let mut s = s;
                if let Some(earlier) = earlier.filter(|_| s.is_slim()) {
                    s.complete_from(&earlier);
                }
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
/// finished call is shown once, at its outcome, and an open one at its latest record. A slim
/// outcome's row waits for the next record of its call further back (its latest progress or its
/// decision) to be completed; rows come out in the order they were met, so the rows after a
/// waiting one wait with it (`ready`). Its decision passes every filter the outcome passed
/// (they share every field a filter names), so it is read whenever the outcome was.
pub struct NewestFirst<T> {
    /// Calls shown already (by their outcome or latest progress) whose decision is still ahead.
    shown: HashSet<String>,
    /// Rows in the order met; `None` once taken.
    rows: VecDeque<T>,
    /// Slim outcomes waiting for an earlier record of their call: id → their place in `rows`,
    /// counted from the first row ever met.
    waiting: HashMap<String, usize>,
    /// Rows taken from the front of `rows` so far.
    taken: usize,
}

impl<T> Default for NewestFirst<T> {
    fn default() -> Self {
        NewestFirst {
            shown: HashSet::new(),
            rows: VecDeque::new(),
            waiting: HashMap::new(),
            taken: 0,
        }
    }
}

impl<T: Part> NewestFirst<T> {
    /// Take in the next record back. Its row, if it is the first of its call met, is queued
    /// and comes out of `ready`.
    pub fn push(&mut self, s: T) {
        match s.kind() {
            Some(Kind::Outcome | Kind::Progress) => {
                if self.shown.insert(s.id().to_string()) {
                    if s.is_slim() {
                        self.waiting
                            .insert(s.id().to_string(), self.taken + self.rows.len());
                    }
                    self.rows.push_back(s.into_row());
                } else {
                    self.complete(&s);
                }
            }
            // A call has one decision: nothing of it lies further back.
            _ if s.outcome_follows() => {
                if self.shown.remove(s.id()) {
                    self.complete(&s);
                } else {
                    self.rows.push_back(s);
                }
            }
            _ => self.rows.push_back(s),
        }
    }

    /// A slim outcome's row waiting for this earlier record of its call is complete.
    fn complete(&mut self, earlier: &T) {
        if let Some(at) = self.waiting.remove(earlier.id()) {
            if let Some(row) = at
                .checked_sub(self.taken)
                .and_then(|i| self.rows.get_mut(i))
            {
                row.complete_from(earlier);
            }
        }
    }

    /// The next row, newest first, once it is complete.
    pub fn ready(&mut self) -> Option<T> {
        let front = self.rows.front()?;
        if self.waiting.get(front.id()) == Some(&self.taken) {
            return None;
        }
        self.taken += 1;
        self.rows.pop_front()
    }

    /// The rows left when the log has been read to its start: those waiting for a decision
    /// that is not in it (a file of the log removed) are shown as they are.
    pub fn finish(self) -> impl Iterator<Item = T> {
        self.rows.into_iter()
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
        let mut rows = Vec::new();
        for s in log.iter().rev() {
            newest.push(s.clone());
            rows.extend(std::iter::from_fn(|| newest.ready()));
        }
        assert!(newest.shown.is_empty(), "every decision was met");
        rows.extend(newest.finish());
        assert_eq!(
            ids(&rows),
            [
                ("a".to_string(), 5, Kind::Request, false),
                ("b".to_string(), 4, Kind::Request, true),
                ("deny".to_string(), 2, Kind::Request, false)
            ]
        );
    }

    /// A slim outcome as the writer writes it, read back (audit/outcome.rs).
    fn slim(whole: &StoredRecord, seq: u64) -> StoredRecord {
        let mut r = whole.record.clone();
        r.kind = Kind::Outcome;
        r.outcome_follows = false;
        r.status = Some(200);
        let mut line = Vec::new();
        crate::audit::chain::seal(&r, seq, crate::audit::chain::GENESIS, &mut line).unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn a_slim_outcome_is_shown_completed_by_its_decision_in_either_direction() {
        let mut a = rec("a", Kind::Request, true, 1);
        a.record.evidence = vec!["user-agent".into()];
        a.record.user_agent = Some("claude-cli/2.1".into());
        a.record.method = Some("POST".into());
        let mut b = rec("b", Kind::Request, true, 2);
        b.record.client = "127.0.0.1:2".into();
        let b_progress = StoredRecord {
            seq: 4,
            record: AuditRecord {
                kind: Kind::Progress,
                outcome_follows: false,
                ..b.record.clone()
            },
            ..b.clone()
        };
        let log = [
            a.clone(),
            b.clone(),
            rec("deny", Kind::Request, false, 3),
            b_progress,
            slim(&a, 5),
            slim(&b, 6),
        ];
        assert!(log[4].record.client.is_empty() && log[4].record.evidence.is_empty());
        let want = |s: &StoredRecord, from: &StoredRecord| {
            let mut r = from.record.clone();
            r.kind = Kind::Request;
            r.outcome_follows = false;
            r.status = Some(200);
            (s.seq, r)
        };
        let shown = |rows: &[StoredRecord]| {
            rows.iter()
                .map(|s| (s.seq, s.record.clone()))
                .collect::<Vec<_>>()
        };
        let deny = (3, log[2].record.clone());

        let mut calls = Calls::default();
        let rows: Vec<_> = log.iter().filter_map(|s| calls.push(s.clone())).collect();
        assert!(calls.finish().is_empty());
        assert_eq!(
            shown(&rows),
            [deny.clone(), want(&log[4], &a), want(&log[5], &b)]
        );

        let mut newest = NewestFirst::default();
        let mut rows = Vec::new();
        let mut ready_after = Vec::new();
        for s in log.iter().rev() {
            newest.push(s.clone());
            rows.extend(std::iter::from_fn(|| newest.ready()));
            ready_after.push(rows.len());
        }
        assert!(newest.finish().next().is_none());
        // b's outcome is completed by its progress record, a's (and the deny behind it) only
        // by a's decision, the last record read.
        assert_eq!(ready_after, [0, 0, 1, 1, 1, 3]);
        assert_eq!(shown(&rows), [want(&log[5], &b), want(&log[4], &a), deny]);
    }
}
