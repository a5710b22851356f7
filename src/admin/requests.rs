//! `/v1/drafts/{id}` and `/v1/requests`: the exemption request loop's JSON API (issue 16).
//!
//! The draft id in a deny message's link is the capability to see that blocked call and to
//! submit a request for exactly it: those two calls need no token. Everything else is the
//! admin API's bearer token and roles: managers see and decide their reports' requests,
//! approvers and admins everyone's, auditors read all and decide nothing. An unknown or expired
//! link is a clear 404 or 410, audited through the refusal log (bounded per client), and a
//! client over its share of such refusals is answered 429 without a lookup, so guessing ids is
//! slow as well as hopeless (80 random bits).

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
use crate::exemptions::grant::{Grantor, manages};
use crate::policy::{Action, Reason};
use crate::requests::flow::{self, Deps, FlowError, Submission};
use crate::requests::store::Submitted;
use crate::requests::{Draft, ExemptionRequest, decider_refusal};

const DECIDERS: &[Role] = &[Role::Admin, Role::Manager, Role::Approver];
const READERS: &[Role] = &[Role::Admin, Role::Manager, Role::Approver, Role::Auditor];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub draft: Option<String>,
    pub justification: Option<String>,
    /// How long, e.g. "1h", "1d", "3d", "1w".
    pub duration: Option<String>,
    pub ticket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// Approve only: shorter than asked (default: as asked).
    pub duration: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub user: Option<String>,
}

/// The hook for signed-in requesters (oidc16): with OIDC configured, the console's request page
/// checks that the person signed in is the draft's user before it submits. The JSON API has no
/// sign-in of its own, so here the link alone is the capability; this is the one place to add
/// the check when the API learns sessions.
pub fn requester_may_submit(
    _state: &AdminState,
    _headers: &HeaderMap,
    _draft: &Draft,
) -> Result<(), String> {
    Ok(())
}

pub(crate) fn deps<'a>(
    state: &'a AdminState,
    cfg: &'a crate::config::Config,
    client: SocketAddr,
) -> Deps<'a> {
    Deps {
        config: cfg,
        audit: &state.shared.audit,
        exemptions: &state.store,
        requests: &state.requests,
        client: client.to_string(),
        now: state.shared.clock.now(),
    }
}

/// A request as the API shows it, with its status page.
pub fn view(state: &AdminState, r: &ExemptionRequest) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    let cfg = state.shared.config.load();
    v["url"] = json!(state.requests.request_url(&cfg, &r.id));
    v
}

fn draft_view(state: &AdminState, d: &Draft) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    let cfg = state.shared.config.load();
    v["url"] = json!(state.requests.draft_url(&cfg, &d.id));
    v
}

/// Whether the client may look up another link, and the audited 404/410 if the lookup failed.
/// The console's request page shares it, so a page and the API count guesses alike.
pub(crate) fn link_refusal(
    state: &AdminState,
    client: SocketAddr,
    method: &Method,
    path: &str,
    status: StatusCode,
    message: &str,
) -> Response {
    let mut r = AuditRecord::new(
        uuid::Uuid::now_v7().to_string(),
        Kind::Admin,
        client.to_string(),
        "anonymous".into(),
        String::new(),
        0,
    );
    r.method = Some(method.to_string());
    r.path = Some(path.chars().take(256).collect());
    r.action = Action::Block;
    r.reason = Reason::AdminDenied;
    r.status = Some(status.as_u16());
    r.error = Some("request_link".into());
    if state.refusals.admit(
        client.ip(),
        status.as_u16(),
        Reason::AdminDenied,
        SystemTime::now(),
    ) {
        state.shared.audit.submit(r);
        error(status, message)
    } else {
        // Counted in the client's summary; and no more lookups for it this window.
        state.guessing.pause(client.ip(), SystemTime::now());
        error(status, message)
    }
}

fn guessing(state: &AdminState, client: SocketAddr) -> Option<Response> {
    state.guessing.paused(client.ip(), SystemTime::now()).then(|| {
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many unknown or expired request links from your address; wait a minute and open the link from the deny message again",
        )
    })
}

