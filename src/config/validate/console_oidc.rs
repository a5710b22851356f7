//! `[console.oidc]`: sign-in to the console with the company's OpenID provider.

use std::net::SocketAddr;
use std::path::Path;

use openidconnect::url::{Host, Url};

use super::{Problems, q, readable_file};
use crate::config::console::OidcConfig;
use crate::config::raw::RawOidc;
use crate::config::{PasswordSource, Role};

const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];

pub(super) fn console_oidc(
    p: &mut Problems,
    raw: Option<&RawOidc>,
    base: &Path,
    admin_listen: SocketAddr,
    // `console.public_url` is set: the default callback is below it.
    public_url: bool,
) -> Option<OidcConfig> {
    let raw = raw?;
    let issuer = match raw.issuer.as_deref() {
        None | Some("") => {
            p.push(
                "console.oidc.issuer",
                None,
                "missing; write the provider's issuer URL, e.g. \"https://login.example.com/realms/corp\" (the `issuer` of its /.well-known/openid-configuration)",
            );
            None
        }
        // Kept as written: discovery compares it with the provider's `issuer` character for
        // character, and a parsed URL would gain a trailing slash.
        Some(s) => web_url(p, "console.oidc.issuer", s, false).map(|_| s.to_string()),
    };
    let client_id = raw.client_id.clone().unwrap_or_default();
    if client_id.trim().is_empty() {
        p.push(
            "console.oidc.client_id",
            None,
            "missing; write the client id the provider gave aigate's console",
        );
    }
    if raw.client_secret.is_some() {
        p.push(
            "console.oidc.client_secret",
            Some("(hidden)".into()),
            "the client secret must not be in the config file; remove it, put it in a file readable only by aigate (client_secret_file) or an environment variable (client_secret_env)",
        );
    }
    let client_secret = match (&raw.client_secret_file, &raw.client_secret_env) {
        (Some(_), Some(_)) => {
            p.push(
                "console.oidc.client_secret_file",
                None,
                "set console.oidc.client_secret_file or console.oidc.client_secret_env, not both",
            );
            PasswordSource::None
        }
        (Some(f), None) => {
            PasswordSource::File(readable_file(p, "console.oidc.client_secret_file", base, f))
        }
        (None, Some(var)) if var.is_empty() || var.contains('=') || var.contains('\0') => {
            p.push(
                "console.oidc.client_secret_env",
                q(var),
                "not an environment variable name; write e.g. \"AIGATE_OIDC_CLIENT_SECRET\"",
            );
            PasswordSource::None
        }
        (None, Some(var)) => PasswordSource::Env(var.clone()),
        (None, None) if raw.client_secret.is_some() => PasswordSource::None,
        (None, None) => {
            p.push(
                "console.oidc.client_secret_file",
                None,
                "missing; the client secret never sits in this file: set client_secret_file (a file holding only the secret) or client_secret_env (an environment variable)",
            );
            PasswordSource::None
        }
    };
    let redirect_url = match raw.redirect_url.as_deref() {
        Some(s) => web_url(p, "console.oidc.redirect_url", s, true),
        None if admin_listen.ip().is_unspecified() && !public_url => {
            p.push(
                "console.oidc.redirect_url",
                None,
                format!(
                    "missing; admin.listen = \"{admin_listen}\" does not say which address browsers use, so set console.public_url, or write the console's URL followed by /console/oidc/callback, e.g. \"https://aigate.example.com:9180/console/oidc/callback\", and register it at the provider"
                ),
            );
            None
        }
        None => None,
    };
    let scopes: Vec<String> = match &raw.scopes {
        None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\') {
                    p.push(
                        format!("console.oidc.scopes[{i}]"),
                        q(s),
                        "not a scope: no spaces, quotes or backslashes",
                    );
                }
            }
            if !list.iter().any(|s| s == "openid") {
                p.push(
                    "console.oidc.scopes",
                    Some(format!("{list:?}")),
                    "must include \"openid\", or the provider returns no ID token",
                );
            }
            list.clone()
        }
    };
    let groups_claim = claim_name(
        p,
        "console.oidc.groups_claim",
        raw.groups_claim.as_deref(),
        "groups",
    );
    let user_claim = claim_name(
        p,
        "console.oidc.user_claim",
        raw.user_claim.as_deref(),
        "email",
    );
    let mut roles = Vec::new();
    for (group, role) in &raw.roles {
        let path = format!("console.oidc.roles.{group:?}");
        if group.is_empty() {
            p.push(&path, None, "an empty group name matches nobody; remove it");
            continue;
        }
        match Role::parse(role) {
            Some(Role::Manager) => p.push(
                &path,
                q(role),
                "managers come from the directory (whoever a user's `manager` names), not from a group; map the group to another role or remove it",
            ),
            Some(r) => roles.push((group.clone(), r)),
            None => {
                let known: Vec<&str> = Role::ALL
                    .iter()
                    .copied()
                    .filter(|r| *r != "manager")
                    .collect();
                p.push(
                    &path,
                    q(role),
                    format!("unknown role; use one of {}", known.join(", ")),
                )
            }
        }
    }
    let issuer = issuer?;
    let name = match raw.name.as_deref().map(str::trim) {
        Some("") => {
            p.push(
                "console.oidc.name",
                Some("\"\"".into()),
                "empty; write what people call the provider (\"Okta\", \"Corp SSO\") or remove the key",
            );
            String::new()
        }
        Some(n) => n.to_string(),
        None => Url::parse(&issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| issuer.clone()),
    };
    Some(OidcConfig {
        issuer,
        name,
        client_id,
        client_secret,
        redirect_url,
        scopes,
        groups_claim,
        user_claim,
        roles,
    })
}

/// An `https` URL, or `http` to a loopback address (a provider or console on the same machine:
/// the tests, a trial). The issuer has no query or fragment (OpenID Connect Discovery 1.0, 4.3).
fn web_url(p: &mut Problems, path: &str, s: &str, callback: bool) -> Option<Url> {
    let example = if callback {
        "e.g. \"https://aigate.example.com:9180/console/oidc/callback\""
    } else {
        "e.g. \"https://login.example.com/realms/corp\""
    };
    let url = match Url::parse(s) {
        Ok(u) => u,
        Err(e) => {
            p.push(path, q(s), format!("not a URL ({e}); write {example}"));
            return None;
        }
    };
    let loopback = match url.host() {
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let ok_scheme = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !ok_scheme || url.host().is_none() {
        p.push(
            path,
            q(s),
            format!(
                "use https (http only for a loopback address): the sign-in's codes and tokens travel here; write {example}"
            ),
        );
        return None;
    }
    if url.fragment().is_some() || (!callback && url.query().is_some()) {
        p.push(
            path,
            q(s),
            format!("remove the query or fragment; write {example}"),
        );
        return None;
    }
    Some(url)
}

fn claim_name(p: &mut Problems, path: &str, raw: Option<&str>, default: &str) -> String {
    match raw {
        None => default.to_string(),
        Some(s) if s.is_empty() || s.chars().any(char::is_control) => {
            p.push(path, q(s), format!("not a claim name; e.g. \"{default}\""));
            default.to_string()
        }
        Some(s) => s.to_string(),
    }
}
