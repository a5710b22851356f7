//! One intercepted request, from headers to the single audit record.
//!
//! identify (user from the connection, tool, workflow, model) -> decide -> deny or forward.
//! The `AuditGuard` (audited.rs) is created first and travels with the request.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::audited::AuditGuard;
use super::connect::parse_authority;
use super::deny::{self, DenyContext};
use super::late::{self, LateScan};
use super::{Shared, forward, new_id};
use crate::audit::{AuditRecord, Kind};
use crate::config::{FailMode, Vendor};
use crate::host::Host;
use crate::identify::body_stream::{self, BodyStream};
use crate::identify::tools::{RequestFacts, UNKNOWN_TOOL};
use crate::identify::{Identity, identify_tool, model, normalise, workflow};
use crate::policy::{self, Action, Call, Decision, Reason};
use crate::tls::upstream::{BoxError, ProxyBody};

/// How the client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Inside an intercepted CONNECT tunnel.
    Https,
    /// A plain-HTTP absolute-form request.
    Http,
}

/// What is known about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    pub client: SocketAddr,
    pub host: Host,
    /// `client` and `host` as the records spell them, formatted once per connection instead
    /// of once per request; derived in `new`, so they cannot disagree with the fields.
    client_str: String,
    host_str: String,
    pub port: u16,
    pub vendor: Arc<Vendor>,
    pub identity: Identity,
    pub scheme: Scheme,
}

impl ConnCtx {
    pub fn new(
        client: SocketAddr,
        host: Host,
        port: u16,
        vendor: Arc<Vendor>,
        identity: Identity,
        scheme: Scheme,
    ) -> ConnCtx {
        ConnCtx {
            client,
            client_str: client.to_string(),
            host_str: host.to_string(),
            host,
            port,
            vendor,
            identity,
            scheme,
        }
    }
}

/// The request body after the peek: the frames already read, then the rest, counted, and
/// searched on its way for body signals the peek did not have (`late`).
pub struct ReplayBody {
    peeked: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    sent: Arc<AtomicU64>,
    /// Boxed: most bodies end within the peek and carry none.
    late: Option<Box<LateScan>>,
}

/// The error that ends an upstream request body when a late body signal blocks it.
#[derive(Debug)]
struct LateBodySignal;

impl std::fmt::Display for LateBodySignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request cancelled: a blocked tool's signal later in the body")
    }
}

impl std::error::Error for LateBodySignal {}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let from_rest = this.peeked.is_empty();
        let frame = match this.peeked.pop_front() {
            Some(f) => Some(Ok(f)),
            None => match this.rest.as_mut() {
                None => None,
                Some(rest) => match Pin::new(rest).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        this.rest = None;
                        None
                    }
                    Poll::Ready(Some(r)) => Some(r.map_err(BoxError::from)),
                },
            },
        };
        if let (Some(Ok(f)), Some(late)) = (&frame, this.late.as_mut()) {
            // Only frames after the peek: the peek was searched when the request was decided.
            if from_rest && f.data_ref().is_some_and(|d| late.blocks(d)) {
                this.rest = None;
                this.late = None;
                return Poll::Ready(Some(Err(BoxError::from(LateBodySignal))));
            }
        }
        if let Some(Ok(f)) = &frame {
            if let Some(d) = f.data_ref() {
                this.sent.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let peeked: u64 = self
            .peeked
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + peeked);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + peeked);
        }
        hint
    }
}

/// Read up to `limit` bytes of the body (whole frames), keeping them for replay.
async fn peek(body: Incoming, limit: usize) -> Result<(Bytes, ReplayBody), hyper::Error> {
    let mut frames = VecDeque::new();
    let mut seen = 0usize;
    let mut body = (!body.is_end_stream()).then_some(body);
    while seen < limit {
        let Some(b) = body.as_mut() else { break };
        match b.frame().await {
            None => body = None,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len();
                }
                frames.push_back(frame);
            }
        }
    }
    let datas: Vec<&Bytes> = frames.iter().filter_map(|f| f.data_ref()).collect();
    let prefix = match datas.as_slice() {
        [] => Bytes::new(),
        [one] => (*one).clone(),
        many => {
            let mut buf = BytesMut::with_capacity(seen);
            for d in many {
                buf.extend_from_slice(d);
            }
            buf.freeze()
        }
    };
    Ok((
        prefix,
        ReplayBody {
            peeked: frames,
            rest: body,
            sent: Arc::new(AtomicU64::new(0)),
            late: None,
        },
    ))
}

