//! The file sink: a dedicated thread that batches records, chains them, writes and fsyncs.
//!
//! The data path only pushes onto a channel; serialization, hashing and disk I/O happen here,
//! in order, so the chain is sequential without a lock on the hot path. When a write fails the
//! batch is kept and retried, the log is marked unhealthy (so a fail-closed gateway refuses
//! calls), and it recovers by itself once the disk does.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::chain::{self, ChainHead};
use super::record::AuditRecord;
use crate::config::Fsync;
use crate::metrics::Metrics;

/// Records waiting for a failing disk are capped; past this, the oldest are dropped and counted.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
const MAX_BATCH: usize = 4096;
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

enum Msg {
    Record(Box<AuditRecord>),
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
    pub fn open(
        path: &Path,
        fsync: Fsync,
        metrics: Arc<Metrics>,
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
        let head = tail_head(&mut file).map_err(|problem| AuditWriterError::Broken {
            path: path.to_path_buf(),
            problem,
        })?;
        let health = Arc::new(AuditHealth {
            healthy: AtomicBool::new(true),
            ..AuditHealth::default()
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            file,
            head,
            fsync,
            pending: Vec::new(),
            pending_records: 0,
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
        if self.tx.send(Msg::Record(Box::new(record))).is_err() {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the last write reached the disk.
    pub fn healthy(&self) -> bool {
        self.health.healthy.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &AuditHealth {
        &self.health
    }

    /// Wait until everything submitted so far is written (and fsynced, by policy).
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

/// Find where the chain ends. A torn last line (crash mid-write) is left in place, as evidence,
/// and the chain continues from the last whole record on a new line.
fn tail_head(file: &mut File) -> Result<ChainHead, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Ok(ChainHead::default());
    }
    // The last record is well under 1 MiB; read the tail, not the whole file.
    let start = len.saturating_sub(1024 * 1024);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    BufReader::new(&mut *file)
        .read_to_end(&mut tail)
        .map_err(|e| e.to_string())?;
    let torn = !tail.ends_with(b"\n");
    if torn {
        file.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    let text = String::from_utf8_lossy(&tail);
    let mut lines = text.split('\n').filter(|l| !l.is_empty()).rev();
    if torn {
        lines.next();
    }
    #[derive(serde::Deserialize)]
    struct Tail {
        seq: u64,
        hash: String,
    }
    match lines.next() {
        None => Ok(ChainHead::default()),
        Some(line) => match serde_json::from_str::<Tail>(line) {
            Ok(t) => Ok(ChainHead {
                records: t.seq,
                last_seq: t.seq,
                last_hash: t.hash,
            }),
            Err(_) => Err("its last whole line is not an audit record".to_string()),
        },
    }
}

struct Writer {
    file: File,
    head: ChainHead,
    fsync: Fsync,
    /// Sealed lines not yet on disk.
    pending: Vec<u8>,
    pending_records: u64,
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
                    Msg::Record(r) => self.seal(&r),
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
            for done in flushes.drain(..) {
                let _ = done.send(ok);
            }
        }
    }

    fn seal(&mut self, record: &AuditRecord) {
        self.metrics.observe(record);
        if self.pending.len() > MAX_PENDING_BYTES {
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = self.head.last_seq + 1;
        match chain::seal(record, seq, &self.head.last_hash, &mut self.pending) {
            Ok(hash) => {
                self.head.last_seq = seq;
                self.head.last_hash = hash;
                self.pending_records += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize audit record");
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn write_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return self.health.healthy.load(Ordering::Relaxed);
        }
        let before = self.file.metadata().map(|m| m.len()).ok();
        let result = self
            .file
            .write_all(&self.pending)
            .and_then(|()| match self.fsync {
                Fsync::Batch => self.file.sync_data(),
                Fsync::Never => Ok(()),
            });
        match result {
            Ok(()) => {
                self.health
                    .written
                    .fetch_add(self.pending_records, Ordering::Relaxed);
                self.pending.clear();
                self.pending_records = 0;
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
                false
            }
        }
    }
}
