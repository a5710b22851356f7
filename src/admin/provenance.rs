//! The provenance ledger on the admin API: an auditor looks up the entry of a call by its audit
//! record id, and `aigate provenance scan` asks which entries hold a batch of fingerprints
//! (the embedded ledger is open in the running gateway alone; with PostgreSQL any replica
//! answers for all).

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
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
/// The lookup's binary body: fingerprints as little-endian u64s, 8 bytes each, nothing else.
/// `aigate provenance scan` sends every fingerprint of every document it reads (tens of
/// millions for a large tree), and as JSON numbers their encoding and decoding cost the scan
/// and the gateway more than everything else they did (docs/provenance.md, "Scan speed").
pub const BINARY_PRINTS: &str = "application/octet-stream";

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

/// The body's media type, lower case, without parameters.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_binary(headers: &HeaderMap) -> bool {
    content_type(headers) == BINARY_PRINTS
}

/// The fingerprints of a lookup's body: JSON (`{"fingerprints": [u64, …]}`) or
/// [`BINARY_PRINTS`], as its `Content-Type` says.
fn prints_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u64>, Box<Response>> {
    let kind = content_type(headers);
    if kind == BINARY_PRINTS {
        if body.len() % 8 != 0 {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a {BINARY_PRINTS} lookup is fingerprints of 8 bytes each (little-endian u64); this body has {} bytes, not a multiple of 8",
                    body.len()
                ),
            )));
        }
        return Ok(crate::provenance::ledger::unpack(body));
    }
    if kind == "application/json" || kind.ends_with("+json") {
        return Json::<Lookup>::from_bytes(body)
            .map(|Json(l)| l.fingerprints)
            .map_err(|r| Box::new(json_rejection(r)));
    }
    Err(Box::new(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &format!(
            "send the fingerprints as application/json ({{\"fingerprints\": [u64, …]}}) or as {BINARY_PRINTS} (little-endian u64s), with that Content-Type"
        ),
    )))
}

/// A ledger read's fingerprints and the ledger to ask.
type LedgerRead = (
    Vec<u64>,
    std::sync::Arc<dyn crate::provenance::ledger::Ledger>,
);

/// The fingerprints of an authorised ledger read's body, within [`MAX_LOOKUP`], and the
/// ledger to ask; or the refusal to answer with.
fn ledger_read(
    state: &AdminState,
    client: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<LedgerRead, Box<Response>> {
    auth::require(state, headers, client, &Method::POST, path, LEDGER_READERS)?;
    let body = body.map_err(|r| Box::new(error(r.status(), &r.body_text())))?;
    let fingerprints = prints_of(headers, &body)?;
    if fingerprints.len() > MAX_LOOKUP {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_LOOKUP} fingerprints a lookup; split the batch"),
        )));
    }
    let ledger = state
        .shared
        .ledger
        .clone()
        .ok_or_else(|| Box::new(no_ledger()))?;
    Ok((fingerprints, ledger))
}

/// The blocking ledger call's answer through `ok`, or the error a client is given.
fn answered<T>(
    answer: Result<Result<T, crate::provenance::ledger::LedgerError>, tokio::task::JoinError>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match answer {
        Ok(Ok(t)) => ok(t),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ledger lookup failed",
        ),
    }
}

/// `POST /v1/provenance/lookup` `{"fingerprints": [u64, …]}` (or the same as
/// [`BINARY_PRINTS`]): the entries holding any of them, with the hits
/// (`[fingerprint, entry id]`).
pub async fn lookup(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (fingerprints, ledger) =
        match ledger_read(&state, client, &headers, "/v1/provenance/lookup", body) {
            Ok(read) => read,
            Err(refused) => return *refused,
        };
    let found = tokio::task::spawn_blocking(move || ledger.find(&fingerprints)).await;
    answered(found, |m| {
        Json(json!({ "hits": m.hits, "entries": m.entries })).into_response()
    })
}

/// `POST /v1/provenance/may-hold`, the fingerprints as in a lookup: those the ledger may hold
/// (its membership filter's answer: every one it holds and about one in a hundred it does
/// not), sorted and distinct, in the body's own form ([`BINARY_PRINTS`], or
/// `{"fingerprints": […]}`). A scan asks this for every fingerprint, then looks up the few
/// left: it sorts, de-duplicates and checks what it already found for those alone.
pub async fn may_hold(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let binary = is_binary(&headers);
    let (fingerprints, ledger) =
        match ledger_read(&state, client, &headers, "/v1/provenance/may-hold", body) {
            Ok(read) => read,
            Err(refused) => return *refused,
        };
    let answer = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        ledger.may_hold(&fingerprints, &mut out).map(|()| out)
    })
    .await;
    answered(answer, |out| {
        if binary {
            let body = crate::provenance::ledger::pack(&out);
            ([(header::CONTENT_TYPE, BINARY_PRINTS)], body).into_response()
        } else {
            Json(json!({ "fingerprints": out })).into_response()
        }
    })
}