/// The host a request names must be the host its connection was opened for: otherwise a
/// client could CONNECT to an allowed name and send requests for another (domain fronting,
/// HTTP/2 connection coalescing).
fn authority_matches(parts: &Parts, conn: &ConnCtx) -> bool {
    let default_port = match conn.scheme {
        Scheme::Https => 443,
        Scheme::Http => 80,
    };
    let check = |authority: &str| {
        // The usual case, the name exactly as normalised, needs no parsing.
        if let Host::Name(name) = &conn.host {
            let (h, p) = authority.rsplit_once(':').unwrap_or((authority, ""));
            let port_ok = if p.is_empty() {
                conn.port == default_port
            } else {
                p.parse::<u16>() == Ok(conn.port)
            };
            if h == name && port_ok {
                return true;
            }
        }
        match parse_authority(authority) {
            Ok((host, port)) => host == conn.host && port.unwrap_or(default_port) == conn.port,
            Err(_) => false,
        }
    };
    let mut any = false;
    if let Some(a) = parts.uri.authority() {
        any = true;
        if !check(a.as_str()) {
            return false;
        }
    }
    for h in parts.headers.get_all(header::HOST) {
        any = true;
        match h.to_str() {
            Ok(v) if check(v) => {}
            _ => return false,
        }
    }
    any
}

/// What the request's `Upgrade` header asks for, judged on every value: each field line and
/// each comma-separated protocol in it. Reading only the first let `Upgrade: websocket` followed
/// by `Upgrade: h2c` (or `websocket, h2c`) carry an h2c upgrade to the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    WebSocket,
    Refused,
}

