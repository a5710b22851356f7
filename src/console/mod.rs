//! The web console: server-rendered HTML on the admin listener, for managers, security
//! reviewers and admins. It is one more client of the same modules as the JSON API (`admin`,
//! `exemptions`, `audit`), never a second copy of a rule. Pages are rendered with maud, which
//! escapes every value it interpolates, so text a person typed (a reason, a ticket, a user
//! name) cannot become markup. Nothing runs inline: the CSP is `script-src 'self'`, the only
//! script is the vendored htmx, and every page reads without JavaScript.
//!
//! # Adding a page
//!
//! ```ignore
//! // src/console/things.rs
//! use axum::extract::State;
//! use axum::response::Response;
//! use maud::html;
//! use crate::admin::AdminState;
//! use crate::console::{Signed, page};
//!
//! pub async fn list(State(state): State<AdminState>, signed: Signed) -> Response {
//!     if let Err(refused) = signed.require(&state, &[Role::Admin, Role::Auditor]) {
//!         return refused; // an audited 403 page
//!     }
//!     page("Things", &signed, html! { h1 { "Things" } p { (some_user_text) } })
//! }
//! ```
//!
//! and one line in [`router`]: `.route("/things", get(things::list))`. Then:
//!
//! - [`Signed`] is the extractor for every page: the signed-in [`Caller`] and the session's CSRF
//!   token. Without a live session it answers with a redirect to `/signin?next=<this page>`.
//! - [`page`] wraps the body in the layout (header, navigation, the user and sign-out) and sets
//!   the status 200; [`page_with_status`] for a 400 that shows a form again with its error.
//! - A form that changes anything is `method="post"`, carries [`csrf_field`], and its handler
//!   calls [`verify_csrf`] first (a synchronizer token tied to the session, plus the
//!   `Origin`/`Sec-Fetch-Site` check). After a successful POST, answer [`see_other`] to a page
//!   (post/redirect/get), so a reload does not submit twice.
//! - Every console response gets the security headers (CSP, `X-Content-Type-Options`,
//!   `Referrer-Policy`, `X-Frame-Options`, `Cache-Control: no-store`) from [`router`]'s layer;
//!   add no inline `<script>` or `style=""`: the CSP refuses them. Styles go in
//!   `assets/console.css`, classes documented there.
//! - Another sign-in method (OIDC, `oidc.rs`) ends in [`sign_in`]: it creates the session, writes
//!   the `console_signed_in` record and redirects to the page asked for.
//!
//! URL layout: console pages at `/` and below (`/signin`, `/exemptions`, `/people`, `/audit`,
//! `/requests`, `/r/{id}`, `/provenance`), assets under `/console/assets/`, the JSON API under `/v1/`, and
//! `/healthz`, `/readyz`, `/metrics` as before.

mod assets;
mod exemptions;
mod explorer;
mod layout;
pub mod oidc;
pub mod oidc_pending;
mod overview;
mod people;
mod provenance;
mod requests;
pub mod session;
pub mod session_pg;
mod signin;
pub mod signin_oidc;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use crate::admin::{AdminState, Caller};
use crate::config::Role;
use crate::policy::Reason;
use session::{Session, SessionError, SessionStore};

pub use layout::{page, page_with_status};
pub use signin::{mint_link, sign_in};

/// The console's share of the admin state: where sessions live, and the sign-in limiter.
pub struct Console {
    store: Arc<dyn SessionStore>,
    db: Option<Arc<crate::storage::Db>>,
    /// The admin listener speaks TLS: cookies are `Secure` and `__Host-` prefixed.
    tls: bool,
    attempts: signin::Attempts,
    /// `[console.oidc]`: sign-in with the company's OpenID provider.
    oidc: Option<Arc<oidc::OidcSignIn>>,
}

impl Console {
    /// The embedded default: sessions in memory.
    pub fn in_memory(tls: bool) -> Console {
        Console {
            store: Arc::new(session::MemoryStore::default()),
            db: None,
            tls,
            attempts: signin::Attempts::default(),
            oidc: None,
        }
    }

