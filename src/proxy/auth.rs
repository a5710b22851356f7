//! Proxy authentication: who is calling, from `Proxy-Authorization` or the client's address, and
//! the audited `407` when that fails. Both CONNECT and absolute-form requests pass through here
//! before anything is dialled, so an unauthenticated client never reaches a destination.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Shared;
use super::accept::{record, refuse};
use crate::audit::Kind;
use crate::config::Config;
use crate::identify::Identity;
use crate::identify::user::IdentitySource;
use crate::identify::user::{self, AuthFailure};
use crate::policy::Reason;
use crate::tls::upstream::ProxyBody;

pub(super) fn identify_user(
    cfg: &Config,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Result<Identity, AuthFailure> {
    let header = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    user::resolve(
        &cfg.identity.directory,
        &cfg.identity.source_addresses,
        cfg.identity.require_auth,
        header,
        peer.ip(),
    )
}

pub(super) async fn auth_refusal(
    shared: &Shared,
    peer: SocketAddr,
    host: String,
    port: u16,
    failure: AuthFailure,
) -> Response<ProxyBody> {
    // A wrong credential is recorded under the name it tried (not authenticated: the reason says
    // so), so "someone is guessing alice's token" is visible; the token itself never is.
    let who = match &failure {
        AuthFailure::Wrong { user: Some(tried) } => Identity {
            user: tried.clone(),
            source: IdentitySource::ProxyAuth,
            ..Identity::anonymous()
        },
        _ => Identity::anonymous(),
    };
    let (id, mut guard) = record(shared, Kind::Tunnel, peer, &who, host, port);
    // Anyone can try a credential, or none, as often as they like: bounded per client.
    guard.unidentified(shared);
    let (code, reason, text) = match failure {
        AuthFailure::Missing => (
            "proxy_auth_missing",
            Reason::ProxyAuth,
            "aigate: proxy authentication required; set your proxy URL to http://USER:TOKEN@host:port",
        ),
        AuthFailure::Wrong { .. } => (
            "proxy_auth_wrong",
            Reason::ProxyAuthWrong,
            "aigate: proxy credentials not accepted; check the user and token in your proxy URL",
        ),
    };
    guard.rec().error = Some(code.into());
    refuse(
        guard,
        &id,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        reason,
        None,
        text,
    )
    .await
}
