//! Send an allowed request to the vendor and stream the answer back.
//!
//! Hop-by-hop headers, proxy credentials and aigate's own headers (the workflow tag) never
//! reach the vendor. `alt-svc` never reaches the client: it would invite the client onto QUIC,
//! which does not go through the proxy. The response body is streamed frame by frame (SSE
//! arrives event by event). The call's decision record is written before the upstream request
//! starts; its outcome when the answer (or the WebSocket) ends; progress records in between.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, Version, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Shared;
use super::audited::{AuditGuard, AuditedBody};
use super::deny::{self, UpstreamFailure};
use super::dial::{self, DialError};
use super::late::LateBlock;
use super::pipeline::ReplayBody;
use crate::config::ErrorFormat;
use crate::policy::Reason;
use crate::tls::upstream::ProxyBody;

/// One request on its way upstream.
pub struct Exchange {
    pub parts: Parts,
    pub body: ReplayBody,
    pub upstream_uri: String,
    pub request_id: String,
    /// `x-aigate-decision` on the response: allow, monitor.
    pub label: &'static str,
    pub reason: Reason,
    /// Vendor error shape for failures; `None` for plain passthrough (text errors).
    pub format: Option<ErrorFormat>,
    pub websocket: bool,
    /// An extra request header to remove (the workflow tag).
    pub strip: Option<HeaderName>,
}

/// Parsed once: removing by `&str` would parse the name on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    // First: `strip_hop_by_hop` reads its bit.
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The lengths of the `HOP_BY_HOP` names, one bit each: most names are ruled out by their
/// length alone, before nine comparisons (a test keeps this in step with the list).
const HOP_BY_HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;

/// Remove hop-by-hop headers, including any named in `Connection`. One pass over the names
/// finds which are present, so a message without them (most requests) costs no lookups.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = 0u16;
    for name in headers.keys() {
        let len = name.as_str().len();
        if len >= 32 || HOP_BY_HOP_LENGTHS & (1 << len) == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is `Connection`.
    if present & 1 != 0 {
        strip_named(headers, keep_upgrade);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        let kept = keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION);
        if present & (1 << i) != 0 && !kept {
            headers.remove(name);
        }
    }
}

/// The headers a `Connection` header names are hop-by-hop too. `close`, and names that are
/// hop-by-hop anyway (`keep-alive`, `upgrade`), are left to the caller.
fn strip_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !n.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(n))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
}

fn failure_response(
    format: Option<ErrorFormat>,
    failure: UpstreamFailure,
    reason: Reason,
    id: &str,
) -> Response<ProxyBody> {
    match format {
        Some(f) => deny::upstream_failure(f, failure, reason, id),
        None => deny::proxy_response(
            failure.status(),
            reason,
            id,
            &format!("aigate: upstream failed ({})", failure.code()),
        ),
    }
}

fn classify_error(err: &hyper_util::client::legacy::Error) -> UpstreamFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<rustls::Error>() {
            return UpstreamFailure::Tls;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return UpstreamFailure::Timeout;
            }
            // io::Error hides what it wraps from source(): the connector nests the rustls
            // error in one or two io::Errors.
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                if i.is::<rustls::Error>() {
                    return UpstreamFailure::Tls;
                }
                inner = i
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
        }
        source = e.source();
    }
    if err.is_connect() {
        UpstreamFailure::Connect
    } else {
        UpstreamFailure::Reset
    }
}

