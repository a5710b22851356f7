//! `[console.oidc]`: what OIDC sign-in to the console needs from the file.

use openidconnect::url::Url;

use super::{PasswordSource, Role};

/// `[console.oidc]`, validated (config/validate/console_oidc.rs).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer exactly as the provider's discovery document and ID tokens name it.
    pub issuer: String,
    /// What the sign-in page calls the provider ("Sign in with <name>"); default: the issuer's host.
    pub name: String,
    pub client_id: String,
    /// Never in the file: read at start from a file or an environment variable.
    pub client_secret: PasswordSource,
    /// Where the provider sends the browser back. `None`: derived at start from the address
    /// the admin listener is bound to (`http://<admin address>/console/oidc/callback`).
    pub redirect_url: Option<Url>,
    /// Always includes `openid`.
    pub scopes: Vec<String>,
    /// The ID token claim listing the user's groups.
    pub groups_claim: String,
    /// The ID token claim whose value is the user's id in the directory.
    pub user_claim: String,
    /// Provider group -> aigate role. Managers are not here: the directory says who manages whom.
    pub roles: Vec<(String, Role)>,
}

impl PasswordSource {
    /// The secret, with a trailing newline removed (files written by `echo`); `Ok(None)` when
    /// none is configured. The error names the variable or file, never the value.
    pub fn read(&self) -> Result<Option<String>, String> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::Env(var) => std::env::var(var)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|_| format!("the environment variable {var} is not set")),
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}
