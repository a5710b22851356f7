//! The writer's evidence work: signed checkpoints, rotation, a log found moved or deleted
//! under it, and the start-up check against the last checkpoint.
//!
//! None of it is on a record's path beyond one counter check in `seal` and one length check
//! after a write: a checkpoint is sealed under the chain's lock when the counter reaches
//! `audit.checkpoint_every`; everything timed (interval checkpoints, time rotation, the moved
//! check, the state file) runs on the housekeeping thread.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AuditWriterError, Inner, Queue};
use crate::audit::chain::{self, ChainHead};
use crate::audit::checkpoint::{self, Cause, Saved, Signer};
use crate::audit::record::{AuditRecord, Kind};
use crate::config::{AuditIntegrity, OnGap};
use crate::policy::Reason;

/// After a failed rotation (or a failed reopen of a moved log), the wait before the next try.
const ROTATE_RETRY: Duration = Duration::from_secs(10);

/// Why a new file was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileCause {
    Rotation,
    /// The configured path no longer names the file being written.
    Moved,
}

impl FileCause {
    fn as_str(self) -> &'static str {
        match self {
            FileCause::Rotation => "rotation",
            FileCause::Moved => "moved_or_deleted",
        }
    }
}

/// Fixed for the log's life.
pub(super) struct Evidence {
    signer: Signer,
    interval: Duration,
    rotate_size: u64,
    rotate_interval: Option<Duration>,
    on_gap: OnGap,
    state_path: PathBuf,
    replica: Option<Arc<str>>,
    /// The `record_seq` of the checkpoint last put in the state file: never go back to an
    /// older one when two threads save at once.
    stored: Mutex<u64>,
}

/// Changes with every checkpoint and file; kept in the queue, under its lock.
pub(super) struct State {
    last_checkpoint: Instant,
    file_first_seq: u64,
    file_started: Instant,
    /// A checkpoint sealed but not yet in the state file (that waits until its line is in the
    /// log, so the state file is never ahead of the log).
    unsaved: Option<Saved>,
    /// A new file could not be started: no new attempt (and no new header and checkpoint
    /// records) before this.
    retry_after: Option<Instant>,
}

impl State {
    pub(super) fn new(file_first_seq: u64) -> State {
        State {
            last_checkpoint: Instant::now(),
            file_first_seq,
            file_started: Instant::now(),
            unsaved: None,
            retry_after: None,
        }
    }
}

impl Evidence {
    pub(super) fn new(
        cfg: &AuditIntegrity,
        log: &Path,
        replica: Option<Arc<str>>,
    ) -> Result<Evidence, AuditWriterError> {
        let signer = Signer::load_or_create(&cfg.signing_key, cfg.generate_key)?;
        Ok(Evidence {
            signer,
            interval: cfg.checkpoint_interval,
            rotate_size: cfg.rotate_size.unwrap_or(u64::MAX),
            rotate_interval: cfg.rotate_interval,
            on_gap: cfg.on_gap,
            state_path: checkpoint::state_path(log),
            replica,
            stored: Mutex::new(0),
        })
    }

