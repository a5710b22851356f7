//! Exactly one audit record per request, and on disk before the client has the whole answer.
//!
//! The `AuditGuard` is created when a request arrives and travels with it; whatever path the
//! request takes (denied, forwarded and finished, upstream error, client gone mid-stream) the
//! guard submits one record, either explicitly or when dropped. A response is not complete for
//! the client until the writer acknowledges that its record's line is in the file: aigate's own
//! answers are returned only after that (`respond`), a streamed vendor answer holds back its last
//! frame until then (`AuditedBody`). A `kill -9` at any moment therefore cannot leave a client
//! holding a complete response that has no record.

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
use crate::audit::{Ack, AuditLog, AuditRecord};
use crate::config::FailMode;
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
}

impl AuditGuard {
    pub fn new(shared: &Shared, record: AuditRecord, start: Instant) -> AuditGuard {
        AuditGuard {
            record: Box::new(record),
            audit: shared.audit.clone(),
            fail_closed: shared.config.load().audit.on_failure == FailMode::Closed,
            start,
            bytes_up: None,
            submitted: false,
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
        if let Some(record) = self.take() {
            self.audit.submit(record);
        }
    }

    /// Submit now and wait until the record is in the file. False only if it could not be
    /// written and the gateway fails closed. The record is submitted before the first poll; the
    /// future holds only the acknowledgement, so callers' futures stay small.
    pub fn commit(mut self) -> impl Future<Output = bool> + Send + use<> {
        let fail_closed = self.fail_closed;
        let ack = match self.take() {
            Some(record) => self.audit.submit_acked(record),
            None => Ack::Done(true),
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
            if let Some(record) = self.take() {
                self.audit.submit(record);
            }
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
        }
    }

    /// Send these frames (already read from the inner body, which has not ended) first.
    pub fn after(mut self, frames: Vec<Frame<Bytes>>) -> Self {
        for frame in frames {
            if let Some(d) = frame.data_ref() {
                self.bytes += d.len() as u64;
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
        match guard.take() {
            Some(record) => {
                let ack = guard.audit.submit_acked(record);
                self.state = State::Committing { held, ack };
            }
            None => self.state = State::Done,
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
                State::Streaming => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            this.bytes += d.len() as u64;
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
                },
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
