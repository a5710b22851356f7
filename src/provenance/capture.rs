//! Capture off the hot path: the forwarding path tees each response's chunks into a bounded
//! queue, and worker threads run the reassembler on them.
//!
//! The client's stream is never slowed or held for a capture. A chunk is `Bytes` (a refcount,
//! no copy) handed over with a non-blocking send; when the queue already holds `queue` chunks,
//! or `queue_bytes` bytes of chunks (a few huge responses must not hold unbounded memory),
//! that response's capture is dropped whole (a capture with a hole in it would be a lie about
//! what the model produced), counted in `aigate_provenance_dropped_total`, and its outcome
//! record says `provenance = "dropped"`.
//!
//! The call's outcome record travels through the worker: the worker finishes the reassembly,
//! records the capture in the ledger, and only then writes the outcome with what became of the
//! capture. So an outcome record that says `captured` is never ahead of its capture. Captures
//! that finish together are recorded together (group commit): the worker keeps finished
//! captures while more messages are waiting, up to `BATCH_MAX` or `BATCH_DELAY`, then records
//! them in one ledger commit, written to the operating system without an fsync; the sync thread
//! (`durable`) fsyncs the ledger at most every 100 ms and writes their outcomes after it.
//! Chunks count against the bound; the three control messages of a response (start, end,
//! abandon) do not, so a full queue can never strand a worker's state or an outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::durable::{self, SyncThread};
use super::websocket::Deframer;
use super::{ApiShape, Capture, Limits, Reassembler};
use crate::audit::record::ProvenanceMark;
use crate::audit::{AuditLog, AuditRecord};
use crate::config::{ProvenanceConfig, WorkerPriority};
use crate::metrics::Metrics;

/// How a response's bytes arrive.
#[derive(Debug, Clone)]
pub enum Transport {
    /// An HTTP body: SSE or JSON as `content_type` says, encoded as `content_encoding` says.
    Http {
        content_type: Option<String>,
        content_encoding: Option<String>,
    },
    /// The server's side of a WebSocket, raw frames as spliced (`permessage-deflate` when the
    /// handshake agreed it; `no_context_takeover` when the server resets its window per message).
    WebSocket {
        deflate: bool,
        no_context_takeover: bool,
    },
}

/// What a worker tells the recorder about a finished capture: the call's outcome record (for
/// the ledger entry's user, tool, vendor, …) and the output.
pub trait Recorder: Send + Sync {
    /// Record the capture; the number of fingerprints written, or why it failed.
    fn record(&self, record: &AuditRecord, capture: &Capture) -> Result<u64, String>;

    /// Record several captures, durably together (one commit) where the store allows; one
    /// result per capture, in order.
    fn record_batch(&self, batch: &[(&AuditRecord, &Capture)]) -> Vec<Result<u64, String>> {
        batch.iter().map(|(r, c)| self.record(r, c)).collect()
    }

    /// Everything recorded so far on disk: `record_batch` may leave the fsync to this, which
    /// the sync thread calls at most every `durable::SYNC_EVERY`.
    fn sync(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether `record_batch` leaves the fsync to [`Recorder::sync`]: then the outcome records
    /// wait for the sync thread.
    fn defers_sync(&self) -> bool {
        false
    }
}

/// Finished captures recorded in one ledger commit at most: bounds the outcome records held back.
const BATCH_MAX: usize = 256;
/// The longest a finished capture waits for others to share its commit while the worker is busy
/// (when the queue is empty it is committed at once).
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

enum Msg {
    Start {
        key: u64,
        shape: ApiShape,
        transport: Transport,
    },
    Chunk {
        key: u64,
        bytes: Bytes,
    },
    /// The tee dropped this response's capture (queue full): forget it.
    Abandon {
        key: u64,
    },
    End {
        key: u64,
        record: Box<AuditRecord>,
    },
    Stop,
}

/// The capture pipeline of one gateway: the queue, its workers and their counters.
pub struct Capturer {
    workers: Vec<Sender<Msg>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Bytes of the chunks in `queued`.
    queued_bytes: Arc<AtomicUsize>,
    capacity_bytes: usize,
    next: AtomicU64,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    hold: Arc<Hold>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Outcome records handed to a worker and not yet written.
    ending: Arc<AtomicUsize>,
    /// The sync thread (with a recorder): its queue, its thread and its test hold.
    sync: Option<SyncThread>,
    sync_hold: Arc<Hold>,
}

/// `provenance.worker_priority = "low"`: the calling worker thread under `SCHED_IDLE`, so at
/// full load the data path keeps the core and a full queue drops captures instead (measured in
/// docs/provenance.md, "Capture cost"). The index runs it starts inherit it.
fn lower_priority() {
    if let Err(e) = crate::background::idle_priority() {
        tracing::warn!(error = %e, "provenance.worker_priority = \"low\": cannot put the capture worker at idle priority");
    }
}

/// Lets tests stop a thread of the pipeline (a slow worker, a late sync, made certain).
#[derive(Default)]
pub(super) struct Hold {
    held: Mutex<bool>,
    released: Condvar,
}

impl Hold {
    pub(super) fn set(&self, held: bool) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
        self.released.notify_all();
    }

