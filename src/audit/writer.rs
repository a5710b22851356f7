//! The file sink: records are chained and written by the task that submits them.
//!
//! Sealing (serialization, the hash chain) happens under a short lock, so the chain is
//! sequential; the `write(2)` happens outside it, by whichever submitter finds no write in
//! progress, and takes everything queued so far (group commit, no thread hop on the data path).
//! `submit_acked` resolves once the record's line is in the file: the proxy waits for it before
//! a call goes upstream (its decision) and before its own answers leave, so a `kill -9` cannot
//! lose a call that reached a vendor. fsync runs on a thread of its own, at most every `SYNC_INTERVAL` while there is new
//! data, so a slow disk flush never sits in front of an answer.
//!
//! When a write fails the bytes stay queued and are retried (on the next submit, and every
//! `RETRY_INTERVAL` from a small thread), the log is marked unhealthy (so a fail-closed gateway
//! refuses calls), and it recovers by itself once the disk does.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use super::chain::{self, ChainHead};
use super::record::{AuditRecord, Kind};
use crate::config::{AuditIntegrity, Fsync};
use crate::metrics::Metrics;
use crate::policy::Reason;

mod evidence;

pub use evidence::rotated_name;

/// Records waiting for a failing disk are capped; past this, new ones are dropped and counted.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// How often the housekeeping thread retries a failed write and looks at the clock (time
/// checkpoints, time rotation) and at the path (a log moved or deleted under the writer).
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// The group-commit window: fsyncs at most this often (a power cut can lose this much).
const SYNC_INTERVAL: Duration = Duration::from_millis(10);
/// How much of the log's newest part stays in the page cache once it is on disk: the admin
/// API, `audit query` and the PostgreSQL shipper read from the end. Older pages are dropped.
pub const KEEP_CACHED: u64 = 8 * 1024 * 1024;
/// With fsync = "never", how long a range of the log is advised again: long enough for the
/// kernel to finish the writeback the first advice started, even on a slow disk.
const REDROP: Duration = Duration::from_secs(1);

thread_local! {
    /// A record's JSON before it is chained: one buffer per thread, reused, instead of an
    /// allocation per record.
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, thiserror::Error)]
pub enum AuditWriterError {
    #[error("cannot open audit log {path}: {source}; check that the state directory is writable")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "audit log {path} does not verify ({problem}); move it aside (it is evidence) and start again, or fix the cause"
    )]
    Broken { path: PathBuf, problem: String },
    #[error(transparent)]
    Key(#[from] super::checkpoint::KeyError),
    /// The log is missing or shorter than its last checkpoint and `audit.on_gap = "refuse"`.
    #[error("{0}")]
    Gap(String),
}

/// Counters shared with the data path and metrics.
#[derive(Debug, Default)]
pub struct AuditHealth {
    healthy: AtomicBool,
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub dropped: AtomicU64,
}

/// Resolves to whether a record's line is in the file.
pub enum Ack {
    Done(bool),
    Waiting(oneshot::Receiver<bool>),
}

impl Future for Ack {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match self.get_mut() {
            Ack::Done(written) => Poll::Ready(*written),
            Ack::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(false)),
        }
    }
}

struct Queue {
    head: ChainHead,
    /// Sealed lines not yet in the file.
    pending: Vec<u8>,
    pending_records: u64,
    /// A write is in progress (outside the lock); its writer will also take what queues up.
    writing: bool,
    /// The file's length after the last good write: a failed write is cut back to it.
    len: u64,
    spare: Vec<u8>,
    /// Every `seq` up to here is in the file.
    written: u64,
    /// The last failed write covered up to here (those records are queued again).
    failed: u64,
    /// Acknowledgements owed once a write covers their `seq`.
    waiters: Vec<(u64, oneshot::Sender<bool>)>,
    /// Records sealed since the last checkpoint: the one check on the hot path
    /// (writer/evidence.rs does the rest).
    since_checkpoint: u64,
    evidence: evidence::State,
}

impl Queue {
    fn settle(&mut self, upto: u64, written: bool) {
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 <= upto {
                let (_, tx) = self.waiters.swap_remove(i);
                let _ = tx.send(written);
            } else {
                i += 1;
            }
        }
    }
}

