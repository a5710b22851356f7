//! Who is calling the admin API: a bearer token, hashed, looked up in `admin.tokens` and then in
//! the directory (users with `roles`). No token or an unknown one is 401; the wrong role is 403.
//! Both are audited, and the token itself is never logged.

use std::net::SocketAddr;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;

use super::{AdminState, error};
use crate::audit::{AuditRecord, Kind};
use crate::config::Role;
use crate::identify::user::hash_token;
use crate::policy::{Action, Reason};
use crate::proxy::new_id;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

pub fn authenticate(state: &AdminState, headers: &HeaderMap) -> Option<Caller> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    by_token(state, token.trim())
}

/// Whose admin token this is: `admin.tokens`, then directory users with roles. The console's
/// sign-in exchanges the same tokens for a session.
pub fn by_token(state: &AdminState, token: &str) -> Option<Caller> {
    let hash = hash_token(token);
    let cfg = state.shared.config.load();
    if let Some(t) = cfg.admin.tokens.iter().find(|t| t.hash == hash) {
        return Some(Caller {
            user: t.user.clone(),
            roles: t.roles.clone(),
        });
    }
    let user = cfg.identity.directory.by_token_hash(&hash)?;
    (!user.roles.is_empty()).then(|| Caller {
        user: user.id.to_string(),
        roles: user.roles.clone(),
    })
}

/// The longest path a refusal record keeps.
const MAX_PATH_CHARS: usize = 256;

/// Refuse and audit: 401 without a valid token, 403 without the role.
pub fn refuse(
    state: &AdminState,
    caller: Option<&Caller>,
    client: SocketAddr,
    method: &Method,
    path: &str,
    need: &str,
) -> Response {
    let (status, message) = match caller {
        None => (
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required: Authorization: Bearer <token>".to_string(),
        ),
        Some(c) => (
            StatusCode::FORBIDDEN,
            format!("{} may not do this: it needs {need}", c.user),
        ),
    };
    record_refusal(state, caller, client, method, path, status, None);
    error(status, &message)
}

/// The audit record of a refusal: a known caller's is written, an unknown caller's counts
/// towards the bounded refusal log (`refusals`). The console's refusals (a missing role, a
/// failed sign-in, a CSRF check) come through here too; `reason` defaults to `admin_denied`.
pub fn record_refusal(
    state: &AdminState,
    caller: Option<&Caller>,
    client: SocketAddr,
    method: &Method,
    path: &str,
    status: StatusCode,
    why: Option<(Reason, String)>,
) {
    let mut r = AuditRecord::new(
        new_id(),
        Kind::Admin,
        client.to_string(),
        caller.map_or("anonymous", |c| c.user.as_str()).into(),
        String::new(),
        0,
    );
    r.method = Some(method.to_string());
    // The caller chose the path: cut, so that a refusal record stays about 1 KiB and the bound
    // on what outsiders can write (`refusals`) holds in bytes, not only in records.
    r.path = Some(path.chars().take(MAX_PATH_CHARS).collect());
    r.action = Action::Block;
    match why {
        Some((reason, error)) => {
            r.reason = reason;
            r.error = Some(error);
        }
        None => r.reason = Reason::AdminDenied,
    }
    r.status = Some(status.as_u16());
    if caller.is_some() {
        // A known caller with the wrong role: always a record of its own.
        state.shared.audit.submit(r);
    } else {
        // Anyone can send requests without a token: bounded (`refusals`).
        super::listener::submit_refusal(state, r);
    }
}

/// The caller, if they hold one of `roles`; otherwise the audited 401 or 403.
pub fn require(
    state: &AdminState,
    headers: &HeaderMap,
    client: SocketAddr,
    method: &Method,
    path: &str,
    roles: &[Role],
) -> Result<Caller, Box<Response>> {
    match authenticate(state, headers) {
        Some(c) if roles.iter().any(|r| c.has(*r)) => Ok(c),
        other => {
            let need: Vec<String> = roles
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect();
            let need = format!("one of the roles {}", need.join(", "));
            Err(Box::new(refuse(
                state,
                other.as_ref(),
                client,
                method,
                path,
                &need,
            )))
        }
    }
}
