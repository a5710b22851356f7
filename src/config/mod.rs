//! Configuration: `raw` is the file as written, `validate` turns it into the types below.
//!
//! Later code never re-checks a value: a `Config` is valid by construction. Relative paths are
//! resolved against the directory of the config file (the working directory for the embedded
//! default), except the audit path, which lives in the state directory.

pub mod console;
mod duration;
mod load;
pub mod raw;
pub(crate) mod side_calls;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

pub use duration::{format_duration, parse_duration, plural};
pub use load::{CATALOGS, ConfigError, DEFAULT_CONFIG, Problem, load, load_str};
pub use side_calls::SideCalls;

use crate::catalog::AiHostCatalog;
use crate::destination::Destinations;
use crate::host::HostPattern;
use crate::identify::{Directory, ToolSignature};
use crate::policy::Policy;

/// The error body shape a vendor's clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    Anthropic,
    OpenAi,
    Google,
}

impl ErrorFormat {
    pub const ALL: [&'static str; 3] = ["anthropic", "openai", "google"];

    pub fn parse(s: &str) -> Option<ErrorFormat> {
        match s {
            "anthropic" => Some(ErrorFormat::Anthropic),
            "openai" => Some(ErrorFormat::OpenAi),
            "google" => Some(ErrorFormat::Google),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Vendor {
    pub id: Arc<str>,
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub error_format: ErrorFormat,
    /// Hosts served by the same front end as `hosts` (Google's for `*.googleapis.com`): a tunnel
    /// to one must name its target in the SNI, or the front end routes by the hidden `Host`.
    pub fronts: Vec<HostPattern>,
    /// The status of a policy deny on this vendor's hosts (403 unless its client shows nothing
    /// of a 403's body: GitHub Copilot's CLI, see docs/clients.md).
    pub deny_status: http::StatusCode,
    /// Start-up side calls a policy block lets through as `monitor` (`side_calls.rs`).
    pub side_calls: SideCalls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse calls while the audit log cannot be written.
    Closed,
    /// Forward calls anyway (and count the lost records).
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fsync after every batch: a record is on disk within one batch of its request.
    Batch,
    /// Leave flushing to the OS.
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    /// A corporate CA (cert, key), used as-is. `None`: generate one in the state directory.
    pub files: Option<(PathBuf, PathBuf)>,
    pub leaf_validity: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub extra_roots: Vec<PathBuf>,
    pub connect_timeout: Duration,
    /// How long a vendor may take to send response headers. Non-streaming completions can take
    /// minutes; this only catches a vendor that never answers.
    pub response_timeout: Duration,
    /// Host -> address overrides (tests, split-horizon set-ups); others use the system resolver.
    pub resolve: Vec<(String, SocketAddr)>,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub on_failure: FailMode,
    pub fsync: Fsync,
    /// How often an open call (a long stream, a WebSocket) writes a progress record.
    pub progress_interval: Duration,
    /// Checkpoints, rotation and gap handling (config/validate/audit.rs).
    pub integrity: AuditIntegrity,
}

/// What makes the log prove its own completeness: signed checkpoints, rotation with the chain
/// continuing across files, and what to do when a log is found shorter than its checkpoint.
#[derive(Debug, Clone)]
pub struct AuditIntegrity {
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the last one, if records came in between.
    pub checkpoint_interval: Duration,
    /// The Ed25519 private key (PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// The key is the default one in the state directory: generate it on first start. A
    /// configured key (mounted from a secret store) is never generated.
    pub generate_key: bool,
    /// Rotate once the file reaches this many bytes.
    pub rotate_size: Option<u64>,
    /// Rotate a file this long after it was started.
    pub rotate_interval: Option<Duration>,
    pub on_gap: OnGap,
}

/// A log missing or shorter than its last checkpoint, found on start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGap {
    /// Write a `chain_gap` record naming the missing range, log an error, and run.
    Record,
    /// Refuse to start until an operator restores the log or chooses `record`.
    Refuse,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub workflow_header: HeaderName,
    pub users_file: Option<PathBuf>,
    pub directory: Directory,
    pub require_auth: bool,
    pub source_addresses: Vec<(IpNet, String)>,
    /// `identity.local_account`: the account loopback clients are attributed to (the one that
    /// runs aigate), already in `source_addresses`.
    pub local_account: Option<String>,
}

/// What an admin-API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Grant and revoke for their reports; read their reports' exemptions.
    Manager,
    /// Read the audit log and all exemptions; grant nothing.
    Auditor,
    /// Grant (and approve requests) for any user, not only reports; never for oneself, never
    /// for a group. For a security or platform team that decides requests across the company.
    Approver,
}

impl Role {
    pub const ALL: [&'static str; 4] = ["admin", "manager", "auditor", "approver"];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "auditor" => Some(Role::Auditor),
            "approver" => Some(Role::Approver),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub user: String,
    pub roles: Vec<Role>,
    /// `sha256:<hex>`.
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The longest exemption, and the most cover a subject holds for a tool in any
    /// `exemption_window`.
    pub max_exemption: Duration,
    pub exemption_window: Duration,
    /// How far ahead an exemption may start.
    pub max_exemption_lead: Duration,
    pub tokens: Vec<AdminToken>,
    /// Connections the admin listener holds at most; also never more than its share of file
    /// descriptors (`fdlimit`), so the admin side cannot take the proxy's.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// A request head must arrive within this (slowloris).
    pub header_timeout: Duration,
    /// A connection with nothing in flight this long is closed.
    pub idle_timeout: Duration,
}

/// `[console]`: the web console and the exemption request loop. Sections of the console (sign-in,
/// TLS, OIDC) add their own fields here.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where engineers' browsers reach the console, without a trailing slash (request links are
    /// `{public_url}/r/{id}`). `None`: the admin listener's own address, known once it is bound
    /// (`Config::console_url`).
    pub public_url: Option<String>,
    /// An exemption request nobody answered expires after this.
    pub request_ttl: Duration,
    /// A request link (draft) from a deny message can be used this long.
    pub draft_ttl: Duration,
    /// Decided and expired requests older than this are dropped when the embedded request
    /// journal is compacted at start (their audit records stay).
    pub request_retention: Duration,
    pub notify: Vec<NotifyHook>,
    pub session_idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub session_max: Duration,
    pub signin_link: SigninLink,
    /// `None`: the admin listener speaks plain HTTP.
    pub tls: Option<ConsoleTls>,
    /// Sign-in with the company's OpenID provider; `None`: token and link sign-in only.
    pub oidc: Option<console::OidcConfig>,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The event as JSON (docs/console.md).
    Json,
    /// `{"text": "…"}`, which Slack, Mattermost and Teams incoming webhooks accept.
    Slack,
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A new request: for approvers.
    Requested,
    /// A request approved, denied or expired: for the requester.
    Approved,
    Denied,
    Expired,
}

impl NotifyEvent {
    pub const ALL: [&'static str; 4] = ["requested", "approved", "denied", "expired"];

    pub fn parse(s: &str) -> Option<NotifyEvent> {
        match s {
            "requested" => Some(NotifyEvent::Requested),
            "approved" => Some(NotifyEvent::Approved),
            "denied" => Some(NotifyEvent::Denied),
            "expired" => Some(NotifyEvent::Expired),
            _ => None,
        }
    }
}

/// `[[console.notify]]`: one outbound webhook.
#[derive(Debug, Clone)]
pub struct NotifyHook {
    /// http or https; may carry a secret path (Slack's), so it is never logged whole.
    pub url: http::Uri,
    pub format: NotifyFormat,
    pub events: Vec<NotifyEvent>,
    /// Only events that concern these people (as requester, or as one of the approvers); empty:
    /// every event.
    pub users: Vec<String>,
}

/// When `aigate run` prints a one-time sign-in link for the first admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigninLink {
    /// Only when standard output is a terminal: the link is a credential, and a service's
    /// output goes to journald or a container log, where others read it.
    Terminal,
    Always,
    Never,
}

/// The admin listener's certificate.
#[derive(Debug, Clone)]
pub enum ConsoleTls {
    /// PEM files: the chain (leaf first) and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Minted at start from aigate's CA for the console's host names.
    Mint,
}

/// How the process logs (not the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `aigate=debug,info`, …; `RUST_LOG` overrides it.
    pub level: String,
}

/// `[provenance]`: which forwarded model calls have their output captured, and the capture's
/// queue. The queue and workers are fixed at start; the rest follows reloads.
#[derive(Debug, Clone)]
pub struct ProvenanceConfig {
    pub enabled: bool,
    /// Tool ids whose calls are captured; empty: every tool (including `unknown`).
    pub tools: Vec<Arc<str>>,
    /// Vendor ids whose calls are captured; empty: every vendor.
    pub vendors: Vec<Arc<str>>,
    /// How long ledger entries are kept.
    pub retention: Duration,
    /// Response chunks waiting for the workers, over all responses; beyond it a response's
    /// capture is dropped rather than the client slowed. The default holds about a tenth of a
    /// second of a saturated gateway's SSE answers (650 of 50 events), the backlog an
    /// idle-priority worker meets while the data path has the core; 4,096 dropped 2–3 % of the
    /// captures in `bench/capture.sh`. `queue_bytes` bounds the memory either way.
    pub queue: usize,
    /// The same queue bounded by the bytes of its chunks: a few huge responses cannot hold
    /// more memory than this while the workers catch up.
    pub queue_bytes: usize,
    pub workers: usize,
    pub worker_priority: WorkerPriority,
    /// Keep thinking / reasoning text as output too.
    pub thinking: bool,
}

/// How the capture workers share the CPU with the data path (`provenance.worker_priority`).
/// Issue 17 puts the client first: a capture is dropped rather than a client slowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPriority {
    /// As the data path: every capture is kept while the queue has room, and at full load the
    /// workers' CPU is taken from the data path (a fifth of SSE throughput; docs/provenance.md,
    /// "Capture cost").
    Normal,
    /// The lowest (`SCHED_IDLE`, Linux; the default): the workers run on what the data path
    /// leaves idle, and at full load a full queue drops captures instead (counted and marked in
    /// the audit log).
    Low,
}

