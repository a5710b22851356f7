//! RawConfig -> Config. Every check pushes a `Problem` and carries on, so one run of
//! `aigate check` lists everything wrong with a file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::raw::RawConfig;
use super::{
    AuditConfig, CaConfig, Config, FailMode, Fsync, IdentityConfig, LogConfig, LogFormat, Problem,
    UpstreamConfig, parse_duration,
};
use crate::host::{HostPattern, normalise};
use crate::identify::Directory;
use crate::policy::{Action, Policy};

mod admin;
mod ai_hosts;
mod audit;
mod console;
mod console_oidc;
mod console_web;
mod destinations;
mod provenance;
mod rules;
mod storage;
mod tools;
mod vendors;
mod workflows;

use admin::admin;
use ai_hosts::ai_hosts;
use audit::integrity;
use console::console;
use console_oidc::console_oidc;
use destinations::{allowed_clients, destinations};
use provenance::provenance;
use rules::rules;
use storage::storage;
use tools::tools;
use vendors::vendors;
use workflows::workflows;

const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
const DEFAULT_STATE_DIR: &str = "./aigate-data";
const DEFAULT_BODY_PEEK: u64 = 16 * 1024;
const MAX_BODY_PEEK: u64 = 1024 * 1024;
const DEFAULT_WORKFLOW_HEADER: &str = "x-aigate-workflow";
const URL_PLACEHOLDERS: [&str; 5] = ["tool", "workflow", "rule", "user", "request_id"];

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, value: Option<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            value,
            message: message.into(),
        });
    }
}