    /// `storage.backend = "postgres"`: sessions shared by every replica.
    pub fn postgres(db: Arc<crate::storage::Db>, tls: bool) -> Console {
        Console {
            store: Arc::new(session_pg::PgStore::new(db.clone())),
            db: Some(db),
            tls,
            attempts: signin::Attempts::default(),
            oidc: None,
        }
    }

    /// Offer sign-in with the company's OpenID provider (`[console.oidc]`).
    pub fn with_oidc(mut self, oidc: Option<Arc<oidc::OidcSignIn>>) -> Console {
        self.oidc = oidc;
        self
    }

    pub fn oidc(&self) -> Option<&Arc<oidc::OidcSignIn>> {
        self.oidc.as_ref()
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The session cookie's name. With TLS, the `__Host-` prefix makes the browser refuse it
    /// unless it is `Secure`, host-only and `Path=/`: a sibling subdomain cannot plant one.
    fn cookie_name(&self) -> &'static str {
        if self.tls {
            "__Host-aigate_session"
        } else {
            "aigate_session"
        }
    }

    /// A new session for `caller`: the `Set-Cookie` value that carries it. `via` says how they
    /// signed in (`token`, `link`, `oidc`). Always a fresh id: whatever session id the browser
    /// held before is not reused (session fixation).
    pub async fn create(
        &self,
        caller: &Caller,
        via: &str,
        state: &AdminState,
    ) -> Result<HeaderValue, SessionError> {
        let now = state.shared.clock.now();
        let id = session::secret()?;
        let s = Session {
            user: caller.user.clone(),
            roles: caller.roles.clone(),
            csrf: session::secret()?,
            via: via.to_string(),
            created_at: now,
            last_seen: now,
        };
        self.store.insert(&session::key_of(&id), &s).await?;
        if let Some(db) = &self.db {
            let (idle, max) = timeouts(state);
            let db = db.clone();
            tokio::spawn(async move { session_pg::prune(&db, now, idle, max).await });
        }
        let max = timeouts(state).1;
        let cookie = format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name(),
            max.as_secs(),
            if self.tls { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).map_err(|e| SessionError::Store(e.to_string()))
    }