impl Default for ProvenanceConfig {
    fn default() -> Self {
        ProvenanceConfig {
            enabled: false,
            tools: Vec::new(),
            vendors: Vec::new(),
            retention: Duration::from_secs(365 * 86_400),
            queue: 32_768,
            queue_bytes: 64 << 20,
            workers: 1,
            worker_priority: WorkerPriority::Low,
            thinking: false,
        }
    }
}

impl ProvenanceConfig {
    /// Whether a forwarded call by `tool` to `vendor` is captured.
    pub fn covers(&self, tool: &str, vendor: &str) -> bool {
        self.enabled
            && (self.tools.is_empty() || self.tools.iter().any(|t| &**t == tool))
            && (self.vendors.is_empty() || self.vendors.iter().any(|v| &**v == vendor))
    }
}

/// Where exemptions (and optionally a copy of the audit log) live.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The journal and the audit log in the state directory: one replica.
    File,
    /// Shared by every replica.
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connection URL without a password.
    pub url: String,
    pub password: PasswordSource,
    /// This replica's name: its audit chain in the shared table.
    pub replica_id: Arc<str>,
    /// The safety net behind LISTEN/NOTIFY: a full reload this often.
    pub resync_interval: Duration,
    /// Also ship the audit log to PostgreSQL.
    pub audit: bool,
    pub pool_size: usize,
    /// Extra PEM roots for the database server's certificate.
    pub ca_file: Option<PathBuf>,
}

