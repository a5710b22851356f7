//! Console sign-in with the company's OpenID provider (`[console.oidc]`): the authorization code
//! flow with PKCE, `state` and `nonce`, through the `openidconnect` crate.
//!
//! ```text
//! GET /console/oidc/login?next=/page   ──303──▶ provider's authorization endpoint
//!     (a pending sign-in: state, nonce, PKCE verifier, next; bound to this browser by a cookie)
//! provider: the person signs in ──303──▶ GET /console/oidc/callback?code&state
//!     state known and unexpired, same browser ─▶ code + PKCE verifier exchanged for tokens
//!     ─▶ ID token: signature (the provider's JWKS), issuer, audience, expiry, nonce
//!     ─▶ user (`user_claim`, a directory id), groups (`groups_claim`) ─▶ roles
//!     ─▶ console_signed_in record; or console_signin_refused naming the check that failed
//! ```
//!
//! Discovery runs in the background from start, with backoff while the provider is down, and
//! again every hour so that rotated signing keys are picked up; until it has succeeded once, the
//! sign-in page says OIDC is unavailable and why, and the rest of aigate runs as usual.
//!
//! Every check is the crate's (`IdTokenVerifier`); what this module adds is binding each pending
//! sign-in to the browser that started it (a login-CSRF attacker cannot make a victim finish the
//! attacker's sign-in), bounding the pending sign-ins per address, and the role mapping.
//!
//! Sign-out of an OIDC session ends the provider's session too when the provider offers an
//! `end_session_endpoint` (RP-initiated logout): otherwise the next "Sign in with …" would sign
//! the same person in again without asking, on a shared machine too. The logout request names
//! the console's signed-out page as `post_logout_redirect_uri` (with `client_id`), so the
//! person ends on aigate's page, not the provider's.
//!
//! Started sign-ins are kept by `oidc_pending.rs`: in memory, or in PostgreSQL so that a
//! callback reaching another replica than the one that started the sign-in finishes it.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims,
    IdTokenFields, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::oidc_pending::{PendingError, PendingSignIn, PendingStore};
use super::session::key_of;
use crate::config::Role;
use crate::config::console::OidcConfig;
use crate::identify::Directory;

pub use super::oidc_pending::{MAX_PENDING_PER_SOURCE, PENDING_TTL};

pub const LOGIN_PATH: &str = "/console/oidc/login";
pub const CALLBACK_PATH: &str = "/console/oidc/callback";
/// The console's page a provider sends the browser back to after RP-initiated logout.
pub const SIGNED_OUT_PATH: &str = "/signed-out";
/// The cookie that ties a pending sign-in to the browser that started it. `SameSite=Lax`: the
/// provider's redirect back is a cross-site navigation, which a `Strict` cookie would miss.
pub const BROWSER_COOKIE: &str = "aigate_oidc";

/// Discovery again this often, for rotated signing keys.
const REFRESH: Duration = Duration::from_secs(3600);
/// Backoff while the provider is unreachable: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Any one call to the provider (discovery, JWKS, token).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The ID token's claims beyond the standard ones: the group claim, or a custom user claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;
/// `CoreClient` with [`ExtraClaims`], as discovery configures it (authorization endpoint set,
/// token and userinfo endpoints as the provider lists them).
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Which check refused a sign-in: `admin.check` in the `console_signin_refused` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Discovery has not succeeded (yet): the provider is down or misconfigured.
    Unavailable,
    /// Too many pending sign-ins from this address, or in all.
    Busy,
    /// The callback's `state` is missing, unknown, used or expired.
    State,
    /// The callback came to another browser than the one that started the sign-in.
    Browser,
    /// The provider sent the person back with an error (`access_denied`, …).
    Provider,
    /// The code could not be exchanged for tokens.
    Exchange,
    Signature,
    Issuer,
    Audience,
    Expired,
    Nonce,
    /// Another check of the ID token failed, or there was none.
    Token,
    /// The ID token names no usable user (`user_claim` missing, or an unverified e-mail).
    User,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Unavailable => "unavailable",
            Check::Busy => "busy",
            Check::State => "state",
            Check::Browser => "browser",
            Check::Provider => "provider",
            Check::Exchange => "exchange",
            Check::Signature => "signature",
            Check::Issuer => "issuer",
            Check::Audience => "audience",
            Check::Expired => "expired",
            Check::Nonce => "nonce",
            Check::Token => "token",
            Check::User => "user",
        }
    }
}