fn flow_error(
    state: &AdminState,
    client: SocketAddr,
    method: &Method,
    path: &str,
    e: FlowError,
) -> Response {
    match e {
        FlowError::UnknownDraft(_) => link_refusal(
            state,
            client,
            method,
            path,
            StatusCode::NOT_FOUND,
            &e.to_string(),
        ),
        FlowError::DraftExpired(_) => link_refusal(
            state,
            client,
            method,
            path,
            StatusCode::GONE,
            &e.to_string(),
        ),
        FlowError::Submit(_) | FlowError::Decide(_) => {
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        FlowError::Grant(g) => {
            use crate::exemptions::grant::GrantError as G;
            let status = match g {
                G::SelfGrant | G::NotTheirManager { .. } | G::NoGrantRole | G::GroupNeedsAdmin => {
                    StatusCode::FORBIDDEN
                }
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, &g.to_string())
        }
        FlowError::NotFound(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        FlowError::NotOpen(..) => error(StatusCode::CONFLICT, &e.to_string()),
        FlowError::Storage(m) => {
            tracing::error!(error = %m, "cannot store an exemption request change");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("could not be stored durably ({m}); nothing changed, try again"),
            )
        }
    }
}

/// `GET /v1/drafts/{id}`: what the link's call was, and the request made from it, if any.
pub async fn show_draft(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/drafts/{id}");
    if let Some(slow) = guessing(&state, client) {
        return slow;
    }
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    if !crate::requests::plausible_id(&id) {
        let e = FlowError::UnknownDraft(id.chars().take(40).collect());
        return flow_error(&state, client, &Method::GET, &path, e);
    }
    match flow::live_draft(&d, &id).await {
        Ok(draft) => {
            let request = state
                .requests
                .store
                .latest_for(&draft.user, &draft.tool, &draft.workflow)
                .filter(|r| r.draft == *draft.id || r.is_open());
            let mut v = json!({ "draft": draft_view(&state, &draft) });
            if draft.anonymous {
                v["exemptable"] = json!(false);
                v["why"] = json!(crate::requests::rules::SubmitError::Anonymous.to_string());
            }
            if let Some(r) = request {
                v["request"] = view(&state, &r);
            }
            Json(v).into_response()
        }
        Err(e) => flow_error(&state, client, &Method::GET, &path, e),
    }
}

/// `POST /v1/requests`: submit from a draft.
pub async fn submit(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Response {
    let path = "/v1/requests";
    if let Some(slow) = guessing(&state, client) {
        return slow;
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(rejection) => return super::json_rejection(rejection),
    };
    let Some(draft) = body.draft.filter(|d| !d.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "draft is required: the id at the end of the request link (…/r/<id>)",
        );
    };
    if !crate::requests::plausible_id(&draft) {
        let e = FlowError::UnknownDraft(draft.chars().take(40).collect());
        return flow_error(&state, client, &Method::POST, path, e);
    }
    let duration = match body.duration.as_deref() {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "duration is required: how long you need it, e.g. \"1h\", \"1d\", \"3d\" or \"1w\"",
            );
        }
        Some(d) => match parse_duration(d) {
            Ok(d) => d,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("duration: {e}")),
        },
    };
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    match flow::live_draft(&d, &draft).await {
        Ok(dr) => {
            if let Err(why) = requester_may_submit(&state, &headers, &dr) {
                return error(StatusCode::FORBIDDEN, &why);
            }
        }
        Err(e) => return flow_error(&state, client, &Method::POST, path, e),
    }
    let s = Submission {
        draft,
        justification: body.justification.unwrap_or_default(),
        duration,
        ticket: body.ticket,
    };
    match flow::submit(&d, s).await {
        Ok(Submitted::New(r)) => (StatusCode::CREATED, Json(view(&state, &r))).into_response(),
        Ok(Submitted::Existing(r)) => {
            let mut v = view(&state, &r);
            v["existing"] = json!(true);
            (StatusCode::OK, Json(v)).into_response()
        }
        Err(e) => flow_error(&state, client, &Method::POST, path, e),
    }
}