    pub(super) fn wait(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Capturer {
    /// Start `cfg.workers` worker threads behind a queue of `cfg.queue` chunks and
    /// `cfg.queue_bytes` bytes.
    pub fn start(
        cfg: &ProvenanceConfig,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        recorder: Option<Arc<dyn Recorder>>,
    ) -> std::io::Result<Arc<Capturer>> {
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let ending = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(Hold::default());
        let sync_hold = Arc::new(Hold::default());
        let priority = cfg.worker_priority;
        let sync = match recorder.as_ref().filter(|r| r.defers_sync()) {
            Some(recorder) => Some(SyncThread::start(
                recorder.clone(),
                audit.clone(),
                metrics.clone(),
                ending.clone(),
                sync_hold.clone(),
                move || {
                    if priority == WorkerPriority::Low {
                        lower_priority();
                    }
                },
            )?),
            None => None,
        };
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let (tx, rx) = channel();
            let worker = Worker {
                rx,
                queued: queued.clone(),
                queued_bytes: queued_bytes.clone(),
                audit: audit.clone(),
                metrics: metrics.clone(),
                hold: hold.clone(),
                ending: ending.clone(),
                recorder: recorder.clone(),
                synced: sync.as_ref().map(SyncThread::sender),
                limits: Limits {
                    capture_thinking: cfg.thinking,
                    ..Limits::default()
                },
                open: HashMap::new(),
                finished: Vec::new(),
                first_finished: None,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("aigate-capture-{i}"))
                    .spawn(move || {
                        if priority == WorkerPriority::Low {
                            lower_priority();
                        }
                        worker.run()
                    })?,
            );
            workers.push(tx);
        }
        Ok(Arc::new(Capturer {
            workers,
            queued,
            capacity: cfg.queue.max(1),
            queued_bytes,
            capacity_bytes: cfg.queue_bytes.max(1),
            next: AtomicU64::new(0),
            audit,
            metrics,
            hold,
            threads: Mutex::new(threads),
            ending,
            sync,
            sync_hold,
        }))
    }

    /// Begin capturing one response. The returned tee takes its chunks and, at the end, its
    /// outcome record.
    pub fn tee(self: &Arc<Self>, shape: ApiShape, transport: Transport) -> Tee {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let worker = (key % self.workers.len() as u64) as usize;
        let mut tee = Tee {
            key,
            worker,
            capturer: self.clone(),
            state: TeeState::Live,
        };
        if self.workers[worker]
            .send(Msg::Start {
                key,
                shape,
                transport,
            })
            .is_err()
        {
            tee.state = TeeState::Dropped;
        }
        tee
    }

    /// A response that will not be captured, whose outcome must still say so.
    pub fn unreadable(self: &Arc<Self>) -> Tee {
        Tee {
            key: 0,
            worker: 0,
            capturer: self.clone(),
            state: TeeState::Unreadable,
        }
    }

