//! The audit records of one request: a forwarded call's decision is in the log before the
//! vendor sees a byte of it, and every request has its one final record.
//!
//! The `AuditGuard` is created when a request arrives and travels with it. A request answered by
//! aigate itself (a deny, a refusal) has one record, written before the answer leaves
//! (`respond`). A request that goes upstream has two: its decision, written and acknowledged
//! before the first byte goes upstream (`decide`), and its outcome (`kind = "outcome"`, same
//! `id`: status, bytes, timings, error), submitted on whatever path the call ends (finished,
//! upstream error, client gone mid-stream, WebSocket closed) or when the guard is dropped. Long
//! calls add `progress` records (`progress`). A `kill -9` therefore cannot lose a call that
//! reached a vendor: its decision is in the file, and the next start gives it an
//! `outcome_lost` outcome if its own was lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::Shared;
use crate::audit::{Ack, AuditLog, AuditRecord, Kind};
use crate::config::FailMode;
use crate::provenance::capture::Tee;
use crate::tls::upstream::{BoxError, ProxyBody};

/// Submits the request's audit record exactly once: on `finish`, `commit`, `respond`, at the end
/// of an `AuditedBody`, or on drop (client gone).
pub struct AuditGuard {
    /// Boxed: the guard is moved through every stage of a request, and each stage's future
    /// holds it; inline, the record made every connection's future kilobytes larger.
    record: Box<AuditRecord>,
    audit: AuditLog,
    fail_closed: bool,
    start: Instant,
    bytes_up: Option<Arc<AtomicU64>>,
    submitted: bool,
    /// The decision record is written: the final record is the call's outcome.
    decided: bool,
    /// How often an open call writes a progress record (`audit.progress_interval`).
    progress_every: std::time::Duration,
    /// A refusal of a client nobody identified: its record is written only within the bound
    /// of audit/refusals.rs, and counted towards a summary past it.
    fold: Option<Arc<crate::audit::refusals::RefusalLog>>,
    /// The response's provenance capture: its chunks go to the tee, and its outcome record goes
    /// through the capture worker (written once the capture is recorded).
    capture: Option<Tee>,
    /// Other client connections were open when the request came: its decision waits one turn
    /// of the runtime for theirs, to share a `write(2)` (see `decide`).
    group: bool,
}

impl AuditGuard {
    pub fn new(shared: &Shared, record: AuditRecord, start: Instant) -> AuditGuard {
        let mut record = Box::new(record);
        if let Some(replica) = shared.audit.replica() {
            record.replica = Some(replica.clone());
        }
        let cfg = shared.config.load();
        AuditGuard {
            record,
            audit: shared.audit.clone(),
            fail_closed: cfg.audit.on_failure == FailMode::Closed,
            start,
            bytes_up: None,
            submitted: false,
            decided: false,
            progress_every: cfg.audit.progress_interval,
            fold: None,
            capture: None,
            group: shared.metrics.open_connections.load(Ordering::Relaxed) > 1,
        }
    }

    /// This is a refusal of a client nobody has identified (not in `allowed_clients`, no or a
    /// wrong proxy credential, a request that does not parse): an outsider can send them as
    /// fast as they like, so they are bounded (audit/refusals.rs).
    pub fn unidentified(&mut self, shared: &Shared) {
        self.fold = Some(shared.refusals.clone());
    }

    /// Capture this call's response (`[provenance]`): see `provenance::capture`.
    pub fn capture(&mut self, tee: Tee) {
        self.capture = Some(tee);
    }

    /// Hand a chunk of the response to the capture, if there is one (never waits).
    pub fn tee(&mut self, bytes: &Bytes) {
        if let Some(t) = self.capture.as_mut() {
            t.chunk(bytes);
        }
    }

    /// The capture, taken out to be fed elsewhere (the WebSocket splice), and put back after.
    pub fn take_capture(&mut self) -> Option<Tee> {
        self.capture.take()
    }

