//! The provenance review queue on the admin API (`provenance::review` holds the rules):
//! `aigate provenance scan --record` queues findings, reviewers list them and confirm
//! (quarantine) or clear (a false positive, with a reason) each one. Every change is an audit
//! record in the chain. The console's `/provenance` page decides through [`decide`] too.
//!
//! Roles: `auditor` and `admin` are the reviewers; they record, list and decide. A manager or
//! approver is refused (403, audited): findings name people and their calls.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Caller};
use super::{AdminState, error};
use crate::audit::{AuditRecord, Kind};
use crate::config::Role;
use crate::policy::{Action, Reason};
use crate::provenance::review::{self, Decision, Finding, FindingStore, Status, StoreError};
use crate::proxy::new_id;

pub const REVIEWERS: &[Role] = &[Role::Admin, Role::Auditor];
/// Findings in one `--record` call.
pub const MAX_RECORD: usize = 10_000;

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn store(state: &AdminState) -> Result<Arc<dyn FindingStore>, Box<Response>> {
    state.findings.clone().ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "the provenance review queue is off with the ledger; set provenance.enabled = true",
        ))
    })
}

/// Why a decision or a recording did not happen: the status and message the JSON API answers
/// and the console shows.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Decided { .. } => StatusCode::CONFLICT,
            StoreError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refused {
            status,
            message: e.to_string(),
        }
    }
}

fn audit(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    path: String,
    reason: Reason,
    admin: Value,
) {
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        client.to_string(),
        caller.user.as_str().into(),
        String::new(),
        0,
    );
    r.method = Some(Method::POST.to_string());
    r.path = Some(path);
    r.action = Action::Allow;
    r.reason = reason;
    r.status = Some(StatusCode::OK.as_u16());
    r.admin = Some(admin);
    state.shared.audit.submit(r);
}

/// Confirm or clear one open finding, and write its audit record. The one place a decision is
/// made, for the API and the console.
pub async fn decide(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    id: &str,
    decision: Decision,
) -> Result<Finding, Refused> {
    let store = store(state).map_err(|_| Refused {
        status: StatusCode::NOT_FOUND,
        message: "the provenance review queue is off; set provenance.enabled = true".into(),
    })?;
    let by = caller.user.as_str().to_string();
    let owned = id.to_string();
    let d = decision.clone();
    let decided = tokio::task::spawn_blocking(move || store.decide(&owned, &d, &by, &now()))
        .await
        .map_err(|_| Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "the decision failed".into(),
        })??;
    let (verb, reason) = match decision {
        Decision::Confirm { .. } => ("confirm", Reason::ProvenanceFindingConfirmed),
        Decision::Clear { .. } => ("clear", Reason::ProvenanceFindingCleared),
    };
    audit(
        state,
        caller,
        client,
        format!("/v1/provenance/findings/{id}/{verb}"),
        reason,
        json!({ "finding": decided }),
    );
    Ok(decided)
}

/// Every finding, oldest first, for the console.
pub async fn list_for(state: &AdminState, status: Option<Status>) -> Result<Vec<Finding>, Refused> {
    let store = store(state).map_err(|_| Refused {
        status: StatusCode::NOT_FOUND,
        message: "the provenance review queue is off; set provenance.enabled = true".into(),
    })?;
    tokio::task::spawn_blocking(move || store.list(status))
        .await
        .map_err(|_| Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "listing failed".into(),
        })?
        .map_err(Refused::from)
}

fn answer(r: Refused) -> Response {
    error(r.status, &r.message)
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

/// `GET /v1/provenance/findings[?status=open|confirmed|cleared]`.
pub async fn list(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let path = "/v1/provenance/findings";
    if let Err(refused) = auth::require(&state, &headers, client, &Method::GET, path, REVIEWERS) {
        return *refused;
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => match Status::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("status={s:?}: use open, confirmed or cleared"),
                );
            }
        },
    };
    match list_for(&state, status).await {
        Ok(found) => Json(json!({ "findings": found })).into_response(),
        Err(r) => answer(r),
    }
}

/// `GET /v1/provenance/findings/{id}`.
pub async fn show(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/provenance/findings/{id}");
    if let Err(refused) = auth::require(&state, &headers, client, &Method::GET, &path, REVIEWERS) {
        return *refused;
    }
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || store.get(&id)).await {
        Ok(Ok(Some(f))) => Json(f).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such finding"),
        Ok(Err(e)) => answer(e.into()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the lookup failed"),
    }
}

/// `POST /v1/provenance/findings` `{"findings": [<the scan's findings[] elements>]}`: queue
/// them; an open finding found again is counted, not duplicated.
pub async fn record(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v1/provenance/findings";
    let caller = match auth::require(&state, &headers, client, &Method::POST, path, REVIEWERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}; send {{\"findings\": [...]}}"),
            );
        }
    };
    let Some(items) = body["findings"].as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "no \"findings\" array; send the scan's findings as {\"findings\": [...]}",
        );
    };
    if items.len() > MAX_RECORD {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_RECORD} findings a call; split the batch"),
        );
    }
    let by = caller.user.as_str().to_string();
    let at = now();
    let mut parsed = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match review::from_scan(i, v, &by, &at, new_id()) {
            Ok(f) => parsed.push(f),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let done = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(parsed.len());
        for f in parsed {
            out.push(store.record(f)?);
        }
        Ok::<_, StoreError>(out)
    })
    .await;
    let done = match done {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return answer(e.into()),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "recording failed"),
    };
    let added: Vec<&str> = done
        .iter()
        .filter(|(_, new)| *new)
        .map(|(f, _)| f.id.as_str())
        .collect();
    let seen: Vec<&str> = done
        .iter()
        .filter(|(_, new)| !*new)
        .map(|(f, _)| f.id.as_str())
        .collect();
    if !done.is_empty() {
        audit(
            &state,
            &caller,
            client,
            path.to_string(),
            Reason::ProvenanceFindingsRecorded,
            json!({ "findings": { "added": added, "seen_again": seen } }),
        );
    }
    let findings: Vec<&Finding> = done.iter().map(|(f, _)| f).collect();
    Json(json!({ "added": added.len(), "seen_again": seen.len(), "findings": findings }))
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

fn decision_body(body: &Bytes) -> Result<DecisionBody, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the body: {e}; send {{\"reason\": \"…\"}} to clear, {{\"note\": \"…\"}} (optional) to confirm"),
        ))
    })
}

/// `POST /v1/provenance/findings/{id}/confirm` `{"note": "…"}` (optional): quarantine.
pub async fn confirm(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/v1/provenance/findings/{id}/confirm");
    let caller = match auth::require(&state, &headers, client, &Method::POST, &path, REVIEWERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let b = match decision_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match decide(
        &state,
        &caller,
        client,
        &id,
        Decision::confirm(b.note.as_deref()),
    )
    .await
    {
        Ok(f) => Json(f).into_response(),
        Err(r) => answer(r),
    }
}

/// `POST /v1/provenance/findings/{id}/clear` `{"reason": "…"}` (required): a false positive.
pub async fn clear(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/v1/provenance/findings/{id}/clear");
    let caller = match auth::require(&state, &headers, client, &Method::POST, &path, REVIEWERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let b = match decision_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let decision = match Decision::clear(b.reason.as_deref().unwrap_or("")) {
        Ok(d) => d,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    match decide(&state, &caller, client, &id, decision).await {
        Ok(f) => Json(f).into_response(),
        Err(r) => answer(r),
    }
}
