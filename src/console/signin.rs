//! Local sign-in: an admin token (the same tokens as the JSON API, hashed in config) exchanged
//! for a session at `/signin`, and the one-time link `aigate run` prints for the first admin.
//!
//! Failed attempts are counted per client address (an IPv4 address or an IPv6 /64, as the
//! refusal log counts them): past `MAX_FAILURES` in `WINDOW`, every attempt from there is
//! refused with 429 until the window ends, whether its token is right or not, so guessing costs
//! a minute per handful of guesses. Every sign-in and every refusal is an audit record; the
//! token tried, or the link used, never is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::session::{self, OnceGrant, SessionError};
use super::{Signed, layout, see_other, verify_csrf};
use crate::admin::{AdminState, Caller};
use crate::audit::refusals::Source;
use crate::audit::{AuditRecord, Kind};
use crate::config::Role;
use crate::policy::{Action, Reason};
use crate::proxy::new_id;

/// Failed sign-ins one address may make per window before it has to wait.
pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// A one-time link works this long after `aigate run` printed it.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// Who the one-time link signs in when `admin.tokens` names no admin: a built-in local admin.
pub const LOCAL_ADMIN: &str = "local-admin";
/// Addresses counted at most; past this the oldest window is forgotten first.
const TRACKED: usize = 4096;

/// Failed attempts per client address, per window.
#[derive(Debug, Default)]
pub struct Attempts {
    by_source: Mutex<HashMap<Source, (SystemTime, u32)>>,
}