fn upgrade_of(headers: &http::HeaderMap) -> Upgrade {
    let mut seen = false;
    for value in headers.get_all(header::UPGRADE) {
        let Ok(text) = value.to_str() else {
            return Upgrade::Refused;
        };
        for protocol in text.split(',') {
            if !protocol.trim().eq_ignore_ascii_case("websocket") {
                return Upgrade::Refused;
            }
            seen = true;
        }
    }
    if seen {
        Upgrade::WebSocket
    } else {
        Upgrade::None
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let cfg = shared.config.load_full();
    let id = new_id();
    let mut guard = AuditGuard::new(
        &shared,
        AuditRecord::new(
            id.clone(),
            Kind::Request,
            conn.client_str.clone(),
            conn.identity.user.clone(),
            conn.host_str.clone(),
            conn.port,
        ),
        start,
    );
    let (parts, body) = req.into_parts();
    {
        let r = guard.rec();
        r.user_source = Some(conn.identity.source);
        r.vendor = Some(conn.vendor.id.clone());
        r.policy_version = Some(cfg.version.clone());
        r.method = Some(parts.method.to_string());
        r.path = Some(crate::audit::redact::path_for_log(
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        ));
    }
    let format = deny::format_for(conn.vendor.error_format, parts.uri.path());

    let refuse = |mut guard: AuditGuard, reason: Reason, status: StatusCode| {
        let decision = Decision::refused(reason);
        let ctx = DenyContext {
            request_id: &id,
            tool_name: "this client",
            tool: "unknown",
            workflow: "untagged",
            user: &conn.identity.user,
            vendor_name: &conn.vendor.name,
            exemption_url: "",
            rule: None,
            claim: None,
            link: None,
            request_status: None,
        };
        let mut resp = deny::deny(format, status, &decision, &ctx);
        if reason == Reason::BadRequest {
            // Whatever follows a malformed request on this connection cannot be trusted.
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        let r = guard.rec();
        r.action = Action::Block;
        r.reason = reason;
        r.status = Some(status.as_u16());
        guard.respond(resp)
    };

    if super::head_too_large(&parts.uri, &parts.headers) {
        guard.rec().error = Some("header_too_large".into());
        return Ok(refuse(
            guard,
            Reason::BadRequest,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        )
        .await);
    }

    if !authority_matches(&parts, &conn) {
        return Ok(refuse(guard, Reason::HostMismatch, StatusCode::MISDIRECTED_REQUEST).await);
    }

    let websocket = match upgrade_of(&parts.headers) {
        Upgrade::None => false,
        Upgrade::WebSocket => true,
        Upgrade::Refused => {
            return Ok(refuse(guard, Reason::UpgradeRefused, StatusCode::FORBIDDEN).await);
        }
    };

    let (prefix, replay) = match peek(body, cfg.body_peek_bytes).await {
        Ok(p) => p,
        Err(_) => {
            guard.rec().error = Some("client_body".into());
            return Ok(refuse(guard, Reason::BadRequest, StatusCode::BAD_REQUEST).await);
        }
    };

    // The peek as the signatures read it: its Content-Encoding undone, within the limit.
    let encoding = normalise::content_encoding(&parts.headers);
    let prefix = match normalise::decode_body(&encoding, &prefix, normalise::MAX_DECODED_PEEK) {
        Ok(Cow::Borrowed(_)) => prefix,
        Ok(Cow::Owned(decoded)) => Bytes::from(decoded),
        Err(e) => {
            tracing::info!(error = %e, "request body not decodable; refused");
            guard.rec().error = Some(e.code().into());
            return Ok(refuse(guard, Reason::BodyUndecodable, StatusCode::BAD_REQUEST).await);
        }
    };

    match route(
        &shared, &cfg, &conn, parts, prefix, replay, &mut guard, id, websocket,
    ) {
        Ok(exchange) => Ok(forward::forward(&shared, exchange, guard).await),
        Err(resp) => Ok(guard.respond(resp).await),
    }
}

/// The request loop's part of a deny message (issue 16): a link to a request draft for an
/// exemptable block, and the state of an open request for the same user, tool and workflow.
/// Nothing when `policy.exemption_url` is set (the company's own portal wins).
#[expect(
    clippy::too_many_arguments,
    reason = "the blocked call's facts, from the pipeline and the late re-decision"
)]
pub(super) fn deny_extras(
    shared: &Shared,
    cfg: &crate::config::Config,
    conn: &ConnCtx,
    record_id: &str,
    tool: &str,
    tool_name: &str,
    workflow: &str,
    decision: &Decision,
    rule: Option<&policy::Rule>,
) -> crate::requests::DenyExtras {
    if !decision.exemptable || !cfg.exemption_url.is_empty() {
        return crate::requests::DenyExtras::default();
    }
    let facts = crate::requests::DraftFacts {
        record_id,
        user: &conn.identity.user,
        anonymous: &*conn.identity.user == crate::identify::user::ANONYMOUS,
        tool,
        tool_name,
        vendor: &conn.vendor.id,
        vendor_name: &conn.vendor.name,
        workflow,
        rule: decision.rule.as_deref(),
        rule_description: rule.and_then(|r| r.description.as_deref()),
        exemptable: decision.exemptable,
    };
    shared.requests.deny_extras(cfg, &facts, shared.clock.now())
}

