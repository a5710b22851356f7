//! RawConfig -> Config. Every check pushes a `Problem` and carries on, so one run of
//! `aigate check` lists everything wrong with a file.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use regex::Regex;

use super::raw::RawAdmin;
use super::raw::{RawConfig, RawRule, RawStorage, RawTool, RawVendor};
use super::{
    AdminConfig, AdminToken, AuditConfig, CaConfig, Config, ErrorFormat, FailMode, Fsync,
    IdentityConfig, LogConfig, LogFormat, PasswordSource, PostgresConfig, Problem, Role, Storage,
    UpstreamConfig, Vendor, parse_duration,
};
use crate::host::{HostPattern, normalise};
use crate::identify::tools::{Signal, UNKNOWN_TOOL};
use crate::identify::workflow::valid_tag;
use crate::identify::{Directory, ToolSignature};
use crate::policy::{Action, ModelPattern, Policy, Rule};

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
                    humantime::format_duration(min),
                    humantime::format_duration(max)
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
    let vendors = vendors(&mut p, &raw.vendors);
    let vendor_ids: Vec<&str> = vendors.iter().map(|v| &*v.id).collect();
    let tools = tools(&mut p, &raw.tools, &vendor_ids);
    let tool_ids: Vec<&str> = tools.iter().map(|t| &*t.id).collect();
    let rules = rules(&mut p, &raw.rules, &tool_ids, &vendor_ids);

    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        source: source.to_string(),
        file: None,
        version: Arc::from(""),
        listen,
        state_dir,
        body_peek_bytes: peek as usize,
        allowed_ip_literals,
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
        },
        identity: IdentityConfig {
            workflow_header,
            users_file,
            directory,
            require_auth: raw.identity.require_auth.unwrap_or(false),
            source_addresses,
        },
        exemption_url,
        vendors,
        tools,
        policy: Policy::new(rules, default_action),
        admin,
        log,
        storage,
    })
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

fn vendors(p: &mut Problems, raw: &[RawVendor]) -> Vec<Arc<Vendor>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in raw.iter().enumerate() {
        let at = format!("vendors[{i}]");
        let Some(id) = v.id.as_deref() else {
            p.push(
                format!("{at}.id"),
                None,
                "missing; give the vendor an id such as \"anthropic\"",
            );
            continue;
        };
        if !id_ok(id) {
            p.push(
                format!("{at}.id"),
                q(id),
                "not an id; use lower-case letters, digits, - and _",
            );
        } else if !seen.insert(id.to_string()) {
            p.push(
                format!("{at}.id"),
                q(id),
                "duplicate vendor id; each vendor is listed once",
            );
        }
        let mut hosts = Vec::new();
        match &v.hosts {
            None => p.push(
                format!("{at}.hosts"),
                None,
                "missing; list the vendor's API hosts, e.g. [\"api.anthropic.com\"]",
            ),
            Some(h) if h.is_empty() => {
                p.push(format!("{at}.hosts"), None, "empty; list at least one host")
            }
            Some(h) => {
                for (j, raw_host) in h.iter().enumerate() {
                    match HostPattern::parse(raw_host) {
                        Ok(pat) => hosts.push(pat),
                        Err(e) => p.push(format!("{at}.hosts[{j}]"), q(raw_host), format!("{e}; write a host name like \"api.openai.com\" or a wildcard like \"*.openai.com\"")),
                    }
                }
            }
        }
        let error_format = match v.error_format.as_deref() {
            None => {
                p.push(
                    format!("{at}.error_format"),
                    None,
                    format!("missing; use one of {}", ErrorFormat::ALL.join(", ")),
                );
                ErrorFormat::OpenAi
            }
            Some(f) => ErrorFormat::parse(f).unwrap_or_else(|| {
                p.push(
                    format!("{at}.error_format"),
                    q(f),
                    format!("unknown format; use one of {}", ErrorFormat::ALL.join(", ")),
                );
                ErrorFormat::OpenAi
            }),
        };
        out.push(Arc::new(Vendor {
            id: Arc::from(id),
            name: v.name.clone().unwrap_or_else(|| id.to_string()),
            hosts,
            error_format,
        }));
    }
    out
}

