//! Prometheus metrics, fed from the audit writer: every request, tunnel and admin action passes
//! through it exactly once, so counting there costs the data path nothing and cannot drift from
//! the audit log. Labels stay low-cardinality: kind, vendor, tool, action, reason. Never a user.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::audit::{AuditRecord, Kind};

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    kind: &'static str,
    vendor: Arc<str>,
    tool: Arc<str>,
    action: &'static str,
    reason: &'static str,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<Labels, u64>,
    latency: BTreeMap<Arc<str>, Histogram>,
    /// Connections to catalogued model APIs, by group and action: the AI traffic outside
    /// inspection (a handful of groups, so low cardinality).
    ai_hosts: BTreeMap<(Arc<str>, &'static str), u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    pub open_connections: AtomicI64,
    /// Responses whose provenance capture was dropped because its queue was full.
    pub provenance_dropped: AtomicU64,
    /// Responses captured (reassembled and recorded).
    pub provenance_captured: AtomicU64,
    /// Ledger commits: several captures finished together share one (group commit).
    pub provenance_ledger_commits: AtomicU64,
    /// Fingerprints held in memory for the ledger's index, as of the last commit.
    pub provenance_ledger_held: AtomicU64,
    /// Ledger fsyncs by the capture's sync thread (at most one every 100 ms).
    pub provenance_ledger_syncs: AtomicU64,
    /// The label for "none" (no vendor, no tool), shared.
    empty: Arc<str>,
}

/// Counts a client connection (or the tunnel or intercepted session it became) for as long as it
/// lives; graceful shutdown waits for the count to reach zero.
pub struct ConnectionGauge(std::sync::Arc<Metrics>);

impl ConnectionGauge {
    pub fn new(m: std::sync::Arc<Metrics>) -> Self {
        m.open_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGauge(m)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the scrape adds from elsewhere (exemption store, audit health).
pub struct Extra {
    pub exemptions_active: usize,
    pub audit_write_errors: u64,
    pub audit_records_dropped: u64,
    pub audit_healthy: bool,
    /// `None` with file storage.
    pub storage_up: Option<bool>,
}

impl Metrics {
    pub fn observe(&self, r: &AuditRecord) {
        // A forwarded call is counted once, by its decision; its latency is known only from
        // its outcome. Progress records are neither.
        let latency = match r.kind {
            Kind::Progress => return,
            Kind::Outcome => true,
            Kind::Request => !r.outcome_follows,
            Kind::Tunnel | Kind::Admin => false,
        };
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if latency {
            let h = c
                .latency
                .entry(r.vendor.clone().unwrap_or_else(|| self.empty.clone()))
                .or_default();
            let secs = r.duration_ms / 1000.0;
            for (i, upper) in BUCKETS.iter().enumerate() {
                if secs <= *upper {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
        if r.kind == Kind::Outcome {
            return;
        }
        let kind = r.kind.as_str();
        let labels = Labels {
            kind,
            // Arc clones: no allocation per record on the data path.
            vendor: r.vendor.clone().unwrap_or_else(|| self.empty.clone()),
            tool: r.tool.clone().unwrap_or_else(|| self.empty.clone()),
            action: r.action.as_str(),
            reason: r.reason.as_str(),
        };
        *c.requests.entry(labels).or_default() += 1;
        if let Some(group) = &r.ai_host {
            *c.ai_hosts
                .entry((group.clone(), r.action.as_str()))
                .or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, extra: &Extra) -> String {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP aigate_requests_total Requests, tunnels and admin actions, by outcome.\n# TYPE aigate_requests_total counter\n");
        for (l, n) in &c.requests {
            let _ = writeln!(
                out,
                "aigate_requests_total{{kind=\"{}\",vendor=\"{}\",tool=\"{}\",action=\"{}\",reason=\"{}\"}} {n}",
                l.kind,
                escape(&l.vendor),
                escape(&l.tool),
                l.action,
                l.reason
            );
        }
        out.push_str("# HELP aigate_ai_host_connections_total Connections to model APIs in the AI host catalog (not inspected), by group and action.\n# TYPE aigate_ai_host_connections_total counter\n");
        for ((group, action), n) in &c.ai_hosts {
            let _ = writeln!(
                out,
                "aigate_ai_host_connections_total{{group=\"{}\",action=\"{action}\"}} {n}",
                escape(group)
            );
        }
        out.push_str("# HELP aigate_request_duration_seconds Intercepted request duration, to the end of the response body.\n# TYPE aigate_request_duration_seconds histogram\n");
        for (vendor, h) in &c.latency {
            let v = escape(vendor);
            for (i, upper) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "aigate_request_duration_seconds_bucket{{vendor=\"{v}\",le=\"{upper}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "aigate_request_duration_seconds_bucket{{vendor=\"{v}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "aigate_request_duration_seconds_sum{{vendor=\"{v}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "aigate_request_duration_seconds_count{{vendor=\"{v}\"}} {}",
                h.count
            );
        }
        let gauges = [
            (
                "aigate_open_connections",
                "gauge",
                "Client connections open now.",
                self.open_connections.load(Ordering::Relaxed).to_string(),
            ),
            (
                "aigate_exemptions_active",
                "gauge",
                "Exemptions in force now.",
                extra.exemptions_active.to_string(),
            ),
            (
                "aigate_audit_write_errors_total",
                "counter",
                "Failed writes to the audit log.",
                extra.audit_write_errors.to_string(),
            ),
            (
                "aigate_audit_records_dropped_total",
                "counter",
                "Audit records lost (queue closed or over the pending cap).",
                extra.audit_records_dropped.to_string(),
            ),
            (
                "aigate_provenance_dropped_total",
                "counter",
                "Responses whose provenance capture was dropped: the capture queue was full (the client was not slowed).",
                self.provenance_dropped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "aigate_provenance_captured_total",
                "counter",
                "Responses captured for provenance (reassembled and recorded).",
                self.provenance_captured.load(Ordering::Relaxed).to_string(),
            ),
            (
                "aigate_provenance_ledger_commits_total",
                "counter",
                "Provenance ledger commits; captures finished together share one. The embedded ledger writes a commit to the operating system and fsyncs it with the next sync.",
                self.provenance_ledger_commits
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "aigate_provenance_ledger_syncs_total",
                "counter",
                "Provenance ledger fsyncs, at most one every 100 ms while captures are recorded; the outcome records of a commit are written after the sync that follows it.",
                self.provenance_ledger_syncs
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "aigate_provenance_ledger_held_fingerprints",
                "gauge",
                "Fingerprints recorded and held in memory until the embedded ledger writes them to its index (in runs of 524,288), as of the last commit; growing without bound means the runs fall behind.",
                self.provenance_ledger_held
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "aigate_audit_healthy",
                "gauge",
                "1 while the audit log is writable.",
                u8::from(extra.audit_healthy).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        if let Some(up) = extra.storage_up {
            let _ = writeln!(
                out,
                "# HELP aigate_storage_up 1 while PostgreSQL (shared exemptions and audit) is reachable.\n# TYPE aigate_storage_up gauge\naigate_storage_up {}",
                u8::from(up)
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
