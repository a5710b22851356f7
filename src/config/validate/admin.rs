//! `[admin]`: the listener and its limits, the longest exemption, bearer tokens and their roles.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Problems, duration, q};
use crate::config::raw::RawAdmin;
use crate::config::{AdminConfig, AdminToken, Role};

pub(super) fn admin(p: &mut Problems, raw: &RawAdmin) -> AdminConfig {
    let listen_raw = raw.listen.as_deref().unwrap_or("127.0.0.1:9180");
    let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.push(
            "admin.listen",
            q(listen_raw),
            "not an address; write ip:port, e.g. \"127.0.0.1:9180\"",
        );
        SocketAddr::from(([127, 0, 0, 1], 9180))
    });
    let max_exemption = duration(
        p,
        "admin.max_exemption",
        raw.max_exemption.as_deref(),
        Duration::from_secs(14 * 86_400),
        Duration::from_secs(60),
        Duration::from_secs(366 * 86_400),
    );
    let exemption_window = duration(
        p,
        "admin.exemption_window",
        raw.exemption_window.as_deref(),
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(60),
        Duration::from_secs(3 * 366 * 86_400),
    );
    if exemption_window < max_exemption {
        p.push(
            "admin.exemption_window",
            raw.exemption_window.as_deref().and_then(q),
            format!(
                "shorter than admin.max_exemption ({}); the window in which cover is counted must be at least one whole exemption",
                crate::config::format_duration(max_exemption)
            ),
        );
    }
    let max_exemption_lead = duration(
        p,
        "admin.max_exemption_lead",
        raw.max_exemption_lead.as_deref(),
        Duration::from_secs(30 * 86_400),
        Duration::ZERO,
        Duration::from_secs(366 * 86_400),
    );
    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        let user = t.user.clone().unwrap_or_else(|| {
            p.push(
                format!("{at}.user"),
                None,
                "missing; name who holds this token (it appears in the audit log)",
            );
            String::new()
        });
        let mut roles = Vec::new();
        match &t.roles {
            None => p.push(
                format!("{at}.roles"),
                None,
                format!("missing; give one or more of {}", Role::ALL.join(", ")),
            ),
            Some(list) => {
                if list.is_empty() {
                    p.push(
                        format!("{at}.roles"),
                        None,
                        format!(
                            "empty; a token without a role can do nothing, give one or more of {}",
                            Role::ALL.join(", ")
                        ),
                    );
                }
                for (j, r) in list.iter().enumerate() {
                    match Role::parse(r) {
                        Some(role) => roles.push(role),
                        None => p.push(
                            format!("{at}.roles[{j}]"),
                            q(r),
                            format!("unknown role; use one of {}", Role::ALL.join(", ")),
                        ),
                    }
                }
            }
        }
        let hash = t.hash.clone().unwrap_or_default();
        if !crate::identify::user::is_token_hash(&hash) {
            p.push(format!("{at}.hash"), None, "not a token hash; store the output of `aigate user hash-token` (sha256:<64 hex>), never the token");
        }
        tokens.push(AdminToken {
            user,
            roles,
            hash: hash.to_ascii_lowercase(),
        });
    }
    let max_connections = raw.max_connections.unwrap_or(256);
    if max_connections == 0 {
        p.push(
            "admin.max_connections",
            Some("0".into()),
            "must be at least 1",
        );
    }
    let max_per_client = raw.max_connections_per_client.unwrap_or(16);
    if max_per_client == 0 || max_per_client > max_connections {
        p.push(
            "admin.max_connections_per_client",
            Some(max_per_client.to_string()),
            format!("must be between 1 and admin.max_connections ({max_connections})"),
        );
    }
    let header_timeout = duration(
        p,
        "admin.header_timeout",
        raw.header_timeout.as_deref(),
        Duration::from_secs(10),
        Duration::from_millis(100),
        Duration::from_secs(600),
    );
    let idle_timeout = duration(
        p,
        "admin.idle_timeout",
        raw.idle_timeout.as_deref(),
        Duration::from_secs(60),
        Duration::from_millis(100),
        Duration::from_secs(3600),
    );
    AdminConfig {
        listen,
        max_exemption,
        exemption_window,
        max_exemption_lead,
        tokens,
        max_connections: max_connections as usize,
        max_connections_per_client: max_per_client as usize,
        header_timeout,
        idle_timeout,
    }
}
