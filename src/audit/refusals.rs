//! Refusals of callers nobody has identified are audited, but an outsider must not be able to
//! grow the log at the rate they can send requests: 3,000 unauthenticated admin calls wrote
//! 3,000 records (issue 15), and with `fail_closed` a full disk stops all vendor traffic. The
//! proxy port is the same: a client outside `gateway.allowed_clients`, a missing or wrong proxy
//! credential (407), a request hyper refuses, a connection over the limits, a CONNECT target
//! that does not parse. One implementation serves both listeners, each with a log of its own
//! (`Leg`).
//!
//! So, per window of `WINDOW` and per leg: each client (an IPv4 address, or an IPv6 /64) gets at
//! most `PER_CLIENT` records of its own, and all clients together at most `TOTAL`. Whatever is
//! over is counted, and at the end of the window each client with a count gets one summary
//! record, "N refusals from X between T1 and T2" (`admin_refusals_summarized` on the admin leg,
//! `proxy_refusals_summarized` on the proxy leg). Counts are kept for at most `TRACKED`
//! clients; beyond them, refusals are summed in one record for `client = "*"`. A window
//! therefore writes at most `TOTAL + TRACKED + 1` records per leg, whatever the traffic
//! (docs/security.md, docs/operations.md). The counts live in memory: a `kill -9` loses the
//! window's summaries, never a call that reached a vendor.
//!
//! Refusals of identified callers (a 403 for the wrong admin role, a destination or policy
//! refusal after proxy authentication) are not folded: the caller is known.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{AuditLog, AuditRecord, Kind};
use crate::policy::{Action, Reason};
use crate::proxy::new_id;

/// Which listener's refusals a log folds: each has its own budget and its own summary reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The admin API (`kind = "admin"` records).
    Admin,
    /// The proxy port (`kind = "tunnel"` records, as its other refusals).
    Proxy,
}

impl Leg {
    fn kind(self) -> Kind {
        match self {
            Leg::Admin => Kind::Admin,
            Leg::Proxy => Kind::Tunnel,
        }
    }

    fn reason(self) -> Reason {
        match self {
            Leg::Admin => Reason::AdminRefusalsSummarized,
            Leg::Proxy => Reason::ProxyRefusalsSummarized,
        }
    }
}

/// How often counts are written out as summaries, and how long the per-window limits last.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Records of its own that one client can cause per window.
pub const PER_CLIENT: u32 = 10;
/// Records of their own that all clients together can cause per window.
pub const TOTAL: u32 = 60;
/// Clients whose folded refusals are counted one by one; the rest share one summary.
pub const TRACKED: usize = 64;

/// The client a refusal is counted against: an IPv4 address, or an IPv6 /64 (one host can hold
/// a whole /64 and would otherwise get `PER_CLIENT` records per address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Prefix(Ipv6Addr),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Source::V6Prefix(Ipv6Addr::from(bits))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(ip) => write!(f, "{ip}"),
            Source::V6Prefix(ip) => write!(f, "{ip}/64"),
        }
    }
}

#[derive(Debug)]
struct Tally {
    refusals: u64,
    first: SystemTime,
    last: SystemTime,
    /// By HTTP status (401, 503; 0 when aigate gave no answer of its own): what the refused
    /// calls were answered.
    statuses: HashMap<u16, u64>,
    /// By reason code: why they were refused.
    reasons: HashMap<Reason, u64>,
}

impl Tally {
    fn new(now: SystemTime) -> Tally {
        Tally {
            refusals: 0,
            first: now,
            last: now,
            statuses: HashMap::new(),
            reasons: HashMap::new(),
        }
    }

    fn add(&mut self, status: u16, reason: Reason, now: SystemTime) {
        self.refusals += 1;
        self.last = now;
        *self.statuses.entry(status).or_insert(0) += 1;
        *self.reasons.entry(reason).or_insert(0) += 1;
    }
}

#[derive(Debug, Default)]
struct Window {
    written: u32,
    written_by: HashMap<Source, u32>,
    folded: HashMap<Source, Tally>,
    others: Option<Tally>,
}

/// The per-window counts of one leg (see the module comment).
#[derive(Debug)]
pub struct RefusalLog {
    leg: Leg,
    window: Mutex<Window>,
}