pub async fn forward(
    shared: &Arc<Shared>,
    ex: Exchange,
    mut guard: AuditGuard,
) -> Response<ProxyBody> {
    let Exchange {
        mut parts,
        body,
        upstream_uri,
        request_id,
        label,
        reason,
        format,
        websocket,
        strip,
    } = ex;
    let uri: Uri = match upstream_uri.parse() {
        Ok(u) => u,
        Err(_) => {
            let resp = deny::proxy_response(
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                &request_id,
                "aigate: the request target is not a valid URL",
            );
            guard.rec().status = Some(400);
            return guard.respond(resp).await;
        }
    };
    strip_hop_by_hop(&mut parts.headers, websocket);
    if let Some(name) = strip {
        parts.headers.remove(name);
    }
    // The client sets Host from the URI; a stale or duplicated one must not go upstream.
    parts.headers.remove(header::HOST);
    if websocket {
        // Boxed: its connect and handshake state would otherwise sit in every request's future.
        return Box::pin(websocket_upgrade(
            shared, parts, uri, request_id, label, reason, format, guard,
        ))
        .await;
    }
    guard.count_up(body.counter());
    if !guard.decide().await {
        return unwritten(guard, format, &request_id).await;
    }
    let late = body.late_verdict();

    let uri_authority = uri.authority().map(|a| a.to_string());
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, body.boxed());
    let response_timeout = shared.config.load().upstream.response_timeout;
    // One timer, as a plain timeout would have: it fires for the deadline or, on a call still
    // waiting for its answer (a request body that goes on and on), for a progress record.
    let sent = {
        let deadline = tokio::time::Instant::now() + response_timeout;
        let every = guard.progress_every();
        let mut request = std::pin::pin!(shared.upstream.request(req));
        loop {
            let next = (tokio::time::Instant::now() + every).min(deadline);
            match tokio::time::timeout_at(next, &mut request).await {
                Ok(r) => break Ok(r),
                Err(elapsed) if next >= deadline => break Err(elapsed),
                Err(_) => guard.progress(None, 0),
            }
        }
    };
    // A late body signal ended the request body before its last byte: whatever the upstream
    // call returned (an error, as a rule), the client gets the revised decision's deny.
    if let Some(block) = late.and_then(|v| v.lock().ok().and_then(|mut slot| slot.take())) {
        return refuse_late(guard, block).await;
    }
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            if let Some(d) = dial::denied_in(&e) {
                let shown = uri_authority.as_deref().unwrap_or("the upstream");
                return dial::refuse(guard, &request_id, shown, d, format).await;
            }
            let failure = classify_error(&e);
            tracing::warn!(request_id = %request_id, error = %e, code = failure.code(), "upstream request failed");
            return fail(guard, format, failure, reason, &request_id).await;
        }
        Err(_) => return fail(guard, format, UpstreamFailure::Timeout, reason, &request_id).await,
    };
    respond(shared, resp, guard, label, reason, format, &request_id).await
}

/// The decision could not be written and the gateway fails closed: the call stays here.
fn unwritten(
    mut guard: AuditGuard,
    format: Option<ErrorFormat>,
    id: &str,
) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
    let resp = deny::audit_unwritten(format, id);
    let r = guard.rec();
    r.error = Some("audit_unavailable".into());
    r.status = Some(resp.status().as_u16());
    guard.respond(resp)
}

/// Record and send the deny of a decision revised by a late body signal.
fn refuse_late(
    mut guard: AuditGuard,
    block: LateBlock,
) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
    let LateBlock {
        tool,
        decision,
        response,
        error,
    } = block;
    let r = guard.rec();
    if let Some(e) = error {
        r.error = Some(e.into());
    }
    r.tool = Some(tool.tool);
    r.tool_confidence = Some(tool.confidence);
    r.evidence = tool.evidence;
    r.tool_conflicts = tool.conflicts;
    r.action = decision.action;
    r.reason = decision.reason;
    r.rule = decision.rule;
    r.exemption = decision.exemption;
    r.would_block = false;
    r.status = Some(response.status().as_u16());
    guard.respond(response)
}

fn fail(
    mut guard: AuditGuard,
    format: Option<ErrorFormat>,
    failure: UpstreamFailure,
    reason: Reason,
    id: &str,
) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
    let resp = failure_response(format, failure, reason, id);
    let r = guard.rec();
    r.error = Some(failure.code().into());
    r.status = Some(resp.status().as_u16());
    guard.respond(resp)
}

/// A vendor answer up to this size with a known length is read whole before its head goes out,
/// so that head and body still leave in one write once the record is written. So is one of
/// unknown length (chunked) that has arrived whole by the time its head has. Larger or streamed
/// answers (SSE) flow frame by frame and hold back only their last frame.
const WHOLE_BODY_LIMIT: u64 = 64 * 1024;

/// The body's next frame if it is already here; `None` if it would have to wait.
fn ready_frame(body: &mut Incoming) -> Option<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// Tee a forwarded model call's response into the provenance capture, when `[provenance]`
/// covers its tool and vendor. Only successful answers carry model output.
fn start_capture(
    shared: &Shared,
    guard: &mut AuditGuard,
    headers: &HeaderMap,
    status: StatusCode,
    websocket: bool,
) {
    use crate::provenance::capture::{Transport, readable_content_type, shape_for};
    let Some(capturer) = &shared.provenance else {
        return;
    };
    if !(status.is_success() || websocket && status == StatusCode::SWITCHING_PROTOCOLS) {
        return;
    }
    let r = guard.rec();
    let (Some(tool), Some(vendor)) = (r.tool.as_deref(), r.vendor.as_deref()) else {
        return;
    };
    if !shared.config.load().provenance.covers(tool, vendor) {
        return;
    }
    let Some(shape) = r.path.as_deref().and_then(shape_for) else {
        return;
    };
    let text = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let tee = if websocket {
        let ext = text(header::SEC_WEBSOCKET_EXTENSIONS).unwrap_or_default();
        let deflate = ext.contains("permessage-deflate");
        capturer.tee(
            shape,
            Transport::WebSocket {
                deflate,
                no_context_takeover: deflate && ext.contains("server_no_context_takeover"),
            },
        )
    } else {
        let content_type = text(header::CONTENT_TYPE);
        if !readable_content_type(content_type.as_deref()) {
            capturer.unreadable()
        } else {
            capturer.tee(
                shape,
                Transport::Http {
                    content_type,
                    content_encoding: text(header::CONTENT_ENCODING),
                },
            )
        }
    };
    guard.capture(tee);
}