/// Identify, decide and either build the upstream exchange or aigate's own answer. Not async,
/// so that none of its locals (tool match, decision, body prefix) is kept in the connection's
/// future while the answer streams.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the request's pieces after the body peek"
)]
#[expect(
    clippy::result_large_err,
    reason = "returned once per request and consumed at once, never stored"
)]
fn route(
    shared: &Arc<Shared>,
    cfg: &Arc<crate::config::Config>,
    conn: &Arc<ConnCtx>,
    parts: Parts,
    prefix: Bytes,
    mut replay: ReplayBody,
    guard: &mut AuditGuard,
    id: String,
    websocket: bool,
) -> Result<forward::Exchange, Response<ProxyBody>> {
    // Identify, on the normalised request (identify/normalise.rs); `prefix` is already decoded.
    let path = normalise::path(parts.uri.path());
    // The deny's shape follows the path the vendor would serve (`//v1/messages` is Anthropic's).
    let format = deny::format_for(conn.vendor.error_format, &path);
    let body_text = normalise::fold_json_escapes(&prefix);
    let facts = RequestFacts {
        vendor: &conn.vendor.id,
        path: &path,
        headers: &parts.headers,
        body_prefix: &body_text,
        body_later: &[],
    };
    let tool = identify_tool(&cfg.tools, &facts);
    shared
        .recent_tools
        .note(&conn.identity.user, &tool.tool, shared.clock.now());
    // The path as sent first: a Bedrock ARN's `%2F` is part of the model id, not a segment.
    let model = model::from_body(&prefix)
        .or_else(|| model::from_path(parts.uri.path()))
        .or_else(|| model::from_path(&path));
    let wf = workflow::workflow(
        &parts.headers,
        &cfg.identity.workflow_header,
        &cfg.policy.workflows,
        workflow::Claimant {
            user: &conn.identity.user,
            groups: &conn.identity.groups,
            default: conn.identity.default_workflow.as_deref(),
        },
    );

    // Decide.
    let call = Call {
        tool: &tool.tool,
        vendor: &conn.vendor.id,
        workflow: &wf.tag,
        user: &conn.identity.user,
        groups: &conn.identity.groups,
        model: model.as_deref(),
        untrusted_workflow: wf.untrusted,
        side_call: conn
            .vendor
            .side_calls
            .matches(&parts.method, &path, websocket),
    };
    let snapshot = shared.exemptions.load();
    let mut decision = policy::decide(&cfg.policy, &call, &snapshot, shared.clock.now());
    let mut status = StatusCode::FORBIDDEN;
    if conn.scheme == Scheme::Http {
        decision = Decision::refused(Reason::PlainHttpVendor);
    } else if decision.action != Action::Block
        && cfg.audit.on_failure == FailMode::Closed
        && !shared.audit.healthy()
    {
        decision = Decision::refused(Reason::AuditUnavailable);
        status = StatusCode::SERVICE_UNAVAILABLE;
    }

    {
        let r = guard.rec();
        r.tool = Some(tool.tool.clone());
        r.tool_confidence = Some(tool.confidence);
        r.evidence = tool.evidence.clone();
        r.tool_conflicts = tool.conflicts.clone();
        r.tool_conflict_evidence = tool.conflict_evidence.clone();
        if &*tool.tool == UNKNOWN_TOOL || !tool.conflicts.is_empty() {
            r.user_agent = parts
                .headers
                .get(header::USER_AGENT)
                .map(|ua| crate::audit::redact::user_agent_for_log(ua.as_bytes()));
        }
        r.model = model.clone();
        r.workflow = Some(wf.tag.clone());
        r.workflow_source = Some(wf.source);
        r.workflow_claimed = wf.claimed.clone();
        r.workflow_reason = wf.untrusted.map(Reason::from);
        r.action = decision.action;
        r.reason = decision.reason;
        r.rule = decision.rule.clone();
        r.exemption = decision.exemption.clone();
        r.would_block = decision.would_block();
    }

    if decision.action == Action::Block {
        let rule = decision
            .rule
            .as_deref()
            .and_then(|name| cfg.policy.rules.iter().find(|r| &*r.name == name));
        let extras = deny_extras(
            shared, cfg, conn, &id, &tool.tool, &tool.name, &wf.tag, &decision, rule,
        );
        let ctx = DenyContext {
            request_id: &id,
            tool_name: &tool.name,
            tool: &tool.tool,
            workflow: &wf.tag,
            user: &conn.identity.user,
            vendor_name: &conn.vendor.name,
            exemption_url: &cfg.exemption_url,
            rule,
            claim: wf.claimed.as_deref().zip(wf.untrusted),
            link: extras.link.as_deref(),
            request_status: extras.status.as_deref(),
        };
        // The tool's deny status, else the vendor's, unless the audit log made it a 503.
        if status == StatusCode::FORBIDDEN {
            status = deny::status_for(cfg, &tool.tool, &conn.vendor);
        }
        let resp = deny::deny(format, status, &decision, &ctx);
        guard.rec().status = Some(status.as_u16());
        return Err(resp);
    }

    let upstream_uri = if conn.port == 443 {
        format!(
            "https://{}{}",
            conn.host_str,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        )
    } else {
        format!(
            "https://{}:{}{}",
            conn.host_str,
            conn.port,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        )
    };
    if replay.rest.is_some() && !websocket {
        let (todo, in_prefix) = late::split_signals(cfg, &body_text);
        if !todo.is_empty() {
            // The rest is searched as the peek was: decoded and escape-folded. The stream is
            // fed the raw peek first, so its decoders stand where the rest begins.
            let raw_peek = replay.peeked.iter().filter_map(|f| f.data_ref());
            let stream = BodyStream::new(
                &normalise::content_encoding(&parts.headers),
                body_stream::MAX_DECODED_BODY,
            )
            .and_then(|mut s| {
                let mut searched = Vec::new();
                for d in raw_peek {
                    searched.extend(s.push(d)?);
                }
                Ok((s, searched))
            });
            let inputs = late::Inputs {
                shared: shared.clone(),
                cfg: cfg.clone(),
                conn: conn.clone(),
                headers: parts.headers.clone(),
                path: path.to_string(),
                workflow: wf.tag.clone(),
                claim: wf.claimed.clone().zip(wf.untrusted),
                model: model.clone(),
                request_id: id.clone(),
                format,
                in_prefix,
            };
            replay.late = Some(Box::new(LateScan::new(todo, stream, inputs)));
        }
    }
    let label = decision.action.as_str();
    // A signed workflow header stays: removing it would break the client's SigV4 signature.
    let wf_header = &cfg.identity.workflow_header;
    let strip = if parts.headers.contains_key(wf_header)
        && crate::identify::signed::is_signed(&parts.headers, parts.uri.query(), wf_header)
    {
        guard
            .rec()
            .signed_headers_kept
            .push(wf_header.as_str().to_string());
        None
    } else {
        Some(wf_header.clone())
    };
    let exchange = forward::Exchange {
        parts,
        body: replay,
        upstream_uri,
        request_id: id,
        label,
        reason: decision.reason,
        format: Some(format),
        websocket,
        strip,
    };
    Ok(exchange)
}