impl Attempts {
    /// `Some(wait)` if `ip` has used up its failures for this window.
    fn blocked(&self, ip: std::net::IpAddr, now: SystemTime) -> Option<Duration> {
        let map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let (start, n) = map.get(&Source::of(ip))?;
        let elapsed = now.duration_since(*start).unwrap_or(Duration::ZERO);
        (*n >= MAX_FAILURES && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    pub(super) fn failed(&self, ip: std::net::IpAddr, now: SystemTime) {
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= TRACKED {
            map.retain(|_, (start, _)| {
                now.duration_since(*start).unwrap_or(Duration::ZERO) < WINDOW
            });
        }
        if map.len() >= TRACKED {
            let oldest = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let entry = map.entry(Source::of(ip)).or_insert((now, 0));
        if now.duration_since(entry.0).unwrap_or(Duration::ZERO) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// `next` if it is a path on this console; anything else (another host, `//host`, `/\host`,
/// a scheme, control characters) is not followed: an open redirect would let a phishing link
/// end on a look-alike site after a real sign-in.
pub fn local_path(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && !next.chars().any(char::is_control);
    ok.then_some(next)
}

/// `/signin`, with `next` when it is not the front page.
pub fn signin_url(next: &str) -> String {
    match local_path(next) {
        Some("/") | None => "/signin".to_string(),
        Some(path) => match serde_urlencoded::to_string([("next", path)]) {
            Ok(q) => format!("/signin?{q}"),
            Err(_) => "/signin".to_string(),
        },
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn form(State(state): State<AdminState>, Query(q): Query<NextQuery>) -> Response {
    let next = q.next.as_deref().and_then(local_path).unwrap_or("/");
    signin_page(&state, StatusCode::OK, next, None)
}

fn signin_page(
    state: &AdminState,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    // `[console.oidc]`: the provider's link first; while it cannot be reached, why.
    let oidc = state.console.oidc().map(|o| {
        let href = match serde_urlencoded::to_string([("next", next)]) {
            Ok(q) if next != "/" => format!("{}?{q}", super::oidc::LOGIN_PATH),
            _ => super::oidc::LOGIN_PATH.to_string(),
        };
        (o.name().to_string(), href, o.status().err())
    });
    layout::bare_page(
        status,
        "Sign in",
        html! {
            div class="signin" {
                h1 { "Sign in to aigate" }
                @if let Some(e) = error {
                    p class="error" role="alert" id="signin-error" { (e) }
                }
                @if let Some((name, href, problem)) = &oidc {
                    p { a class="button" id="signin-oidc" href=(href) { "Sign in with " (name) } }
                    @if let Some(why) = problem {
                        p class="hint" { "Sign-in with " (name) " is unavailable right now: " (why) "." }
                    }
                    p class="hint" { "Or with an admin token:" }
                }
                form method="post" action="/signin" class="stack" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Admin token" }
                    input type="password" id="token" name="token" autocomplete="current-password" required
                        aria-describedby=[error.map(|_| "signin-error")];
                    p class="hint" { "The bearer token you use with the admin API and " code { "aigate exemption" } "." }
                    button type="submit" { "Sign in" }
                }
                p class="hint" {
                    "First time here? " code { "aigate run" } " prints a one-time sign-in link for the first admin."
                }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SigninForm>,
) -> Response {
    let next = local_path(&f.next).unwrap_or("/");
    // Login CSRF: another site must not sign a visitor in as the attacker.
    if let Some(why) = super::cross_site(&headers) {
        refused(
            &state,
            client,
            "/signin",
            StatusCode::FORBIDDEN,
            &format!("cross-site sign-in form: {why}"),
        );
        return signin_page(
            &state,
            StatusCode::FORBIDDEN,
            next,
            Some("This sign-in came from another site and was refused."),
        );
    }
    if let Some(limited) = rate_limited(&state, client, "/signin") {
        return limited;
    }
    match crate::admin::auth::by_token(&state, f.token.trim()) {
        Some(caller) => sign_in(&state, caller, "token", client, next).await,
        None => {
            state
                .console
                .attempts
                .failed(client.ip(), state.shared.clock.now());
            refused(
                &state,
                client,
                "/signin",
                StatusCode::UNAUTHORIZED,
                "unknown admin token",
            );
            signin_page(
                &state,
                StatusCode::UNAUTHORIZED,
                next,
                Some(
                    "That token is not an admin token aigate knows. Check it, or ask an admin for one.",
                ),
            )
        }
    }
}

/// `/signin/once/{token}`: the link `aigate run` printed. It works once, within `LINK_TTL`.
pub async fn once(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    // The link's secret is not written to the audit log, even when it failed.
    let path = "/signin/once/…";
    if let Some(limited) = rate_limited(&state, client, path) {
        return limited;
    }
    let now = state.shared.clock.now();
    match state
        .console
        .store
        .take_once(&session::key_of(&token), now)
        .await
    {
        Ok(Some(grant)) => {
            let caller = Caller {
                user: grant.user,
                roles: grant.roles,
            };
            sign_in(&state, caller, "link", client, "/").await
        }
        Ok(None) => {
            state.console.attempts.failed(client.ip(), now);
            refused(
                &state,
                client,
                path,
                StatusCode::UNAUTHORIZED,
                "one-time link unknown, used or expired",
            );
            layout::bare_page(
                StatusCode::UNAUTHORIZED,
                "Link used or expired",
                html! {
                    h1 { "This sign-in link no longer works" }
                    p { "A one-time link signs in once, within 15 minutes of " code { "aigate run" } " printing it." }
                    p { "Restart aigate in a terminal for a new one, or " a href="/signin" { "sign in with an admin token" } "." }
                },
            )
        }
        Err(e) => super::unavailable(&e),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AdminState>,
    signed: Signed,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(refused) = verify_csrf(&state, &signed, &f.csrf) {
        return refused;
    }
    if let Err(e) = state.console.store.remove(&signed.key).await {
        tracing::error!(error = %e, "console: cannot delete a session");
        return super::unavailable(&e);
    }
    let mut r = record(
        &signed.client,
        &signed.caller.user,
        "/signout",
        StatusCode::SEE_OTHER,
    );
    r.reason = Reason::ConsoleSignedOut;
    // An OIDC session ends at the provider too (RP-initiated logout), when it offers that.
    let oidc = state.console.oidc().filter(|_| signed.via == "oidc");
    let provider_logout = oidc.and_then(|o| o.end_session_url());
    r.admin = Some(json!({ "via": signed.via, "provider_logout": provider_logout.is_some() }));
    state.shared.audit.submit(r);
    let mut resp = match (&provider_logout, oidc) {
        (Some(url), Some(o)) => provider_sign_out(url, o.name()),
        _ => see_other("/signin"),
    };
    resp.headers_mut()
        .insert(header::SET_COOKIE, state.console.clear_cookie());
    resp
}

/// `GET /signed-out`: where the provider sends the browser after its own sign-out
/// (`post_logout_redirect_uri`). Says so, and offers to sign in again.
pub async fn signed_out() -> Response {
    super::layout::bare_page(
        StatusCode::OK,
        "Signed out",
        html! {
            div class="signin" {
                h1 { "Signed out" }
                p { "You are signed out of aigate and of your company's sign-in." }
                p { a id="signin-again" href="/signin" { "Sign in again" } }
            }
        },
    )
}

/// Signed out of aigate; on to the provider's end-session page. Not a redirect: the sign-out is
/// a form post, and the CSP's `form-action 'self'` stops a form's redirect to another origin, so
/// the page goes on by `Refresh` (and a link, for a browser that ignores it).
fn provider_sign_out(url: &str, provider: &str) -> Response {
    let mut resp = super::layout::bare_page(
        StatusCode::OK,
        "Signed out",
        html! {
            div class="signin" {
                h1 { "Signed out of aigate" }
                p { "Now signing you out at " (provider) " too." }
                p { a id="provider-logout" href=(url) { "Continue to " (provider) } }
            }
        },
    );
    if let Ok(v) = HeaderValue::from_str(&format!("0; url={url}")) {
        resp.headers_mut().insert(header::REFRESH, v);
    }
    resp
}

/// Sign `caller` in: a new session, its cookie, the `console_signed_in` record, and a 303 to
/// `next` (a local path; anything else goes to `/`). OIDC (`oidc.rs`) ends here too, with
/// `via = "oidc"`.
pub async fn sign_in(
    state: &AdminState,
    caller: Caller,
    via: &str,
    client: SocketAddr,
    next: &str,
) -> Response {
    sign_in_with(state, caller, via, client, next, serde_json::Map::new()).await
}

/// [`sign_in`], with more for the record's `admin` object (OIDC: issuer, subject, groups).
pub async fn sign_in_with(
    state: &AdminState,
    caller: Caller,
    via: &str,
    client: SocketAddr,
    next: &str,
    mut detail: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let cookie = match state.console.create(&caller, via, state).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot create a session");
            return super::unavailable(&e);
        }
    };
    let mut r = record(&client, &caller.user, "/signin", StatusCode::SEE_OTHER);
    r.reason = Reason::ConsoleSignedIn;
    r.action = Action::Allow;
    detail.insert("via".into(), json!(via));
    r.admin = Some(serde_json::Value::Object(detail));
    state.shared.audit.submit(r);
    let mut resp = see_other(local_path(next).unwrap_or("/"));
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

/// A new one-time sign-in link for the first admin: the path `/signin/once/<secret>`. It signs
/// in as the first `admin.tokens` entry with the admin role, or as the built-in `local-admin`
/// when there is none (the embedded default has no tokens).
pub async fn mint_link(state: &AdminState) -> Result<String, SessionError> {
    let user = {
        let cfg = state.shared.config.load();
        cfg.admin
            .tokens
            .iter()
            .find(|t| t.roles.contains(&Role::Admin))
            .map_or_else(|| LOCAL_ADMIN.to_string(), |t| t.user.clone())
    };
    let secret = session::secret()?;
    let grant = OnceGrant {
        user,
        roles: vec![Role::Admin],
        expires_at: state.shared.clock.now() + LINK_TTL,
    };
    state
        .console
        .store
        .insert_once(&session::key_of(&secret), &grant)
        .await?;
    Ok(format!("/signin/once/{secret}"))
}

/// 429 if the address has used up its failed attempts: audited (bounded, like every
/// unauthenticated refusal).
pub(super) fn rate_limited(state: &AdminState, client: SocketAddr, path: &str) -> Option<Response> {
    let wait = state
        .console
        .attempts
        .blocked(client.ip(), state.shared.clock.now())?;
    let secs = wait.as_secs().max(1);
    refused(
        state,
        client,
        path,
        StatusCode::TOO_MANY_REQUESTS,
        &format!("too many failed sign-ins from this address; retry in {secs} s"),
    );
    let mut resp = layout::bare_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        html! {
            h1 { "Too many sign-in attempts" }
            p { "This address made " (MAX_FAILURES) " failed attempts within a minute. Try again in " (secs) " seconds." }
        },
    );
    if let Ok(v) = secs.to_string().parse() {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(resp)
}

fn refused(state: &AdminState, client: SocketAddr, path: &str, status: StatusCode, why: &str) {
    crate::admin::record_refusal(
        state,
        None,
        client,
        &Method::POST,
        path,
        status,
        Some((Reason::ConsoleSigninRefused, why.to_string())),
    );
}

fn record(client: &SocketAddr, user: &str, path: &str, status: StatusCode) -> AuditRecord {
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        client.to_string(),
        user.into(),
        String::new(),
        0,
    );
    r.method = Some("POST".into());
    r.path = Some(path.into());
    r.action = Action::Allow;
    r.status = Some(status.as_u16());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for ok in ["/", "/exemptions", "/audit?user=alice&since=24h", "/r/abc"] {
            assert_eq!(local_path(ok), Some(ok));
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "evil.example",
            "javascript:alert(1)",
            "/x\r\nSet-Cookie: a=b",
            "",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(signin_url("/"), "/signin");
        assert_eq!(signin_url("//evil.example"), "/signin");
        assert_eq!(
            signin_url("/audit?user=a&x=1"),
            "/signin?next=%2Faudit%3Fuser%3Da%26x%3D1"
        );
    }

    #[test]
    fn failures_are_limited_per_address_and_window() {
        let a = Attempts::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.blocked(ip, t0), None);
            a.failed(ip, t0);
        }
        assert_eq!(
            a.blocked(ip, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(a.blocked(other, t0), None);
        assert_eq!(a.blocked(ip, t0 + WINDOW), None);
        // IPv6: one /64 is one client.
        let v6a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: std::net::IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            a.failed(v6a, t0);
        }
        assert!(a.blocked(v6b, t0).is_some());
    }
}
