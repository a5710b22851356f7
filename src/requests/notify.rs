//! Outbound webhooks (`[[console.notify]]`): approvers hear of new requests, requesters of
//! decisions and expiry. Chat only notifies: the payload links to the console, where approval
//! happens signed in; it never carries a way to approve.
//!
//! Delivery never blocks a request: events go on a bounded queue (full: dropped, with a
//! warning), a worker posts each with a timeout and retries failures with backoff (1 s, 2 s,
//! 4 s, 8 s, 16 s), at most `CONCURRENT` at once. Payloads carry no secrets: no tokens, no
//! session ids, no draft ids (a draft link is a capability to submit); the status page's URL is
//! only readable, and the webhook URL itself (which may hold a secret path) is never logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::ExemptionRequest;
use crate::config::{ConsoleConfig, NotifyEvent, NotifyFormat};
use crate::tls::upstream::ProxyBody;

/// Deliveries waiting at most; past it an event is dropped (and logged).
pub const QUEUE: usize = 256;
/// Deliveries in flight at once.
const CONCURRENT: usize = 8;
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

/// One thing that happened to a request, and who it concerns.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: NotifyEvent,
    pub request: ExemptionRequest,
    /// The tool's display name.
    pub tool_name: String,
    /// Who may decide it: the requester's manager chain, then approver and admin role holders.
    pub approvers: Vec<String>,
    /// The request's status page (`{console}/requests/{id}`), readable, not a capability.
    pub url: String,
}

struct Delivery {
    url: http::Uri,
    body: Bytes,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Delivery>,
}

impl Notifier {
    /// The notifier and its worker (spawned by the caller, so tests and `App` own it).
    pub fn new(
        tls: rustls::ClientConfig,
    ) -> (
        Notifier,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = crate::tls::upstream::client(tls, http);
        (Notifier { tx }, deliver(client, rx))
    }

    /// Queue the event for every hook that wants it. Never waits.
    pub fn send(&self, cfg: &ConsoleConfig, event: &Event) {
        for hook in &cfg.notify {
            if !hook.events.contains(&event.kind) {
                continue;
            }
            let concerned = hook.users.is_empty()
                || hook.users.iter().any(|u| {
                    *u == event.request.user
                        || (event.kind == NotifyEvent::Requested && event.approvers.contains(u))
                });
            if !concerned {
                continue;
            }
            let body = match hook.format {
                NotifyFormat::Json => json_payload(event),
                NotifyFormat::Slack => json!({ "text": text(event) }),
            };
            let delivery = Delivery {
                url: hook.url.clone(),
                body: Bytes::from(body.to_string()),
            };
            if self.tx.try_send(delivery).is_err() {
                tracing::warn!(
                    request = %event.request.id,
                    "webhook queue full ({QUEUE}); this notification is dropped"
                );
            }
        }
    }
}

/// The JSON payload (docs/console.md, "Webhooks").
pub fn json_payload(e: &Event) -> serde_json::Value {
    let r = &e.request;
    json!({
        "event": e.kind,
        "request": {
            "id": r.id,
            "state": r.state,
            "user": r.user,
            "tool": r.tool,
            "tool_name": e.tool_name,
            "vendor": r.vendor,
            "workflow": r.workflow,
            "rule": r.rule,
            "justification": r.justification,
            "duration_secs": r.duration_secs,
            "ticket": r.ticket,
            "created_at": humantime::format_rfc3339_seconds(r.created_at).to_string(),
            "expires_at": humantime::format_rfc3339_seconds(r.expires_at).to_string(),
            "decided_by": r.decided_by,
            "comment": r.comment,
            "approved_secs": r.approved_secs,
            "exemption": r.exemption,
            "record_id": r.record_id,
        },
        "approvers": e.approvers,
        "url": e.url,
        "text": text(e),
    })
}

/// One line for a chat channel. Typed text (justification, comment) is put on one line and cut.
pub fn text(e: &Event) -> String {
    let r = &e.request;
    let fmt = crate::config::format_duration;
    let one = super::one_line;
    match e.kind {
        NotifyEvent::Requested => format!(
            "{} asks for an exemption: {} in workflow \"{}\" for {} ({}). Why: {}. Review: {}",
            r.user,
            e.tool_name,
            r.workflow,
            fmt(Duration::from_secs(r.duration_secs)),
            r.rule
                .as_deref()
                .map_or("no rule".to_string(), |x| format!("rule \"{x}\"")),
            one(&r.justification, 300),
            e.url
        ),
        NotifyEvent::Approved => format!(
            "{} approved {}'s request for {} in workflow \"{}\" for {} (exemption {}). {}",
            r.decided_by.as_deref().unwrap_or("?"),
            r.user,
            e.tool_name,
            r.workflow,
            fmt(Duration::from_secs(
                r.approved_secs.unwrap_or(r.duration_secs)
            )),
            r.exemption.as_deref().unwrap_or("?"),
            e.url
        ),
        NotifyEvent::Denied => format!(
            "{} denied {}'s request for {} in workflow \"{}\": {}. {}",
            r.decided_by.as_deref().unwrap_or("?"),
            r.user,
            e.tool_name,
            r.workflow,
            one(r.comment.as_deref().unwrap_or(""), 300),
            e.url
        ),
        NotifyEvent::Expired => format!(
            "{}'s request for {} in workflow \"{}\" expired unanswered. {}",
            r.user, e.tool_name, r.workflow, e.url
        ),
    }
}

async fn deliver(
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    mut rx: mpsc::Receiver<Delivery>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(d) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut backoff = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                match post(&client, &d).await {
                    Ok(()) => return,
                    Err(e) if attempt == ATTEMPTS => {
                        // The host only: the path of a webhook URL may be its secret.
                        tracing::warn!(host = d.url.host().unwrap_or(""), error = %e, attempts = ATTEMPTS, "webhook delivery failed; given up");
                    }
                    Err(e) => {
                        tracing::info!(host = d.url.host().unwrap_or(""), error = %e, attempt, retry_in = ?backoff, "webhook delivery failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        });
    }
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, ProxyBody>,
    d: &Delivery,
) -> Result<(), String> {
    let req = Request::post(d.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("aigate/", env!("CARGO_PKG_VERSION")),
        )
        .body(
            Full::new(d.body.clone())
                .map_err(|never| match never {})
                .boxed(),
        )
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Drain, so the connection goes back to the pool.
    let _ = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
