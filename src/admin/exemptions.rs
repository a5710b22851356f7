//! `/v1/exemptions`: grant, list, show, revoke.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Caller};
use super::{AdminState, error};
use crate::audit::{AuditRecord, Kind};
use crate::config::{Role, parse_duration};
use crate::exemptions::grant::{GrantRequest, Grantor, manages};
use crate::exemptions::store::StoreError;
use crate::exemptions::{Exemption, Subject};
use crate::policy::{Action, Reason};
use crate::proxy::new_id;

/// Who may grant and revoke (managers only for their reports, checked per exemption; approvers
/// for any user).
pub const GRANTORS: &[Role] = &[Role::Admin, Role::Manager, Role::Approver];
/// Who may read (managers only their reports' exemptions).
pub const READERS: &[Role] = &[Role::Admin, Role::Manager, Role::Auditor, Role::Approver];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub user: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    pub workflows: Option<Vec<String>>,
    pub starts_at: Option<String>,
    pub expires_at: Option<String>,
    /// Instead of `expires_at`: how long from now (or from `starts_at`), e.g. "3d".
    #[serde(rename = "for")]
    pub duration: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub subject: Option<String>,
    pub active: Option<bool>,
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &StoreError::NotFound(id.to_string()).to_string(),
    )
}

fn bad(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, message.as_ref())
}

pub fn visible(state: &AdminState, caller: &Caller, e: &Exemption) -> bool {
    if caller.has(Role::Admin) || caller.has(Role::Auditor) || caller.has(Role::Approver) {
        return true;
    }
    let cfg = state.shared.config.load();
    caller.has(Role::Manager)
        && matches!(&e.subject, Subject::User(u) if manages(&cfg.identity.directory, &caller.user, u))
}

fn view(e: &Exemption, now: SystemTime) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["active"] = json!(e.active_at(now));
    v
}

/// The audit record of a grant or revocation; method, path and status follow from which.
fn admin_record(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    reason: Reason,
    e: &Exemption,
) {
    let (method, path, status) = match reason {
        Reason::ExemptionRevoked => (
            Method::DELETE,
            format!("/v1/exemptions/{}", e.id),
            StatusCode::OK,
        ),
        _ => (
            Method::POST,
            "/v1/exemptions".to_string(),
            StatusCode::CREATED,
        ),
    };
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        client.to_string(),
        caller.user.as_str().into(),
        String::new(),
        0,
    );
    r.method = Some(method.to_string());
    r.path = Some(path);
    r.action = Action::Allow;
    r.reason = reason;
    r.status = Some(status.as_u16());
    r.exemption = Some(e.id.clone());
    r.admin = serde_json::to_value(e).ok();
    state.shared.audit.submit(r);
}

fn parse_time(field: &str, s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{field} = {s:?}: not a time; write RFC 3339, e.g. 2026-12-01T18:00:00Z")
    })
}

/// Why a grant or revocation did not happen: the status and message the JSON API answers and
/// the console shows, from the same rules.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

pub async fn grant(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<GrantBody>, JsonRejection>,
) -> Response {
    let path = "/v1/exemptions";
    let caller = match auth::require(&state, &headers, client, &Method::POST, path, GRANTORS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(rejection) => return super::json_rejection(rejection),
    };
    match grant_for(&state, &caller, client, body).await {
        Ok(e) => (
            StatusCode::CREATED,
            Json(view(&e, state.shared.clock.now())),
        )
            .into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Grant as `caller` (already known to hold one of `GRANTORS`): every grant rule, the durable
/// store, and the `exemption_granted` record. The JSON API and the console's form both call
/// this; neither has a rule of its own.
pub async fn grant_for(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    body: GrantBody,
) -> Result<Exemption, Refused> {
    let now = state.shared.clock.now();
    let subject = match (body.user, body.group) {
        (Some(u), None) => Subject::User(u),
        (None, Some(g)) => Subject::Group(g),
        _ => return Err(Refused::bad("give exactly one of user or group")),
    };
    let starts_at = body
        .starts_at
        .as_deref()
        .map(|s| parse_time("starts_at", s))
        .transpose()
        .map_err(Refused::bad)?;
    let expires_at = match (body.expires_at.as_deref(), body.duration.as_deref()) {
        (Some(_), Some(_)) => return Err(Refused::bad("give expires_at or for, not both")),
        (Some(s), None) => Some(parse_time("expires_at", s).map_err(Refused::bad)?),
        (None, Some(d)) => match parse_duration(d) {
            Ok(d) => Some(starts_at.unwrap_or(now) + d),
            Err(e) => return Err(Refused::bad(format!("for: {e}"))),
        },
        (None, None) => None,
    };
    let req = GrantRequest {
        subject,
        tools: body.tools,
        workflows: body.workflows,
        starts_at,
        expires_at,
        reason: body.reason,
        ticket: body.ticket,
    };
    let grantor = Grantor::with_roles(&caller.user, &caller.roles);
    let cfg = state.shared.config.load();
    // The store runs the rules against the grants stored at the moment of the insert, so
    // concurrent grants cannot each pass a limit they exceed together.
    let exemption = match crate::exemptions::store::issue(
        &state.store,
        &cfg,
        &grantor,
        &req,
        now,
        None,
    )
    .await
    {
        Ok(e) => e,
        // Every grant rule, the manager chain included, is a 400 that names it.
        Err(StoreError::Refused(e)) => return Err(Refused::bad(e.to_string())),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a grant");
            return Err(Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "the exemption could not be stored durably ({e}); nothing was granted, try again"
                ),
            });
        }
    };
    admin_record(state, caller, client, Reason::ExemptionGranted, &exemption);
    Ok(exemption)
}