/// The database password never sits in the config file.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    None,
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where this config came from, for messages: a path or "embedded default".
    pub source: String,
    /// The file it was loaded from (`None`: the embedded default), for reloads.
    pub file: Option<PathBuf>,
    /// The file extends the shipped catalogs (`include_defaults = true`) instead of replacing
    /// them.
    pub include_defaults: bool,
    /// A short hash of the config text: which policy decided, in every audit record.
    pub version: Arc<str>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub body_peek_bytes: usize,
    pub allowed_ip_literals: Vec<IpNet>,
    /// Internal addresses the gateway may dial (`gateway.allowed_destinations`, plus the
    /// addresses of `upstream.resolve`); every other internal address is refused.
    pub destinations: Destinations,
    /// Client networks that may use the proxy port; empty: any client.
    pub allowed_clients: Vec<IpNet>,
    /// On SIGTERM, how long requests and streams in flight may take to finish.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers (slowloris), on both legs.
    pub header_timeout: Duration,
    /// How long a client connection may sit with no request in flight before it is closed.
    pub idle_timeout: Duration,
    /// How long a client may take over its TLS handshake with the gateway (or a tunnel's
    /// ClientHello).
    pub handshake_timeout: Duration,
    /// Client connections at once, overall and per client address (tunnels included).
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub ca: CaConfig,
    pub upstream: UpstreamConfig,
    pub audit: AuditConfig,
    pub identity: IdentityConfig,
    /// Where an engineer asks for an exemption; `{tool}`, `{workflow}`, `{rule}`, `{user}`,
    /// `{request_id}` are filled in.
    pub exemption_url: String,
    pub vendors: Vec<Arc<Vendor>>,
    /// Model APIs that are not vendors; a group with action `intercept` is also in `vendors`.
    pub ai_hosts: AiHostCatalog,
    pub tools: Vec<ToolSignature>,
    pub policy: Policy,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub storage: Storage,
    pub console: ConsoleConfig,
    pub provenance: ProvenanceConfig,
}

