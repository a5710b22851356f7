//! The proxy listener: one HTTP/1.1 server per client connection, answering `CONNECT` and
//! absolute-form plain-HTTP requests. Everything that is refused here (bad target, a raw IP, a
//! vendor on another port) is audited here; proxy authentication is `auth`, dialling is `dial`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::audited::AuditGuard;
use super::classify::{Route, classify};
use super::connect::{Target, parse_authority, parse_target};
use super::limits::{LimitHit, Slot};
use super::pipeline::{self, ConnCtx, Scheme};
use super::{MAX_HEADER_BYTES, Shared, auth, deny, dial, intercept, new_id, tunnel};
use crate::audit::{AuditRecord, Kind};
use crate::catalog::AiHostAction;
use crate::identify::Identity;
use crate::policy::{Action, Reason};
use crate::tls::upstream::ProxyBody;

pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let span = tracing::debug_span!("conn", client = %peer);
                    tokio::spawn(serve_client(shared, stream, peer).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn serve_client(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    if !client_allowed(&shared.config.load().allowed_clients, peer) {
        return refuse_client(&shared, &mut stream, peer).await;
    }
    let slot = match shared.limits.acquire(peer.ip()) {
        Ok(slot) => Arc::new(slot),
        Err(hit) => return over_limit(&shared, &mut stream, peer, hit).await,
    };
    let _open = crate::metrics::ConnectionGauge::new(shared.metrics.clone());
    let draining = shared.draining.clone();
    let _ = stream.set_nodelay(true);
    let (header_timeout, idle_timeout) = {
        let cfg = shared.config.load();
        (cfg.header_timeout, cfg.idle_timeout)
    };
    let activity = super::idle::Activity::new();
    let watch = activity.clone();
    let shared_for_refusal = shared.clone();
    let service = service_fn(move |req| {
        super::idle::handling(
            &activity,
            proxy_request(shared.clone(), peer, slot.clone(), req),
        )
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // A request in flight finishes before the connection closes; an idle keep-alive closes now.
    tokio::pin!(conn);
    let result = super::serve::until_done(conn, draining, &watch, idle_timeout).await;
    if let Err(e) = result {
        if super::serve::refused_by_hyper(&e) {
            let (_, mut guard) = unidentified(&shared_for_refusal, peer, String::new());
            let r = guard.rec();
            r.action = Action::Block;
            r.reason = Reason::BadRequest;
            r.error = Some(format!("http: {e}"));
            guard.finish();
        } else {
            tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
        }
    }
}

/// Whether `peer` may use the proxy port: `gateway.allowed_clients` lists its network, or the
/// list is empty. IPv4-mapped IPv6 peers (a dual-stack listener) are judged as IPv4.
fn client_allowed(allowed: &[ipnet::IpNet], peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    allowed.is_empty() || allowed.iter().any(|n| n.contains(&ip))
}

/// Answer a client outside `gateway.allowed_clients` with a plain 403 and close, before it can
/// send a request: an open proxy on a reachable address is a way into the network behind it.
async fn refuse_client(shared: &Shared, stream: &mut TcpStream, peer: SocketAddr) {
    let text = format!(
        "aigate: client {} may not use this gateway; ask IT to add its network to gateway.allowed_clients\n",
        peer.ip()
    );
    refuse_connection(
        shared,
        stream,
        peer,
        StatusCode::FORBIDDEN,
        Reason::ClientDenied,
        &text,
    )
    .await;
}

/// Answer a connection over its limit with a plain 503 that says which limit, and close it.
async fn over_limit(shared: &Shared, stream: &mut TcpStream, peer: SocketAddr, hit: LimitHit) {
    let text = match hit {
        LimitHit::PerClient(n) => format!(
            "aigate: too many connections from {} (limit {n}); close idle connections, or ask IT to raise gateway.max_connections_per_client\n",
            peer.ip()
        ),
        LimitHit::Total(n) => format!(
            "aigate: the gateway is at its connection limit ({n}); retry shortly, or ask IT to raise gateway.max_connections\n"
        ),
    };
    refuse_connection(
        shared,
        stream,
        peer,
        StatusCode::SERVICE_UNAVAILABLE,
        Reason::ConnectionLimit,
        &text,
    )
    .await;
}

/// A refusal written on the raw connection before any HTTP is read: recorded, then sent, then
/// the connection is closed.
async fn refuse_connection(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
    status: StatusCode,
    reason: Reason,
    text: &str,
) {
    use tokio::io::AsyncWriteExt;
    let (id, mut guard) = unidentified(shared, peer, String::new());
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nx-aigate-decision: block\r\nx-aigate-reason: {reason}\r\nx-aigate-request-id: {id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        text.len()
    );
    let r = guard.rec();
    r.action = Action::Block;
    r.reason = reason;
    r.status = Some(status.as_u16());
    if !guard.commit().await {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(head.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn proxy_request(
    shared: Arc<Shared>,
    peer: SocketAddr,
    slot: Arc<Slot>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if super::head_too_large(req.uri(), req.headers()) {
        let (id, mut guard) = unidentified(&shared, peer, String::new());
        guard.rec().error = Some("header_too_large".into());
        let resp = refuse(
            guard,
            &id,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::BadRequest,
            None,
            "aigate: the request's headers are larger than 64 KiB",
        );
        return Ok(resp.await);
    }
    if req.method() == Method::CONNECT {
        Ok(connect(shared, peer, slot, req).await)
    } else {
        Ok(absolute(shared, peer, req).await)
    }
}

/// A record for something decided on the proxy leg.
pub(super) fn record(
    shared: &Shared,
    kind: Kind,
    peer: SocketAddr,
    user: &Identity,
    host: String,
    port: u16,
) -> (String, AuditGuard) {
    let id = new_id();
    let mut rec = AuditRecord::new(
        id.clone(),
        kind,
        peer.to_string(),
        user.user.clone(),
        host,
        port,
    );
    rec.user_source = Some(user.source);
    rec.policy_version = Some(shared.config.load().version.clone());
    (id, AuditGuard::new(shared, rec, Instant::now()))
}

/// A record for a refusal before the client is identified (refused by address, by proxy
/// authentication, or before a request could be read): bounded per client (audit/refusals.rs).
pub(super) fn unidentified(
    shared: &Shared,
    peer: SocketAddr,
    host: String,
) -> (String, AuditGuard) {
    let (id, mut guard) = record(shared, Kind::Tunnel, peer, &Identity::anonymous(), host, 0);
    guard.unidentified(shared);
    (id, guard)
}

pub(super) async fn refuse(
    mut guard: AuditGuard,
    id: &str,
    status: StatusCode,
    reason: Reason,
    vendor: Option<Arc<str>>,
    text: &str,
) -> Response<ProxyBody> {
    let r = guard.rec();
    r.action = Action::Block;
    r.reason = reason;
    r.vendor = vendor;
    r.status = Some(status.as_u16());
    guard
        .respond(deny::proxy_response(status, reason, id, text))
        .await
}

async fn connect(
    shared: Arc<Shared>,
    peer: SocketAddr,
    slot: Arc<Slot>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let cfg = shared.config.load_full();
    let raw_target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let target = match parse_target(&raw_target) {
        Ok(t) => t,
        Err(e) => {
            let (id, guard) = unidentified(&shared, peer, raw_target.chars().take(256).collect());
            return refuse(
                guard,
                &id,
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                None,
                &format!("aigate: bad CONNECT target: {e}"),
            )
            .await;
        }
    };
    let identity = match auth::identify_user(&cfg, peer, &req) {
        Ok(i) => i,
        Err(f) => {
            return auth::auth_refusal(&shared, peer, target.host.to_string(), target.port, f)
                .await;
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    match classify(&cfg, &target) {
        Route::Refuse { reason, vendor } => {
            let (id, guard) = record(
                &shared,
                Kind::Tunnel,
                peer,
                &identity,
                target.host.to_string(),
                target.port,
            );
            let text = format!(
                "aigate: CONNECT to {}:{} refused: {}",
                target.host,
                target.port,
                reason.explanation()
            );
            refuse(guard, &id, StatusCode::FORBIDDEN, reason, vendor, &text).await
        }
        Route::Intercept(vendor) => {
            let open = crate::metrics::ConnectionGauge::new(shared.metrics.clone());
            tokio::spawn(async move {
                // The tunnel keeps the client's connection slot and gauge until it ends.
                let _open = (open, slot);
                match on_upgrade.await {
                    Ok(upgraded) => {
                        intercept::intercept(shared, upgraded, peer, target, vendor, identity).await
                    }
                    Err(e) => tracing::debug!(client = %peer, error = %e, "CONNECT upgrade failed"),
                }
            });
            Response::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
        Route::AiHost(group) if group.action == AiHostAction::Block => {
            let (id, mut guard) = record(
                &shared,
                Kind::Tunnel,
                peer,
                &identity,
                target.host.to_string(),
                target.port,
            );
            let side = shared
                .recent_tools
                .recent(&identity.user, shared.clock.now());
            let r = guard.rec();
            r.ai_host = Some(group.id.clone());
            r.side_call_tool = side;
            let text = format!(
                "aigate: CONNECT to {}:{} refused: {} (group \"{}\", blocked by ai_hosts policy)",
                target.host,
                target.port,
                Reason::AiHost.explanation(),
                group.id
            );
            refuse(
                guard,
                &id,
                StatusCode::FORBIDDEN,
                Reason::AiHost,
                None,
                &text,
            )
            .await
        }
        route @ (Route::Tunnel | Route::AiHost(_)) => {
            let (id, mut guard) = record(
                &shared,
                Kind::Tunnel,
                peer,
                &identity,
                target.host.to_string(),
                target.port,
            );
            // A model API outside inspection is AI traffic, never an anonymous tunnel.
            let (decision, reason) = match route {
                Route::AiHost(group) => {
                    let side = shared
                        .recent_tools
                        .recent(&identity.user, shared.clock.now());
                    let r = guard.rec();
                    r.ai_host = Some(group.id.clone());
                    r.side_call_tool = side;
                    r.action = Action::Monitor;
                    ("monitor", Reason::AiHost)
                }
                _ => ("allow", Reason::NotVendor),
            };
            guard.rec().reason = reason;
            let upstream = match shared.dialer.dial(&target.host, target.port).await {
                Ok(s) => s,
                Err(dial::DialError::Denied(d)) => {
                    let shown = format!("CONNECT to {}:{}", target.host, target.port);
                    return dial::refuse(guard, &id, &shown, d, None).await;
                }
                Err(e) => {
                    let r = guard.rec();
                    r.error = Some(format!("upstream_connect: {e}"));
                    r.status = Some(502);
                    return guard
                        .respond(deny::proxy_response(
                            StatusCode::BAD_GATEWAY,
                            reason,
                            &id,
                            &format!(
                                "aigate: cannot connect to {}:{}: {e}",
                                target.host, target.port
                            ),
                        ))
                        .await;
                }
            };
            guard.rec().status = Some(200);
            let open = crate::metrics::ConnectionGauge::new(shared.metrics.clone());
            tokio::spawn(async move {
                // The tunnel keeps the client's connection slot and gauge until it ends.
                let _open = (open, slot);
                match on_upgrade.await {
                    Ok(upgraded) => {
                        tunnel::tunnel(upgraded, upstream, guard, cfg, target.host).await
                    }
                    Err(_) => {
                        guard.rec().error = Some("client_gone".into());
                        guard.finish();
                    }
                }
            });
            let mut resp = Response::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            );
            deny::annotate(resp.headers_mut(), decision, reason, &id);
            resp
        }
    }
}

/// `GET http://host/path` through the proxy.
async fn absolute(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let cfg = shared.config.load_full();
    let uri = req.uri().clone();
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.as_str().to_string(),
        _ => {
            let (id, guard) = unidentified(&shared, peer, String::new());
            return refuse(
                guard,
                &id,
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                None,
                "aigate is a forward proxy: use CONNECT host:443 for HTTPS, or an absolute http:// URL",
            ).await;
        }
    };
    let (host, port) = match parse_authority(&authority) {
        Ok((h, p)) => (h, p.unwrap_or(80)),
        Err(e) => {
            let (id, guard) = unidentified(&shared, peer, authority.chars().take(256).collect());
            return refuse(
                guard,
                &id,
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                None,
                &format!("aigate: bad host in URL: {e}"),
            )
            .await;
        }
    };
    let identity = match auth::identify_user(&cfg, peer, &req) {
        Ok(i) => i,
        Err(f) => return auth::auth_refusal(&shared, peer, host.to_string(), port, f).await,
    };
    // A vendor over plain HTTP would never be inspected: identify it, then refuse it.
    if let Some(vendor) = host.as_name().and_then(|n| cfg.vendor_for(n)).cloned() {
        let conn = Arc::new(ConnCtx::new(
            peer,
            host,
            port,
            vendor,
            identity,
            Scheme::Http,
        ));
        return pipeline::handle(shared, conn, req)
            .await
            .unwrap_or_else(|never| match never {});
    }
    match classify(
        &cfg,
        &Target {
            host: host.clone(),
            port,
        },
    ) {
        Route::Refuse { reason, vendor } => {
            let (id, guard) = record(
                &shared,
                Kind::Tunnel,
                peer,
                &identity,
                host.to_string(),
                port,
            );
            let text = format!(
                "aigate: request to {host}:{port} refused: {}",
                reason.explanation()
            );
            refuse(guard, &id, StatusCode::FORBIDDEN, reason, vendor, &text).await
        }
        Route::AiHost(group) if group.action == AiHostAction::Block => {
            let (id, mut guard) = record(
                &shared,
                Kind::Tunnel,
                peer,
                &identity,
                host.to_string(),
                port,
            );
            guard.rec().ai_host = Some(group.id.clone());
            let text = format!(
                "aigate: request to {host}:{port} refused: {} (group \"{}\", blocked by ai_hosts policy)",
                Reason::AiHost.explanation(),
                group.id
            );
            refuse(
                guard,
                &id,
                StatusCode::FORBIDDEN,
                Reason::AiHost,
                None,
                &text,
            )
            .await
        }
        _ => pipeline::passthrough(shared, peer, identity, host, port, req).await,
    }
}