struct Inner {
    /// Swapped when the file rotates or is found moved; the fsync thread follows it.
    file: Arc<ArcSwap<File>>,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Checkpoints, rotation, the state file; `None` without `audit` integrity config (tests,
    /// benches).
    evidence: Option<evidence::Evidence>,
    /// `audit.checkpoint_every`, or never.
    checkpoint_every: u64,
    health: Arc<AuditHealth>,
    metrics: Arc<Metrics>,
    syncer: Arc<Syncer>,
    replica: Option<Arc<str>>,
    flusher: Arc<Flusher>,
}

/// The handle the gateway holds. Clones share one file and one chain.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
    path: Arc<PathBuf>,
    /// The last `seq` of the runs before this one: records after it are this run's.
    resumed_after: u64,
}

impl AuditLog {
    /// Open (or create) the log, check the tail of the chain, start the fsync thread.
    /// `replica` names this gateway in every record when several share PostgreSQL.
    pub fn open(
        path: &Path,
        fsync: Fsync,
        metrics: Arc<Metrics>,
        replica: Option<Arc<str>>,
    ) -> Result<AuditLog, AuditWriterError> {
        AuditLog::open_with(path, fsync, metrics, replica, None)
    }

    /// As `open`, with signed checkpoints, rotation and the start-up gap check.
    pub fn open_with(
        path: &Path,
        fsync: Fsync,
        metrics: Arc<Metrics>,
        replica: Option<Arc<str>>,
        integrity: Option<&AuditIntegrity>,
    ) -> Result<AuditLog, AuditWriterError> {
        AuditLog::open_checked(path, fsync, metrics, replica, integrity, None)
    }