impl Config {
    /// The vendor whose host patterns match this (normalised) host name.
    pub fn vendor_for(&self, host: &str) -> Option<&Arc<Vendor>> {
        self.vendors
            .iter()
            .find(|v| v.hosts.iter().any(|p| p.matches(host)))
    }

    /// Valid but risky settings, for `aigate check` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.vendors.is_empty() {
            out.push(
                "vendors: none, so nothing is intercepted: every call is tunnelled untouched and no rule ever applies. A config file replaces the shipped catalogs entirely; list [[vendors]] and [[tools]], or put include_defaults = true at the top of the file to extend the shipped ones"
                    .to_string(),
            );
        }
        if !self.listen.ip().to_canonical().is_loopback()
            && !self.identity.require_auth
            && self.allowed_clients.is_empty()
        {
            out.push(format!(
                "gateway.listen = \"{}\" accepts connections from other hosts, with neither identity.require_auth = true nor gateway.allowed_clients: anyone who can reach it can use the gateway as an open proxy. Set one of them (docs/deployment.md, \"Client networks\")",
                self.listen
            ));
        }
        if self.console.public_url.is_none() && !self.admin.listen.ip().to_canonical().is_loopback()
        {
            out.push(format!(
                "console.public_url is not set: request links in deny messages point at the admin listener {}, which engineers' browsers on other machines may not reach by that name. Set console.public_url to the address they use (docs/console.md)",
                self.admin.listen
            ));
        }
        out
    }

    /// Whether this (normalised) host shares a front end with an intercepted host.
    pub fn fronted(&self, host: &str) -> bool {
        self.vendors
            .iter()
            .any(|v| v.fronts.iter().any(|p| p.matches(host)))
    }

    /// The console's base URL: `console.public_url`, else the admin listener as bound (an
    /// unspecified address becomes loopback, which only this machine can open; the warning
    /// says so).
    pub fn console_url(&self, admin_addr: SocketAddr) -> String {
        if let Some(url) = &self.console.public_url {
            return url.clone();
        }
        let ip = if admin_addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            admin_addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, admin_addr.port()))
    }

    pub fn tool_name(&self, id: &str) -> Option<&str> {
        self.tools.iter().find(|t| &*t.id == id).map(|t| &*t.name)
    }
}