    /// A place in the queue for one chunk of `len` bytes, if there is one (in both bounds).
    fn admit(&self, len: usize) -> bool {
        let counted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if !counted {
            return false;
        }
        let sized = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(len)
                    .filter(|&total| total <= self.capacity_bytes)
            })
            .is_ok();
        if !sized {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        sized
    }

    /// Give back a chunk's place (taken by the worker, or never sent).
    fn release(&self, len: usize) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Whether outcome records are still on their way through a worker (tests wait for none
    /// before reading the log back).
    pub fn outcomes_in_transit(&self) -> usize {
        self.ending.load(Ordering::Acquire)
    }

    /// Test hook: while held, the workers take nothing from the queue.
    #[doc(hidden)]
    pub fn hold_workers(&self, held: bool) {
        self.hold.set(held);
    }

    /// Test hook: while held, the sync thread neither fsyncs the ledger nor writes the outcome
    /// records waiting for it.
    #[doc(hidden)]
    pub fn hold_sync(&self, held: bool) {
        self.sync_hold.set(held);
    }

    /// Let the workers finish what is queued (outcome records included), then stop them and the
    /// sync thread, which syncs what they recorded and writes its outcomes. Waits at most
    /// `timeout`; what is left after it is lost with the process, as on a kill.
    pub fn stop(&self, timeout: std::time::Duration) {
        self.hold_workers(false);
        self.hold_sync(false);
        for w in &self.workers {
            let _ = w.send(Msg::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = std::time::Instant::now() + timeout;
        let join = |t: JoinHandle<()>| {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("provenance capture workers did not finish in time");
            }
        };
        // The workers first: their last commits' outcomes reach the sync thread before its stop.
        threads.into_iter().for_each(join);
        if let Some(t) = self.sync.as_ref().and_then(SyncThread::stop) {
            join(t);
        }
    }
}

enum TeeState {
    Live,
    /// Finished: the outcome record has been handed on.
    Done,
    /// The queue was full (or the workers are gone): nothing more is sent.
    Dropped,
    Unreadable,
}

/// One response's end of the queue, held by the forwarding path.
pub struct Tee {
    key: u64,
    worker: usize,
    capturer: Arc<Capturer>,
    state: TeeState,
}

impl Tee {
    /// Hand a chunk of the response to the capture, without waiting and without copying.
    pub fn chunk(&mut self, bytes: &Bytes) {
        if !matches!(self.state, TeeState::Live) || bytes.is_empty() {
            return;
        }
        let c = &self.capturer;
        if !c.admit(bytes.len()) {
            self.abandon();
            return;
        }
        let sent = c.workers[self.worker].send(Msg::Chunk {
            key: self.key,
            bytes: bytes.clone(),
        });
        if sent.is_err() {
            c.release(bytes.len());
            self.abandon();
        }
    }

    fn abandon(&mut self) {
        self.state = TeeState::Dropped;
        let c = &self.capturer;
        c.metrics.provenance_dropped.fetch_add(1, Ordering::Relaxed);
        let _ = c.workers[self.worker].send(Msg::Abandon { key: self.key });
    }

    /// The response has ended (or broken off): the outcome record goes through the worker,
    /// which writes it once the capture is recorded; a dropped capture's goes out now.
    pub fn finish(mut self, mut record: AuditRecord) {
        let state = std::mem::replace(&mut self.state, TeeState::Done);
        let c = &self.capturer;
        match state {
            TeeState::Live => {
                let end = Msg::End {
                    key: self.key,
                    record: Box::new(record),
                };
                c.ending.fetch_add(1, Ordering::AcqRel);
                match c.workers[self.worker].send(end) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError(msg)) => {
                        c.ending.fetch_sub(1, Ordering::AcqRel);
                        // The workers have stopped (shutdown): the outcome is not lost with them.
                        let Msg::End { record: r, .. } = msg else {
                            return;
                        };
                        record = *r;
                        c.metrics.provenance_dropped.fetch_add(1, Ordering::Relaxed);
                        record.provenance = Some(ProvenanceMark::Dropped);
                    }
                }
            }
            TeeState::Dropped => record.provenance = Some(ProvenanceMark::Dropped),
            TeeState::Unreadable | TeeState::Done => {
                record.provenance = Some(ProvenanceMark::Unreadable)
            }
        }
        c.audit.submit_deferred(record);
    }
}

impl Drop for Tee {
    /// A tee dropped without its outcome (a task cancelled mid-splice) frees its worker state.
    fn drop(&mut self) {
        if matches!(self.state, TeeState::Live) {
            let _ = self.capturer.workers[self.worker].send(Msg::Abandon { key: self.key });
        }
    }
}