/// Pass the vendor's response back, cleaned and annotated, its end tied to the audit record.
async fn respond(
    shared: &Shared,
    resp: Response<Incoming>,
    mut guard: AuditGuard,
    label: &'static str,
    reason: Reason,
    format: Option<ErrorFormat>,
    id: &str,
) -> Response<ProxyBody> {
    let (mut parts, mut body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.remove(header::ALT_SVC);
    deny::annotate(&mut parts.headers, label, reason, id);
    let ttfb = guard.elapsed_ms();
    let r = guard.rec();
    r.status = Some(parts.status.as_u16());
    r.ttfb_ms = Some(ttfb);
    start_capture(shared, &mut guard, &parts.headers, parts.status, false);
    let whole = match body.size_hint().exact() {
        Some(n) if n <= WHOLE_BODY_LIMIT => match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "upstream body failed");
                return fail(guard, format, UpstreamFailure::Reset, reason, id).await;
            }
        },
        Some(_) => {
            return Response::from_parts(parts, AuditedBody::forwarded(body, guard).boxed());
        }
        None => {
            // Take what has already arrived; if that is the whole answer, send it whole. The
            // upstream connection decodes a chunked body's end only once asked for more, so
            // let it run once before deciding that the rest is still on its way.
            let mut frames = Vec::new();
            let mut size = 0u64;
            let mut yielded = false;
            loop {
                match ready_frame(&mut body) {
                    Some(Some(Ok(frame))) => {
                        size += frame.data_ref().map_or(0, |d| d.len() as u64);
                        frames.push(frame);
                        if size > WHOLE_BODY_LIMIT {
                            break;
                        }
                    }
                    Some(None) => break,
                    Some(Some(Err(e))) => {
                        tracing::warn!(request_id = %id, error = %e, "upstream body failed");
                        return fail(guard, format, UpstreamFailure::Reset, reason, id).await;
                    }
                    None if !yielded && !frames.is_empty() => {
                        yielded = true;
                        tokio::task::yield_now().await;
                    }
                    None => {
                        let body = AuditedBody::forwarded(body, guard).after(frames);
                        return Response::from_parts(parts, body.boxed());
                    }
                }
            }
            if !body.is_end_stream() {
                let body = AuditedBody::forwarded(body, guard).after(frames);
                return Response::from_parts(parts, body.boxed());
            }
            let mut whole = bytes::BytesMut::with_capacity(size as usize);
            for frame in frames {
                if let Ok(data) = frame.into_data() {
                    whole.extend_from_slice(&data);
                }
            }
            whole.freeze()
        }
    };
    guard.rec().bytes_down = whole.len() as u64;
    guard.tee(&whole);
    let body = if guard.commit().await {
        http_body_util::Full::new(whole)
            .map_err(|never| match never {})
            .boxed()
    } else {
        AuditedBody::unwritten().boxed()
    };
    Response::from_parts(parts, body)
}