fn q(s: &str) -> Option<String> {
    Some(format!("{s:?}"))
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() || base == Path::new(".") {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn duration(
    p: &mut Problems,
    path: &str,
    raw: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Duration {
    let Some(raw) = raw else { return default };
    match parse_duration(raw) {
        Ok(d) if d < min || d > max => {
            p.push(
                path,
                q(raw),
                format!(
                    "out of range; use between {} and {}",
                    super::format_duration(min),
                    super::format_duration(max)
                ),
            );
            default
        }
        Ok(d) => d,
        Err(e) => {
            p.push(path, q(raw), e);
            default
        }
    }
}

fn readable_file(p: &mut Problems, path: &str, base: &Path, raw: &str) -> PathBuf {
    let resolved = resolve_path(base, raw);
    if let Err(e) = std::fs::metadata(&resolved) {
        p.push(path, q(raw), format!("cannot read {}: {e}; check the path (relative paths start at the config file's directory)", resolved.display()));
    }
    resolved
}

pub(super) fn validate(raw: RawConfig, source: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems(Vec::new());

    // [gateway]
    let listen_raw = raw.gateway.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.push(
            "gateway.listen",
            q(listen_raw),
            "not an address; write ip:port, e.g. \"127.0.0.1:3128\" or \"0.0.0.0:3128\"",
        );
        SocketAddr::from(([127, 0, 0, 1], 3128))
    });
    let state_dir = resolve_path(
        base,
        raw.gateway
            .state_dir
            .as_deref()
            .unwrap_or(DEFAULT_STATE_DIR),
    );
    let peek = raw.gateway.body_peek_bytes.unwrap_or(DEFAULT_BODY_PEEK);
    if peek > MAX_BODY_PEEK {
        p.push(
            "gateway.body_peek_bytes",
            Some(peek.to_string()),
            format!(
                "too large; use at most {MAX_BODY_PEEK} (the peek is held in memory per request)"
            ),
        );
    }
    let mut allowed_ip_literals = Vec::new();
    for (i, s) in raw.gateway.allowed_ip_literals.iter().flatten().enumerate() {
        match parse_net(s) {
            Some(n) => allowed_ip_literals.push(n),
            None => p.push(
                format!("gateway.allowed_ip_literals[{i}]"),
                q(s),
                "not an IP address or CIDR; write e.g. \"10.1.2.3\" or \"10.0.0.0/8\"",
            ),
        }
    }

    let drain_timeout = duration(
        &mut p,
        "gateway.drain_timeout",
        raw.gateway.drain_timeout.as_deref(),
        Duration::from_secs(30),
        Duration::ZERO,
        Duration::from_secs(3600),
    );

    let header_timeout = duration(
        &mut p,
        "gateway.header_timeout",
        raw.gateway.header_timeout.as_deref(),
        Duration::from_secs(30),
        Duration::from_millis(100),
        Duration::from_secs(600),
    );
    let idle_timeout = duration(
        &mut p,
        "gateway.idle_timeout",
        raw.gateway.idle_timeout.as_deref(),
        Duration::from_secs(90),
        Duration::from_millis(100),
        Duration::from_secs(3600),
    );
    let handshake_timeout = duration(
        &mut p,
        "gateway.handshake_timeout",
        raw.gateway.handshake_timeout.as_deref(),
        Duration::from_secs(10),
        Duration::from_millis(100),
        Duration::from_secs(600),
    );
    let max_connections = raw.gateway.max_connections.unwrap_or(16_000);
    let max_per_client = raw.gateway.max_connections_per_client.unwrap_or(512);
    if max_connections == 0 {
        p.push(
            "gateway.max_connections",
            Some("0".into()),
            "must be at least 1",
        );
    }
    if max_per_client == 0 || max_per_client > max_connections {
        p.push(
            "gateway.max_connections_per_client",
            Some(max_per_client.to_string()),
            format!("must be between 1 and gateway.max_connections ({max_connections})"),
        );
    }

    // [ca]
    let files = match (&raw.ca.cert, &raw.ca.key) {
        (Some(c), Some(k)) => Some((
            readable_file(&mut p, "ca.cert", base, c),
            readable_file(&mut p, "ca.key", base, k),
        )),
        (None, None) => None,
        (Some(_), None) => {
            p.push("ca.key", None, "missing; a configured CA needs both cert and key (or neither, to generate one in the state directory)");
            None
        }
        (None, Some(_)) => {
            p.push("ca.cert", None, "missing; a configured CA needs both cert and key (or neither, to generate one in the state directory)");
            None
        }
    };
    let leaf_validity = duration(
        &mut p,
        "ca.leaf_validity",
        raw.ca.leaf_validity.as_deref(),
        Duration::from_secs(7 * 86_400),
        Duration::from_secs(3600),
        Duration::from_secs(397 * 86_400),
    );

    // [upstream]
    let extra_roots = raw
        .upstream
        .extra_roots
        .iter()
        .enumerate()
        .map(|(i, r)| readable_file(&mut p, &format!("upstream.extra_roots[{i}]"), base, r))
        .collect();
    let connect_timeout = duration(
        &mut p,
        "upstream.connect_timeout",
        raw.upstream.connect_timeout.as_deref(),
        Duration::from_secs(10),
        Duration::from_millis(100),
        Duration::from_secs(300),
    );
    let response_timeout = duration(
        &mut p,
        "upstream.response_timeout",
        raw.upstream.response_timeout.as_deref(),
        Duration::from_secs(600),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    let mut resolve = Vec::new();
    for (host, addr) in &raw.upstream.resolve {
        let path = format!("upstream.resolve.\"{host}\"");
        let name = match normalise(host) {
            Ok(h) => h.to_string(),
            Err(e) => {
                p.push(&path, None, format!("the key is not a host name: {e}"));
                continue;
            }
        };
        match addr.parse::<SocketAddr>() {
            Ok(a) => resolve.push((name, a)),
            Err(_) => p.push(
                &path,
                q(addr),
                "not an address; write ip:port, e.g. \"127.0.0.1:8443\"",
            ),
        }
    }

    let destinations = destinations(&mut p, &raw.gateway, &resolve);
    let allowed_clients = allowed_clients(&mut p, &raw.gateway);

    // [audit]
    let audit_path = state_dir.join(raw.audit.path.as_deref().unwrap_or("audit.jsonl"));
    let on_failure = match raw.audit.on_failure.as_deref() {
        None | Some("fail_closed") => FailMode::Closed,
        Some("fail_open") => FailMode::Open,
        Some(other) => {
            p.push("audit.on_failure", q(other), "unknown mode; use \"fail_closed\" (refuse calls while the log cannot be written) or \"fail_open\"");
            FailMode::Closed
        }
    };
    let fsync = match raw.audit.fsync.as_deref() {
        None | Some("batch") => Fsync::Batch,
        Some("never") => Fsync::Never,
        Some(other) => {
            p.push("audit.fsync", q(other), "unknown policy; use \"batch\" (fsync every write batch) or \"never\" (leave it to the OS)");
            Fsync::Batch
        }
    };
    let integrity = integrity(&mut p, &raw.audit, base, &state_dir);
    let progress_interval = duration(
        &mut p,
        "audit.progress_interval",
        raw.audit.progress_interval.as_deref(),
        Duration::from_secs(60),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );

    // [identity]
    let header_raw = raw
        .identity
        .workflow_header
        .as_deref()
        .unwrap_or(DEFAULT_WORKFLOW_HEADER);
    let workflow_header = HeaderName::from_bytes(header_raw.to_ascii_lowercase().as_bytes()).unwrap_or_else(|_| {
        p.push("identity.workflow_header", q(header_raw), "not a valid HTTP header name; use letters, digits and dashes, e.g. \"x-aigate-workflow\"");
        HeaderName::from_static(DEFAULT_WORKFLOW_HEADER)
    });
    let mut directory = Directory::default();
    let users_file = raw.identity.users_file.as_deref().map(|f| {
        let path = readable_file(&mut p, "identity.users_file", base, f);
        if path.exists() {
            match Directory::load(&path) {
                Ok(d) => directory = d,
                Err(e) => p.push("identity.users_file", q(f), e.to_string()),
            }
        }
        path
    });
    let mut source_addresses = Vec::new();
    // First, so that an explicit mapping of the same network (listed after it) wins the tie.
    let local_account = (raw.identity.local_account == Some(true)).then(|| {
        let name = crate::identify::local_account::name();
        for net in ["127.0.0.0/8", "::1/128"] {
            if let Some(n) = parse_net(net) {
                source_addresses.push((n, name.clone()));
            }
        }
        name
    });
    for (net, user) in &raw.identity.source_addresses {
        match parse_net(net) {
            Some(n) => source_addresses.push((n, user.clone())),
            None => p.push(
                format!("identity.source_addresses.\"{net}\""),
                None,
                "the key is not an IP address or CIDR; write e.g. \"10.1.0.0/16\" = \"alice\"",
            ),
        }
    }

    directory.include_identified(source_addresses.iter().map(|(_, u)| u.as_str()));

    // [policy]
    let default_action = match raw.policy.default_action.as_deref() {
        None => Action::Monitor,
        Some(s) => Action::parse(s).unwrap_or_else(|| {
            p.push(
                "policy.default_action",
                q(s),
                format!("unknown action; use one of {}", Action::ALL.join(", ")),
            );
            Action::Monitor
        }),
    };
    let exemption_url = raw.policy.exemption_url.clone().unwrap_or_default();
    check_placeholders(&mut p, &exemption_url);

    let admin = admin(&mut p, &raw.admin);
    let storage = storage(&mut p, &raw.storage, base);
    let mut console = console(&mut p, &raw.console, base);
    console.oidc = console_oidc(
        &mut p,
        raw.console.oidc.as_ref(),
        base,
        admin.listen,
        console.public_url.is_some(),
    );
    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                p.push(
                    "log.format",
                    q(other),
                    "unknown format; use \"pretty\" (for people) or \"json\" (for log shippers)",
                );
                LogFormat::Pretty
            }
        },
        level: {
            let level = raw.log.level.clone().unwrap_or_else(|| "info".into());
            if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
                p.push("log.level", q(&level), "not a log filter; use error, warn, info, debug or trace (or a RUST_LOG-style list)");
            }
            level
        },
    };
    let mut vendors = vendors(&mut p, &raw.vendors);
    let ai_hosts = ai_hosts(&mut p, &raw.ai_hosts, &mut vendors);
    let vendor_ids: Vec<&str> = vendors.iter().map(|v| &*v.id).collect();
    let tools = tools(&mut p, &raw.tools, &vendor_ids);
    let tool_ids: Vec<&str> = tools.iter().map(|t| &*t.id).collect();
    let rules = rules(&mut p, &raw.rules, &tool_ids, &vendor_ids);
    let workflows = workflows(&mut p, &raw.workflows, &raw.policy, &raw.rules);
    for problem in directory.uncatalogued_defaults(&workflows.catalog) {
        p.push("identity.users_file", None, problem);
    }
    let provenance = provenance(&mut p, &raw.provenance, &tool_ids, &vendor_ids);

    if !p.0.is_empty() {
        return Err(p.0);
    }
    let mut policy = Policy::new(rules, default_action);
    policy.workflows = workflows.catalog;
    policy.unknown_workflow = workflows.unknown_workflow;
    policy.unknown_tool = workflows.unknown_tool;
    Ok(Config {
        source: source.to_string(),
        file: None,
        include_defaults: false,
        version: Arc::from(""),
        listen,
        state_dir,
        body_peek_bytes: peek as usize,
        allowed_ip_literals,
        destinations,
        allowed_clients,
        drain_timeout,
        header_timeout,
        idle_timeout,
        handshake_timeout,
        max_connections: max_connections as usize,
        max_connections_per_client: max_per_client as usize,
        ca: CaConfig {
            files,
            leaf_validity,
        },
        upstream: UpstreamConfig {
            extra_roots,
            connect_timeout,
            response_timeout,
            resolve,
        },
        audit: AuditConfig {
            path: audit_path,
            on_failure,
            fsync,
            integrity,
            progress_interval,
        },
        identity: IdentityConfig {
            workflow_header,
            users_file,
            directory,
            require_auth: raw.identity.require_auth.unwrap_or(false),
            source_addresses,
            local_account,
        },
        exemption_url,
        vendors,
        ai_hosts,
        tools,
        policy,
        admin,
        log,
        storage,
        console,
        provenance,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// A list of host patterns under `path` (`vendors[0].hosts`, `ai_hosts.groups[1].hosts`):
/// missing and empty lists are problems, and each entry that is not a host pattern is named
/// with `entry_hint`. `missing` ends the message for a list that is not there.
fn host_list(
    p: &mut Problems,
    path: &str,
    raw: Option<&Vec<String>>,
    missing: &str,
    entry_hint: &str,
) -> Vec<HostPattern> {
    let mut hosts = Vec::new();
    match raw {
        None => p.push(path, None, format!("missing; {missing}")),
        Some(h) if h.is_empty() => p.push(path, None, "empty; list at least one host"),
        Some(h) => {
            for (j, raw_host) in h.iter().enumerate() {
                match HostPattern::parse(raw_host) {
                    Ok(pat) => hosts.push(pat),
                    Err(e) => p.push(
                        format!("{path}[{j}]"),
                        q(raw_host),
                        format!("{e}; {entry_hint}"),
                    ),
                }
            }
        }
    }
    hosts
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn check_placeholders(p: &mut Problems, url: &str) {
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            p.push(
                "policy.exemption_url",
                q(url),
                "unclosed `{`; placeholders look like {tool}",
            );
            return;
        };
        let name = &after[..end];
        if !URL_PLACEHOLDERS.contains(&name) {
            p.push(
                "policy.exemption_url",
                q(url),
                format!(
                    "unknown placeholder {{{name}}}; known placeholders are {}",
                    URL_PLACEHOLDERS.map(|n| format!("{{{n}}}")).join(", ")
                ),
            );
        }
        rest = &after[end + 1..];
    }
}

/// The problems `load_str` reports for `toml`, as one string (empty when it loads): the section
/// tests assert on the messages a user reads.
#[cfg(test)]
fn problems_of(toml: &str) -> String {
    match crate::config::load_str(toml, "test.toml", Path::new(".")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}