impl RefusalLog {
    pub fn new(leg: Leg) -> RefusalLog {
        RefusalLog {
            leg,
            window: Mutex::default(),
        }
    }

    /// Write `record` (a refusal of a caller nobody identified), or count it towards its
    /// client's summary. Its `client` is the address; a record without a `status` counts as
    /// "no answer of aigate's".
    pub fn submit(&self, audit: &AuditLog, record: AuditRecord) {
        if self.admit_record(&record) {
            audit.submit(record);
        }
    }

    /// Whether `record` gets a line of its own; if not, it is counted.
    pub fn admit_record(&self, record: &AuditRecord) -> bool {
        let ip = record
            .client
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        self.admit(
            ip,
            record.status.unwrap_or(0),
            record.reason,
            SystemTime::now(),
        )
    }

    /// Whether a refusal of `ip`, answered `status`, gets a record of its own. If not, it is
    /// counted towards the client's summary.
    pub fn admit(&self, ip: IpAddr, status: u16, reason: Reason, now: SystemTime) -> bool {
        let source = Source::of(ip);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let mine = w.written_by.get(&source).copied().unwrap_or(0);
        if mine < PER_CLIENT && w.written < TOTAL {
            w.written += 1;
            w.written_by.insert(source, mine + 1);
            return true;
        }
        let tracked = w.folded.len();
        match w.folded.get_mut(&source) {
            Some(t) => t.add(status, reason, now),
            None if tracked < TRACKED => {
                let mut t = Tally::new(now);
                t.add(status, reason, now);
                w.folded.insert(source, t);
            }
            None => w
                .others
                .get_or_insert_with(|| Tally::new(now))
                .add(status, reason, now),
        }
        false
    }

    /// The summary records of the window that ends now, and a fresh window.
    pub fn summaries(&self) -> Vec<AuditRecord> {
        let w = std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out: Vec<AuditRecord> = w
            .folded
            .into_iter()
            .map(|(source, t)| summary(self.leg, &source.to_string(), t))
            .collect();
        if let Some(t) = w.others {
            out.push(summary(self.leg, "*", t));
        }
        out
    }
}

