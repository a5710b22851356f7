//! `[ai_hosts]` and the shipped AI host catalog (`config/ai-hosts.toml`): groups of model-API
//! hosts that are not intercepted, and what happens to a connection to each.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Problems, host_list, id_ok, q};
use crate::catalog::{AiHostAction, AiHostCatalog, AiHostGroup, GroupSource, SHIPPED};
use crate::config::raw::{RawAiHostFile, RawAiHostGroup, RawAiHosts};
use crate::config::{ErrorFormat, Vendor};

/// The catalog; groups with action `intercept` are also appended to `vendors`, so they are
/// intercepted, identified and decided like any vendor (their group id is the vendor id).
pub(super) fn ai_hosts(
    p: &mut Problems,
    raw: &RawAiHosts,
    vendors: &mut Vec<Arc<Vendor>>,
) -> AiHostCatalog {
    let default_action = action(
        p,
        "ai_hosts.default_action",
        raw.default_action.as_deref(),
        AiHostAction::Monitor,
    );
    let mut groups: Vec<(String, AiHostGroup)> = Vec::new();
    let mut version = String::new();
    if raw.builtin.unwrap_or(true) {
        match toml::from_str::<RawAiHostFile>(SHIPPED) {
            Ok(file) => {
                version = file.version.unwrap_or_default();
                for (i, g) in file.groups.iter().enumerate() {
                    let at = format!("ai_hosts (shipped catalog) groups[{i}]");
                    if let Some(group) = group(p, &at, g, default_action, GroupSource::Builtin) {
                        groups.push((at, group));
                    }
                }
            }
            // Only a broken build gets here: a test parses the shipped file.
            Err(e) => p.push(
                "ai_hosts (shipped catalog)",
                None,
                format!(
                    "cannot be read: {e}; set ai_hosts.builtin = false and list groups yourself"
                ),
            ),
        }
    }
    for (i, g) in raw.groups.iter().enumerate() {
        let at = format!("ai_hosts.groups[{i}]");
        if let Some(group) = group(p, &at, g, default_action, GroupSource::Config) {
            groups.push((at, group));
        }
    }

    let mut seen = HashSet::new();
    for (at, g) in &groups {
        if !seen.insert(g.id.clone()) {
            p.push(
                format!("{at}.id"),
                q(&g.id),
                "duplicate AI host group id; give the group another id",
            );
        }
        if vendors.iter().any(|v| v.id == g.id) {
            p.push(
                format!("{at}.id"),
                q(&g.id),
                "already a vendor id; a group that is intercepted becomes a vendor of that id, so pick another",
            );
        }
    }
    for (name, value) in &raw.actions {
        let at = format!("ai_hosts.actions.\"{name}\"");
        let Some((_, g)) = groups.iter_mut().find(|(_, g)| &*g.id == name.as_str()) else {
            let mut known: Vec<&str> = Vec::new();
            for (_, g) in &groups {
                if id_ok(&g.id) && !known.contains(&&*g.id) {
                    known.push(&g.id);
                }
            }
            p.push(
                at,
                q(value),
                format!(
                    "unknown AI host group; known groups are {}",
                    known.join(", ")
                ),
            );
            continue;
        };
        g.action = action(p, &at, Some(value), g.action);
    }

    let mut out = Vec::with_capacity(groups.len());
    for (_, g) in groups {
        if g.action == AiHostAction::Intercept {
            vendors.push(Arc::new(Vendor {
                id: g.id.clone(),
                name: g.name.clone(),
                hosts: g.hosts.clone(),
                // Nearly all of them speak OpenAI's API; a request's own shape still wins.
                error_format: ErrorFormat::OpenAi,
                fronts: Vec::new(),
                deny_status: http::StatusCode::FORBIDDEN,
                side_calls: Default::default(),
            }));
        }
        out.push(Arc::new(g));
    }
    AiHostCatalog {
        version: Arc::from(version),
        groups: out,
    }
}

fn action(p: &mut Problems, at: &str, raw: Option<&str>, default: AiHostAction) -> AiHostAction {
    match raw {
        None => default,
        Some(s) => AiHostAction::parse(s).unwrap_or_else(|| {
            p.push(
                at,
                q(s),
                format!(
                    "unknown action; use one of {}",
                    AiHostAction::ALL.join(", ")
                ),
            );
            default
        }),
    }
}

fn group(
    p: &mut Problems,
    at: &str,
    g: &RawAiHostGroup,
    default_action: AiHostAction,
    source: GroupSource,
) -> Option<AiHostGroup> {
    let Some(id) = g.id.as_deref() else {
        p.push(
            format!("{at}.id"),
            None,
            "missing; give the group an id such as \"inference-apis\"",
        );
        return None;
    };
    if !id_ok(id) {
        p.push(
            format!("{at}.id"),
            q(id),
            "not an id; use lower-case letters, digits, - and _",
        );
    }
    let hosts = host_list(
        p,
        &format!("{at}.hosts"),
        g.hosts.as_ref(),
        "list the model-API hosts, e.g. [\"api.mistral.ai\"]",
        "write a host name like \"api.mistral.ai\", a wildcard like \"*.modal.run\" or \"*-api.example.com\"",
    );
    let action = action(
        p,
        &format!("{at}.action"),
        g.action.as_deref(),
        default_action,
    );
    Some(AiHostGroup {
        id: Arc::from(id),
        name: g.name.clone().unwrap_or_else(|| id.to_string()),
        hosts,
        action,
        source,
    })
}