    /// The `Set-Cookie` value that clears the browser's copy.
    fn clear_cookie(&self) -> HeaderValue {
        let cookie = format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie_name(),
            if self.tls { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
    }

    /// The session the request's cookie names, if it is live; a dead one is deleted.
    async fn lookup(
        &self,
        state: &AdminState,
        headers: &HeaderMap,
    ) -> Result<Option<(String, Session)>, SessionError> {
        let Some(id) = cookie(headers, self.cookie_name()) else {
            return Ok(None);
        };
        let key = session::key_of(id);
        let Some(s) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let now = state.shared.clock.now();
        let (idle, max) = timeouts(state);
        if !s.live_at(now, idle, max) {
            self.store.remove(&key).await?;
            return Ok(None);
        }
        // Touch at most once a minute: a page of htmx requests is not a write each.
        if now
            .duration_since(s.last_seen)
            .is_ok_and(|d| d >= Duration::from_secs(60).min(idle / 4))
        {
            self.store.touch(&key, now).await?;
        }
        Ok(Some((key, s)))
    }
}

fn timeouts(state: &AdminState) -> (Duration, Duration) {
    let cfg = state.shared.config.load();
    (cfg.console.session_idle, cfg.console.session_max)
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in person of a console request. As an extractor it answers a request without a
/// live session with a redirect to `/signin?next=<the page>`.
pub struct Signed {
    pub caller: Caller,
    csrf: String,
    /// How this session signed in (`token`, `link`, `oidc`): sign-out ends an OIDC one at the
    /// provider too.
    pub via: String,
    key: String,
    /// Where the request came from, and what it asked for: for audit records of refusals.
    pub client: SocketAddr,
    pub method: Method,
    /// The path (and query) asked for; the navigation marks its section.
    pub path: String,
    /// Why the request looks cross-site (`Origin` or `Sec-Fetch-Site`), if it does.
    cross_site: Option<String>,
}

impl Signed {
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// `Ok` if the caller holds one of `roles`; otherwise the audited 403 page.
    #[expect(clippy::result_large_err, reason = "the error is the response itself")]
    pub fn require(&self, state: &AdminState, roles: &[Role]) -> Result<(), Response> {
        if roles.iter().any(|r| self.caller.has(*r)) {
            return Ok(());
        }
        let need: Vec<String> = roles.iter().map(|r| role_name(*r).to_string()).collect();
        Err(self.forbidden(state, &format!("one of the roles {}", need.join(", "))))
    }

    /// The audited 403 page for a refusal that is not about a missing role: `why` says what
    /// to do instead (the same sentence the JSON API answers).
    pub fn refused(&self, state: &AdminState, why: &str) -> Response {
        self.not_allowed(
            state,
            html! {
                h1 { "Not allowed" }
                p { "You are signed in as " strong { (self.caller.user) } "." }
                p class="error" id="refused" { (why) "." }
                p { "Nothing was changed." }
            },
        )
    }

    /// Records the refusal in the audit chain, then answers `body` as a 403 page: every
    /// "not allowed" page is audited the same way, whatever it says.
    fn not_allowed(&self, state: &AdminState, body: maud::Markup) -> Response {
        crate::admin::record_refusal(
            state,
            Some(&self.caller),
            self.client,
            &self.method,
            &self.path,
            StatusCode::FORBIDDEN,
            None,
        );
        page_with_status(StatusCode::FORBIDDEN, "Not allowed", self, body)
    }

    /// The audited 403 page: `need` says what would have been needed.
    pub fn forbidden(&self, state: &AdminState, need: &str) -> Response {
        self.not_allowed(
            state,
            html! {
                h1 { "Not allowed" }
                p { "You are signed in as " strong { (self.caller.user) } ". This needs " (need) "." }
                p { "Ask an admin for the role, or sign in with another account." }
            },
        )
    }
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Manager => "manager",
        Role::Auditor => "auditor",
        Role::Approver => "approver",
    }
}

impl FromRequestParts<AdminState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Signed, Response> {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        match state.console.lookup(state, &parts.headers).await {
            Ok(Some((key, s))) => Ok(Signed {
                caller: s.caller(),
                csrf: s.csrf,
                via: s.via,
                key,
                client,
                method: parts.method.clone(),
                cross_site: cross_site(&parts.headers),
                path,
            }),
            Ok(None) => {
                // Only a page can be asked for again after sign-in; a form post goes back to the
                // page it came from, which the browser will show.
                let next = if parts.method == Method::GET {
                    path.as_str()
                } else {
                    "/"
                };
                Err(see_other(&signin::signin_url(next)))
            }
            Err(e) => {
                tracing::error!(error = %e, "console: cannot read sessions");
                Err(unavailable(&e))
            }
        }
    }
}

/// The session store cannot be reached: a page that says so (PostgreSQL down, say).
fn unavailable(e: &SessionError) -> Response {
    layout::bare_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Console unavailable",
        html! {
            h1 { "The console cannot reach its session store" }
            p { (e) }
            p { "Enforcement goes on; try again in a moment." }
        },
    )
}

