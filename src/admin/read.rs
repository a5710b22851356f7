//! Reads for security: the audit log, `explain`, and the metrics.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, auth, error};
use crate::audit::Kind;
use crate::audit::query::{Filter, newest_first};
use crate::config::{Role, parse_duration};
use crate::explain::{ExplainRequest, explain};
use crate::metrics::Extra;
use crate::policy::Action;

const AUDIT_READERS: &[Role] = &[Role::Admin, Role::Auditor];
const READERS: &[Role] = &[Role::Admin, Role::Manager, Role::Auditor];
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub kind: Option<String>,
    pub tool: Option<String>,
    pub user: Option<String>,
    pub workflow: Option<String>,
    /// RFC 3339 time, or a duration back from now (`24h`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<u64>,
}

fn time_arg(
    name: &str,
    s: &str,
    now: std::time::SystemTime,
) -> Result<std::time::SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    parse_duration(s)
        .map(|d| now - d)
        .map_err(|_| format!("{name} = {s:?}: write an RFC 3339 time (2026-11-20T09:00:00Z) or a duration back from now (24h)"))
}

pub async fn audit(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if let Err(refused) = auth::require(
        &state,
        &headers,
        client,
        &Method::GET,
        "/v1/audit",
        AUDIT_READERS,
    ) {
        return *refused;
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let now = state.shared.clock.now();
    let action = match q
        .action
        .as_deref()
        .map(|a| Action::parse(a).ok_or(format!("action = {a:?}: use allow, monitor or block")))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let kind = match q.kind.as_deref() {
        None => None,
        Some("request") => Some(Kind::Request),
        Some("tunnel") => Some(Kind::Tunnel),
        Some("admin") => Some(Kind::Admin),
        Some(k) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("kind = {k:?}: use request, tunnel or admin"),
            );
        }
    };
    let since = match q
        .since
        .as_deref()
        .map(|s| time_arg("since", s, now))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let until = match q
        .until
        .as_deref()
        .map(|s| time_arg("until", s, now))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("limit = {limit}: use 1 to {MAX_PAGE}"),
        );
    }
    let filter = Filter {
        action,
        kind,
        tool: q.tool,
        user: q.user,
        workflow: q.workflow,
        since,
        until,
    };
    // Make what was submitted so far readable before answering.
    state.shared.audit.flush().await;
    if let Some(db) = state.store.db().filter(|db| db.cfg.audit) {
        // Every replica's records; the newest arrive within the shipper's 200 ms poll.
        return match crate::storage::audit::newest_first(db, &filter, q.cursor, limit).await {
            Ok((records, next)) => {
                Json(json!({ "records": records, "next_cursor": next })).into_response()
            }
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the audit table: {e}"),
            ),
        };
    }
    let path = state.shared.audit.path().to_path_buf();
    let page =
        tokio::task::spawn_blocking(move || newest_first(&path, &filter, q.cursor, limit)).await;
    match page {
        Ok(Ok((records, next))) => {
            Json(json!({ "records": records, "next_cursor": next })).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read the audit log: {e}"),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the audit reader failed"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub user: Option<String>,
    pub workflow: Option<String>,
    pub body: Option<String>,
}

pub async fn explain_call(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ExplainBody>, JsonRejection>,
) -> Response {
    if let Err(refused) = auth::require(
        &state,
        &headers,
        client,
        &Method::POST,
        "/v1/explain",
        READERS,
    ) {
        return *refused;
    }
    let b = match body {
        Ok(Json(b)) => b,
        Err(rejection) => return super::json_rejection(rejection),
    };
    let req = ExplainRequest {
        host: b.host,
        path: b.path.unwrap_or_else(|| "/".into()),
        headers: b.headers.into_iter().collect(),
        user: b.user,
        workflow: b.workflow,
        body: b.body,
    };
    let cfg = state.shared.config.load();
    let snapshot = state.shared.exemptions.load();
    match explain(&cfg, &req, &snapshot, state.shared.clock.now()) {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

pub async fn metrics(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = auth::require(&state, &headers, client, &Method::GET, "/metrics", READERS)
    {
        return *refused;
    }
    let now = state.shared.clock.now();
    let health = state.shared.audit.health();
    let extra = Extra {
        exemptions_active: state
            .store
            .list()
            .iter()
            .filter(|e| e.active_at(now))
            .count(),
        audit_write_errors: health
            .write_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        audit_records_dropped: health.dropped.load(std::sync::atomic::Ordering::Relaxed),
        audit_healthy: state.shared.audit.healthy(),
        storage_up: state.store.db().map(|db| db.is_up()),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.shared.metrics.render(&extra),
    )
        .into_response()
}