struct Worker {
    rx: Receiver<Msg>,
    queued: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    hold: Arc<Hold>,
    ending: Arc<AtomicUsize>,
    recorder: Option<Arc<dyn Recorder>>,
    /// The sync thread's queue: outcome records of a commit wait there for the ledger's fsync.
    synced: Option<Sender<durable::Msg>>,
    limits: Limits,
    open: HashMap<u64, Job>,
    /// Captures finished and not yet recorded, with their outcome records (the group commit).
    finished: Vec<(AuditRecord, Option<Capture>)>,
    first_finished: Option<std::time::Instant>,
}

enum Job {
    Http(Reassembler),
    WebSocket(Deframer, Reassembler),
    Unreadable,
}

impl Worker {
    fn run(mut self) {
        loop {
            // Block only with nothing held back; otherwise take what is waiting, and record
            // the finished captures once nothing is.
            let msg = if self.finished.is_empty() {
                match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => {
                        self.flush();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            self.hold.wait();
            match msg {
                Msg::Start {
                    key,
                    shape,
                    transport,
                } => {
                    let job = match transport {
                        Transport::Http {
                            content_type,
                            content_encoding,
                        } => match Reassembler::new(
                            shape,
                            content_type.as_deref(),
                            content_encoding.as_deref(),
                            self.limits,
                        ) {
                            Ok(r) => Job::Http(r),
                            Err(_) => Job::Unreadable,
                        },
                        Transport::WebSocket {
                            deflate,
                            no_context_takeover,
                        } => Job::WebSocket(
                            Deframer::new(
                                deflate,
                                no_context_takeover,
                                self.limits.max_pending_bytes,
                            ),
                            Reassembler::for_messages(shape, self.limits),
                        ),
                    };
                    self.open.insert(key, job);
                }
                Msg::Chunk { key, bytes } => {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    self.queued_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
                    match self.open.get_mut(&key) {
                        Some(Job::Http(r)) => r.push(&bytes),
                        Some(Job::WebSocket(d, r)) => d.push(&bytes, &mut |m| r.push_message(m)),
                        Some(Job::Unreadable) | None => {}
                    }
                }
                Msg::Abandon { key } => {
                    self.open.remove(&key);
                }
                Msg::End { key, record } => self.end(key, *record),
                Msg::Stop => break,
            }
            if self.finished.len() >= BATCH_MAX
                || self
                    .first_finished
                    .is_some_and(|t| t.elapsed() >= BATCH_DELAY)
            {
                self.flush();
            }
        }
        self.flush();
    }

    fn end(&mut self, key: u64, mut record: AuditRecord) {
        let capture = match self.open.remove(&key) {
            Some(Job::Http(r)) => Some(r.finish()),
            Some(Job::WebSocket(d, r)) => {
                let mut c = r.finish();
                if d.dropped() > 0 {
                    c.dropped += d.dropped();
                    c.truncated = true;
                }
                Some(c)
            }
            Some(Job::Unreadable) => None,
            // Abandoned, then ended: the tee marked it already; nothing to do but write.
            None => {
                record.provenance = Some(ProvenanceMark::Dropped);
                None
            }
        };
        if let Some(capture) = &capture {
            let chars: usize = capture.parts.iter().map(|p| p.text.chars().count()).sum();
            record.provenance_chars = Some(chars as u64);
        } else if record.provenance.is_none() {
            record.provenance = Some(ProvenanceMark::Unreadable);
        }
        self.first_finished
            .get_or_insert_with(std::time::Instant::now);
        self.finished.push((record, capture));
    }

    /// Record the finished captures in one commit, then write their outcome records.
    fn flush(&mut self) {
        self.first_finished = None;
        if self.finished.is_empty() {
            return;
        }
        let finished = std::mem::take(&mut self.finished);
        let mut results = match &self.recorder {
            Some(rec) => {
                let batch: Vec<(&AuditRecord, &Capture)> = finished
                    .iter()
                    .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
                    .collect();
                if batch.is_empty() {
                    Vec::new()
                } else {
                    rec.record_batch(&batch)
                }
            }
            None => Vec::new(),
        }
        .into_iter();
        let mut outcomes = Vec::with_capacity(finished.len());
        for (mut record, capture) in finished {
            if capture.is_some() {
                let recorded = if self.recorder.is_some() {
                    results
                        .next()
                        .unwrap_or_else(|| Err("the recorder gave no result".into()))
                        .map(Some)
                } else {
                    Ok(None)
                };
                match recorded {
                    Ok(n) => {
                        record.provenance = Some(ProvenanceMark::Captured);
                        record.provenance_fingerprints = n;
                        self.metrics
                            .provenance_captured
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %record.id, error = %e, "provenance ledger write failed");
                        record.provenance = Some(ProvenanceMark::Unrecorded);
                    }
                }
            }
            outcomes.push(record);
        }
        self.write_after_sync(outcomes);
    }

    /// The outcome records of one commit, written once the ledger has synced it: by the sync
    /// thread, or here (after a sync of its own) should that thread be gone.
    fn write_after_sync(&self, outcomes: Vec<AuditRecord>) {
        let recorded = outcomes
            .iter()
            .any(|r| r.provenance == Some(ProvenanceMark::Captured));
        let outcomes = match &self.synced {
            Some(tx) if recorded => match durable::hand_over(tx, outcomes) {
                Ok(()) => return,
                Err(back) => back,
            },
            _ => outcomes,
        };
        let synced = match &self.recorder {
            Some(rec) if recorded && rec.defers_sync() => rec.sync(),
            _ => Ok(()),
        };
        durable::write(outcomes, synced, &self.audit, &self.metrics, &self.ending);
    }
}

/// The API shape of a model call, from its path; `None` for paths that carry no model output
/// (model lists, file uploads, token counts are harmless either way).
pub fn shape_for(path: &str) -> Option<ApiShape> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last = segments.last().copied().unwrap_or("");
    if segments.windows(2).any(|w| w == ["v1", "messages"])
        || (segments.first() == Some(&"model")
            && matches!(last, "invoke" | "invoke-with-response-stream"))
        || segments
            .windows(2)
            .any(|w| w == ["publishers", "anthropic"])
    {
        return Some(ApiShape::AnthropicMessages);
    }
    if last.ends_with(":generateContent") || last.ends_with(":streamGenerateContent") {
        return Some(ApiShape::Gemini);
    }
    if segments.windows(2).any(|w| w == ["chat", "completions"]) {
        return Some(ApiShape::OpenAiChat);
    }
    if last == "responses" {
        return Some(ApiShape::OpenAiResponses);
    }
    None
}