/// A refused sign-in: the check, what to tell the person, and the user if the token named one.
#[derive(Debug)]
pub struct Refused {
    pub check: Check,
    pub detail: String,
    pub user: Option<String>,
}

impl Refused {
    fn new(check: Check, detail: impl Into<String>) -> Refused {
        Refused {
            check,
            detail: detail.into(),
            user: None,
        }
    }
}

/// A started sign-in: where to send the browser, and the cookie value that binds it.
pub struct Started {
    pub authorize_url: String,
    pub browser: String,
}

/// A verified sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The directory id (`user_claim`'s value).
    pub user: String,
    /// The provider's `sub`, for the record.
    pub subject: String,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
    /// Where to go now: a local path.
    pub next: String,
}

pub struct OidcSignIn {
    cfg: OidcConfig,
    redirect: String,
    /// The console's signed-out page, for the provider's `post_logout_redirect_uri`.
    signed_out: String,
    http: Result<reqwest::Client, String>,
    client: ArcSwapOption<OidcClient>,
    /// The provider's end-session URL for this client (RP-initiated logout), if it offers one.
    end_session: ArcSwapOption<String>,
    /// Why the last discovery failed, while no client is ready.
    problem: Mutex<String>,
    /// Started sign-ins: in memory, or in PostgreSQL so that any replica takes the callback.
    pending: Arc<dyn PendingStore>,
}

