//! Terminate the client's TLS for a vendor host and serve its HTTP/1.1 or HTTP/2 requests.
//!
//! The ClientHello is read before any certificate is chosen: its SNI must name the CONNECT host
//! (a client that CONNECTs to one name and asks TLS for another is fronting). The leaf comes from
//! the authority's cache; ALPN offers h2 and http/1.1.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::Shared;
use super::audited::AuditGuard;
use super::connect::Target;
use super::pipeline::{self, ConnCtx, Scheme};
use super::serve::until_done;
use super::{MAX_HEADER_BYTES, new_id};
use crate::audit::{AuditRecord, Kind};
use crate::config::Vendor;
use crate::host::normalise;
use crate::identify::Identity;
use crate::policy::{Action, Reason};

pub async fn intercept(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    client: SocketAddr,
    target: Target,
    vendor: Arc<Vendor>,
    identity: Identity,
) {
    let (header_timeout, idle_timeout) = {
        let cfg = shared.config.load();
        (cfg.header_timeout, cfg.idle_timeout)
    };
    // Boxed: the handshake's state is freed once it is done instead of staying in the
    // connection's task for as long as the connection is open.
    let handshake = Box::pin(handshake(
        &shared, upgraded, client, &target, &vendor, &identity,
    ));
    let Some(tls) = handshake.await else {
        return;
    };

    let conn = Arc::new(ConnCtx::new(
        client,
        target.host,
        target.port,
        vendor,
        identity,
        Scheme::Https,
    ));
    let shared_draining = shared.draining.clone();
    // For a request hyper refuses before the pipeline sees it.
    let (refusal, refusal_shared) = (conn.clone(), shared.clone());
    let activity = super::idle::Activity::new();
    let watch = activity.clone();
    let service = service_fn(move |req| {
        super::idle::handling(
            &activity,
            pipeline::handle(shared.clone(), conn.clone(), req),
        )
    });
    // ALPN decides the protocol (RFC 9113 requires it for h2 over TLS), so the connection's
    // task holds only the state of the one it speaks. HTTP/2 is boxed: its state would
    // otherwise size every HTTP/1.1 connection's task.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(tls);
    let result = if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        let mut conn = Box::pin(builder.serve_connection(io, service));
        until_done(conn.as_mut(), shared_draining, &watch, idle_timeout).await
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        until_done(conn, shared_draining, &watch, idle_timeout).await
    };
    if let Err(e) = result {
        if super::serve::refused_by_hyper(&e) {
            let mut record = AuditRecord::new(
                new_id(),
                Kind::Request,
                refusal.client.to_string(),
                refusal.identity.user.clone(),
                refusal.host.to_string(),
                refusal.port,
            );
            record.user_source = Some(refusal.identity.source);
            record.vendor = Some(refusal.vendor.id.clone());
            record.policy_version = Some(refusal_shared.config.load().version.clone());
            record.action = Action::Block;
            record.reason = Reason::BadRequest;
            record.error = Some(format!("http: {e}"));
            AuditGuard::new(&refusal_shared, record, Instant::now()).finish();
        } else {
            tracing::debug!(error = %e, "intercepted connection ended with an error");
        }
    }
}

/// The client's TLS handshake, under `handshake_timeout`, with the SNI checked against the
/// CONNECT host. A refusal is audited here and gives `None`.
async fn handshake(
    shared: &Arc<Shared>,
    upgraded: Upgraded,
    client: SocketAddr,
    target: &Target,
    vendor: &Arc<Vendor>,
    identity: &Identity,
) -> Option<TlsStream<TokioIo<Upgraded>>> {
    let start = Instant::now();
    let handshake_timeout = shared.config.load().handshake_timeout;
    let fail = |reason: Reason, error: String| {
        let mut record = AuditRecord::new(
            new_id(),
            Kind::Request,
            client.to_string(),
            identity.user.clone(),
            target.host.to_string(),
            target.port,
        );
        record.user_source = Some(identity.source);
        record.vendor = Some(vendor.id.clone());
        record.action = if reason == Reason::ClientClosedTls {
            Action::Abandoned
        } else {
            Action::Block
        };
        record.reason = reason;
        record.error = Some(error);
        AuditGuard::new(shared, record, start).finish();
        None
    };

    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
    let handshake = match tokio::time::timeout(handshake_timeout, acceptor).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return fail(handshake_failure(&e), format!("client_tls: {e}")),
        Err(_) => {
            return fail(
                Reason::TlsHandshake,
                "client_tls: handshake timed out".into(),
            );
        }
    };
    if let Some(sni) = handshake.client_hello().server_name() {
        if normalise(sni).ok().as_ref() != Some(&target.host) {
            tracing::warn!(client = %client, target = %target.host, "SNI differs from CONNECT host; refused");
            return fail(Reason::SniMismatch, "sni_mismatch".into());
        }
    }
    let config = match shared.ca.server_config(&target.host) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot mint a certificate");
            return fail(Reason::TlsHandshake, format!("mint: {e}"));
        }
    };
    match tokio::time::timeout(handshake_timeout, handshake.into_stream(config)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => fail(handshake_failure(&e), format!("client_tls: {e}")),
        Err(_) => fail(
            Reason::TlsHandshake,
            "client_tls: handshake timed out".into(),
        ),
    }
}

/// Who ended a failed handshake. The client closing or resetting its connection, or sending
/// an alert, is its own doing (the real Copilot CLI closes some of its handshakes): recorded
/// apart from the gateway's refusals (bytes that are not TLS, which rustls answers with an
/// alert of its own).
fn handshake_failure(e: &std::io::Error) -> Reason {
    use std::io::ErrorKind;
    let client_ended = match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => true,
        _ => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls| matches!(tls, rustls::Error::AlertReceived(_))),
    };
    if client_ended {
        Reason::ClientClosedTls
    } else {
        Reason::TlsHandshake
    }
}
