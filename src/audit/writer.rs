//! The file sink: a dedicated thread that batches records, chains them, writes and fsyncs.
//!
//! The data path only pushes onto a channel; serialization, hashing and disk I/O happen here,
//! in order, so the chain is sequential without a lock on the hot path. When a write fails the
//! batch is kept and retried, the log is marked unhealthy (so a fail-closed gateway refuses
//! calls), and it recovers by itself once the disk does.
//!
//! A record can be submitted with an acknowledgement, sent once its line is in the file: the
//! proxy holds back a response's last byte until then, so a client never holds an answer whose
//! record a `kill -9` could lose. fsync runs on a second thread, back to back while there is
//! new data (group commit), so a slow disk flush never sits in front of an acknowledgement.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::oneshot;

use super::chain::{self, ChainHead};
use super::record::{AuditRecord, Kind};
use crate::config::Fsync;
use crate::metrics::Metrics;
use crate::policy::Reason;

/// Records waiting for a failing disk are capped; past this, the oldest are dropped and counted.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
const MAX_BATCH: usize = 4096;
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Sent `true` once a record's line is in the file, `false` if the write failed.
pub type Ack = oneshot::Receiver<bool>;

enum Msg {
    Record(Box<AuditRecord>, Option<oneshot::Sender<bool>>),
    Flush(mpsc::Sender<bool>),
}

#[derive(Debug, thiserror::Error)]
pub enum AuditWriterError {
    #[error("cannot open audit log {path}: {source}; check that the state directory is writable")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "audit log {path} does not verify ({problem}); move it aside (it is evidence) and start again, or fix the cause"
    )]
    Broken { path: PathBuf, problem: String },
}

/// Counters shared with the data path and metrics.
#[derive(Debug, Default)]
pub struct AuditHealth {
    healthy: AtomicBool,
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub dropped: AtomicU64,
}

/// The handle the gateway holds. Cloning shares the one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    health: Arc<AuditHealth>,
    path: Arc<PathBuf>,
}