    /// As `open_with`, with the newest checkpoint kept off this disk (the PostgreSQL table),
    /// named by where it was found: the gap check holds the log to the newer of it and the
    /// state file, so deleting the state file with the log's tail does not hide the cut.
    pub fn open_checked(
        path: &Path,
        fsync: Fsync,
        metrics: Arc<Metrics>,
        replica: Option<Arc<str>>,
        integrity: Option<&AuditIntegrity>,
        outside: Option<(String, super::checkpoint::Saved)>,
    ) -> Result<AuditLog, AuditWriterError> {
        let open_err = |source| AuditWriterError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let (head, torn) = tail_head(&mut file).map_err(|problem| AuditWriterError::Broken {
            path: path.to_path_buf(),
            problem,
        })?;
        let first_seq = evidence::first_seq(&mut file).unwrap_or(head.last_seq + 1);
        let evidence = integrity
            .map(|cfg| evidence::Evidence::new(cfg, path, replica.clone()))
            .transpose()?;
        // A log missing or shorter than its last checkpoint continues from the checkpoint,
        // after a chain_gap record, or does not start at all.
        let (head, gap) = match &evidence {
            Some(ev) => ev.check_gap(head, path, outside)?,
            None => (head, None),
        };
        let resumed_after = head.last_seq;
        let len = file.metadata().map_err(open_err)?.len();
        let health = Arc::new(AuditHealth {
            healthy: AtomicBool::new(true),
            ..AuditHealth::default()
        });
        // With fsync = "never" the thread still runs: it drops the log's older pages, which
        // the kernel writes back in its own time.
        let syncer = Arc::new(Syncer {
            fsync: matches!(fsync, Fsync::Batch),
            ..Syncer::default()
        });
        let file = Arc::new(ArcSwap::from_pointee(file));
        {
            let file = file.clone();
            let (s, h) = (syncer.clone(), health.clone());
            std::thread::Builder::new()
                .name("aigate-audit-sync".into())
                .spawn(move || s.run(file, &h))
                .map_err(open_err)?;
        }
        let checkpoint_every = integrity.map_or(u64::MAX, |i| i.checkpoint_every);
        let inner = Arc::new(Inner {
            file,
            path: path.to_path_buf(),
            evidence,
            checkpoint_every,
            queue: Mutex::new(Queue {
                head,
                pending: Vec::new(),
                pending_records: 0,
                writing: false,
                len,
                spare: Vec::new(),
                written: 0,
                failed: 0,
                waiters: Vec::new(),
                since_checkpoint: 0,
                evidence: evidence::State::new(first_seq),
            }),
            health,
            metrics,
            syncer,
            replica,
            flusher: Arc::default(),
        });
        start_flusher(&inner).map_err(open_err)?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("aigate-audit-housekeeping".into())
            .spawn(move || housekeeping(&weak))
            .map_err(open_err)?;
        let log = AuditLog {
            inner,
            path: Arc::new(path.to_path_buf()),
            resumed_after,
        };
        if let Some(gap) = gap {
            log.submit(gap);
        }
        if let Some(torn) = torn {
            tracing::warn!(
                path = %path.display(),
                bytes = torn.len(),
                "audit log ended in a torn write (the gateway stopped mid-write); cut off and kept in an audit_recovered record"
            );
            log.submit(recovered_record(&torn));
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last `seq` the runs before this one wrote (or the checkpoint a gap continues from):
    /// the start-up scans read the log up to here, not what this run wrote on opening it.
    pub fn resumed_after(&self) -> u64 {
        self.resumed_after
    }

    /// Chain the record and write it (or leave it to the write in progress).
    pub fn submit(&self, record: AuditRecord) {
        self.inner.seal(record);
        self.inner.write_out();
    }

    /// Chain and write the record; the `Ack` says whether its line is in the file (not yet
    /// fsynced: that is the background group commit).
    pub fn submit_acked(&self, record: AuditRecord) -> Ack {
        let Some(seq) = self.inner.seal(record) else {
            return Ack::Done(false);
        };
        self.inner.write_out();
        self.inner.ack(seq)
    }

    /// The `seq` of the newest record sealed so far.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().head.last_seq
    }

    /// Whether the last write reached the file.
    pub fn healthy(&self) -> bool {
        self.inner.health.healthy.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &AuditHealth {
        &self.inner.health
    }

    /// Write everything submitted so far and, with `fsync = "batch"`, fsync it.
    /// Returns false if it could not be.
    pub fn flush_blocking(&self) -> bool {
        loop {
            self.inner.write_out();
            let q = self.inner.lock();
            match (q.writing, q.pending.is_empty()) {
                (false, true) => break,
                // Nobody is writing and something is left: the write failed.
                (false, false) => return false,
                // Another caller's write is in progress; it takes ours too.
                (true, _) => {
                    drop(q);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if !self.inner.syncer.fsync {
            self.inner.save_checkpoint();
            return self.healthy();
        }
        match self.inner.file.load().sync_data() {
            Ok(()) => {
                self.inner.save_checkpoint();
                self.healthy()
            }
            Err(e) => {
                self.inner
                    .health
                    .write_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot fsync audit log");
                false
            }
        }
    }

    /// The gateway is stopping: seal a last signed checkpoint (flush writes it, and puts it
    /// in the state file).
    pub fn checkpoint_on_shutdown(&self) {
        self.inner
            .checkpoint_now(super::checkpoint::Cause::Shutdown);
    }

    pub async fn flush(&self) -> bool {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush_blocking())
            .await
            .unwrap_or(false)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Sealing appends whole lines only; a panic cannot leave half a line behind.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chain and serialize one record into the queue; its `seq`, or `None` if it was dropped.
    fn seal(&self, mut record: AuditRecord) -> Option<u64> {
        if record.replica.is_none() {
            record.replica.clone_from(&self.replica);
        }
        self.seal_ref(&record)
    }

    /// `seal` for a record that the caller keeps (its `replica` already filled in).
    fn seal_ref(&self, record: &AuditRecord) -> Option<u64> {
        self.metrics.observe(record);
        // Serialized before the chain is locked, into this thread's reused buffer.
        BODY.with_borrow_mut(|body| {
            if let Err(e) = chain::serialize(record, body) {
                tracing::error!(error = %e, "cannot serialize audit record");
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let mut q = self.lock();
            if q.pending.len() > MAX_PENDING_BYTES {
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let seq = q.head.last_seq + 1;
            let q = &mut *q;
            chain::seal_body(body, seq, &mut q.head.last_hash, &mut q.pending);
            q.head.last_seq = seq;
            q.pending_records += 1;
            q.since_checkpoint += 1;
            if q.since_checkpoint >= self.checkpoint_every {
                self.checkpoint_locked(q, super::checkpoint::Cause::Count);
            }
            Some(seq)
        })
    }

    /// Write what is queued, unless another caller is already at it (it takes ours too).
    fn write_out(&self) {
        loop {
            let (mut buf, records, last_seq, len) = {
                let mut q = self.lock();
                if q.writing || q.pending.is_empty() {
                    return;
                }
                q.writing = true;
                let spare = std::mem::take(&mut q.spare);
                let buf = std::mem::replace(&mut q.pending, spare);
                let records = std::mem::take(&mut q.pending_records);
                (buf, records, q.head.last_seq, q.len)
            };
            let file = self.file.load();
            let result = (&**file).write_all(&buf);
            let mut q = self.lock();
            q.writing = false;
            match result {
                Ok(()) => {
                    q.len = len + buf.len() as u64;
                    buf.clear();
                    q.spare = buf;
                    q.written = last_seq;
                    q.settle(last_seq, true);
                    let rotate = self.rotate_size_reached(&q);
                    if rotate {
                        // Stay the writer: nobody writes to the file being rotated.
                        q.writing = true;
                    }
                    drop(q);
                    if rotate {
                        self.rotate_as_writer(evidence::FileCause::Rotation);
                        self.lock().writing = false;
                    }
                    self.health.written.fetch_add(records, Ordering::Relaxed);
                    self.syncer.mark_dirty();
                    if !self.health.healthy.swap(true, Ordering::Relaxed) {
                        tracing::warn!("audit log writable again");
                    }
                }
                Err(e) => {
                    // A partial write would leave half a line; cut it off so the retry appends
                    // whole lines and the chain stays intact.
                    let _ = file.set_len(len);
                    buf.extend_from_slice(&q.pending);
                    q.pending = buf;
                    q.pending_records += records;
                    q.failed = last_seq;
                    q.settle(last_seq, false);
                    drop(q);
                    self.health.write_errors.fetch_add(1, Ordering::Relaxed);
                    if self.health.healthy.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "cannot write audit log; refusing calls if fail_closed");
                    }
                    return;
                }
            }
        }
    }
}

// Decision, progress and outcome records (docs/audit-schema.md, "Decision and outcome"). A
// forwarded call's decision is written before its first byte goes upstream and acknowledged
// (`submit_ref_acked`); its progress and outcome records are chained at once but written with
// the next write, or within `FLUSH_WINDOW` by the flusher thread (`submit_deferred`). A `kill -9`
// can lose only outcomes, and the next start answers each decision left without one with an
// `outcome_lost` record (audit/recover.rs). One `write(2)` per call, not two.

/// How long a deferred record may wait for a write to take it along.
const FLUSH_WINDOW: Duration = Duration::from_millis(5);

impl AuditLog {
    /// The replica name every record of this log carries, if any.
    pub fn replica(&self) -> Option<&Arc<str>> {
        self.inner.replica.as_ref()
    }

    /// Chain and write a record the caller keeps (a decision, which later becomes the call's
    /// outcome); the `Ack` says whether its line is in the file.
    pub fn submit_ref_acked(&self, record: &AuditRecord) -> Ack {
        match self.seal_kept(record) {
            Some(seq) => self.written(seq),
            None => Ack::Done(false),
        }
    }

    /// Chain a record the caller keeps (a decision) without writing it yet; its `seq`, or
    /// `None` if it was dropped. `written(seq)` writes it, together with whatever else was
    /// sealed meanwhile: the proxy seals a decision, lets the other calls ready on the same
    /// worker seal theirs, and the first of them back writes them all in one `write(2)`.
    pub fn seal_kept(&self, record: &AuditRecord) -> Option<u64> {
        if record.replica.is_none() && self.inner.replica.is_some() {
            self.inner.seal(record.clone())
        } else {
            self.inner.seal_ref(record)
        }
    }

    /// Write what is queued (or leave it to the write in progress, which takes it along); the
    /// `Ack` says whether record `seq` is in the file.
    pub fn written(&self, seq: u64) -> Ack {
        self.inner.write_out();
        self.inner.ack(seq)
    }

    /// Chain the record now (its place in the chain is fixed) and leave its write to the next
    /// submitter, or to the flusher within `FLUSH_WINDOW`.
    pub fn submit_deferred(&self, record: AuditRecord) {
        if self.inner.seal(record).is_some() {
            self.inner.flusher.poke();
        }
    }
}

impl Inner {
    /// The acknowledgement for `seq`, sealed and offered to `write_out` already.
    fn ack(&self, seq: u64) -> Ack {
        let mut q = self.lock();
        if q.written >= seq {
            return Ack::Done(true);
        }
        if q.failed >= seq {
            return Ack::Done(false);
        }
        let (tx, rx) = oneshot::channel();
        q.waiters.push((seq, tx));
        Ack::Waiting(rx)
    }
}

/// Writes deferred records that no submitter took along. Woken only when it waits and a record
/// is deferred: under load the decisions' writes take the outcomes, and it mostly sleeps.
#[derive(Default)]
struct Flusher {
    due: AtomicBool,
    /// The thread waits on `wake` (true while it does).
    waiting: Mutex<bool>,
    wake: Condvar,
}

impl Flusher {
    fn poke(&self) {
        if !self.due.swap(true, Ordering::AcqRel) {
            let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if *waiting {
                self.wake.notify_one();
            }
        }
    }
}

fn start_flusher(inner: &Arc<Inner>) -> io::Result<()> {
    let flusher = inner.flusher.clone();
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("aigate-audit-flush".into())
        .spawn(move || {
            background_priority("flush");
            loop {
                {
                    let mut waiting = flusher.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    while !flusher.due.load(Ordering::Acquire) {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        *waiting = true;
                        waiting = flusher
                            .wake
                            .wait_timeout(waiting, Duration::from_secs(1))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        *waiting = false;
                    }
                }
                std::thread::sleep(FLUSH_WINDOW);
                // Cleared before the write: a record deferred after this is either taken by
                // this write or pokes again.
                flusher.due.store(false, Ordering::Release);
                let Some(inner) = weak.upgrade() else { return };
                inner.write_out();
            }
        })
        .map(drop)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.syncer.update(|st| st.closed = true);
    }
}

/// Retry queued records while the gateway is idle (a recovered disk, no new traffic), and do
/// what is due by the clock or found on disk (writer/evidence.rs).
fn housekeeping(inner: &Weak<Inner>) {
    background_priority("housekeeping");
    loop {
        std::thread::sleep(RETRY_INTERVAL);
        let Some(inner) = inner.upgrade() else { return };
        let queued = !inner.lock().pending.is_empty();
        if queued {
            inner.write_out();
        }
        inner.evidence_round();
    }
}

/// Where the chain ends, and the torn last line (a crash mid-write) if there was one. The torn
/// bytes are cut off the file, so the chain stays verifiable, and come back to be kept, as
/// evidence, in the first record written after the restart.
fn tail_head(file: &mut File) -> Result<(ChainHead, Option<Vec<u8>>), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Ok((ChainHead::default(), None));
    }
    // The last record is well under 1 MiB; read the tail, not the whole file.
    let start = len.saturating_sub(1024 * 1024);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    BufReader::new(&mut *file)
        .read_to_end(&mut tail)
        .map_err(|e| e.to_string())?;
    let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn = (whole < tail.len()).then(|| tail.split_off(whole));
    #[derive(serde::Deserialize)]
    struct Tail {
        seq: u64,
        hash: String,
    }
    let text = String::from_utf8_lossy(&tail);
    let head = match text.split('\n').rfind(|l| !l.is_empty()) {
        None if start == 0 => ChainHead::default(),
        None => return Err("its last whole line is longer than 1 MiB".to_string()),
        Some(line) => match serde_json::from_str::<Tail>(line) {
            Ok(t) => ChainHead {
                records: t.seq,
                last_seq: t.seq,
                last_hash: t.hash,
            },
            Err(_) => return Err("its last whole line is not an audit record".to_string()),
        },
    };
    if let Some(t) = &torn {
        file.set_len(len - t.len() as u64)
            .map_err(|e| format!("cannot cut off its torn last line: {e}"))?;
    }
    Ok((head, torn))
}

/// The record that keeps a torn line found on start.
fn recovered_record(torn: &[u8]) -> AuditRecord {
    let mut r = AuditRecord::new(
        crate::proxy::new_id(),
        Kind::Admin,
        String::new(),
        "aigate".into(),
        String::new(),
        0,
    );
    r.reason = Reason::AuditRecovered;
    r.error = Some("torn_write".into());
    r.admin = Some(serde_json::json!({
        "torn_bytes": torn.len(),
        "torn_line": String::from_utf8_lossy(torn),
    }));
    r
}

/// Wakes the fsync thread when the writer has appended something since its last round.
#[derive(Default)]
struct Syncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// `fsync = "batch"`. Without it the thread only drops written pages.
    fsync: bool,
}

#[derive(Default)]
struct SyncState {
    dirty: bool,
    closed: bool,
    /// The thread is blocked on the condvar.
    waiting: bool,
}

impl Syncer {
    /// Wake the thread only if it is waiting for work: while it sleeps out its window or
    /// fsyncs, `dirty` is enough (no futex call per write).
    fn mark_dirty(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.dirty {
            state.dirty = true;
            if state.waiting {
                self.wake.notify_one();
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut SyncState)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        self.wake.notify_one();
    }

    fn run(&self, files: Arc<ArcSwap<File>>, health: &AuditHealth) {
        // An fsync takes ~100 us of CPU for the filesystem's work; at normal priority it
        // preempted the proxy's workers and showed as 0.2 ms more at p99. Under a saturated
        // CPU the window can stretch past SYNC_INTERVAL; the lines are in the page cache.
        background_priority("fsync");
        // The log's pages below `dropped` are out of the page cache. With fsync = "never"
        // they are dirty when first advised: the advice starts their writeback and drops only
        // clean pages, so each range is advised again on every round for `REDROP` (the marks:
        // when each round's advice ended).
        let mut dropped = 0;
        let mut marks: std::collections::VecDeque<(Instant, u64)> = Default::default();
        let mut current = files.load_full();
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while !state.dirty && !state.closed {
                    state.waiting = true;
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.waiting = false;
                }
                if !state.dirty {
                    return;
                }
            }
            // Let a window's worth of writes gather (group commit), then cover them all.
            // Writes racing with the fsync set `dirty` again for the next round.
            std::thread::sleep(SYNC_INTERVAL);
            self.state.lock().unwrap_or_else(|p| p.into_inner()).dirty = false;
            let file = files.load_full();
            if !Arc::ptr_eq(&file, &current) {
                // Rotated: the new file's pages start at 0.
                current = file.clone();
                dropped = 0;
                marks.clear();
            }
            let len = file.metadata().map(|m| m.len());
            if !self.fsync {
                if let Ok(len) = len {
                    marks.push_back((Instant::now(), drop_behind(&file, dropped, len)));
                    while let Some(&(at, upto)) = marks.front() {
                        if at.elapsed() < REDROP {
                            break;
                        }
                        dropped = upto;
                        marks.pop_front();
                    }
                }
                continue;
            }
            match file.sync_data() {
                Ok(()) => {
                    if let Ok(len) = len {
                        dropped = drop_behind(&file, dropped, len);
                    }
                }
                Err(e) => {
                    health.write_errors.fetch_add(1, Ordering::Relaxed);
                    if health.healthy.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "cannot fsync audit log; refusing calls if fail_closed");
                    }
                }
            }
        }
    }
}

