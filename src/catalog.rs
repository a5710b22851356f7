//! The AI host catalog: model APIs that aigate does not intercept.
//!
//! A vendor host is inspected; everything else is tunnelled. Between the two sit the many
//! OpenAI-compatible vendors, routers and hosted-model services a determined engineer can point
//! a banned tool at (issue 14). Listing every one as a vendor would mean intercepting hosts whose
//! clients nobody has checked, so they are catalogued instead: a tunnel to one is recorded as AI
//! traffic outside inspection (`ai_host` = the group) rather than as an anonymous `not_vendor`
//! tunnel. Per group, policy monitors it (tunnel, flagged), blocks the CONNECT, or intercepts it
//! as a vendor.
//!
//! The shipped catalog is data (`config/ai-hosts.toml`, compiled in) with a version, so it can be
//! updated without touching code; `[ai_hosts]` in the config adds groups and sets actions. Both
//! are validated in `config/validate/ai_hosts.rs`. PURE: no I/O.

use std::sync::Arc;

use serde::Serialize;

use crate::host::HostPattern;

/// The shipped catalog, compiled into the binary.
pub const SHIPPED: &str = include_str!("../config/ai-hosts.toml");

/// What happens to a connection to a catalogued host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AiHostAction {
    /// Tunnel untouched; the record carries `ai_host` and `reason = ai_host`.
    Monitor,
    /// Refuse the CONNECT (403, `reason = ai_host`).
    Block,
    /// Treat the group as a vendor: TLS interception, identification and the policy rules.
    Intercept,
}

impl AiHostAction {
    pub const ALL: [&'static str; 3] = ["monitor", "block", "intercept"];

    pub fn parse(s: &str) -> Option<AiHostAction> {
        match s {
            "monitor" => Some(AiHostAction::Monitor),
            "block" => Some(AiHostAction::Block),
            "intercept" => Some(AiHostAction::Intercept),
            _ => None,
        }
    }
}

/// Where a group was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSource {
    /// The shipped catalog.
    Builtin,
    /// `[[ai_hosts.groups]]` in the config.
    Config,
}

#[derive(Debug, Clone, Serialize)]
pub struct AiHostGroup {
    pub id: Arc<str>,
    pub name: String,
    #[serde(serialize_with = "patterns_as_text")]
    pub hosts: Vec<HostPattern>,
    pub action: AiHostAction,
    pub source: GroupSource,
}

fn patterns_as_text<S: serde::Serializer>(p: &[HostPattern], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.iter().map(ToString::to_string))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AiHostCatalog {
    /// The shipped catalog's version (empty when it is switched off).
    pub version: Arc<str>,
    pub groups: Vec<Arc<AiHostGroup>>,
}

impl AiHostCatalog {
    /// The group whose patterns match this (normalised) host name; the first group wins.
    pub fn group_for(&self, host: &str) -> Option<&Arc<AiHostGroup>> {
        self.groups
            .iter()
            .find(|g| g.hosts.iter().any(|p| p.matches(host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, hosts: &[&str], action: AiHostAction) -> Arc<AiHostGroup> {
        Arc::new(AiHostGroup {
            id: Arc::from(id),
            name: id.to_string(),
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            action,
            source: GroupSource::Builtin,
        })
    }

    #[test]
    fn lookup_is_by_pattern_and_first_group_wins() {
        let c = AiHostCatalog {
            version: Arc::from("t"),
            groups: vec![
                group(
                    "a",
                    &["api.mistral.ai", "*.modal.run"],
                    AiHostAction::Monitor,
                ),
                group(
                    "b",
                    &["api.mistral.ai", "api.groq.com"],
                    AiHostAction::Block,
                ),
            ],
        };
        assert_eq!(c.group_for("api.mistral.ai").map(|g| &*g.id), Some("a"));
        assert_eq!(c.group_for("api.groq.com").map(|g| &*g.id), Some("b"));
        assert_eq!(c.group_for("x--y.modal.run").map(|g| &*g.id), Some("a"));
        for miss in [
            "mistral.ai",
            "modal.run",
            "api.mistral.ai.evil.com",
            "example.org",
        ] {
            assert!(c.group_for(miss).is_none(), "{miss}");
        }
    }
}