impl AuditLog {
    /// Open (or create) the log, check the tail of the chain, and start the writer thread.
    /// `replica` names this gateway in every record when several share PostgreSQL.
    pub fn open(
        path: &Path,
        fsync: Fsync,
        metrics: Arc<Metrics>,
        replica: Option<Arc<str>>,
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
        let health = Arc::new(AuditHealth {
            healthy: AtomicBool::new(true),
            ..AuditHealth::default()
        });
        let (tx, rx) = mpsc::channel();
        if let Some(torn) = torn {
            tracing::warn!(
                path = %path.display(),
                bytes = torn.len(),
                "audit log ended in a torn write (the gateway stopped mid-write); cut off and kept in an audit_recovered record"
            );
            let _ = tx.send(Msg::Record(Box::new(recovered_record(&torn)), None));
        }
        let syncer = match fsync {
            Fsync::Batch => {
                let syncer = Arc::new(Syncer::default());
                let file = file.try_clone().map_err(open_err)?;
                let (s, h) = (syncer.clone(), health.clone());
                std::thread::Builder::new()
                    .name("aigate-audit-sync".into())
                    .spawn(move || s.run(file, &h))
                    .map_err(open_err)?;
                Some(syncer)
            }
            Fsync::Never => None,
        };
        let writer = Writer {
            replica,
            file,
            head,
            syncer,
            pending: Vec::new(),
            pending_records: 0,
            acks: Vec::new(),
            health: health.clone(),
            metrics,
        };
        std::thread::Builder::new()
            .name("aigate-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(open_err)?;
        Ok(AuditLog {
            tx,
            health,
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue one record. Never blocks the data path.
    pub fn submit(&self, record: AuditRecord) {
        if self.tx.send(Msg::Record(Box::new(record), None)).is_err() {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue one record and learn when its line is in the file (not yet fsynced: that is the
    /// background group commit). The receiver reads `false`, or an error, if it could not be.
    pub fn submit_acked(&self, record: AuditRecord) -> Ack {
        let (done, ack) = oneshot::channel();
        if self
            .tx
            .send(Msg::Record(Box::new(record), Some(done)))
            .is_err()
        {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ack
    }

    /// Whether the last write reached the disk.
    pub fn healthy(&self) -> bool {
        self.health.healthy.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &AuditHealth {
        &self.health
    }

    /// Wait until everything submitted so far is written and, with `fsync = "batch"`, fsynced.
    /// Returns false if it could not be written.
    pub fn flush_blocking(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        rx.recv().unwrap_or(false)
    }

    pub async fn flush(&self) -> bool {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush_blocking())
            .await
            .unwrap_or(false)
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

/// Wakes the fsync thread when the writer has appended something since its last fsync.
#[derive(Default)]
struct Syncer {
    state: Mutex<SyncState>,
    wake: Condvar,
}

#[derive(Default)]
struct SyncState {
    dirty: bool,
    closed: bool,
}

impl Syncer {
    fn update(&self, f: impl FnOnce(&mut SyncState)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        self.wake.notify_one();
    }

    fn run(&self, file: File, health: &AuditHealth) {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while !state.dirty && !state.closed {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if !state.dirty {
                    return;
                }
                state.dirty = false;
            }
            // Everything written before this call is covered; writes racing with it set
            // `dirty` again and get the next round.
            if let Err(e) = file.sync_data() {
                health.write_errors.fetch_add(1, Ordering::Relaxed);
                if health.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot fsync audit log; refusing calls if fail_closed");
                }
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(s) = &self.syncer {
            s.update(|st| st.closed = true);
        }
    }
}

struct Writer {
    replica: Option<Arc<str>>,
    file: File,
    head: ChainHead,
    /// `None` with `fsync = "never"`.
    syncer: Option<Arc<Syncer>>,
    /// Sealed lines not yet on disk.
    pending: Vec<u8>,
    pending_records: u64,
    /// Acknowledgements owed for the records in `pending`.
    acks: Vec<oneshot::Sender<bool>>,
    health: Arc<AuditHealth>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut flushes = Vec::new();
        loop {
            let first = if self.pending.is_empty() {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(RETRY_INTERVAL) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.write_pending();
                        break;
                    }
                }
            };
            let mut batch = 0;
            let mut next = first;
            while let Some(msg) = next {
                match msg {
                    Msg::Record(mut r, ack) => {
                        if r.replica.is_none() {
                            r.replica.clone_from(&self.replica);
                        }
                        if self.seal(&r) {
                            self.acks.extend(ack);
                        } else if let Some(ack) = ack {
                            let _ = ack.send(false);
                        }
                    }
                    Msg::Flush(done) => flushes.push(done),
                }
                batch += 1;
                next = if batch < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            let ok = self.write_pending();
            if !flushes.is_empty() {
                let ok = ok && self.sync_now();
                for done in flushes.drain(..) {
                    let _ = done.send(ok);
                }
            }
        }
    }

    /// A flush waits for the disk itself rather than for the background round.
    fn sync_now(&mut self) -> bool {
        if self.syncer.is_none() {
            return true;
        }
        match self.file.sync_data() {
            Ok(()) => true,
            Err(e) => {
                self.health.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot fsync audit log");
                false
            }
        }
    }

    /// Chain and serialize one record into `pending`; false if it was dropped.
    fn seal(&mut self, record: &AuditRecord) -> bool {
        self.metrics.observe(record);
        if self.pending.len() > MAX_PENDING_BYTES {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let seq = self.head.last_seq + 1;
        match chain::seal(record, seq, &self.head.last_hash, &mut self.pending) {
            Ok(hash) => {
                self.head.last_seq = seq;
                self.head.last_hash = hash;
                self.pending_records += 1;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize audit record");
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn write_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return self.health.healthy.load(Ordering::Relaxed);
        }
        let before = self.file.metadata().map(|m| m.len()).ok();
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.health
                    .written
                    .fetch_add(self.pending_records, Ordering::Relaxed);
                self.pending.clear();
                self.pending_records = 0;
                for ack in self.acks.drain(..) {
                    let _ = ack.send(true);
                }
                if let Some(s) = &self.syncer {
                    s.update(|st| st.dirty = true);
                }
                if !self.health.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!("audit log writable again");
                }
                true
            }
            Err(e) => {
                // A partial write would leave half a line; cut it off so the retry appends whole
                // lines and the chain stays intact.
                if let Some(len) = before {
                    let _ = self.file.set_len(len);
                }
                self.health.write_errors.fetch_add(1, Ordering::Relaxed);
                if self.health.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot write audit log; refusing calls if fail_closed");
                }
                // The records stay pending and are retried; their responses do not wait.
                for ack in self.acks.drain(..) {
                    let _ = ack.send(false);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> AuditLog {
        AuditLog::open(path, Fsync::Batch, Arc::new(Metrics::default()), None).expect("open")
    }

    fn record(id: &str) -> AuditRecord {
        AuditRecord::new(
            id.into(),
            Kind::Request,
            "127.0.0.1:1".into(),
            "alice".into(),
            "api.anthropic.com".into(),
            443,
        )
    }

    #[tokio::test]
    async fn an_acknowledged_record_is_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = open(&path);
        assert!(log.submit_acked(record("r1")).await.expect("ack"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("\"id\":\"r1\"") && text.ends_with('\n'),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_and_kept_in_the_next_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = open(&path);
        log.submit(record("r1"));
        assert!(log.flush().await);
        drop(log);
        let torn = "{\"v\":1,\"seq\":2,\"prev\":\"ab";
        let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
        f.write_all(torn.as_bytes()).expect("tear");
        drop(f);

        let log = open(&path);
        log.submit(record("r3"));
        assert!(log.flush().await);
        let text = std::fs::read_to_string(&path).expect("read");
        chain::verify(text.as_bytes()).expect("the chain verifies after recovery");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["reason"], "audit_recovered");
        assert_eq!(lines[1]["admin"]["torn_line"], torn);
        assert_eq!(lines[2]["id"], "r3");
    }
}