impl OidcSignIn {
    /// `console_url` is where browsers reach the console (`console.public_url`, or the bound
    /// admin address): the callback URL is below it when `redirect_url` is not configured.
    /// `roots` are the trust anchors for an https provider (the system's, webpki's and
    /// `upstream.extra_roots`). `pending` keeps the started sign-ins (`oidc_pending.rs`).
    pub fn new(
        cfg: OidcConfig,
        console_url: &str,
        roots: rustls::RootCertStore,
        pending: Arc<dyn PendingStore>,
    ) -> Self {
        let redirect = match &cfg.redirect_url {
            Some(u) => u.to_string(),
            None => format!("{console_url}{CALLBACK_PATH}"),
        };
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let http = tls.map_err(|e| e.to_string()).and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                // The provider's answers are followed by nobody: a redirect from its token
                // endpoint is an error, never a second request to wherever it points (SSRF).
                .redirect(reqwest::redirect::Policy::none())
                .timeout(HTTP_TIMEOUT)
                .build()
                .map_err(|e| chain(&e))
        });
        OidcSignIn {
            cfg,
            redirect,
            signed_out: format!("{console_url}{SIGNED_OUT_PATH}"),
            http,
            client: ArcSwapOption::empty(),
            end_session: ArcSwapOption::empty(),
            problem: Mutex::new("discovery has not finished yet".into()),
            pending,
        }
    }

    /// What the sign-in page calls the provider (`console.oidc.name`).
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    pub fn redirect_url(&self) -> &str {
        &self.redirect
    }

    /// `Ok` once discovery has succeeded; otherwise why OIDC sign-in is unavailable.
    pub fn status(&self) -> Result<(), String> {
        if self.client.load().is_some() {
            Ok(())
        } else {
            Err(lock(&self.problem).clone())
        }
    }

    /// Discovery, then again every `REFRESH`; while the provider cannot be reached, retried
    /// with backoff. Runs for the life of the gateway.
    pub async fn keep_discovered(self: Arc<Self>) {
        let mut wait = RETRY_FIRST;
        loop {
            match self.discover().await {
                Ok((client, end_session)) => {
                    self.end_session.store(end_session.map(Arc::new));
                    if self.client.load().is_none() {
                        tracing::info!(issuer = %self.cfg.issuer, "console: OIDC sign-in ready");
                    }
                    self.client.store(Some(Arc::new(client)));
                    wait = RETRY_FIRST;
                    tokio::time::sleep(REFRESH).await;
                }
                Err(e) => {
                    // A client from an earlier discovery stays in use: its keys are the best
                    // there are until the provider answers again.
                    tracing::warn!(issuer = %self.cfg.issuer, error = %e, retry_in = ?wait, "console: OIDC discovery failed");
                    *lock(&self.problem) = e;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Where to send a browser whose OIDC session ended, so that the provider's ends too; `None`
    /// when the provider offers no `end_session_endpoint`.
    pub fn end_session_url(&self) -> Option<String> {
        self.end_session.load_full().map(|u| u.to_string())
    }

    async fn discover(&self) -> Result<(OidcClient, Option<String>), String> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let secret = self.cfg.client_secret.read().map_err(|e| {
            format!("the client secret (console.oidc.client_secret_file or client_secret_env): {e}")
        })?;
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| format!("console.oidc.issuer: {e}"))?;
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| format!("console.oidc.redirect_url: {e}"))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, http)
            .await
            .map_err(|e| {
                format!(
                    "discovery at {}/.well-known/openid-configuration: {}",
                    self.cfg.issuer.trim_end_matches('/'),
                    chain(&e)
                )
            })?;
        // Back to the console's signed-out page afterwards, not left on the provider's: the
        // provider checks it against the client's registered post-logout URIs.
        let back = PostLogoutRedirectUrl::new(self.signed_out.clone())
            .map_err(|e| format!("the signed-out page {}: {e}", self.signed_out))?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()
            .map(|url| {
                LogoutRequest::from(url)
                    .set_client_id(ClientId::new(self.cfg.client_id.clone()))
                    .set_post_logout_redirect_uri(back)
                    .http_get_url()
                    .to_string()
            });
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.cfg.client_id.clone()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok((client, end_session))
    }

    /// Start a sign-in from `source` at `now` that ends at `next` (a local path; anything else
    /// ends at `/`).
    pub async fn begin(
        &self,
        next: &str,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Started, Refused> {
        let client = self
            .client
            .load_full()
            .ok_or_else(|| Refused::new(Check::Unavailable, lock(&self.problem).clone()))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let browser = CsrfToken::new_random().secret().clone();
        let pending = PendingSignIn {
            browser_key: key_of(&browser),
            pkce: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            next: local_path(next).unwrap_or("/").to_string(),
            source,
            started: now,
        };
        self.pending
            .put(&key_of(state.secret()), &pending)
            .await
            .map_err(|e| match e {
                PendingError::Busy => Refused::new(Check::Busy, e.to_string()),
                PendingError::Store(_) => Refused::new(Check::Unavailable, e.to_string()),
            })?;
        Ok(Started {
            authorize_url: url.to_string(),
            browser,
        })
    }

    /// The provider's answer: verified into a [`SignedIn`], or the check that refused it.
    /// `browser` is the cookie the browser sent; `directory` says who manages whom.
    pub async fn finish(
        &self,
        answer: &CallbackQuery,
        browser: Option<&str>,
        directory: &Directory,
        now: SystemTime,
    ) -> Result<SignedIn, Refused> {
        let state = answer.state.as_deref().unwrap_or_default();
        // Removed before anything else: a state works once, whatever happens next.
        let pending = self
            .pending
            .take(&key_of(state), now)
            .await
            .map_err(|e| Refused::new(Check::Unavailable, e.to_string()))?
            .ok_or_else(|| {
                Refused::new(
                    Check::State,
                    "this sign-in is unknown, expired or already used; start again",
                )
            })?;
        if !browser.is_some_and(|b| same(&key_of(b), &pending.browser_key)) {
            return Err(Refused::new(
                Check::Browser,
                "this sign-in was started in another browser; start again here",
            ));
        }
        if let Some(error) = &answer.error {
            let detail = answer.error_description.as_deref().unwrap_or("");
            return Err(Refused::new(
                Check::Provider,
                format!("the provider refused the sign-in: {error} {detail}")
                    .trim_end()
                    .to_string(),
            ));
        }
        let code = answer
            .code
            .clone()
            .ok_or_else(|| Refused::new(Check::Provider, "the provider sent no code"))?;
        let client = self
            .client
            .load_full()
            .ok_or_else(|| Refused::new(Check::Unavailable, lock(&self.problem).clone()))?;
        let http = self
            .http
            .as_ref()
            .map_err(|e| Refused::new(Check::Unavailable, e.clone()))?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refused::new(Check::Unavailable, chain(&e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce))
            .request_async(http)
            .await
            .map_err(|e| {
                Refused::new(
                    Check::Exchange,
                    format!("the code could not be exchanged: {}", chain(&e)),
                )
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| Refused::new(Check::Token, "the provider returned no ID token"))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(refusal)?;
        let user = self.user_of(claims)?;
        let groups = groups_of(claims, &self.cfg.groups_claim);
        let roles = roles_for(&user, &groups, &self.cfg.roles, directory);
        Ok(SignedIn {
            user,
            subject: claims.subject().to_string(),
            groups,
            roles,
            next: pending.next,
        })
    }

    /// The directory id the token names. An `email` the provider says is unverified is no
    /// identity: anyone could have typed it.
    fn user_of(&self, claims: &Claims) -> Result<String, Refused> {
        let name = self.cfg.user_claim.as_str();
        let value = match name {
            "email" => {
                if claims.email_verified() == Some(false) {
                    return Err(Refused::new(
                        Check::User,
                        "the provider says this e-mail address is not verified",
                    ));
                }
                claims.email().map(|e| e.to_string())
            }
            "preferred_username" => claims.preferred_username().map(|u| u.to_string()),
            "sub" => Some(claims.subject().to_string()),
            other => match claims.additional_claims().claims.get(other) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                _ => None,
            },
        };
        value.filter(|v| !v.is_empty()).ok_or_else(|| {
            Refused::new(
                Check::User,
                format!(
                    "the ID token has no \"{name}\" claim (console.oidc.user_claim); ask IT to release it to this client"
                ),
            )
        })
    }
}

