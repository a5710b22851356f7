//! The admin API (axum, its own listener): exemptions for managers, the audit log, `explain` and
//! metrics for security, health for the load balancer. Every caller is identified by a bearer token; every refusal and every
//! grant or revocation is an audit record in the same hash chain as the traffic.

pub mod auth;
pub mod exemptions;
pub mod findings;
pub mod listener;
mod provenance;
pub(crate) mod read;
pub mod requests;

pub use provenance::BINARY_PRINTS;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::exemptions::store::ExemptionStore;
use crate::proxy::Shared;

pub use auth::{Caller, record_refusal};

/// Admin request bodies are small; anything bigger is a mistake or an attack.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub store: Arc<ExemptionStore>,
    /// Bounds the records that refusals of unauthenticated callers can write.
    pub refusals: Arc<crate::audit::refusals::RefusalLog>,
    /// The exemption request loop: drafts, requests, webhooks.
    pub requests: Arc<crate::requests::Requests>,
    /// Clients paused for guessing request links.
    pub guessing: Arc<crate::audit::refusals::Guessing>,
    /// The web console's sessions and sign-in limiter (`console`).
    pub console: Arc<crate::console::Console>,
    /// The provenance review queue; `None` when provenance is off.
    pub findings: Option<Arc<dyn crate::provenance::review::FindingStore>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/v1/exemptions",
            get(exemptions::list).post(exemptions::grant),
        )
        .route(
            "/v1/exemptions/{id}",
            get(exemptions::show).delete(exemptions::revoke),
        )
        .route("/v1/drafts/{id}", get(requests::show_draft))
        .route("/v1/requests", get(requests::list).post(requests::submit))
        .route("/v1/requests/{id}", get(requests::show))
        .route(
            "/v1/requests/{id}/approve",
            axum::routing::post(requests::approve),
        )
        .route(
            "/v1/requests/{id}/deny",
            axum::routing::post(requests::deny),
        )
        .route("/v1/audit", get(read::audit))
        .route("/v1/explain", axum::routing::post(read::explain_call))
        .route("/v1/ai-hosts", get(read::ai_hosts))
        .route("/metrics", get(read::metrics))
        .route("/v1/provenance/entries/{id}", get(provenance::entry))
        .route(
            "/v1/provenance/lookup",
            axum::routing::post(provenance::lookup)
                .layer(DefaultBodyLimit::max(provenance::MAX_LOOKUP_BODY)),
        )
        .route(
            "/v1/provenance/may-hold",
            axum::routing::post(provenance::may_hold)
                .layer(DefaultBodyLimit::max(provenance::MAX_LOOKUP_BODY)),
        )
        .route(
            "/v1/provenance/findings",
            get(findings::list)
                .post(findings::record)
                .layer(DefaultBodyLimit::max(provenance::MAX_LOOKUP_BODY)),
        )
        .route("/v1/provenance/findings/{id}", get(findings::show))
        .route(
            "/v1/provenance/findings/{id}/confirm",
            axum::routing::post(findings::confirm),
        )
        .route(
            "/v1/provenance/findings/{id}/clear",
            axum::routing::post(findings::clear),
        )
        .merge(crate::console::router())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/admin-api.md",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Ready while requests can be decided and audited. An unreachable PostgreSQL does not make a
/// replica unready: it keeps enforcing its last snapshot (taking every replica out of the load
/// balancer would stop all AI traffic); the body says so, and `aigate_storage_up` is 0.
async fn readyz(axum::extract::State(state): axum::extract::State<AdminState>) -> Response {
    if state.shared.audit.healthy() {
        let body = match state.store.db().map(|db| db.is_up()) {
            Some(false) => {
                "ready; PostgreSQL unreachable: enforcing with the last exemption snapshot, grants refused\n"
            }
            _ => "ready\n",
        };
        (StatusCode::OK, body).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written",
        )
    }
}

/// Every error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A body that is not the JSON we expect: 413 if too large, else 400 naming what is wrong
/// (axum's own text names the field and position).
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> Response {
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, &rejection.body_text())
}
