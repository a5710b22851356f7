//! The two HTTP ends of OIDC sign-in: `GET /console/oidc/login` sends the browser to the
//! provider, `GET /console/oidc/callback` takes it back (`oidc.rs` does the protocol). Every
//! sign-in and every refusal is an audit record (`console_signed_in`, `console_signin_refused`
//! with `admin.via = "oidc"`); a good callback ends in a console session through
//! `console::sign_in`. Refusals count towards the sign-in limiter and towards the bounded per-address share of records
//! (`admin.refusals`), as anything an outsider can provoke does.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::oidc::{
    BROWSER_COOKIE, CALLBACK_PATH, CallbackQuery, Check, LOGIN_PATH, PENDING_TTL, Refused,
};
use super::signin::{local_path, rate_limited, sign_in_with};
use crate::admin::{AdminState, Caller};
use crate::audit::{AuditRecord, Kind};
use crate::policy::{Action, Reason};
use crate::proxy::new_id;

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    pub next: Option<String>,
}

/// `GET /console/oidc/login`: to the provider, with this browser's binding cookie.
pub async fn login(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Query(q): Query<NextQuery>,
) -> Response {
    let Some(oidc) = state.console.oidc().cloned() else {
        return not_configured();
    };
    if let Some(limited) = rate_limited(&state, client, LOGIN_PATH) {
        return limited;
    }
    let next = q.next.as_deref().and_then(local_path).unwrap_or("/");
    match oidc
        .begin(next, client.ip(), state.shared.clock.now())
        .await
    {
        Ok(started) => {
            let mut resp = redirect(&started.authorize_url);
            let cookie = format!(
                "{BROWSER_COOKIE}={}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={}{}",
                started.browser,
                PENDING_TTL.as_secs(),
                secure(&state)
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(refused) => refuse(&state, client, LOGIN_PATH, refused),
    }
}

/// `GET /console/oidc/callback`: the provider's answer. A good one ends in a console session
/// (`console::sign_in`, `via = "oidc"`) and a redirect to the page asked for; a failed one counts
/// towards the address's failed sign-ins, as a wrong admin token does.
pub async fn callback(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = state.console.oidc().cloned() else {
        return not_configured();
    };
    let mut resp = match rate_limited(&state, client, CALLBACK_PATH) {
        Some(limited) => limited,
        None => {
            let browser = super::cookie(&headers, BROWSER_COOKIE);
            let directory = state.shared.config.load().identity.directory.clone();
            let now = state.shared.clock.now();
            match oidc.finish(&q, browser, &directory, now).await {
                Ok(signed) => {
                    let roles: Vec<&str> =
                        signed.roles.iter().map(|r| super::role_name(*r)).collect();
                    let mut detail = serde_json::Map::new();
                    detail.insert("issuer".into(), json!(oidc.issuer()));
                    detail.insert("subject".into(), json!(signed.subject));
                    detail.insert("groups".into(), json!(signed.groups));
                    detail.insert("roles".into(), json!(roles));
                    let caller = Caller {
                        user: signed.user,
                        roles: signed.roles,
                    };
                    let signed_in =
                        sign_in_with(&state, caller, "oidc", client, &signed.next, detail).await;
                    same_site_hop(signed_in)
                }
                Err(refused) => {
                    // A provider that is down or busy is not the browser's failure.
                    if !matches!(refused.check, Check::Unavailable | Check::Busy) {
                        state
                            .console
                            .attempts
                            .failed(client.ip(), state.shared.clock.now());
                    }
                    refuse(&state, client, CALLBACK_PATH, refused)
                }
            }
        }
    };
    // The binding is spent either way.
    let clear = format!(
        "{BROWSER_COOKIE}=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure(&state)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The signed-in answer, as a page of the console's own that moves on to `next` (`Refresh`, and
/// a link) instead of a 303. The navigation that reached the callback began at the provider, on
/// another site, and the browser keeps that origin for the whole redirect chain: the new
/// `SameSite=Strict` session cookie would not go with a 303 to `next`, and the person would land
/// on the sign-in page again (Chromium does exactly that). A navigation the console's page
/// starts is same-site, and carries it. `next` is already a local path (`sign_in_with`).
fn same_site_hop(signed_in: Response) -> Response {
    if signed_in.status() != StatusCode::SEE_OTHER {
        return signed_in;
    }
    let Some(next) = signed_in
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return signed_in;
    };
    let mut resp = super::layout::bare_page(
        StatusCode::OK,
        "Signed in",
        html! {
            div class="signin" {
                h1 { "Signed in" }
                p { a id="continue" href=(next) { "Continue to the console" } }
            }
        },
    );
    for cookie in signed_in.headers().get_all(header::SET_COOKIE) {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&format!("0; url={next}")) {
        resp.headers_mut().insert(header::REFRESH, v);
    }
    resp
}

fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not configured",
        "Sign-in with an OpenID provider is not configured here ([console.oidc]).",
    )
}

fn refuse(state: &AdminState, client: SocketAddr, path: &str, refused: Refused) -> Response {
    let status = match refused.check {
        Check::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Check::Busy => StatusCode::TOO_MANY_REQUESTS,
        Check::State | Check::Browser => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    let user = refused.user.as_deref().unwrap_or("anonymous");
    let mut r = record(client, user, path, status);
    r.action = Action::Block;
    r.reason = Reason::ConsoleSigninRefused;
    r.error = Some(format!(
        "oidc {}: {}",
        refused.check.as_str(),
        refused.detail
    ));
    r.admin = Some(json!({ "via": "oidc", "check": refused.check.as_str() }));
    crate::admin::listener::submit_refusal(state, r);
    let text = match refused.check {
        Check::Unavailable => format!(
            "Sign-in with {} is unavailable: {}. Sign in with an admin token instead, or try again shortly.",
            state.console.oidc().map_or("the provider", |o| o.issuer()),
            refused.detail
        ),
        _ => format!("Sign-in refused: {}.", refused.detail),
    };
    page(status, "Sign-in refused", &text)
}

fn record(client: SocketAddr, user: &str, path: &str, status: StatusCode) -> AuditRecord {
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        client.to_string(),
        user.into(),
        String::new(),
        0,
    );
    r.method = Some("GET".into());
    r.path = Some(path.into());
    r.status = Some(status.as_u16());
    r
}

fn secure(state: &AdminState) -> &'static str {
    if state.console.tls()
        || state
            .console
            .oidc()
            .is_some_and(|o| o.redirect_url().starts_with("https:"))
    {
        "; Secure"
    } else {
        ""
    }
}

/// 303 to the provider. The console router's layer adds the security headers (no `Referer`
/// carries the callback's code anywhere, nothing caches it).
fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A refusal, in the console's bare layout, with the way back to the sign-in page.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    super::layout::bare_page(
        status,
        title,
        html! {
            div class="signin" {
                h1 { (title) }
                p role="alert" { (text) }
                p { a href="/signin" { "Back to sign-in" } }
            }
        },
    )
}