fn tools(p: &mut Problems, raw: &[RawTool], vendor_ids: &[&str]) -> Vec<ToolSignature> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in raw.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Some(id) = t.id.as_deref() else {
            p.push(
                format!("{at}.id"),
                None,
                "missing; give the tool an id such as \"claude-code\"",
            );
            continue;
        };
        if !id_ok(id) || id == UNKNOWN_TOOL {
            p.push(
                format!("{at}.id"),
                q(id),
                "not an id; use lower-case letters, digits, - and _ (\"unknown\" is reserved)",
            );
        } else if !seen.insert(id.to_string()) {
            p.push(
                format!("{at}.id"),
                q(id),
                "duplicate tool id; each signature has its own id",
            );
        }
        for (j, v) in t.vendors.iter().enumerate() {
            if !vendor_ids.contains(&v.as_str()) {
                p.push(
                    format!("{at}.vendors[{j}]"),
                    q(v),
                    format!(
                        "unknown vendor; known vendors are {}",
                        vendor_ids.join(", ")
                    ),
                );
            }
        }
        for (j, path) in t.paths.iter().enumerate() {
            if !path.starts_with('/') {
                p.push(
                    format!("{at}.paths[{j}]"),
                    q(path),
                    "a path prefix starts with /, e.g. \"/v1/messages\"",
                );
            }
        }
        let mut signals = Vec::new();
        if let Some(path) = &t.path {
            match Regex::new(path) {
                Ok(re) => signals.push(Signal::Path(re)),
                Err(e) => p.push(
                    format!("{at}.path"),
                    q(path),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        if let Some(ua) = &t.user_agent {
            match Regex::new(ua) {
                Ok(re) => signals.push(Signal::UserAgent(re)),
                Err(e) => p.push(
                    format!("{at}.user_agent"),
                    q(ua),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        for (name, re) in &t.headers {
            let hpath = format!("{at}.headers.\"{name}\"");
            let Ok(hn) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                p.push(hpath, None, "the key is not a valid HTTP header name");
                continue;
            };
            match Regex::new(re) {
                Ok(re) => signals.push(Signal::Header(hn, re)),
                Err(e) => p.push(
                    hpath,
                    q(re),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        if let Some(body) = &t.body {
            match regex::bytes::Regex::new(body) {
                Ok(re) => signals.push(Signal::Body(re)),
                Err(e) => p.push(
                    format!("{at}.body"),
                    q(body),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        let declared =
            t.user_agent.is_some() as usize + t.headers.len() + t.body.is_some() as usize;
        if declared == 0 {
            p.push(
                &at,
                None,
                "no signals; give at least one of user_agent, headers, body",
            );
        }
        let min_signals = t.min_signals.unwrap_or(1) as usize;
        if min_signals == 0 || (declared > 0 && min_signals > declared) {
            p.push(
                format!("{at}.min_signals"),
                Some(min_signals.to_string()),
                format!("must be between 1 and the number of signals ({declared})"),
            );
        }
        out.push(ToolSignature {
            id: Arc::from(id),
            name: Arc::from(t.name.as_deref().unwrap_or(id)),
            vendors: t.vendors.clone(),
            paths: t.paths.clone(),
            signals,
            min_signals,
        });
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

fn rules(p: &mut Problems, raw: &[RawRule], tool_ids: &[&str], vendor_ids: &[&str]) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let known_tools: Vec<&str> = tool_ids.iter().copied().chain([UNKNOWN_TOOL]).collect();
    for (i, r) in raw.iter().enumerate() {
        let at = format!("rules[{i}]");
        let name = match r.name.as_deref() {
            None | Some("") => {
                p.push(
                    format!("{at}.name"),
                    None,
                    "missing; every rule has a name, shown in deny messages and the audit log",
                );
                format!("rules[{i}]")
            }
            Some(n) => {
                if !seen.insert(n.to_string()) {
                    p.push(
                        format!("{at}.name"),
                        q(n),
                        "duplicate rule name; names identify rules in the audit log",
                    );
                }
                n.to_string()
            }
        };
        let action = match r.action.as_deref() {
            None => {
                p.push(
                    format!("{at}.action"),
                    None,
                    format!("missing; use one of {}", Action::ALL.join(", ")),
                );
                Action::Block
            }
            Some(a) => Action::parse(a).unwrap_or_else(|| {
                p.push(
                    format!("{at}.action"),
                    q(a),
                    format!("unknown action; use one of {}", Action::ALL.join(", ")),
                );
                Action::Block
            }),
        };
        if r.exemptable && action != Action::Block {
            p.push(format!("{at}.exemptable"), Some("true".into()), "only a block rule can be exempted; remove `exemptable` or make the action \"block\"");
        }
        let check_list = |p: &mut Problems,
                          key: &str,
                          list: &Option<Vec<String>>,
                          known: &[&str],
                          what: &str| {
            if let Some(list) = list {
                if list.is_empty() {
                    p.push(
                        format!("{at}.{key}"),
                        None,
                        format!("empty list matches nothing; remove the key to match every {what}"),
                    );
                }
                for (j, v) in list.iter().enumerate() {
                    if !known.contains(&v.as_str()) {
                        p.push(
                            format!("{at}.{key}[{j}]"),
                            q(v),
                            format!("unknown {what}; known {what}s are {}", known.join(", ")),
                        );
                    }
                }
            }
        };
        check_list(p, "tools", &r.tools, &known_tools, "tool");
        check_list(p, "vendors", &r.vendors, vendor_ids, "vendor");
        for (key, list) in [
            ("users", &r.users),
            ("groups", &r.groups),
            ("models", &r.models),
        ] {
            if let Some(list) = list {
                if list.is_empty() {
                    p.push(
                        format!("{at}.{key}"),
                        None,
                        "empty list matches nothing; remove the key to match everything",
                    );
                }
                for (j, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        p.push(format!("{at}.{key}[{j}]"), q(v), "empty value; remove it");
                    }
                }
            }
        }
        if let Some(w) = &r.workflows {
            if w.is_empty() {
                p.push(
                    format!("{at}.workflows"),
                    None,
                    "empty list matches nothing; remove the key to match every workflow",
                );
            }
            for (j, tag) in w.iter().enumerate() {
                if !valid_tag(tag) {
                    p.push(
                        format!("{at}.workflows[{j}]"),
                        q(tag),
                        "not a workflow tag; use 1-64 lower-case letters, digits, -, _ or .",
                    );
                }
            }
        }
        out.push(Rule {
            name: Arc::from(name.as_str()),
            description: r.description.as_deref().map(Arc::from),
            action,
            exemptable: r.exemptable,
            tools: r.tools.clone(),
            vendors: r.vendors.clone(),
            workflows: r.workflows.clone(),
            users: r.users.clone(),
            groups: r.groups.clone(),
            models: r
                .models
                .as_ref()
                .map(|m| m.iter().map(|s| ModelPattern::parse(s)).collect()),
        });
    }
    out
}

fn admin(p: &mut Problems, raw: &RawAdmin) -> AdminConfig {
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
    AdminConfig {
        listen,
        max_exemption,
        tokens,
    }
}

fn storage(p: &mut Problems, raw: &RawStorage, base: &Path) -> Storage {
    let backend = raw.backend.as_deref().unwrap_or("file");
    let pg_keys = [
        ("url", raw.url.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("replica_id", raw.replica_id.is_some()),
        ("resync_interval", raw.resync_interval.is_some()),
        ("audit", raw.audit.is_some()),
        ("pool_size", raw.pool_size.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    match backend {
        "file" => {
            for (key, set) in pg_keys {
                if set {
                    p.push(
                        format!("storage.{key}"),
                        None,
                        "only used with backend = \"postgres\"; remove it or set storage.backend = \"postgres\"",
                    );
                }
            }
            return Storage::File;
        }
        "postgres" => {}
        other => {
            p.push(
                "storage.backend",
                q(other),
                "unknown backend; use \"file\" (one replica, the state directory) or \"postgres\" (shared by replicas)",
            );
            return Storage::File;
        }
    }
    let url = raw.url.clone().unwrap_or_default();
    match url.parse::<tokio_postgres::Config>() {
        _ if url.is_empty() => p.push(
            "storage.url",
            None,
            "missing; write e.g. \"postgres://aigate@db.example.com:5432/aigate\"",
        ),
        Ok(c) if c.get_password().is_some() => p.push(
            "storage.url",
            Some("(hidden: it holds a password)".into()),
            "the password must not be in the config; remove it from the URL and set storage.password_env or storage.password_file",
        ),
        Ok(_) => {}
        Err(e) => p.push(
            "storage.url",
            q(&url),
            format!("not a PostgreSQL URL ({e}); write e.g. \"postgres://aigate@db.example.com:5432/aigate\""),
        ),
    }
    let password = match (&raw.password_env, &raw.password_file) {
        (Some(_), Some(_)) => {
            p.push(
                "storage.password_file",
                None,
                "set storage.password_env or storage.password_file, not both",
            );
            PasswordSource::None
        }
        (Some(var), None) => PasswordSource::Env(var.clone()),
        (None, Some(file)) => PasswordSource::File(resolve_path(base, file)),
        (None, None) => PasswordSource::None,
    };
    let replica_id = raw.replica_id.clone().unwrap_or_else(default_replica_id);
    if replica_id.is_empty()
        || replica_id.len() > 64
        || !replica_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        p.push(
            "storage.replica_id",
            q(&replica_id),
            "use 1 to 64 letters, digits, '-', '_' or '.'; each replica needs its own",
        );
    }
    let resync_interval = duration(
        p,
        "storage.resync_interval",
        raw.resync_interval.as_deref(),
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    let pool_size = raw.pool_size.unwrap_or(4);
    if !(1..=64).contains(&pool_size) {
        p.push(
            "storage.pool_size",
            Some(pool_size.to_string()),
            "use between 1 and 64 connections",
        );
    }
    Storage::Postgres(PostgresConfig {
        url,
        password,
        replica_id: Arc::from(replica_id),
        resync_interval,
        audit: raw.audit.unwrap_or(true),
        pool_size: pool_size.clamp(1, 64) as usize,
        ca_file: raw
            .ca_file
            .as_deref()
            .map(|f| readable_file(p, "storage.ca_file", base, f)),
    })
}

/// The host name: distinct per replica (a pod name, a VM name) without configuration.
fn default_replica_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into())
}