    /// Compare the log's end with the last checkpoint kept outside it: the state file, and
    /// `outside` (the PostgreSQL table's newest, with where it was found), whichever is newer.
    /// A log that falls short continues from the checkpoint after a `chain_gap` record (or,
    /// with `on_gap = "refuse"`, does not start): never a silent new chain at seq 1.
    pub(super) fn check_gap(
        &self,
        head: ChainHead,
        path: &Path,
        outside: Option<(String, Saved)>,
    ) -> Result<(ChainHead, Option<AuditRecord>), AuditWriterError> {
        let in_state_file = match checkpoint::load_saved(&self.state_path) {
            Ok(Some(saved)) if saved.replica.as_deref() != self.replica.as_deref() => {
                tracing::warn!(
                    state = %self.state_path.display(),
                    "the audit checkpoint state file belongs to another replica; not checked"
                );
                None
            }
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(error = %e, "cannot check the audit log against the checkpoint state file");
                None
            }
        };
        let state_file = self.state_path.display().to_string();
        let newest = match (in_state_file, outside) {
            (Some(a), Some((_, b))) if a.record_seq >= b.record_seq => {
                Some((state_file, a, "state_file"))
            }
            (_, Some((source, b))) => Some((source, b, "postgres")),
            (Some(a), None) => Some((state_file, a, "state_file")),
            (None, None) => None,
        };
        let Some((source, saved, source_kind)) = newest else {
            return Ok((head, None));
        };
        let last = head.last_seq;
        let cause = if last == 0 {
            "log_missing"
        } else if last < saved.record_seq {
            "log_shortened"
        } else if last == saved.record_seq && head.last_hash != saved.record_hash {
            "log_replaced"
        } else {
            return Ok((head, None));
        };
        let (from, to) = (last + 1, saved.record_seq);
        let message = format!(
            "audit log {} ends at seq {last} but the last checkpoint ({source}) is at seq {to} \
             (signed {}): records {from}..{to} are missing ({})",
            path.display(),
            saved.checkpoint.time,
            cause.replace('_', " "),
        );
        if self.on_gap == OnGap::Refuse {
            return Err(AuditWriterError::Gap(format!(
                "{message}; aigate refuses to start (audit.on_gap = \"refuse\"). Restore the log \
                 from a backup or the SIEM, or set audit.on_gap = \"record\" to start with a \
                 chain_gap record that names the missing range"
            )));
        }
        tracing::error!("{message}; continuing after a chain_gap record");
        let mut r = admin_record(Reason::ChainGap);
        r.error = Some(cause.to_string());
        r.admin = Some(serde_json::json!({
            "gap": {
                "from": from,
                "to": to,
                "log_last_seq": last,
                "cause": cause,
                "checkpoint": saved.checkpoint,
                "state_file": self.state_path.display().to_string(),
                "checkpoint_from": source_kind,
            }
        }));
        let head = ChainHead {
            records: head.records,
            last_seq: saved.record_seq,
            last_hash: saved.record_hash,
        };
        Ok((head, Some(r)))
    }
}

fn admin_record(reason: Reason) -> AuditRecord {
    let mut r = AuditRecord::new(
        crate::proxy::new_id(),
        Kind::Admin,
        String::new(),
        "aigate".into(),
        String::new(),
        0,
    );
    r.reason = reason;
    r
}

/// The `seq` of the file's first record, so a rotated file can be named after it.
pub(super) fn first_seq(file: &mut File) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut line = Vec::new();
    BufReader::new((&mut *file).take(1024 * 1024))
        .read_until(b'\n', &mut line)
        .ok()?;
    serde_json::from_slice::<Seq>(&line).ok().map(|s| s.seq)
}

/// `audit.jsonl` whose first record is seq 1001 rotates to `audit.000000001001.jsonl`: the
/// names sort in chain order, and a missing one can be named.
pub fn rotated_name(log: &Path, first_seq: u64) -> PathBuf {
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let ext = log
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jsonl".into());
    log.with_file_name(format!("{stem}.{first_seq:012}.{ext}"))
}

impl Inner {
    /// Seal a signed checkpoint of the chain as it stands. Called with the chain locked.
    pub(super) fn checkpoint_locked(&self, q: &mut Queue, cause: Cause) {
        let Some(ev) = &self.evidence else { return };
        q.since_checkpoint = 0;
        q.evidence.last_checkpoint = Instant::now();
        if q.head.last_seq == 0 {
            return;
        }
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let cp = ev.signer.sign(
            q.head.last_seq,
            &q.head.last_hash,
            &time,
            ev.replica.as_deref(),
        );
        let mut record = checkpoint::record(&cp, cause);
        record.replica.clone_from(&ev.replica);
        let mut body = Vec::new();
        if let Err(e) = chain::serialize(&record, &mut body) {
            tracing::error!(error = %e, "cannot serialize an audit checkpoint");
            return;
        }
        let seq = q.head.last_seq + 1;
        chain::seal_body(&body, seq, &mut q.head.last_hash, &mut q.pending);
        q.head.last_seq = seq;
        q.pending_records += 1;
        q.evidence.unsaved = Some(Saved {
            checkpoint: cp,
            record_seq: seq,
            record_hash: q.head.last_hash.clone(),
            replica: ev.replica.as_deref().map(str::to_string),
        });
    }

