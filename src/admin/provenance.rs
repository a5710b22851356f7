//! The provenance ledger on the admin API: an auditor looks up the entry of a call by its audit
//! record id, and `aigate provenance scan` asks which entries hold a batch of fingerprints
//! (the embedded ledger is open in the running gateway alone; with PostgreSQL any replica
//! answers for all).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth;
use super::{AdminState, error, json_rejection};
use crate::config::Role;

const LEDGER_READERS: &[Role] = &[Role::Admin, Role::Auditor];
/// Fingerprints in one lookup: a few MB of source at a time.
pub const MAX_LOOKUP: usize = 200_000;
/// The lookup's body limit: MAX_LOOKUP fingerprints as JSON numbers.
pub const MAX_LOOKUP_BODY: usize = 5 << 20;

fn no_ledger() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the provenance ledger is off; set provenance.enabled = true",
    )
}

/// `GET /v1/provenance/entries/{id}`: the ledger entry of the call with this audit record id.
pub async fn entry(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/provenance/entries/{id}");
    if let Err(refused) = auth::require(
        &state,
        &headers,
        client,
        &Method::GET,
        &path,
        LEDGER_READERS,
    ) {
        return *refused;
    }
    let Some(ledger) = state.shared.ledger.clone() else {
        return no_ledger();
    };
    let found = tokio::task::spawn_blocking(move || ledger.entry(&id)).await;
    match found {
        Ok(Ok(Some(e))) => Json(e).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "no ledger entry for this record id: the call was not captured, captured nothing, or its entry is past provenance.retention",
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ledger lookup failed",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    fingerprints: Vec<u64>,
}

/// `POST /v1/provenance/lookup` `{"fingerprints": [u64, …]}`: the entries holding any of them,
/// with the hits (`[fingerprint, entry id]`).
pub async fn lookup(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Lookup>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refused) = auth::require(
        &state,
        &headers,
        client,
        &Method::POST,
        "/v1/provenance/lookup",
        LEDGER_READERS,
    ) {
        return *refused;
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return json_rejection(rejection),
    };
    if body.fingerprints.len() > MAX_LOOKUP {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_LOOKUP} fingerprints a lookup; split the batch"),
        );
    }
    let Some(ledger) = state.shared.ledger.clone() else {
        return no_ledger();
    };
    let found = tokio::task::spawn_blocking(move || ledger.find(&body.fingerprints)).await;
    match found {
        Ok(Ok(m)) => Json(json!({ "hits": m.hits, "entries": m.entries })).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ledger lookup failed",
        ),
    }
}