/// A decider the grant rules refuse for who they are: the audited 403 with the wording the
/// console shows too (`requests::decider_refusal`).
fn refused_decider(
    state: &AdminState,
    caller: &Caller,
    client: SocketAddr,
    path: &str,
    message: &str,
) -> Response {
    super::record_refusal(
        state,
        Some(caller),
        client,
        &Method::POST,
        path,
        StatusCode::FORBIDDEN,
        None,
    );
    error(StatusCode::FORBIDDEN, message)
}

/// Whether the caller sees this request: managers their reports', the other roles everyone's.
pub fn visible(state: &AdminState, caller: &Caller, r: &ExemptionRequest) -> bool {
    if caller.has(Role::Admin) || caller.has(Role::Approver) || caller.has(Role::Auditor) {
        return true;
    }
    let cfg = state.shared.config.load();
    caller.has(Role::Manager) && manages(&cfg.identity.directory, &caller.user, &r.user)
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
        "/v1/requests",
        READERS,
    ) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    if let Some(s) = q.state.as_deref()
        && !["open", "approved", "denied", "expired"].contains(&s)
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("state = {s:?}: use open, approved, denied or expired"),
        );
    }
    let items: Vec<serde_json::Value> = state
        .requests
        .store
        .list()
        .iter()
        .filter(|r| visible(&state, &caller, r))
        .filter(|r| q.state.as_deref().is_none_or(|s| r.state.as_str() == s))
        .filter(|r| q.user.as_deref().is_none_or(|u| r.user == u))
        .map(|r| view(&state, r))
        .collect();
    Json(json!({ "requests": items })).into_response()
}

pub async fn show(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/requests/{id}");
    let caller = match auth::require(&state, &headers, client, &Method::GET, &path, READERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    match state.requests.store.get(&id) {
        Some(r) if visible(&state, &caller, &r) => Json(view(&state, &r)).into_response(),
        Some(_) => auth::refuse(
            &state,
            Some(&caller),
            client,
            &Method::GET,
            &path,
            "to be the requester's manager, an approver, an auditor or an admin",
        ),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no exemption request with id {id:?}"),
        ),
    }
}

pub async fn approve(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> Response {
    let path = format!("/v1/requests/{id}/approve");
    let caller = match auth::require(&state, &headers, client, &Method::POST, &path, DECIDERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    // An empty body approves as asked.
    let body = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => DecideBody {
            duration: None,
            comment: None,
        },
        Err(rejection) => return super::json_rejection(rejection),
    };
    let duration = match body.duration.as_deref().map(parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("duration: {e}")),
    };
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    let grantor = Grantor::with_roles(&caller.user, &caller.roles);
    match flow::approve(&d, &id, &grantor, duration, body.comment).await {
        Ok((r, e)) => {
            let mut v = view(&state, &r);
            v["granted"] = serde_json::to_value(&e).unwrap_or_default();
            Json(v).into_response()
        }
        Err(FlowError::Grant(g)) => match decider_refusal(&cfg, &g, &caller.user) {
            Some(why) => refused_decider(&state, &caller, client, &path, &why),
            None => flow_error(&state, client, &Method::POST, &path, FlowError::Grant(g)),
        },
        Err(e) => flow_error(&state, client, &Method::POST, &path, e),
    }
}

pub async fn deny(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> Response {
    let path = format!("/v1/requests/{id}/deny");
    let caller = match auth::require(&state, &headers, client, &Method::POST, &path, DECIDERS) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(rejection) => return super::json_rejection(rejection),
    };
    if body.duration.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "duration is for approvals; a denial takes only a comment",
        );
    }
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    let grantor = Grantor::with_roles(&caller.user, &caller.roles);
    match flow::deny(&d, &id, &grantor, body.comment.as_deref().unwrap_or("")).await {
        Ok(r) => Json(view(&state, &r)).into_response(),
        Err(FlowError::Grant(g)) => match decider_refusal(&cfg, &g, &caller.user) {
            Some(why) => refused_decider(&state, &caller, client, &path, &why),
            None => flow_error(&state, client, &Method::POST, &path, FlowError::Grant(g)),
        },
        Err(e) => flow_error(&state, client, &Method::POST, &path, e),
    }
}