/// A WebSocket upgrade the policy allowed: a dedicated HTTP/1.1 connection upstream, the
/// upgrade request forwarded, and on `101` the two upgraded streams spliced together.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of an Exchange"
)]
async fn websocket_upgrade(
    shared: &Arc<Shared>,
    mut parts: Parts,
    uri: Uri,
    request_id: String,
    label: &'static str,
    reason: Reason,
    format: Option<ErrorFormat>,
    mut guard: AuditGuard,
) -> Response<ProxyBody> {
    if !guard.decide().await {
        return unwritten(guard, format, &request_id).await;
    }
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(443);
    let dialled = match crate::host::normalise(&host) {
        Ok(target) => shared.dialer.dial(&target, port).await,
        Err(_) => Err(DialError::Io(std::io::ErrorKind::InvalidInput.into())),
    };
    let tcp = match dialled {
        Ok(tcp) => tcp,
        Err(DialError::Denied(d)) => {
            let shown = format!("{host}:{port}");
            return dial::refuse(guard, &request_id, &shown, d, format).await;
        }
        Err(e) => {
            let f = match e {
                DialError::Timeout => UpstreamFailure::Timeout,
                _ => UpstreamFailure::Connect,
            };
            return fail(guard, format, f, reason, &request_id).await;
        }
    };
    let connected = async {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| UpstreamFailure::Connect)?;
        let tls = shared
            .ws_tls
            .connect(name, tcp)
            .await
            .map_err(|_| UpstreamFailure::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|_| UpstreamFailure::Reset)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok::<_, UpstreamFailure>(sender)
    };
    let mut sender = match connected.await {
        Ok(s) => s,
        Err(f) => return fail(guard, format, f, reason, &request_id).await,
    };
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap_or_default();
    parts.version = Version::HTTP_11;
    if let Ok(v) = authority.parse() {
        parts.headers.insert(header::HOST, v);
    }
    let req = Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return fail(guard, format, UpstreamFailure::Reset, reason, &request_id).await,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return respond(shared, resp, guard, label, reason, format, &request_id).await;
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::ALT_SVC);
    deny::annotate(&mut parts.headers, label, reason, &request_id);
    guard.rec().status = Some(101);
    guard.rec().ttfb_ms = Some(guard.elapsed_ms());
    start_capture(
        shared,
        &mut guard,
        &parts.headers,
        StatusCode::SWITCHING_PROTOCOLS,
        true,
    );
    tokio::spawn(async move {
        let (Some(client_upgrade), Ok(upstream)) = (client_upgrade, upstream_upgrade.await) else {
            guard.rec().error = Some("upgrade_failed".into());
            guard.finish();
            return;
        };
        let Ok(client) = client_upgrade.await else {
            guard.rec().error = Some("client_gone".into());
            guard.finish();
            return;
        };
        let (up, down) = (Arc::default(), Arc::default());
        let mut client = Counted::new(TokioIo::new(client), &up);
        let mut upstream = Counted::new(TokioIo::new(upstream), &down);
        // What the vendor sends is the model's output: its frames go to the capture too.
        upstream.tee = guard.take_capture();
        let every = guard.progress_every();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let spliced = {
            let mut splice =
                std::pin::pin!(tokio::io::copy_bidirectional(&mut client, &mut upstream));
            loop {
                tokio::select! {
                    r = &mut splice => break r,
                    _ = ticks.tick() => guard.progress(Some(count(&up)), count(&down)),
                }
            }
        };
        if spliced.is_err() {
            guard.rec().error = Some("websocket_io".into());
        }
        guard.rec().bytes_up = count(&up);
        guard.rec().bytes_down = count(&down);
        if let Some(tee) = upstream.tee.take() {
            guard.capture(tee);
        }
        guard.finish();
    });
    Response::from_parts(
        parts,
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One side of a WebSocket splice, counting what is read from it, so progress records can say
/// how many bytes went each way while the socket is open.
struct Counted<T> {
    inner: T,
    read: Arc<AtomicU64>,
    /// The provenance capture of what is read (the vendor's side); the splice reads into its
    /// own buffer, so each read is copied once for it.
    tee: Option<crate::provenance::capture::Tee>,
}

impl<T> Counted<T> {
    fn new(inner: T, read: &Arc<AtomicU64>) -> Counted<T> {
        Counted {
            inner,
            read: read.clone(),
            tee: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0
            && let Some(tee) = self.tee.as_mut()
        {
            tee.chunk(&Bytes::copy_from_slice(&buf.filled()[before..]));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "close, X-Trace, keep-alive"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-checksum"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
            ("x-api-key", "sk-test"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["content-type", "x-api-key"]);

        // A WebSocket upgrade keeps Upgrade and Connection, and still loses the rest.
        let mut h = headers(&[
            ("connection", "Upgrade, x-trace"),
            ("upgrade", "websocket"),
            ("x-trace", "1"),
            ("proxy-connection", "keep-alive"),
            ("host", "api.openai.com"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(names(&h), ["connection", "host", "upgrade"]);

        // Nothing to remove: untouched.
        let mut h = headers(&[("content-type", "text/plain"), ("user-agent", "x")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["content-type", "user-agent"]);
    }

    #[test]
    fn the_length_filter_lets_every_hop_by_hop_name_through() {
        let lengths = HOP_BY_HOP
            .iter()
            .fold(0u32, |m, h| m | 1 << h.as_str().len());
        assert_eq!(lengths, HOP_BY_HOP_LENGTHS);
    }
}
