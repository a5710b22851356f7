//! At start: every call whose decision is in the log but whose outcome is not (the gateway
//! was killed, or ended with the call still open) gets an outcome record saying so
//! (`error = "outcome_lost"`).
//!
//! The log is read backwards from its end, and only as far back as `window`: a call that was
//! open when the gateway ended wrote its decision, or a progress record, within one progress
//! interval of the end (progress records come at that interval while a call is open), so
//! `window` is two intervals and some slack, counted back from the newest record the last run
//! wrote. The scan does not grow with the log: it reads what the gateway wrote in its last
//! `window`, found from the records' own times. When the current file began within that window
//! (it was rotated while calls were open), the scan goes on into the rotated files before it,
//! newest first: a decision written before a rotation and left open by a kill after it is in the
//! previous file. Calls whose outcome record was written and lost to a torn line are found the
//! same way.

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::calls::OUTCOME_LOST;
use super::record::{AuditRecord, Kind, StoredRecord};

/// The fields the scan reads of each line.
#[derive(serde::Deserialize)]
struct Line<'a> {
    seq: u64,
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

/// When a record was written: its call's start plus how long the call had run. An admin
/// record's `time` is when it was written (a refusal summary's duration is the span it counts).
fn written_at(l: &Line<'_>) -> Option<SystemTime> {
    let start = humantime::parse_rfc3339(&l.time).ok()?;
    if l.kind == Kind::Admin {
        return Some(start);
    }
    let ran = Duration::try_from_secs_f64(l.duration_ms / 1000.0).unwrap_or_default();
    Some(start + ran)
}

/// The outcome records owed to calls left without one at the end of the log at `path` (and, as
/// far back as `window` reaches, the rotated files before it), oldest call first. Records after
/// `last_run_seq` were written by this run (a torn line kept, a gap noted) and are not read.
pub fn lost_outcomes(
    path: &Path,
    window: Duration,
    last_run_seq: u64,
) -> io::Result<Vec<AuditRecord>> {
    let mut ended: HashSet<String> = HashSet::new();
    // The newest record of each call found open: its line, parsed in full at the end.
    let mut open: HashMap<String, Vec<u8>> = HashMap::new();
    let mut horizon: Option<SystemTime> = None;
    let mut files: Vec<PathBuf> = vec![path.to_path_buf()];
    files.extend(
        super::rotated::rotated_files(path)
            .into_iter()
            .rev()
            .map(|(_, p)| p),
    );
    for (i, file) in files.iter().enumerate() {
        let mut reached = false;
        let read = super::backwards::lines_backwards(file, 256 * 1024, |line| {
            let Ok(l) = serde_json::from_slice::<Line<'_>>(line) else {
                return ControlFlow::Continue(());
            };
            if l.seq > last_run_seq {
                return ControlFlow::Continue(());
            }
            match (horizon, written_at(&l)) {
                (None, Some(at)) => horizon = Some(at.checked_sub(window).unwrap_or(at)),
                (Some(h), Some(at)) if at < h => {
                    reached = true;
                    return ControlFlow::Break(());
                }
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
        });
        match read {
            Ok(()) => {}
            // A rotated file archived away between the listing and the read.
            Err(e) if i > 0 && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if reached {
            break;
        }
    }
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

        let lost = lost_outcomes(&path, Duration::from_secs(130), u64::MAX).unwrap();
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
        let lost = lost_outcomes(&path, Duration::from_secs(2000), u64::MAX).unwrap();
        assert_eq!(lost.len(), 3);
    }
    /// A decision written before a rotation and left open by a kill after it is in the rotated
    /// file: the scan goes on into it while the window reaches back that far, and no further.
    #[test]
    fn follows_the_window_into_the_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        let mut admin = rec("x", Kind::Admin, false, 0, 0.0);
        admin.reason = crate::policy::Reason::AuditFileStart;
        let at = |s: u64| {
            humantime::format_rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s),
            )
            .to_string()
        };
        let mut prev = GENESIS.to_string();
        let mut seq = 0;
        let mut file = |name: &str, records: Vec<AuditRecord>| {
            let mut out = Vec::new();
            for r in records {
                seq += 1;
                prev = seal(&r, seq, &prev, &mut out).unwrap();
            }
            std::fs::write(dir.path().join(name), out).unwrap();
        };
        // Oldest file: a call left open long before (outside the window).
        file(
            "audit.000000000001.jsonl",
            vec![rec("ancient", Kind::Request, true, 0, 0.0)],
        );
        // The previous file: an open stream, and a call that ended.
        file(
            "audit.000000000002.jsonl",
            vec![
                rec("sse", Kind::Request, true, 1000, 0.0),
                rec("done", Kind::Request, true, 1001, 0.0),
                rec("done", Kind::Outcome, false, 1001, 0.2),
            ],
        );
        // The current file holds only its header and a checkpoint, written at the rotation.
        let mut header = admin.clone();
        header.time = at(1002);
        let mut checkpoint = admin.clone();
        checkpoint.reason = crate::policy::Reason::AuditCheckpoint;
        checkpoint.time = at(1003);
        file("audit.jsonl", vec![header, checkpoint]);

        let ids = |lost: Vec<AuditRecord>| lost.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let lost = lost_outcomes(&active, Duration::from_secs(130), u64::MAX).unwrap();
        assert_eq!(ids(lost), ["sse"]);
        // Records this run wrote on opening the log (after seq 5) do not move the window.
        let lost = lost_outcomes(&active, Duration::from_secs(130), 5).unwrap();
        assert_eq!(ids(lost), ["sse"]);
        let lost = lost_outcomes(&active, Duration::from_secs(5000), u64::MAX).unwrap();
        assert_eq!(ids(lost), ["ancient", "sse"]);
    }
}