    /// Called after every write, with the chain locked: a length check, and the clock only
    /// once the size is reached.
    pub(super) fn rotate_size_reached(&self, q: &Queue) -> bool {
        self.evidence
            .as_ref()
            .is_some_and(|ev| q.len >= ev.rotate_size)
            && q.evidence.retry_after.is_none_or(|t| Instant::now() >= t)
    }

    /// Starting a new file failed: wait before the next try (each try writes records).
    fn rotation_failed(&self) {
        self.lock().evidence.retry_after = Some(Instant::now() + ROTATE_RETRY);
    }

    /// Take the writer's role if nobody holds it.
    fn become_writer(&self) -> bool {
        let mut q = self.lock();
        !std::mem::replace(&mut q.writing, true)
    }

    /// Start a new file at the configured path. The old file gets everything sealed so far
    /// (ending, on rotation, with a checkpoint); the new one starts with an `audit_file_start`
    /// record whose `prev` is the hash of the old file's last record. The caller holds the
    /// writer's role, so nothing else writes meanwhile.
    pub(super) fn rotate_as_writer(&self, cause: FileCause) {
        let (old, old_records, prev_last, new_first) = {
            let mut guard = self.lock();
            let q = &mut *guard;
            if cause == FileCause::Rotation && q.since_checkpoint > 0 {
                self.checkpoint_locked(q, Cause::Rotation);
            }
            let prev_first = q.evidence.file_first_seq;
            let prev_last = q.head.last_seq;
            if cause == FileCause::Rotation && prev_last < prev_first {
                // Nothing in this file yet: nothing to rotate.
                q.evidence.file_started = Instant::now();
                return;
            }
            let rotated =
                (cause == FileCause::Rotation).then(|| rotated_name(&self.path, prev_first));
            let old = std::mem::take(&mut q.pending);
            let old_records = std::mem::take(&mut q.pending_records);
            let mut header = AuditRecord::new(
                crate::proxy::new_id(),
                Kind::Admin,
                String::new(),
                "aigate".into(),
                String::new(),
                0,
            );
            header.reason = Reason::AuditFileStart;
            header.replica.clone_from(&self.replica);
            header.admin = Some(serde_json::json!({
                "file": {
                    "cause": cause.as_str(),
                    "previous": rotated.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
                    "previous_first_seq": prev_first,
                    "previous_last_seq": prev_last,
                    "previous_last_hash": q.head.last_hash,
                }
            }));
            let mut body = Vec::new();
            if chain::serialize(&header, &mut body).is_ok() {
                let seq = q.head.last_seq + 1;
                chain::seal_body(&body, seq, &mut q.head.last_hash, &mut q.pending);
                q.head.last_seq = seq;
                q.pending_records = 1;
                q.since_checkpoint += 1;
            }
            (old, old_records, prev_last, prev_last + 1)
        };
        let old_file = self.file.load_full();
        if !old.is_empty() {
            if let Err(e) = (&*old_file).write_all(&old) {
                // Put the old file's records back in front; the header follows them into the
                // same file, where it is still a valid link of the chain.
                let mut q = self.lock();
                let mut buf = old;
                buf.extend_from_slice(&q.pending);
                q.pending = buf;
                q.pending_records += old_records;
                drop(q);
                self.health.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot write the audit log before starting a new file");
                self.rotation_failed();
                return;
            }
            let mut q = self.lock();
            q.written = prev_last;
            q.settle(prev_last, true);
            drop(q);
            self.health
                .written
                .fetch_add(old_records, Ordering::Relaxed);
        }
        if cause == FileCause::Rotation {
            if self.syncer.fsync {
                if let Err(e) = old_file.sync_data() {
                    tracing::error!(error = %e, "cannot fsync the audit file being rotated");
                }
            }
            let prev_first = self.lock().evidence.file_first_seq;
            let rotated = rotated_name(&self.path, prev_first);
            if rotated.exists() {
                tracing::error!(
                    file = %rotated.display(),
                    "cannot rotate the audit log: the rotated name exists already; still writing to the current file"
                );
                self.rotation_failed();
                return;
            }
            if let Err(e) = std::fs::rename(&self.path, &rotated) {
                tracing::error!(error = %e, "cannot rotate the audit log; still writing to the current file");
                self.rotation_failed();
                return;
            }
        }
        let new = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path);
        let new = match new {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot open a new audit file; still writing to the old one");
                if cause == FileCause::Rotation {
                    let prev_first = self.lock().evidence.file_first_seq;
                    let _ = std::fs::rename(rotated_name(&self.path, prev_first), &self.path);
                }
                self.rotation_failed();
                return;
            }
        };
        self.file.store(Arc::new(new));
        let mut q = self.lock();
        q.len = 0;
        q.evidence.file_first_seq = new_first;
        q.evidence.file_started = Instant::now();
        q.evidence.retry_after = None;
        drop(q);
        match cause {
            FileCause::Rotation => tracing::info!(
                path = %self.path.display(),
                first_seq = new_first,
                "audit log rotated"
            ),
            FileCause::Moved => tracing::error!(
                path = %self.path.display(),
                last_seq = prev_last,
                "the audit log was moved or deleted while aigate was writing it; records up to this seq are in that file; continuing in a new file at the configured path"
            ),
        }
    }

    /// Whether the configured path no longer names the open file.
    fn log_moved(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(&self.path), self.file.load().metadata()) {
                (Err(e), _) => e.kind() == std::io::ErrorKind::NotFound,
                (Ok(at_path), Ok(open)) => {
                    (at_path.dev(), at_path.ino()) != (open.dev(), open.ino())
                }
                (Ok(_), Err(_)) => false,
            }
        }
        #[cfg(not(unix))]
        false
    }

    /// One round of the housekeeping thread.
    pub(super) fn evidence_round(&self) {
        let Some(ev) = &self.evidence else { return };
        {
            let mut q = self.lock();
            if q.since_checkpoint > 0 && q.evidence.last_checkpoint.elapsed() >= ev.interval {
                self.checkpoint_locked(&mut q, Cause::Interval);
            }
        }
        self.write_out();
        let (started, waiting) = {
            let q = self.lock();
            let waiting = q.evidence.retry_after.is_some_and(|t| Instant::now() < t);
            (q.evidence.file_started, waiting)
        };
        let cause = if waiting {
            None
        } else if self.log_moved() {
            Some(FileCause::Moved)
        } else {
            ev.rotate_interval
                .filter(|iv| started.elapsed() >= *iv)
                .map(|_| FileCause::Rotation)
        };
        if let Some(cause) = cause {
            if self.become_writer() {
                self.rotate_as_writer(cause);
                self.lock().writing = false;
                self.write_out();
            }
        }
        self.save_checkpoint();
    }

    /// Seal a checkpoint now (the gateway is stopping), unless the last record is one.
    pub(super) fn checkpoint_now(&self, cause: Cause) {
        let mut q = self.lock();
        if q.since_checkpoint > 0 {
            self.checkpoint_locked(&mut q, cause);
        }
    }

    /// Put the newest checkpoint whose line is in the log into the state file.
    pub(super) fn save_checkpoint(&self) {
        let Some(ev) = &self.evidence else { return };
        let saved = {
            let mut q = self.lock();
            match &q.evidence.unsaved {
                Some(s) if s.record_seq <= q.written => q.evidence.unsaved.take(),
                _ => None,
            }
        };
        let Some(saved) = saved else { return };
        let mut stored = ev.stored.lock().unwrap_or_else(|p| p.into_inner());
        if saved.record_seq <= *stored {
            return;
        }
        match checkpoint::store_saved(&ev.state_path, &saved, true) {
            Ok(()) => *stored = saved.record_seq,
            Err(e) => tracing::error!(
                error = %e,
                path = %ev.state_path.display(),
                "cannot write the audit checkpoint state file; a cut log would not be noticed at the next start"
            ),
        }
    }
}
