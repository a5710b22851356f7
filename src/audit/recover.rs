//! At start: every call whose decision is in the log but whose outcome is not (the gateway
//! was killed, or ended with the call still open) gets an outcome record saying so
//! (`error = "outcome_lost"`).
//!
//! The log is read backwards from its end, and only as far back as `window`: a call that was
//! open when the gateway ended wrote its decision, or a progress record, within one progress
//! interval of the end (progress records come at that interval while a call is open), so
//! `window` is two intervals and some slack, counted back from the newest record of a call. The
//! scan does not grow with the log: it reads
//! what the gateway wrote in its last `window`, found from the records' own times. Calls whose
//! outcome record was written and lost to a torn line are found the same way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::calls::OUTCOME_LOST;
use super::record::{AuditRecord, Kind, StoredRecord};

/// The fields the scan reads of each line.
#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    kind: Kind,
    #[serde(default)]
    outcome_follows: bool,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(default)]
    duration_ms: f64,
}

/// When a record was written: its call's start plus how long the call had run.
fn written_at(l: &Line<'_>) -> Option<SystemTime> {
    let start = humantime::parse_rfc3339(&l.time).ok()?;
    let ran = Duration::try_from_secs_f64(l.duration_ms / 1000.0).unwrap_or_default();
    Some(start + ran)
}

/// The outcome records owed to calls left without one at the end of the log at `path`,
/// oldest call first.
pub fn lost_outcomes(path: &Path, window: Duration) -> io::Result<Vec<AuditRecord>> {
    let mut ended: HashSet<String> = HashSet::new();
    // The newest record of each call found open: its line, parsed in full at the end.
    let mut open: HashMap<String, Vec<u8>> = HashMap::new();
    let mut horizon: Option<SystemTime> = None;
    super::backwards::lines_backwards(path, 256 * 1024, |line| {
        let Ok(l) = serde_json::from_slice::<Line<'_>>(line) else {
            return ControlFlow::Continue(());
        };
        // Measured from the newest record of a call: records written since the gateway
        // started again (a torn line kept, a gap noted) are not.
        let at = written_at(&l).filter(|_| l.kind != Kind::Admin);
        match (horizon, at) {
            (None, Some(at)) => horizon = Some(at.checked_sub(window).unwrap_or(at)),
            (Some(h), Some(at)) if at < h => return ControlFlow::Break(()),
            _ => {}
        }
        let id = &*l.id;
        match l.kind {
            Kind::Outcome => {
                ended.insert(l.id.into_owned());
            }
            // The newest record of a call not seen to end.
            Kind::Progress if !ended.contains(id) && !open.contains_key(id) => {
                open.insert(l.id.into_owned(), line.to_vec());
            }
            // A call has one decision: nothing of it lies further back.
            _ if l.outcome_follows && !ended.remove(id) && !open.contains_key(id) => {
                open.insert(l.id.into_owned(), line.to_vec());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    let mut lost: Vec<AuditRecord> = open
        .into_values()
        .filter_map(|line| serde_json::from_slice::<StoredRecord>(&line).ok())
        .map(|s| {
            let mut r = s.record;
            r.kind = Kind::Outcome;
            r.outcome_follows = false;
            r.error = Some(OUTCOME_LOST.into());
            r
        })
        .collect();
    lost.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::chain::{GENESIS, seal};

    /// A record of call `id`, which started `start_s` seconds into the log and had run `ran_s`.
    fn rec(id: &str, kind: Kind, follows: bool, start_s: u64, ran_s: f64) -> AuditRecord {
        let mut r = AuditRecord::new(
            id.into(),
            kind,
            "127.0.0.1:1".into(),
            Arc::from("alice"),
            "api.openai.com".into(),
            443,
        );
        r.time = humantime::format_rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + start_s),
        )
        .to_string();
        r.vendor = Some(Arc::from("openai"));
        r.outcome_follows = follows;
        r.duration_ms = ran_s * 1000.0;
        r
    }

    #[test]
    fn finds_the_calls_left_open_within_the_window_and_no_others() {
        let records = [
            // Long before the end: open, but outside the window (its progress stopped).
            rec("stale", Kind::Request, true, 0, 0.0),
            // Started before the window, still writing progress inside it.
            rec("ws", Kind::Request, true, 100, 0.0),
            rec("done", Kind::Request, true, 1000, 0.0),
            rec("ws", Kind::Progress, false, 100, 960.0),
            rec("done", Kind::Outcome, false, 1000, 0.5),
            rec("deny", Kind::Request, false, 1001, 0.0),
            rec("sse", Kind::Request, true, 1010, 0.0),
            rec("sse", Kind::Progress, false, 1010, 5.0),
        ];
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for (i, r) in records.iter().enumerate() {
            prev = seal(r, i as u64 + 1, &prev, &mut out).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &out).unwrap();

        let lost = lost_outcomes(&path, Duration::from_secs(130)).unwrap();
        let got: Vec<(&str, Kind, f64, Option<&str>)> = lost
            .iter()
            .map(|r| (&*r.id, r.kind, r.duration_ms, r.error.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("ws", Kind::Outcome, 960_000.0, Some(OUTCOME_LOST)),
                ("sse", Kind::Outcome, 5_000.0, Some(OUTCOME_LOST)),
            ]
        );
        assert!(lost.iter().all(|r| !r.outcome_follows));
        // A window long enough reaches the stale call too.
        let lost = lost_outcomes(&path, Duration::from_secs(2000)).unwrap();
        assert_eq!(lost.len(), 3);
    }
}