fn summary(leg: Leg, from: &str, t: Tally) -> AuditRecord {
    let time = |at: SystemTime| humantime::format_rfc3339_millis(at).to_string();
    let mut r = AuditRecord::new(
        new_id(),
        leg.kind(),
        from.to_string(),
        "anonymous".into(),
        String::new(),
        0,
    );
    let (first, last) = (time(t.first), time(t.last));
    let mut statuses: Vec<(u16, u64)> = t.statuses.into_iter().collect();
    statuses.sort_unstable();
    let statuses: serde_json::Map<String, serde_json::Value> = statuses
        .into_iter()
        .map(|(status, n)| {
            // 0: no answer of aigate's (hyper answered or closed, or the head timed out).
            let key = if status == 0 {
                "none".to_string()
            } else {
                status.to_string()
            };
            (key, json!(n))
        })
        .collect();
    let mut reasons: Vec<(&'static str, u64)> = t
        .reasons
        .into_iter()
        .map(|(reason, n)| (reason.as_str(), n))
        .collect();
    reasons.sort_unstable();
    let reasons: serde_json::Map<String, serde_json::Value> = reasons
        .into_iter()
        .map(|(reason, n)| (reason.to_string(), json!(n)))
        .collect();
    r.action = Action::Block;
    r.reason = leg.reason();
    r.error = Some(format!(
        "{} refusals from {from} between {first} and {last}",
        t.refusals
    ));
    r.duration_ms = t
        .last
        .duration_since(t.first)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0;
    r.admin = Some(json!({
        "refusals": t.refusals,
        "from": from,
        "first": first,
        "last": last,
        "statuses": statuses,
        "reasons": reasons,
    }));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_gets_its_share_then_one_summary() {
        let log = RefusalLog::new(Leg::Admin);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let admitted = (0..1000)
            .filter(|i| {
                log.admit(
                    ip("192.0.2.7"),
                    401,
                    Reason::AdminDenied,
                    t0 + Duration::from_millis(*i),
                )
            })
            .count();
        assert_eq!(admitted, PER_CLIENT as usize);
        let s = log.summaries();
        assert_eq!(s.len(), 1);
        let a = s[0].admin.as_ref().unwrap();
        assert_eq!(a["refusals"], 1000 - u64::from(PER_CLIENT));
        assert_eq!(a["from"], "192.0.2.7");
        assert_eq!(a["statuses"]["401"], 1000 - u64::from(PER_CLIENT));
        assert_eq!(s[0].reason, Reason::AdminRefusalsSummarized);
        assert!(
            s[0].error
                .as_deref()
                .unwrap()
                .starts_with("990 refusals from 192.0.2.7 between 2027-01-15T08:00:00.010Z and ")
        );
        // A new window: the client has its share again, and nothing is left to summarise.
        assert!(log.admit(ip("192.0.2.7"), 401, Reason::AdminDenied, t0));
        assert!(log.summaries().is_empty());
    }

    #[test]
    fn many_clients_are_bounded_in_total() {
        let log = RefusalLog::new(Leg::Admin);
        let now = SystemTime::now();
        let mut admitted = 0;
        for host in 0..1000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + host));
            for _ in 0..3 {
                admitted += usize::from(log.admit(addr, 401, Reason::AdminDenied, now));
            }
        }
        assert_eq!(admitted, TOTAL as usize);
        let s = log.summaries();
        assert_eq!(s.len(), TRACKED + 1);
        let folded: u64 = s
            .iter()
            .map(|r| r.admin.as_ref().unwrap()["refusals"].as_u64().unwrap())
            .sum();
        assert_eq!(folded as usize + admitted, 3000);
        assert!(s.iter().any(|r| r.client == "*"));
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let log = RefusalLog::new(Leg::Admin);
        let now = SystemTime::now();
        let admitted = (0..100u16)
            .filter(|i| {
                log.admit(
                    ip(&format!("2001:db8:0:1::{i:x}")),
                    401,
                    Reason::AdminDenied,
                    now,
                )
            })
            .count();
        assert_eq!(admitted, PER_CLIENT as usize);
        assert_eq!(log.summaries()[0].client, "2001:db8:0:1::/64");
    }

    /// The proxy leg folds the same way, into records of its own kind and reason, counted by
    /// reason too.
    #[test]
    fn the_proxy_leg_summarises_as_its_own() {
        let log = RefusalLog::new(Leg::Proxy);
        let now = SystemTime::now();
        for i in 0..30 {
            let (status, reason) = if i % 2 == 0 {
                (407, Reason::ProxyAuth)
            } else {
                (0, Reason::BadRequest)
            };
            log.admit(ip("198.51.100.9"), status, reason, now);
        }
        let s = log.summaries();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, Kind::Tunnel);
        assert_eq!(s[0].reason, Reason::ProxyRefusalsSummarized);
        let a = s[0].admin.as_ref().unwrap();
        assert_eq!(a["refusals"], 20);
        assert_eq!(a["reasons"]["proxy_auth"], 10);
        assert_eq!(a["reasons"]["bad_request"], 10);
        assert_eq!(a["statuses"]["407"], 10);
        assert_eq!(a["statuses"]["none"], 10);
    }
}

/// Clients paused for guessing request links: past their share of audited unknown-link
/// refusals in a window, they are answered 429 without a lookup for `GUESSING_PAUSE`.
#[derive(Debug, Default)]
pub struct Guessing {
    until: Mutex<HashMap<Source, SystemTime>>,
}

/// How long a client that keeps opening unknown request links is paused.
pub const GUESSING_PAUSE: Duration = WINDOW;
/// Clients remembered as guessing at most (past it, the oldest pauses are dropped first).
const GUESSERS: usize = 4096;

impl Guessing {
    pub fn pause(&self, ip: IpAddr, now: SystemTime) {
        let mut g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= GUESSERS {
            g.retain(|_, until| *until > now);
        }
        if g.len() < GUESSERS {
            g.insert(Source::of(ip), now + GUESSING_PAUSE);
        }
    }

    pub fn paused(&self, ip: IpAddr, now: SystemTime) -> bool {
        let g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&Source::of(ip)).is_some_and(|until| *until > now)
    }
}