    /// Write the decision record (what is known before the call goes upstream) and wait until
    /// its line is in the file. False only if it could not be written and the gateway fails
    /// closed: then the call must not go upstream. The guard keeps the record, which becomes
    /// the call's outcome.
    ///
    /// The decision is chained at once but written after one yield to the runtime: the other
    /// calls ready on this worker seal their decisions meanwhile, and the first one back
    /// writes them all (and the outcomes queued since the last write) in one `write(2)`, not
    /// one each. With no other client connection open there is nobody to share with, and the
    /// yield (a poll of the whole connection, about 9k instructions) is skipped. Nothing goes
    /// upstream before the line is in the file.
    pub fn decide(&mut self) -> impl Future<Output = bool> + Send + use<> {
        let fail_closed = self.fail_closed;
        self.decided = true;
        self.record.duration_ms = self.elapsed_ms();
        self.record.outcome_follows = true;
        let sealed = self.audit.seal_kept(&self.record);
        self.record.outcome_follows = false;
        self.record.kind = Kind::Outcome;
        let audit = self.audit.clone();
        let group = self.group;
        async move {
            let Some(seq) = sealed else {
                return !fail_closed;
            };
            if group {
                tokio::task::yield_now().await;
            }
            audit.written(seq).await || !fail_closed
        }
    }