/// The hidden form field with the session's CSRF token; every state-changing form has one.
pub fn csrf_field(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// Check a state-changing request: the form's token must be the session's, and the browser
/// must not say it came from another site. A refusal is a 403 page and an audit record.
#[expect(clippy::result_large_err, reason = "the error is the response itself")]
pub fn verify_csrf(state: &AdminState, signed: &Signed, token: &str) -> Result<(), Response> {
    let why = if let Some(why) = &signed.cross_site {
        why.clone()
    } else if !session::same(token, &signed.csrf) {
        "the form's CSRF token is missing or not this session's".to_string()
    } else {
        return Ok(());
    };
    crate::admin::record_refusal(
        state,
        Some(&signed.caller),
        signed.client,
        &signed.method,
        &signed.path,
        StatusCode::FORBIDDEN,
        Some((Reason::AdminDenied, format!("csrf: {why}"))),
    );
    Err(page_with_status(
        StatusCode::FORBIDDEN,
        "Form refused",
        signed,
        html! {
            h1 { "This form was refused" }
            p { (why) "." }
            p { "Nothing was changed. Open the page again and submit from there." }
        },
    ))
}

/// Why a request looks cross-site, from what the browser says about it: `Sec-Fetch-Site`
/// (every current browser) and `Origin` against the `Host` it was sent to. A client that sends
/// neither (curl) is judged by the CSRF token alone.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let fetch_site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""));
    if let Some(site) = fetch_site {
        if site != "same-origin" {
            return Some(format!(
                "the browser says it came from another site (Sec-Fetch-Site: {site})"
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null");
    // `Referrer-Policy: no-referrer` makes a browser send `Origin: null` on its own form posts;
    // when it also says `Sec-Fetch-Site: same-origin`, that null is ours. Without
    // Sec-Fetch-Site, a null origin (a sandboxed frame, say) is refused.
    if origin == "null" {
        return match fetch_site {
            Some(_) => None,
            None => Some("it came from an opaque origin (Origin: null)".to_string()),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
    if !authority.eq_ignore_ascii_case(host) {
        return Some(format!(
            "it came from another origin ({origin}, not this console's host {host})"
        ));
    }
    None
}

/// 303 to `location` (a local path).
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The CSP: nothing but this origin's own files, no inline script or style, no framing, and
/// forms that post only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show what one person may see: never kept by a shared cache or the back button of
    // the next person at the machine. Assets set their own.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The console's routes, merged into the admin router (same listener, same `AdminState`).
pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signin/once/{token}", get(signin::once))
        .route("/signout", post(signin::sign_out))
        .route(oidc::SIGNED_OUT_PATH, get(signin::signed_out))
        .route(oidc::LOGIN_PATH, get(signin_oidc::login))
        .route(oidc::CALLBACK_PATH, get(signin_oidc::callback))
        .route("/exemptions", get(exemptions::list).post(exemptions::grant))
        .route("/exemptions/{id}/revoke", post(exemptions::revoke))
        .route("/audit", get(explorer::list))
        .route("/audit/find", get(explorer::find))
        .route("/audit/{id}", get(explorer::record))
        .route("/audit.csv", get(explorer::export_csv))
        .route("/audit.jsonl", get(explorer::export_jsonl))
        .route("/people", get(people::list))
        .route("/provenance", get(provenance::list))
        .route("/provenance/{id}/confirm", post(provenance::confirm))
        .route("/provenance/{id}/clear", post(provenance::clear))
        .route("/requests", get(requests::list))
        .route("/requests/{id}", get(requests::one))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/deny", post(requests::deny))
        .route("/r/{id}", get(requests::show).post(requests::submit))
        .route("/console/assets/{name}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_requests_are_named() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9180"));
        assert_eq!(cross_site(&h), None, "curl: judged by the token");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9180"),
        );
        assert_eq!(cross_site(&h), None);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&h).unwrap().contains("another origin"));
        // A browser's own post under `Referrer-Policy: no-referrer`.
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(cross_site(&h), None);
        h.remove("sec-fetch-site");
        assert!(cross_site(&h).unwrap().contains("Origin: null"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9180"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(
            cross_site(&h)
                .unwrap()
                .contains("Sec-Fetch-Site: cross-site")
        );
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; aigate_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "aigate_session"), Some("xyz"));
        assert_eq!(cookie(&h, "__Host-aigate_session"), None);
    }
}
