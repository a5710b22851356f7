//! The serde shape of `aigate.toml`, exactly as written by a human.
//!
//! Nothing here is trusted: enumerations are plain strings and addresses are text, so that
//! [`super::validate`] can report every problem at once with the key path, the value and a fix,
//! instead of serde stopping at the first one. Even required keys are `Option` here, so that
//! serde itself only ever fails on an unknown key or a wrong type. Unknown keys are rejected: a
//! typo in a policy file must never silently weaken it.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub ca: RawCa,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub vendors: Vec<RawVendor>,
    #[serde(default)]
    pub tools: Vec<RawTool>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub ai_hosts: RawAiHosts,
    #[serde(default)]
    pub workflows: Vec<RawWorkflow>,
    #[serde(default)]
    pub console: RawConsole,
    #[serde(default)]
    pub provenance: RawProvenance,
}

/// `[provenance]`: capturing what vendors send back, for the ledger (docs/provenance.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvenance {
    pub enabled: Option<bool>,
    pub tools: Option<Vec<String>>,
    pub vendors: Option<Vec<String>>,
    pub retention: Option<String>,
    pub queue: Option<u64>,
    pub queue_bytes: Option<String>,
    pub workers: Option<u64>,
    pub worker_priority: Option<String>,
    pub thinking: Option<bool>,
}

/// `[console]`: the web console on the admin listener (docs/console.md), and the exemption
/// request loop (request links in deny messages, request lifetimes, `[[console.notify]]` webhooks).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub public_url: Option<String>,
    pub request_ttl: Option<String>,
    pub draft_ttl: Option<String>,
    pub request_retention: Option<String>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub session_idle: Option<String>,
    pub session_max: Option<String>,
    pub signin_link: Option<String>,
    pub tls: Option<RawConsoleTls>,
    pub oidc: Option<RawOidc>,
}

/// `[[console.notify]]`: one outbound webhook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: Option<String>,
    pub format: Option<String>,
    pub events: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
}

/// `[console.tls]`: serve the admin listener (console and API) over TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub mint: Option<bool>,
}

/// `[console.oidc]`: sign-in with the company's OpenID provider (config/validate/console_oidc.rs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub name: Option<String>,
    pub client_id: Option<String>,
    /// Only read to refuse it with a useful message: the secret never sits in the file.
    pub client_secret: Option<toml::Value>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub redirect_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    pub user_claim: Option<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
}

/// `[ai_hosts]`: what the AI host catalog does, and groups added to it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiHosts {
    pub builtin: Option<bool>,
    pub default_action: Option<String>,
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: Vec<RawAiHostGroup>,
}

/// The shipped catalog file (`config/ai-hosts.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiHostFile {
    pub version: Option<String>,
    #[serde(default)]
    pub groups: Vec<RawAiHostGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiHostGroup {
    pub id: Option<String>,
    pub name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    pub id: Option<String>,
    pub description: Option<String>,
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub protected: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub replica_id: Option<String>,
    pub resync_interval: Option<String>,
    pub audit: Option<bool>,
    pub pool_size: Option<u64>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub listen: Option<String>,
    pub state_dir: Option<String>,
    pub body_peek_bytes: Option<u64>,
    pub allowed_ip_literals: Option<Vec<String>>,
    pub allowed_destinations: Option<Vec<String>>,
    pub allowed_clients: Option<Vec<String>>,
    pub drain_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub leaf_validity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub extra_roots: Vec<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<String>,
    pub on_failure: Option<String>,
    pub fsync: Option<String>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval: Option<String>,
    pub signing_key: Option<String>,
    pub rotate_size: Option<String>,
    pub rotate_interval: Option<String>,
    pub on_gap: Option<String>,
    pub progress_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub workflow_header: Option<String>,
    pub users_file: Option<String>,
    pub require_auth: Option<bool>,
    pub local_account: Option<bool>,
    #[serde(default)]
    pub source_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub default_action: Option<String>,
    pub exemption_url: Option<String>,
    pub unknown_workflow: Option<String>,
    pub unknown_tool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVendor {
    pub id: Option<String>,
    pub name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub error_format: Option<String>,
    #[serde(default)]
    pub fronts: Vec<String>,
    pub deny_status: Option<u16>,
    #[serde(default)]
    pub side_calls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub vendors: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    pub path: Option<String>,
    pub user_agent: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub min_signals: Option<u64>,
    #[serde(default)]
    pub built_on: Vec<String>,
    pub deny_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub description: Option<String>,
    pub action: Option<String>,
    #[serde(default)]
    pub exemptable: bool,
    pub tools: Option<Vec<String>>,
    pub vendors: Option<Vec<String>>,
    pub workflows: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub max_exemption: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub exemption_window: Option<String>,
    pub max_exemption_lead: Option<String>,
    #[serde(default)]
    pub tokens: Vec<RawAdminToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub user: Option<String>,
    pub roles: Option<Vec<String>>,
    pub hash: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}