/// What the provider's redirect back carries.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The verification error as the check that failed.
fn refusal(e: ClaimsVerificationError) -> Refused {
    let check = match &e {
        ClaimsVerificationError::SignatureVerification(_) => Check::Signature,
        ClaimsVerificationError::InvalidIssuer(_) => Check::Issuer,
        ClaimsVerificationError::InvalidAudience(_) => Check::Audience,
        ClaimsVerificationError::Expired(_) => Check::Expired,
        ClaimsVerificationError::InvalidNonce(_) => Check::Nonce,
        _ => Check::Token,
    };
    Refused::new(check, format!("the ID token was refused: {}", chain(&e)))
}

/// The group claim: a list of strings, or one string. Anything else is no groups.
fn groups_of(claims: &Claims, name: &str) -> Vec<String> {
    match claims.additional_claims().claims.get(name) {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Roles: the mapped groups, the roles the directory gives the user, and `manager` if anyone in
/// the directory reports to them. Sorted, without repeats.
pub fn roles_for(
    user: &str,
    groups: &[String],
    map: &[(String, Role)],
    directory: &Directory,
) -> Vec<Role> {
    let mut roles: Vec<Role> = map
        .iter()
        .filter(|(g, _)| groups.iter().any(|have| have == g))
        .map(|(_, r)| *r)
        .collect();
    if let Some(u) = directory.get(user) {
        roles.extend(u.roles.iter().copied());
    }
    if directory
        .users()
        .any(|u| u.manager.as_deref() == Some(user))
    {
        roles.push(Role::Manager);
    }
    roles.sort_by_key(|r| format!("{r:?}"));
    roles.dedup();
    roles
}

/// `next` if it is a path on this console; anything else (another host, `//host`, `/\host`, a
/// scheme, control characters) is not followed: an open redirect would let a phishing link end
/// on a look-alike site after a real sign-in.
pub fn local_path(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && !next.chars().any(char::is_control);
    ok.then_some(next)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error with its causes, `outer: inner: …` (the crate's errors put the detail in sources).
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_ever_a_local_path() {
        for (next, ok) in [
            ("/", true),
            ("/r/abc?x=1", true),
            ("/exemptions#top", true),
            ("//evil.example/", false),
            ("/\\evil.example/", false),
            ("https://evil.example/", false),
            ("javascript:alert(1)", false),
            ("evil.example", false),
            ("/a\r\nLocation: https://evil.example", false),
            ("", false),
        ] {
            assert_eq!(local_path(next).is_some(), ok, "{next:?}");
        }
    }

    #[test]
    fn roles_come_from_groups_and_the_directory() {
        let dir = Directory::parse(
            "[[users]]\nid = \"carol\"\n\n[[users]]\nid = \"bob\"\nmanager = \"carol\"\n\n[[users]]\nid = \"erin\"\nroles = [\"auditor\"]\n",
        )
        .unwrap();
        let map = vec![
            ("sec-team".to_string(), Role::Auditor),
            ("it-admins".to_string(), Role::Admin),
        ];
        let g = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            roles_for("bob", &g(&["engineers"]), &map, &dir),
            Vec::<Role>::new()
        );
        assert_eq!(
            roles_for("carol", &g(&["engineers"]), &map, &dir),
            vec![Role::Manager]
        );
        assert_eq!(
            roles_for("sam", &g(&["sec-team", "it-admins"]), &map, &dir),
            vec![Role::Admin, Role::Auditor]
        );
        assert_eq!(
            roles_for("erin", &g(&["sec-team"]), &map, &dir),
            vec![Role::Auditor]
        );
        // A group name is matched exactly: no prefix, no case folding.
        assert_eq!(
            roles_for("sam", &g(&["Sec-Team", "sec-team-x"]), &map, &dir),
            Vec::<Role>::new()
        );
    }
}
