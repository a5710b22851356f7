//! Reads for security: the audit log, `explain`, and the metrics.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, auth, error};
use crate::audit::query::{Entry, Filter, Output, UNKNOWN, newest_first, summarize_file};
use crate::config::Role;
use crate::exemptions::grant::manages;
use crate::explain::{ExplainRequest, explain};
use crate::metrics::Extra;

/// Managers read the audit log too, scoped to their reports' records (see `audit`).
pub(crate) const AUDIT_READERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Manager];
const READERS: &[Role] = &[Role::Admin, Role::Manager, Role::Auditor];
const MAX_PAGE: usize = 1000;

/// `GET /v1/audit?action=block&since=24h&limit=50&cursor=…`: the filters are those of
/// `aigate audit query`, parsed by the same `Filter::parse`; `limit` and `cursor` page the
/// answer, newest first. With `group_by=user,rule` the answer is counts, as `--group-by` prints.
///
/// An admin or auditor sees every record. A manager sees only the records of the people below
/// them in the directory (their reports, and theirs, along the `manager` chain): enough to look
/// up the request id one of their people was blocked with, and nothing of anyone else's.
pub async fn audit(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let caller = match auth::require(
        &state,
        &headers,
        client,
        &Method::GET,
        "/v1/audit",
        AUDIT_READERS,
    ) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let Query(params) = match query {
        Ok(q) => q,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let mut limit = 100;
    let mut cursor = None;
    let mut group_by = None;
    let mut filters = Vec::new();
    for (name, value) in &params {
        match name.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("limit = {value:?}: use 1 to {MAX_PAGE}"),
                    );
                }
            },
            "cursor" => match value.parse::<u64>() {
                Ok(c) => cursor = Some(c),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("cursor = {value:?}: give the next_cursor of the previous page"),
                    );
                }
            },
            "group_by" => match Output::parse_group_by(value) {
                Ok(fields) => group_by = Some(fields),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("group_by: {e}")),
            },
            _ => filters.push((name.as_str(), value.as_str())),
        }
    }
    if group_by.is_some() && cursor.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "cursor pages records; a group_by answer is one page (use limit for more groups)",
        );
    }
    let mut filter = match Filter::parse(filters, state.shared.clock.now()) {
        Ok(f) => f,
        Err(mut e) => {
            if e.problem.starts_with(UNKNOWN) {
                e.problem.push_str("; and limit, cursor, group_by");
            }
            return error(StatusCode::BAD_REQUEST, &e.for_api());
        }
    };
    scope(&state, &caller, &mut filter);
    if let Some(fields) = group_by {
        // Make what was submitted so far readable before answering.
        state.shared.audit.flush().await;
        return summary(&state, filter, fields, limit).await;
    }
    match page(&state, filter, cursor, limit).await {
        Ok((records, next)) => {
            Json(json!({ "records": records, "next_cursor": next })).into_response()
        }
        Err((status, e)) => error(status, &e),
    }
}

/// A manager reads only the records of the people below them; an admin or auditor everyone's.
/// The console's explorer scopes its pages by the same call.
pub(crate) fn scope(state: &AdminState, caller: &auth::Caller, filter: &mut Filter) {
    if !caller.has(Role::Admin) && !caller.has(Role::Auditor) {
        filter.users = Some(Arc::new(reports_of(state, &caller.user)));
    }
}

/// A page of records, newest first, from the audit table (PostgreSQL) or the log's files: what
/// `/v1/audit` answers and the console's explorer shows. The error carries the status to
/// answer with.
pub(crate) async fn page(
    state: &AdminState,
    filter: Filter,
    cursor: Option<u64>,
    limit: usize,
) -> Result<(Vec<Entry>, Option<u64>), (StatusCode, String)> {
    // Make what was submitted so far readable before answering.
    state.shared.audit.flush().await;
    if let Some(db) = state.store.db().filter(|db| db.cfg.audit) {
        // Every replica's records; the newest arrive within the shipper's 200 ms poll.
        return crate::storage::audit::newest_first(db, &filter, cursor, limit)
            .await
            .map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the audit table: {e}"),
                )
            });
    }
    let path = state.shared.audit.path().to_path_buf();
    match tokio::task::spawn_blocking(move || newest_first(&path, &filter, cursor, limit)).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the audit log: {e}"),
        )),
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the audit reader failed".into(),
        )),
    }
}

/// `group_by`: counts over every matching record (not a page), largest first, `limit` groups.
async fn summary(
    state: &AdminState,
    filter: Filter,
    group_by: Vec<&'static str>,
    limit: usize,
) -> Response {
    let groups = if let Some(db) = state.store.db().filter(|db| db.cfg.audit) {
        crate::storage::audit::summarize(db, &filter, group_by, limit)
            .await
            .map_err(|e| {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("cannot read the audit table: {e}"),
                )
            })
    } else {
        let path = state.shared.audit.path().to_path_buf();
        match tokio::task::spawn_blocking(move || summarize_file(&path, &filter, group_by, limit))
            .await
        {
            Ok(Ok(groups)) => Ok(groups),
            Ok(Err(e)) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the audit log: {e}"),
            )),
            Err(_) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit reader failed",
            )),
        }
    };
    match groups {
        Ok(groups) => Json(json!({ "groups": groups })).into_response(),
        Err(response) => response,
    }
}

/// Everyone `manager` is above in the directory, by the same chain that decides who may grant
/// them an exemption.
fn reports_of(state: &AdminState, manager: &str) -> HashSet<String> {
    let cfg = state.shared.config.load();
    let dir = &cfg.identity.directory;
    dir.users()
        .filter(|u| manages(dir, manager, &u.id))
        .map(|u| u.id.to_string())
        .collect()
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
        body: b.body.map(String::into_bytes),
    };
    let cfg = state.shared.config.load();
    let snapshot = state.shared.exemptions.load();
    match explain(&cfg, &req, &snapshot, state.shared.clock.now()) {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// The AI host catalog in force: which model APIs are tunnelled uninspected, blocked or
/// intercepted. With `GET /v1/audit?kind=tunnel` (records carrying `ai_host`), it answers "who
/// uses which AI service outside the gateway's inspection".
pub async fn ai_hosts(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = auth::require(
        &state,
        &headers,
        client,
        &Method::GET,
        "/v1/ai-hosts",
        READERS,
    ) {
        return *refused;
    }
    let cfg = state.shared.config.load();
    Json(&cfg.ai_hosts).into_response()
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