    /// A progress record of a call still open: the record so far, with the bytes so far
    /// (`bytes_up` from the request body's counter when there is one).
    pub fn progress(&mut self, bytes_up: Option<u64>, bytes_down: u64) {
        if !self.decided || self.submitted {
            return;
        }
        let mut r = (*self.record).clone();
        r.kind = Kind::Progress;
        r.duration_ms = self.elapsed_ms();
        r.bytes_up = bytes_up
            .or_else(|| self.bytes_up.as_ref().map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(r.bytes_up);
        r.bytes_down = bytes_down;
        self.audit.submit_deferred(r);
    }

    /// How often this call writes a progress record while it is open.
    pub fn progress_every(&self) -> std::time::Duration {
        self.progress_every
    }

    /// Hand the final record to the log: an outcome is deferred (its decision is in the file
    /// already), a single record is written now.
    fn submit(&mut self) {
        if let Some(record) = self.take() {
            if let Some(tee) = self.capture.take().filter(|_| self.decided) {
                tee.finish(record);
            } else if self.decided {
                self.audit.submit_deferred(record);
            } else {
                self.audit.submit(record);
            }
        }
    }

    pub fn rec(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    pub fn count_up(&mut self, counter: Arc<AtomicU64>) {
        self.bytes_up = Some(counter);
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Submit now, for outcomes that send the client nothing more (a tunnel's end, a refused
    /// handshake).
    pub fn finish(mut self) {
        self.submit();
    }

    /// Submit now and wait until the record is in the file. False only if it could not be
    /// written and the gateway fails closed. The record is submitted before the first poll; the
    /// future holds only the acknowledgement, so callers' futures stay small.
    pub fn commit(mut self) -> impl Future<Output = bool> + Send + use<> {
        let fail_closed = self.fail_closed;
        let ack = if self.decided {
            self.submit();
            Ack::Done(true)
        } else {
            match self.take() {
                Some(record) => self.audit.submit_acked(record),
                None => Ack::Done(true),
            }
        };
        async move { ack.await || !fail_closed }
    }

    /// Submit an answer of aigate's own (a refusal, an upstream failure) and return it once the
    /// record is written, so head and body still leave in one write. It is delivered even if
    /// the write fails: nothing went to the vendor, and the client must learn why.
    pub fn respond(
        self,
        resp: Response<ProxyBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
        let committed = self.commit();
        async move {
            committed.await;
            resp
        }
    }

    fn take(&mut self) -> Option<AuditRecord> {
        if self.submitted {
            return None;
        }
        self.submitted = true;
        self.record.duration_ms = self.elapsed_ms();
        if let Some(up) = &self.bytes_up {
            self.record.bytes_up = up.load(Ordering::Relaxed);
        }
        if let Some(fold) = &self.fold {
            if !self.decided && !fold.admit_record(&self.record) {
                return None;
            }
        }
        Some(std::mem::replace(
            &mut *self.record,
            AuditRecord::placeholder(),
        ))
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if !self.submitted {
            if self.record.error.is_none() {
                self.record.error = Some("client_gone".into());
            }
            self.submit();
        }
    }
}

enum State {
    Streaming,
    /// The inner body has ended; `held` is its last frame (if the end came with one), released
    /// when `ack` says the record is written.
    Committing {
        held: Option<Frame<Bytes>>,
        ack: Ack,
    },
    Done,
    /// The record could not be written (fail_closed): end the body with an error.
    Unwritten,
}

/// A response body on its way to the client, counting bytes and holding its audit guard. If
/// the client goes away first, dropping the guard records that.
pub struct AuditedBody<B> {
    /// Frames already read from `inner`, sent first.
    prefix: std::collections::VecDeque<Frame<Bytes>>,
    inner: B,
    guard: Option<AuditGuard>,
    /// fail_closed: a vendor's answer whose record cannot be written is not completed.
    cut_if_unwritten: bool,
    bytes: u64,
    state: State,
    /// When the next progress record is due (armed on the first poll of a forwarded call).
    progress: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AuditedBody<http_body_util::Empty<Bytes>> {
    /// A body that fails at once: a vendor answer read whole whose record could not be written
    /// by a fail-closed gateway is not delivered.
    pub fn unwritten() -> Self {
        AuditedBody {
            prefix: Default::default(),
            inner: http_body_util::Empty::new(),
            guard: None,
            cut_if_unwritten: true,
            bytes: 0,
            state: State::Unwritten,
            progress: None,
        }
    }
}

impl<B> AuditedBody<B> {
    /// The vendor's answer.
    pub fn forwarded(inner: B, guard: AuditGuard) -> AuditedBody<B> {
        AuditedBody {
            prefix: Default::default(),
            inner,
            cut_if_unwritten: guard.fail_closed,
            guard: Some(guard),
            bytes: 0,
            state: State::Streaming,
            progress: None,
        }
    }

    /// Send these frames (already read from the inner body, which has not ended) first.
    pub fn after(mut self, frames: Vec<Frame<Bytes>>) -> Self {
        for frame in frames {
            if let Some(d) = frame.data_ref() {
                self.bytes += d.len() as u64;
                if let Some(g) = self.guard.as_mut() {
                    g.tee(d);
                }
            }
            self.prefix.push_back(frame);
        }
        self
    }

    fn commit(&mut self, held: Option<Frame<Bytes>>) {
        let Some(mut guard) = self.guard.take() else {
            self.state = State::Done;
            return;
        };
        guard.rec().bytes_down = self.bytes;
        if guard.decided {
            // The decision is in the file: the outcome need not hold back the last frame.
            guard.submit();
            self.state = State::Committing {
                held,
                ack: Ack::Done(true),
            };
            return;
        }
        match guard.take() {
            Some(record) => {
                let ack = guard.audit.submit_acked(record);
                self.state = State::Committing { held, ack };
            }
            None => self.state = State::Done,
        }
    }

    /// Write a progress record each `progress_every` while the stream is open. The timer's
    /// waker brings the body back here even while the vendor sends nothing.
    fn poll_progress(&mut self, cx: &mut Context<'_>) {
        let Some(guard) = self.guard.as_mut().filter(|g| g.decided) else {
            return;
        };
        let every = guard.progress_every;
        let timer = self
            .progress
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if timer.as_mut().poll(cx).is_ready() {
            guard.progress(None, self.bytes);
            timer.as_mut().reset(Instant::now() + every);
            // Registers the waker for the next round.
            let _ = timer.as_mut().poll(cx);
        }
    }

    fn fail(&mut self, error: &str) {
        if let Some(mut g) = self.guard.take() {
            let r = g.rec();
            r.bytes_down = self.bytes;
            r.error = Some(error.into());
            g.finish();
        }
        self.state = State::Done;
    }
}

impl<B> Body for AuditedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Unwritten => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(
                        "aigate: the audit log cannot be written; the response is cut off".into(),
                    )));
                }
                State::Committing { held, ack } => {
                    let written = ready!(Pin::new(ack).poll(cx));
                    let held = held.take();
                    this.state = State::Done;
                    if !written && this.cut_if_unwritten {
                        return Poll::Ready(Some(Err(
                            "aigate: the audit log cannot be written; the response is cut off"
                                .into(),
                        )));
                    }
                    return Poll::Ready(held.map(Ok));
                }
                State::Streaming if !this.prefix.is_empty() => {
                    return Poll::Ready(this.prefix.pop_front().map(Ok));
                }
                State::Streaming => {
                    this.poll_progress(cx);
                    match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Some(d) = frame.data_ref() {
                                this.bytes += d.len() as u64;
                                if let Some(g) = this.guard.as_mut() {
                                    g.tee(d);
                                }
                            }
                            if !this.inner.is_end_stream() {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                            this.commit(Some(frame));
                        }
                        Some(Err(e)) => {
                            this.fail("upstream_reset");
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        None => this.commit(None),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Streaming => self.inner.size_hint(),
            State::Committing { held, .. } => {
                let n = held
                    .as_ref()
                    .and_then(|f| f.data_ref())
                    .map_or(0, |d| d.len() as u64);
                SizeHint::with_exact(n)
            }
            State::Done | State::Unwritten => SizeHint::with_exact(0),
        }
    }
}

impl<B> Drop for AuditedBody<B> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.rec().bytes_down = self.bytes;
        }
    }
}
