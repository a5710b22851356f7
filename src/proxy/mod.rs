//! THE DATA PATH. One file per stage, in the order a request meets them:
//!
//! ```text
//! client ──CONNECT host:443──▶ accept ─▶ connect (parse + normalise target) ─▶ auth (proxy credentials)
//!                                    └▶ classify target ─┬─ not a vendor host ─▶ dial ─▶ tunnel (bytes untouched) ─▶ audit(kind=tunnel)
//!                                                        ├─ refused (IP literal, vendor on another port…) ─▶ deny ─▶ audit
//!                                                        └─ vendor host ─▶ intercept: TLS with a minted leaf cert
//!                                                               │            (SNI must equal the CONNECT host)
//!                                                               ▼ per HTTP request (HTTP/1.1 or HTTP/2 stream)
//!                                              pipeline: identify (user, tool, workflow, vendor, model)
//!                                                               ▼
//!                                              policy::decide(call, exemptions, now) -> Decision
//!                                                  ├─ allow / monitor ─▶ [decision record, in the file] ─▶ forward upstream (rustls, streamed)
//!                                                  │                        ├─ [progress record every audit.progress_interval while open]
//!                                                  │                        └─ [outcome record on every exit: status, bytes, timings, error]
//!                                                  └─ block ───────────▶ deny response in the vendor's error format
//!                                                                           └─ [one record, in the file before the answer leaves]
//!                                                               ▼
//!                                              audit: the AuditGuard (audited) travels with the request and writes
//!                                              its records; a start after a kill adds `outcome_lost` outcomes
//! ```
//!
//! A forwarded call's decision is written before its first byte goes upstream (issue 15), so a
//! `kill -9` cannot lose a call that reached a vendor; its outcome rides on the next write.
//!
//! Plain-HTTP absolute-form requests enter at `accept` and join at `pipeline`.

pub mod accept;
pub mod audited;
pub mod auth;
pub mod classify;
pub mod connect;
pub mod deny;
pub mod dial;
pub mod forward;
pub mod idle;
pub mod intercept;
pub mod late;
pub mod limits;
pub mod pipeline;
pub mod serve;
pub mod tunnel;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::exemptions::Snapshot;
use crate::tls::CertificateAuthority;

/// Where "now" comes from. Injectable so tests can move time past an exemption's expiry.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Everything the data path shares, built once by `App::start`.
pub struct Shared {
    pub config: Arc<ArcSwap<Config>>,
    pub ca: CertificateAuthority,
    pub upstream: dial::UpstreamClient,
    /// For WebSocket upgrades, which need a dedicated HTTP/1.1 connection.
    pub ws_tls: tokio_rustls::TlsConnector,
    /// Every connection out of the gateway is dialled here, through the destination check.
    pub dialer: dial::Dialer,
    pub audit: AuditLog,
    pub exemptions: Arc<ArcSwap<Snapshot>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Turns true when the gateway starts draining: connections finish what they are doing.
    pub draining: tokio::sync::watch::Receiver<bool>,
    pub limits: Arc<limits::Limits>,
    /// Tools each named user was recently identified with: side-channel tells on AI-host tunnels.
    pub recent_tools: crate::side_calls::RecentTools,
    /// Refusals of clients nobody has identified yet, bounded (audit/refusals.rs).
    pub refusals: Arc<crate::audit::refusals::RefusalLog>,
    /// The exemption request loop: a blocked call's deny message links to a draft.
    pub requests: Arc<crate::requests::Requests>,
    /// Provenance capture (`[provenance]`): the tee's queue and its workers; `None` when off
    /// at start.
    pub provenance: Option<Arc<crate::provenance::capture::Capturer>>,
    /// The provenance ledger the capture writes (and the admin API reads); `None` when off.
    pub ledger: Option<Arc<dyn crate::provenance::ledger::Ledger>>,
}

/// Request headers beyond this are refused (431) on both legs, so nothing larger than the proxy
/// leg accepts is ever passed on to a vendor.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Whether a parsed request head is over `MAX_HEADER_BYTES`. hyper's `max_buf_size` bounds
/// its read buffer, not the head: a head that arrives in one large read can be parsed whole
/// past it. So the limit is checked again on what was parsed.
pub fn head_too_large(uri: &http::Uri, headers: &http::HeaderMap) -> bool {
    let target = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    target + fields > MAX_HEADER_BYTES
}

/// A fresh request or tunnel id: UUIDv7, so ids sort by time in the audit log.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Resolves once the gateway starts draining (never, if it is dropped without draining).
pub async fn until_draining(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