/// A plain-HTTP request to a host that is not a vendor: forwarded as-is and audited as a
/// tunnel (it is not inspected).
pub async fn passthrough(
    shared: Arc<Shared>,
    client: SocketAddr,
    identity: Identity,
    host: Host,
    port: u16,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let id = new_id();
    let mut guard = AuditGuard::new(
        &shared,
        AuditRecord::new(
            id.clone(),
            Kind::Tunnel,
            client.to_string(),
            identity.user.clone(),
            host.to_string(),
            port,
        ),
        start,
    );
    let (parts, body) = req.into_parts();
    {
        let r = guard.rec();
        r.user_source = Some(identity.source);
        r.method = Some(parts.method.to_string());
        r.path = Some(crate::audit::redact::path_for_log(
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        ));
        r.action = Action::Allow;
        r.reason = Reason::NotVendor;
        // Plain HTTP to a catalogued model API (blocked groups never get here): flagged.
        let cfg = shared.config.load();
        if let Some(group) = host.as_name().and_then(|n| cfg.ai_hosts.group_for(n)) {
            r.ai_host = Some(group.id.clone());
            r.action = Action::Monitor;
            r.reason = Reason::AiHost;
        }
    }
    let upstream_uri = parts.uri.to_string();
    let exchange = forward::Exchange {
        parts,
        body: ReplayBody {
            peeked: VecDeque::new(),
            rest: Some(body),
            sent: Arc::new(AtomicU64::new(0)),
            late: None,
        },
        upstream_uri,
        request_id: id,
        label: "allow",
        reason: Reason::NotVendor,
        format: None,
        websocket: false,
        strip: None,
    };
    forward::forward(&shared, exchange, guard).await
}

impl ReplayBody {
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }

    /// Where a late body signal leaves its revised decision, if the body is searched.
    pub fn late_verdict(&self) -> Option<late::Verdict> {
        self.late.as_ref().map(|l| l.verdict())
    }
}