/// Whether a response's `Content-Type` is one the reassembler reads: SSE, Bedrock's AWS event
/// stream, or JSON (also when a vendor leaves it out).
pub fn readable_content_type(ct: Option<&str>) -> bool {
    let Some(ct) = ct else { return true };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "text/event-stream"
        || media == super::frame::EVENT_STREAM
        || media == "application/json"
        || media.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_vendor_paths() {
        let cases = [
            ("/v1/messages", Some(ApiShape::AnthropicMessages)),
            (
                "/v1/messages?beta=<redacted>",
                Some(ApiShape::AnthropicMessages),
            ),
            (
                "/model/anthropic.claude-v2/invoke",
                Some(ApiShape::AnthropicMessages),
            ),
            (
                "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude:rawPredict",
                Some(ApiShape::AnthropicMessages),
            ),
            ("/v1/responses", Some(ApiShape::OpenAiResponses)),
            (
                "/backend-api/codex/responses",
                Some(ApiShape::OpenAiResponses),
            ),
            ("/v1/chat/completions", Some(ApiShape::OpenAiChat)),
            ("/api/v1/chat/completions", Some(ApiShape::OpenAiChat)),
            (
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                Some(ApiShape::Gemini),
            ),
            (
                "/v1beta/models/gemini-2.5-pro:generateContent",
                Some(ApiShape::Gemini),
            ),
            ("/v1/models", None),
            ("/v1/files", None),
        ];
        for (path, want) in cases {
            assert_eq!(shape_for(path), want, "{path}");
        }
    }

    #[test]
    fn sse_json_and_the_bedrock_event_stream_are_readable_and_others_are_not() {
        assert!(readable_content_type(Some(
            "text/event-stream; charset=utf-8"
        )));
        assert!(readable_content_type(Some("application/json")));
        assert!(readable_content_type(None));
        assert!(readable_content_type(Some(
            "application/vnd.amazon.eventstream"
        )));
        assert!(!readable_content_type(Some("application/octet-stream")));
        assert!(!readable_content_type(Some("audio/mpeg")));
    }
}