pub async fn list(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let caller = match auth::require(
        &state,
        &headers,
        client,
        &Method::GET,
        "/v1/exemptions",
        READERS,
    ) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(rejection) => return bad(rejection.body_text()),
    };
    let now = state.shared.clock.now();
    let items: Vec<serde_json::Value> = state
        .store
        .list()
        .iter()
        .filter(|e| visible(&state, &caller, e))
        .filter(|e| {
            q.subject.as_deref().is_none_or(|s| match &e.subject {
                Subject::User(u) => u == s || s == format!("user:{u}"),
                Subject::Group(g) => s == format!("group:{g}") || g == s,
            })
        })
        .filter(|e| q.active.is_none_or(|a| e.active_at(now) == a))
        .map(|e| view(e, now))
        .collect();
    Json(json!({ "exemptions": items })).into_response()
}

pub async fn show(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/exemptions/{id}");
    let caller = match auth::require(&state, &headers, client, &Method::GET, &path, READERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    match state.store.get(&id) {
        Some(e) if visible(&state, &caller, &e) => {
            Json(view(&e, state.shared.clock.now())).into_response()
        }
        Some(_) => auth::refuse(
            &state,
            Some(&caller),
            client,
            &Method::GET,
            &path,
            "to be the subject's manager, an auditor or an admin",
        ),
        None => not_found(&id),
    }
}

pub async fn revoke(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/exemptions/{id}");
    let caller = match auth::require(&state, &headers, client, &Method::DELETE, &path, GRANTORS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    match revoke_for(&state, &caller, client, &id).await {
        Ok(e) => Json(view(&e, state.shared.clock.now())).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Revoke as `caller` (already known to hold one of `GRANTORS`): an admin, or the subject's
/// manager. A refusal for want of that is audited; the revocation is the
/// `exemption_revoked` record. Shared by the JSON API and the console.
pub async fn revoke_for(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    id: &str,
) -> Result<Exemption, Refused> {
    let path = format!("/v1/exemptions/{id}");
    let not_found = || Refused {
        status: StatusCode::NOT_FOUND,
        message: StoreError::NotFound(id.to_string()).to_string(),
    };
    let Some(existing) = state.store.get(id) else {
        return Err(not_found());
    };
    let allowed = caller.has(Role::Admin)
        || caller.has(Role::Approver)
        || {
            let cfg = state.shared.config.load();
            matches!(&existing.subject, Subject::User(u) if manages(&cfg.identity.directory, &caller.user, u))
        };
    if !allowed {
        let need = "to be the subject's manager, an approver or an admin";
        auth::record_refusal(
            state,
            Some(caller),
            client,
            &Method::DELETE,
            &path,
            StatusCode::FORBIDDEN,
            None,
        );
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            message: format!("{} may not do this: it needs {need}", caller.user),
        });
    }
    let now = state.shared.clock.now();
    match state.store.revoke(id, &caller.user, now).await {
        Ok(e) => {
            admin_record(state, caller, client, Reason::ExemptionRevoked, &e);
            Ok(e)
        }
        Err(StoreError::NotFound(_)) => Err(not_found()),
        Err(e @ StoreError::AlreadyRevoked(_)) => Err(Refused {
            status: StatusCode::CONFLICT,
            message: e.to_string(),
        }),
        Err(e @ (StoreError::Io(_) | StoreError::Db(_) | StoreError::Refused(_))) => {
            tracing::error!(error = %e, "cannot store a revocation");
            Err(Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "the revocation could not be stored durably ({e}); nothing changed, try again"
                ),
            })
        }
    }
}
