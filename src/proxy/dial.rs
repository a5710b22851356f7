//! Dialling a destination, on every path that leaves the gateway: a CONNECT tunnel, an
//! absolute-form plain-HTTP request, and the upstream leg of an intercepted vendor host (the
//! pooled client and WebSocket upgrades). Each address is checked against
//! [`crate::destination`] after resolution and just before it is dialled, so the address checked
//! is the address dialled: a name that resolves to 127.0.0.1, or that a rebinding DNS server
//! answers differently the second time, cannot reach an internal service.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::audited::AuditGuard;
use super::deny;
use crate::config::Config;
use crate::destination::Denied;
use crate::host::{Host, normalise};
use crate::policy::{Action, Reason};
use crate::resolve::Resolver;
use crate::tls::upstream::ProxyBody;

/// The pooled HTTPS client for forwarded requests, dialling through the destination check.
pub type UpstreamClient = Client<HttpsConnector<Dialer>, ProxyBody>;

/// Resolves, checks and connects. Cheap to clone; reads the live config on every dial, so a
/// reload that opens or closes a destination applies to the next connection.
#[derive(Clone)]
pub struct Dialer {
    resolver: Resolver,
    config: Arc<ArcSwap<Config>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Every address the destination resolved to is internal and not opened by config.
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connect timed out")]
    Timeout,
}

impl Dialer {
    pub fn new(resolver: Resolver, config: Arc<ArcSwap<Config>>) -> Dialer {
        Dialer { resolver, config }
    }

    /// A TCP connection to `host:port`, to one of its permitted addresses.
    pub async fn dial(&self, host: &Host, port: u16) -> Result<TcpStream, DialError> {
        let addrs = match host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(n) => self.resolver.lookup(n, port).await?,
        };
        let cfg = self.config.load();
        let mut denied = None;
        let permitted: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match cfg.destinations.check(host.as_name(), *a) {
                Ok(()) => true,
                Err(d) => {
                    denied.get_or_insert(d);
                    false
                }
            })
            .collect();
        if permitted.is_empty() {
            return Err(match denied {
                Some(d) => DialError::Denied(d),
                None => io::Error::new(io::ErrorKind::NotFound, "no address").into(),
            });
        }
        let stream = tokio::time::timeout(
            cfg.upstream.connect_timeout,
            TcpStream::connect(&permitted[..]),
        )
        .await
        .map_err(|_| DialError::Timeout)??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// The connector under the pooled client: the same check as a tunnel's dial.
impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bad = || io::Error::new(io::ErrorKind::InvalidInput, "URL without a host");
            let host = normalise(uri.host().ok_or_else(bad)?).map_err(|_| bad())?;
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            Ok(TokioIo::new(this.dial(&host, port).await?))
        })
    }
}

/// The refused destination behind an upstream client error, if that is why it failed.
pub fn denied_in(err: &(dyn std::error::Error + 'static)) -> Option<Denied> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(DialError::Denied(d)) = e.downcast_ref::<DialError>() {
            return Some(*d);
        }
        source = e.source();
    }
    None
}

/// The refusal of an internal destination, on any path: `403`, reason `destination_denied`,
/// recorded as a block. The message names the address and the key that opens it.
pub async fn refuse(
    mut guard: AuditGuard,
    id: &str,
    target: &str,
    denied: Denied,
    format: Option<crate::config::ErrorFormat>,
) -> Response<ProxyBody> {
    let r = guard.rec();
    r.action = Action::Block;
    r.reason = Reason::DestinationDenied;
    r.status = Some(StatusCode::FORBIDDEN.as_u16());
    r.error = Some(format!("destination_denied: {}", denied.addr));
    let text = format!("aigate: {target} refused: {denied}");
    let resp = match format {
        Some(f) => deny::destination_denied(f, &text, id),
        None => deny::proxy_response(StatusCode::FORBIDDEN, Reason::DestinationDenied, id, &text),
    };
    guard.respond(resp).await
}