/// Lowest priority for the writer's helper threads ([`crate::background`]): woken at normal
/// priority, each preempted the proxy's worker on its core, often while the worker held the
/// chain's lock, and the two then switched back and forth on it. At nice 19 they run when the
/// worker waits for the network. Nothing on a call's path waits for them: a call's decision is
/// written by the call itself.
fn background_priority(thread: &str) {
    if let Err(e) = crate::background::lowest_priority() {
        tracing::debug!(error = %e, thread, "cannot lower an audit thread's priority");
    }
}

/// Drop the log's pages that are on disk and older than its newest `KEEP_CACHED` from the page
/// cache. The log is only ever appended to: cached, a busy gateway's log would fill the page
/// cache and evict what other programs need, and every new line would land on a page the
/// kernel had to find and zero. Dropped, the same few pages come round again (measured: 0.7
/// against 0.9-1.3 us per append). Advises `from` up to `len` less `KEEP_CACHED`, and returns
/// where that ended. `len` is the length the last fsync covered, if there is one.
fn drop_behind(file: &File, from: u64, len: u64) -> u64 {
    const PAGE: u64 = 4096;
    let upto = len.saturating_sub(KEEP_CACHED) / PAGE * PAGE;
    if upto <= from {
        return from;
    }
    // posix_fadvise is not on every Unix (macOS has none); elsewhere the kernel decides.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::fs::fadvise(
        file,
        from,
        std::num::NonZeroU64::new(upto - from),
        rustix::fs::Advice::DontNeed,
    ) {
        tracing::debug!(error = %e, "cannot drop the audit log's older pages from the page cache");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    upto
}
