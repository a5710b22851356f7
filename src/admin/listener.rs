//! The admin listener: its own accept loop rather than `axum::serve`, so that the admin side
//! cannot knock the gateway over (issue 15: 19,990 idle connections took every file
//! descriptor and the proxy stopped accepting; a 1 byte/s slowloris stayed open).
//!
//! - At most `admin.max_connections` connections, and never more than the admin share of the
//!   descriptor limit (`fdlimit`): the rest is the proxy's. At most
//!   `admin.max_connections_per_client` from one address.
//! - A request head must arrive within `admin.header_timeout`; a connection with nothing in
//!   flight for `admin.idle_timeout` is closed.
//! - A connection over a limit, a request hyper refuses before the router sees it (two
//!   `Content-Length`s, `xchunked`, obs-fold, not HTTP/1.1), and a head cut by the header
//!   timeout are audited like a 401: through the refusal log, which bounds what an outsider can
//!   write.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;

use super::AdminState;
use crate::audit::{AuditRecord, Kind};
use crate::policy::{Action, Reason};
use crate::proxy::limits::{LimitHit, Limits};
use crate::proxy::{MAX_HEADER_BYTES, idle, new_id, serve};

/// `tls`: the listener speaks TLS (`[console.tls]`, `console/tls.rs`).
pub async fn serve(
    state: AdminState,
    router: Router,
    listener: TcpListener,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(state.clone(), router.clone(), limits.clone(), stream, peer, tls.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = crate::proxy::until_draining(&mut shutdown) => break,
        }
    }
}

async fn connection(
    state: AdminState,
    router: Router,
    limits: Arc<Limits>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _slot = match limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(hit) => return over_limit(&state, stream, peer, hit),
    };
    let Some(acceptor) = tls else {
        return serve_http(state, router, stream, peer).await;
    };
    // The handshake is held to the header timeout too: a client that opens a connection and
    // says nothing holds a slot no longer over TLS than over plain HTTP.
    let header_timeout = state.shared.config.load().admin.header_timeout;
    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => serve_http(state, router, tls_stream, peer).await,
        Ok(Err(e)) => {
            let mut r = refusal(peer, Reason::TlsHandshake, None);
            r.error = Some(format!("console TLS handshake: {e}"));
            submit_refusal(&state, r);
        }
        Err(_) => {
            let mut r = refusal(peer, Reason::TlsHandshake, None);
            r.error = Some("console TLS handshake: not done within admin.header_timeout".into());
            submit_refusal(&state, r);
        }
    }
}

/// One connection's HTTP/1.1, over TCP or TLS.
async fn serve_http<S>(state: AdminState, router: Router, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (header_timeout, idle_timeout) = {
        let cfg = state.shared.config.load();
        (cfg.admin.header_timeout, cfg.admin.idle_timeout)
    };
    let activity = idle::Activity::new();
    let watch = activity.clone();
    let progress = Progress::default();
    let marks = progress.clone();
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let token = activity.begin();
        let answer = router.clone().call(req);
        let marks = marks.clone();
        async move {
            let Ok(resp) = answer.await;
            Ok::<_, Infallible>(resp.map(|inner| Tracked {
                inner,
                _token: token,
                _answered: Answered(marks),
            }))
        }
    });
    let io = Counted {
        inner: stream,
        read: progress.read.clone(),
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let draining = state.shared.draining.clone();
    if let Err(e) = serve::until_done(conn, draining, &watch, idle_timeout).await {
        if serve::refused_by_hyper(&e) {
            let mut r = refusal(peer, Reason::BadRequest, None);
            r.error = Some(format!("http: {e}"));
            submit_refusal(&state, r);
        } else if e.is_timeout() && progress.mid_head() {
            // Part of a head arrived, not all of it, within the header timeout: a slowloris
            // (or a client too slow to serve). A keep-alive connection that sent nothing more
            // after its last answer is closed by the same timer, and is no refusal.
            let mut r = refusal(peer, Reason::BadRequest, None);
            r.error = Some(
                "header_timeout: the request head did not arrive within admin.header_timeout"
                    .into(),
            );
            submit_refusal(&state, r);
        } else {
            tracing::debug!(client = %peer, error = %e, "admin connection ended with an error");
        }
    }
}

/// Over a limit: a 503 naming it if the socket takes it at once, then closed. Nothing waits on
/// the client, so a flood costs a descriptor only for the moment of the accept.
fn over_limit(state: &AdminState, stream: TcpStream, peer: SocketAddr, hit: LimitHit) {
    let text = match hit {
        LimitHit::PerClient(n) => format!(
            "aigate admin API: too many connections from {} (limit {n}, admin.max_connections_per_client)\n",
            peer.ip()
        ),
        LimitHit::Total(n) => {
            format!("aigate admin API: at its connection limit ({n}, admin.max_connections)\n")
        }
    };
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.try_write(head.as_bytes());
    drop(stream);
    let mut r = refusal(peer, Reason::ConnectionLimit, Some(503));
    r.error = Some(text.trim_end().to_string());
    submit_refusal(state, r);
}

/// A record of an admin-leg refusal of a caller who did not authenticate.
pub(super) fn refusal(peer: SocketAddr, reason: Reason, status: Option<u16>) -> AuditRecord {
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        peer.to_string(),
        "anonymous".into(),
        String::new(),
        0,
    );
    r.action = Action::Block;
    r.reason = reason;
    r.status = status;
    r
}

/// Write the record, or count it towards its client's summary (audit/refusals.rs). No
/// status: hyper answered (400, 431) or closed without aigate's say.
pub fn submit_refusal(state: &AdminState, record: AuditRecord) {
    state.refusals.submit(&state.shared.audit, record);
}

/// An answer's body, keeping its request in flight (for `admin.idle_timeout`) until it is sent.
struct Tracked {
    inner: axum::body::Body,
    _token: idle::InFlight,
    _answered: Answered,
}

/// How far the client's bytes have been answered: all bytes read when the last answer was
/// done. Bytes read since then are the start of a head that has not completed.
#[derive(Clone, Default)]
struct Progress {
    read: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
}

impl Progress {
    fn mid_head(&self) -> bool {
        self.read.load(Ordering::Acquire) > self.answered.load(Ordering::Acquire)
    }
}

/// Marks the connection's bytes answered when an answer's body is done (or dropped).
struct Answered(Progress);

impl Drop for Answered {
    fn drop(&mut self) {
        let read = self.0.read.load(Ordering::Acquire);
        self.0.answered.store(read, Ordering::Release);
    }
}

/// The client's stream, counting the bytes read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::AcqRel);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
