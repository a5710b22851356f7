//! `/`: the Overview. What a security reviewer looks at first: blocked and monitored calls over
//! the last 24 hours, 7 or 30 days, by tool, vendor and workflow; who was blocked most; the
//! blocked attempts, with repeats collapsed; tunnels to hosts that look like AI APIs; open
//! exemption requests; active exemptions, the soonest to expire first; and the audit chain's
//! state.
//!
//! Everything is read through the modules the rest of the console uses: the rows come from
//! `audit::query::each_row` (a forwarded call's records joined into one row, as the explorer
//! lists it), the requests and exemptions through the API's `visible` rules, the chain through
//! `audit::verify`. Counts link to the explorer with the filter that lists the same records.
//!
//! Charts are SVG drawn here, with a `<title>` and `<desc>` and a table of the same numbers
//! beside each, so they read without JavaScript and with a screen reader.
//!
//! Repeats collapse: a client retries a 403 (Codex five times) and reopens a refused WebSocket
//! (seven times per run). Blocked rows of the same user, tool, vendor, rule and reason, each
//! within [`REPEAT_GAP`] of the next, are one attempt with a count, linked to exactly those
//! records in the explorer (the same fields and the attempt's first and last time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Signed, page, see_other};
use crate::admin::AdminState;
use crate::admin::read::{AUDIT_READERS, scope};
use crate::audit::query::{Entry, Filter, NONE, each_row};
use crate::exemptions::Subject;

/// Blocked calls this close together, with the same key, are one attempt.
pub const REPEAT_GAP: Duration = Duration::from_secs(10 * 60);
/// A chain verification this old is done again on the next view (in the background).
const CHAIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Rows in the top lists and bars in a chart.
const TOP: usize = 8;

/// The windows the Overview offers: (parameter, label, length, bucket).
const RANGES: &[(&str, &str, u64, u64)] = &[
    ("24h", "Last 24 hours", 86_400, 3_600),
    ("7d", "Last 7 days", 7 * 86_400, 12 * 3_600),
    ("30d", "Last 30 days", 30 * 86_400, 86_400),
];

#[derive(Debug, Deserialize, Default)]
pub struct RangeQuery {
    #[serde(default)]
    range: Option<String>,
}

/// Blocked and monitored counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub blocked: u64,
    pub monitored: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.blocked + self.monitored
    }
}

/// Blocked calls of one key close together in time: one attempt, however many retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub user: String,
    pub tool: String,
    pub vendor: String,
    pub rule: String,
    pub reason: String,
    pub first: SystemTime,
    pub last: SystemTime,
    pub count: u64,
    /// The newest record's id (its permalink).
    pub newest_id: String,
}

impl Attempt {
    /// The explorer's filter that lists exactly this attempt's records.
    pub fn explorer_link(&self) -> String {
        let since = humantime::format_rfc3339_millis(self.first).to_string();
        // `until` is exclusive; records carry milliseconds.
        let until =
            humantime::format_rfc3339_millis(self.last + Duration::from_millis(1)).to_string();
        let params = [
            ("action", "block"),
            ("user", self.user.as_str()),
            ("tool", self.tool.as_str()),
            ("vendor", self.vendor.as_str()),
            ("rule", self.rule.as_str()),
            ("reason", self.reason.as_str()),
            ("since", since.as_str()),
            ("until", until.as_str()),
        ];
        format!(
            "/audit?{}",
            serde_urlencoded::to_string(params).unwrap_or_default()
        )
    }
}

/// Tunnels to one AI host outside inspection.
#[derive(Debug, Default, Clone)]
pub struct Tunnels {
    pub count: u64,
    pub users: HashSet<String>,
}

/// What the Overview counts in one pass over the window's rows, newest first.
#[derive(Debug)]
pub struct Stats {
    start: SystemTime,
    bucket: Duration,
    pub over_time: Vec<Counts>,
    pub by_tool: HashMap<String, Counts>,
    pub by_vendor: HashMap<String, Counts>,
    pub by_workflow: HashMap<String, Counts>,
    pub blocked_users: HashMap<String, u64>,
    pub attempts: Vec<Attempt>,
    /// The attempt each key is in, while rows of it keep coming.
    open: HashMap<[String; 5], usize>,
    /// (AI host group, host) to its tunnels.
    pub ai_tunnels: BTreeMap<(String, String), Tunnels>,
    pub rows: u64,
}

impl Stats {
    pub fn new(start: SystemTime, end: SystemTime, bucket: Duration) -> Stats {
        let span = end.duration_since(start).unwrap_or_default();
        let n = (span.as_secs().div_ceil(bucket.as_secs().max(1))).max(1) as usize;
        Stats {
            start,
            bucket,
            over_time: vec![Counts::default(); n],
            by_tool: HashMap::new(),
            by_vendor: HashMap::new(),
            by_workflow: HashMap::new(),
            blocked_users: HashMap::new(),
            attempts: Vec::new(),
            open: HashMap::new(),
            ai_tunnels: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Count one row; rows come newest first.
    pub fn add(&mut self, r: &Entry) {
        self.rows += 1;
        if r.get("ai_host").is_some() && r.text("kind") == "tunnel" {
            let t = self
                .ai_tunnels
                .entry((r.text("ai_host").into_owned(), r.text("host").into_owned()))
                .or_default();
            t.count += 1;
            t.users.insert(r.text("user").into_owned());
        }
        let action = r.text("action");
        let (blocked, monitored) = match action.as_ref() {
            "block" => (1, 0),
            "monitor" => (0, 1),
            _ => return,
        };
        let Some(time) = r.time() else { return };
        let add = |c: &mut Counts| {
            c.blocked += blocked;
            c.monitored += monitored;
        };
        if let Ok(since) = time.duration_since(self.start) {
            let i = (since.as_secs() / self.bucket.as_secs().max(1)) as usize;
            if let Some(c) = self.over_time.get_mut(i) {
                add(c);
            }
        }
        add(self.by_tool.entry(r.text("tool").into_owned()).or_default());
        add(self
            .by_vendor
            .entry(r.text("vendor").into_owned())
            .or_default());
        add(self
            .by_workflow
            .entry(r.text("workflow").into_owned())
            .or_default());
        if blocked == 0 {
            return;
        }
        *self
            .blocked_users
            .entry(r.text("user").into_owned())
            .or_default() += 1;
        let key = ["user", "tool", "vendor", "rule", "reason"].map(|f| r.text(f).into_owned());
        if let Some(&i) = self.open.get(&key) {
            let a = &mut self.attempts[i];
            if a.first.duration_since(time).unwrap_or_default() <= REPEAT_GAP {
                a.first = time.min(a.first);
                a.count += 1;
                return;
            }
        }
        let [user, tool, vendor, rule, reason] = key.clone();
        self.attempts.push(Attempt {
            user,
            tool,
            vendor,
            rule,
            reason,
            first: time,
            last: time,
            count: 1,
            newest_id: r.text("id").into_owned(),
        });
        self.open.insert(key, self.attempts.len() - 1);
    }

    fn bucket_start(&self, i: usize) -> SystemTime {
        self.start + self.bucket * i as u32
    }
}

/// The audit chain as last verified.
#[derive(Debug, Clone)]
enum Chain {
    Verified {
        records: u64,
        last_seq: u64,
        last_checkpoint: Option<u64>,
        at: SystemTime,
    },
    Broken {
        problem: String,
        at: SystemTime,
    },
    Unreadable {
        error: String,
        at: SystemTime,
    },
}

#[derive(Default)]
struct ChainSlot {
    last: Option<Chain>,
    running: bool,
}

/// The last verification of each log, by path: a page view shows it, and starts a new one in
/// the background when it is older than [`CHAIN_TTL`]. A 10-million-record log is never
/// verified per view, and never twice at once.
static CHAIN: LazyLock<Mutex<HashMap<PathBuf, ChainSlot>>> = LazyLock::new(Mutex::default);

fn chain_state(path: PathBuf, now: SystemTime) -> (Option<Chain>, bool) {
    let mut all = CHAIN.lock().unwrap_or_else(|p| p.into_inner());
    let slot = all.entry(path.clone()).or_default();
    let stale = match &slot.last {
        None => true,
        Some(
            Chain::Verified { at, .. } | Chain::Broken { at, .. } | Chain::Unreadable { at, .. },
        ) => now.duration_since(*at).unwrap_or_default() >= CHAIN_TTL,
    };
    if stale && !slot.running {
        slot.running = true;
        let started = now;
        tokio::task::spawn_blocking(move || {
            let opts = crate::audit::verify::Options {
                live: true,
                ..Default::default()
            };
            let result = match crate::audit::verify::verify(&path, &opts) {
                Ok(r) if r.ok => Chain::Verified {
                    records: r.records,
                    last_seq: r.last_seq,
                    last_checkpoint: r.last_checkpoint,
                    at: started,
                },
                Ok(r) => Chain::Broken {
                    problem: r
                        .problems
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "not verified".into()),
                    at: started,
                },
                Err(error) => Chain::Unreadable { error, at: started },
            };
            let mut all = CHAIN.lock().unwrap_or_else(|p| p.into_inner());
            let slot = all.entry(path).or_default();
            slot.last = Some(result);
            slot.running = false;
        });
    }
    (slot.last.clone(), slot.running)
}

/// `GET /?range=24h|7d|30d`.
pub async fn show(
    State(state): State<AdminState>,
    signed: Signed,
    Query(q): Query<RangeQuery>,
) -> Response {
    // The Overview is read from the audit log; an approver's work is the request queue.
    if !AUDIT_READERS.iter().any(|r| signed.caller.has(*r)) {
        return see_other("/requests");
    }
    let (range, label, secs, bucket) = RANGES
        .iter()
        .find(|r| Some(r.0) == q.range.as_deref())
        .copied()
        .unwrap_or(RANGES[0]);
    let now = state.shared.clock.now();
    let start = now - Duration::from_secs(secs);
    let mut filter = Filter {
        since: Some(start),
        ..Filter::default()
    };
    scope(&state, &signed.caller, &mut filter);
    state.shared.audit.flush().await;
    let path = state.shared.audit.path().to_path_buf();
    // With the audit table in PostgreSQL the Overview counts every replica's records from it;
    // this replica's file holds only its own share.
    let stats = match state.store.db().filter(|db| db.cfg.audit) {
        Some(db) => {
            let mut stats = Stats::new(start, now, Duration::from_secs(bucket));
            crate::storage::audit::each_row(db, &filter, |r| stats.add(r))
                .await
                .map(|()| stats)
                .map_err(|e| format!("cannot read the audit table: {e}"))
        }
        None => {
            let path = path.clone();
            let filter = filter.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut stats = Stats::new(start, now, Duration::from_secs(bucket));
                each_row(&path, &filter, |r| stats.add(r)).map(|()| stats)
            })
            .await;
            match read {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("cannot read the audit log: {e}")),
                Err(_) => Err("the audit reader failed".to_string()),
            }
        }
    };
    let (chain, verifying) = chain_state(path, now);
    let requests: Vec<_> = state
        .requests
        .store
        .list()
        .into_iter()
        .filter(|r| r.is_open() && crate::admin::requests::visible(&state, &signed.caller, r))
        .collect();
    let mut exemptions: Vec<_> = state
        .store
        .list()
        .into_iter()
        .filter(|e| {
            e.active_at(now) && crate::admin::exemptions::visible(&state, &signed.caller, e)
        })
        .collect();
    exemptions.sort_by_key(|e| e.expires_at);
    let since_param = range;
    let body = html! {
        h1 { "Overview" }
        nav class="ranges" aria-label="Time range" {
            @for (r, l, _, _) in RANGES {
                @if *r == range { a href=(format!("/?range={r}")) aria-current="page" { strong { (l) } } }
                @else { a href=(format!("/?range={r}")) { (l) } }
            }
        }
        @if filter.users.is_some() {
            p class="muted" { "The records of the people you manage." }
        }
        @match &stats {
            Err(e) => p class="error" { (e) },
            Ok(s) => (window(s, label, since_param)),
        }
        div class="grid" {
            section aria-labelledby="h-open" {
                h2 id="h-open" { "Open requests" }
                @if requests.is_empty() { p class="empty" { "No open requests." } }
                @else {
                    table class="data" aria-labelledby="h-open" {
                        thead { tr { th scope="col" { "User" } th scope="col" { "Tool" } th scope="col" { "Workflow" } th scope="col" { "Asked" } } }
                        tbody {
                            @for r in requests.iter().take(TOP) {
                                tr {
                                    td class="mono" { a href=(format!("/requests/{}", r.id)) { (r.user) } }
                                    td class="mono" { (r.tool) }
                                    td class="mono" { (r.workflow) }
                                    td class="nowrap" { (ago(now, r.created_at)) }
                                }
                            }
                        }
                    }
                    @if requests.len() > TOP { p { a href="/requests" { "All " (requests.len()) " open requests" } } }
                }
            }
            section aria-labelledby="h-exemptions" {
                h2 id="h-exemptions" { "Active exemptions" }
                @if exemptions.is_empty() { p class="empty" { "No active exemptions." } }
                @else {
                    table class="data" aria-labelledby="h-exemptions" {
                        thead { tr { th scope="col" { "Subject" } th scope="col" { "Tools" } th scope="col" { "Expires" } } }
                        tbody {
                            @for e in exemptions.iter().take(TOP) {
                                tr {
                                    td class="mono" { @match &e.subject { Subject::User(u) => (u), Subject::Group(g) => { "group " (g) } } }
                                    td class="mono" { (e.tools.join(", ")) }
                                    td class="nowrap" { "in " (until(now, e.expires_at)) }
                                }
                            }
                        }
                    }
                    p { a href="/exemptions" { "All exemptions" } }
                }
            }
        }
        section aria-labelledby="h-chain" {
            h2 id="h-chain" { "Audit chain" }
            p id="chain-state" {
                @match &chain {
                    None => span class="muted" { "Being verified; reload in a moment." },
                    Some(Chain::Verified { records, last_seq, last_checkpoint, at }) => {
                        span class="chain-ok" { "Verified" } " up to record " strong { (last_seq) }
                        " (" (records) " records in the live file"
                        @if let Some(cp) = last_checkpoint { ", last signed checkpoint at record " (cp) }
                        ") at " (humantime::format_rfc3339_seconds(*at)) "."
                    }
                    Some(Chain::Broken { problem, at }) => {
                        span class="chain-bad" { "Broken" } ": " (problem) " (checked at " (humantime::format_rfc3339_seconds(*at)) ")."
                    }
                    Some(Chain::Unreadable { error, at }) => {
                        span class="chain-bad" { "Not verified" } ": " (error) " (at " (humantime::format_rfc3339_seconds(*at)) ")."
                    }
                }
                @if verifying && chain.is_some() { " " span class="muted" { "Checking again now." } }
            }
            p class="muted" { "The live log file, verified by " code { "aigate audit verify --live" } "'s code at most every " (CHAIN_TTL.as_secs() / 60) " minutes; run it with " code { "--key" } " to check signatures against a pinned key." }
        }
    };
    page("Overview", &signed, body)
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    let d = now.duration_since(t).unwrap_or_default();
    format!("{} ago", coarse(d))
}

fn until(now: SystemTime, t: SystemTime) -> String {
    coarse(t.duration_since(now).unwrap_or_default())
}

/// A duration as a person says it: `3 min`, `5 h`, `2 d`.
fn coarse(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..172_800 => format!("{} h", s / 3_600),
        _ => format!("{} d", s / 86_400),
    }
}

fn top(map: &HashMap<String, Counts>) -> Vec<(&str, Counts)> {
    let mut v: Vec<(&str, Counts)> = map.iter().map(|(k, c)| (k.as_str(), *c)).collect();
    v.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
    v.truncate(TOP);
    v
}

fn window(s: &Stats, label: &str, range: &str) -> Markup {
    let total = s.over_time.iter().fold(Counts::default(), |a, c| Counts {
        blocked: a.blocked + c.blocked,
        monitored: a.monitored + c.monitored,
    });
    let mut users: Vec<(&String, &u64)> = s.blocked_users.iter().collect();
    users.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    users.truncate(TOP);
    let link = |extra: &[(&str, &str)]| {
        let mut p: Vec<(&str, &str)> = extra.to_vec();
        p.push(("since", range));
        format!(
            "/audit?{}",
            serde_urlencoded::to_string(p).unwrap_or_default()
        )
    };
    html! {
        div class="tiles" {
            div class="tile" { span class="n" id="n-blocked" { (total.blocked) } a href=(link(&[("action", "block")])) { "blocked calls" } }
            div class="tile" { span class="n" id="n-attempts" { (s.attempts.len()) } "blocked attempts (repeats collapsed)" }
            div class="tile" { span class="n" id="n-monitored" { (total.monitored) } a href=(link(&[("action", "monitor")])) { "monitored calls" } }
            div class="tile" { span class="n" { (s.ai_tunnels.values().map(|t| t.count).sum::<u64>()) } "tunnels to AI hosts" }
        }
        section aria-labelledby="h-time" {
            h2 id="h-time" { "Blocked and monitored calls, " (label.to_lowercase()) }
            div class="legend" aria-hidden="true" { span { span class="swatch block" {} "blocked" } span { span class="swatch monitor" {} "monitored" } }
            div class="chart card" { (timeline(s, label)) }
            details {
                summary { "As a table" }
                table class="data" aria-label="Blocked and monitored calls over time" {
                    thead { tr { th scope="col" { "From (UTC)" } th scope="col" { "Blocked" } th scope="col" { "Monitored" } } }
                    tbody {
                        @for (i, c) in s.over_time.iter().enumerate() {
                            tr { td class="mono" { (minute(s.bucket_start(i))) } td class="num" { (c.blocked) } td class="num" { (c.monitored) } }
                        }
                    }
                }
            }
        }
        div class="charts" {
            (breakdown("tool", "By tool", &top(&s.by_tool), range))
            (breakdown("vendor", "By vendor", &top(&s.by_vendor), range))
            (breakdown("workflow", "By workflow", &top(&s.by_workflow), range))
        }
        div class="grid" {
            section aria-labelledby="h-users" {
                h2 id="h-users" { "Top blocked users" }
                @if users.is_empty() { p class="empty" { "Nobody was blocked." } }
                @else {
                    table class="data" aria-labelledby="h-users" {
                        thead { tr { th scope="col" { "User" } th scope="col" { "Blocked calls" } } }
                        tbody {
                            @for (u, n) in &users {
                                tr { td class="mono" { a href=(link(&[("action", "block"), ("user", u)])) { (u) } } td class="num" { (n) } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-ai" {
                h2 id="h-ai" { "Tunnels to AI hosts" }
                p class="muted" { "Hosts in the AI host catalog, tunnelled without inspection (" code { "ai_host" } " on the record)." }
                @if s.ai_tunnels.is_empty() { p class="empty" { "None." } }
                @else {
                    table class="data" aria-labelledby="h-ai" {
                        thead { tr { th scope="col" { "Group" } th scope="col" { "Host" } th scope="col" { "Tunnels" } th scope="col" { "Users" } } }
                        tbody {
                            @for ((group, host), t) in &s.ai_tunnels {
                                tr {
                                    td class="mono" { a href=(link(&[("ai_host", group), ("kind", "tunnel")])) { (group) } }
                                    td class="mono" { (host) }
                                    td class="num" { (t.count) }
                                    td class="num" { (t.users.len()) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-attempts" {
            h2 id="h-attempts" { "Blocked attempts" }
            p class="muted" { "Blocked calls of the same user, tool, vendor, rule and reason, each within " (REPEAT_GAP.as_secs() / 60) " minutes of the next, are one attempt: a client's retries and reconnects count once. The count opens the records." }
            @if s.attempts.is_empty() { p class="empty" { "No blocked calls." } }
            @else {
                table class="data" aria-labelledby="h-attempts" id="attempts" {
                    thead { tr { th scope="col" { "Last (UTC)" } th scope="col" { "User" } th scope="col" { "Tool" } th scope="col" { "Vendor" } th scope="col" { "Rule" } th scope="col" { "Calls" } } }
                    tbody {
                        @for a in s.attempts.iter().take(20) {
                            tr {
                                td class="mono nowrap" { a href=(format!("/audit/{}", a.newest_id)) { (humantime::format_rfc3339_seconds(a.last)) } }
                                td class="mono" { (a.user) }
                                td class="mono" { (a.tool) }
                                td class="mono" { (a.vendor) }
                                td class="mono" { (a.rule) }
                                td class="num" { a class="attempt-count" href=(a.explorer_link()) aria-label=(format!("{} blocked calls of {} with {}", a.count, a.user, a.tool)) { "×" (a.count) } }
                            }
                        }
                    }
                }
                @if s.attempts.len() > 20 { p { a href=(link(&[("action", "block")])) { "All blocked calls in the explorer" } } }
            }
        }
    }
}

/// The stacked bars of blocked (below) and monitored calls per bucket.
fn timeline(s: &Stats, label: &str) -> Markup {
    const W: f64 = 1000.0;
    const H: f64 = 180.0;
    const PAD: f64 = 24.0;
    let max = s
        .over_time
        .iter()
        .map(|c| c.total())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = s.over_time.len().max(1) as f64;
    let slot = (W - 2.0 * PAD) / n;
    let bar = (slot * 0.8).max(1.0);
    let scale = (H - 2.0 * PAD) / max;
    let base = H - PAD;
    let total: u64 = s.over_time.iter().map(|c| c.total()).sum();
    let first = s.over_time.first().map(|_| s.bucket_start(0));
    html! {
        svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby="timeline-title timeline-desc" {
            title id="timeline-title" { "Blocked and monitored calls, " (label.to_lowercase()) }
            desc id="timeline-desc" { (total) " calls blocked or monitored, in " (s.over_time.len()) " intervals; the highest has " (max as u64) ". The table below has every number." }
            line class="axis" x1=(PAD) y1=(base) x2=(W - PAD) y2=(base) {}
            @for (i, c) in s.over_time.iter().enumerate() {
                @let x = PAD + slot * i as f64 + (slot - bar) / 2.0;
                @let hb = c.blocked as f64 * scale;
                @let hm = c.monitored as f64 * scale;
                @if c.blocked > 0 { rect class="bar-block" x=(fmt(x)) y=(fmt(base - hb)) width=(fmt(bar)) height=(fmt(hb)) {} }
                @if c.monitored > 0 { rect class="bar-monitor" x=(fmt(x)) y=(fmt(base - hb - hm)) width=(fmt(bar)) height=(fmt(hm)) {} }
            }
            text x=(PAD) y=(H - 6.0) { @if let Some(t) = first { (minute(t)) } }
            text x=(W - PAD) y=(H - 6.0) text-anchor="end" { "now" }
            text x=(PAD) y="14" { (max as u64) }
        }
    }
}

/// `2026-11-20 10:00`: a bucket's start, to the minute.
fn minute(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(..16).unwrap_or(&s).replace('T', " ")
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// Horizontal bars of one field's largest values, and the same as a table.
fn breakdown(field: &str, title: &str, rows: &[(&str, Counts)], range: &str) -> Markup {
    const W: f64 = 320.0;
    const ROW: f64 = 26.0;
    const LABEL: f64 = 110.0;
    let max = rows.iter().map(|r| r.1.total()).max().unwrap_or(0).max(1) as f64;
    let h = (ROW * rows.len() as f64).max(ROW);
    let scale = (W - LABEL - 40.0) / max;
    let id = format!("by-{field}");
    html! {
        section class="chart card" aria-labelledby=(format!("h-{id}")) {
            h3 id=(format!("h-{id}")) { (title) }
            @if rows.is_empty() { p class="empty" { "Nothing blocked or monitored." } }
            @else {
                svg viewBox=(format!("0 0 {W} {h}")) role="img" aria-labelledby=(format!("{id}-title {id}-desc")) {
                    title id=(format!("{id}-title")) { "Blocked and monitored calls " (title.to_lowercase()) }
                    desc id=(format!("{id}-desc")) {
                        @for (i, (name, c)) in rows.iter().enumerate() {
                            @if i > 0 { "; " }
                            (name) ": " (c.blocked) " blocked, " (c.monitored) " monitored"
                        }
                    }
                    @for (i, (name, c)) in rows.iter().enumerate() {
                        @let y = ROW * i as f64;
                        @let wb = c.blocked as f64 * scale;
                        @let wm = c.monitored as f64 * scale;
                        text x="0" y=(fmt(y + 17.0)) { (shorten(name)) }
                        @if c.blocked > 0 { rect class="bar-block" x=(LABEL) y=(fmt(y + 5.0)) width=(fmt(wb)) height="16" {} }
                        @if c.monitored > 0 { rect class="bar-monitor" x=(fmt(LABEL + wb)) y=(fmt(y + 5.0)) width=(fmt(wm)) height="16" {} }
                        text x=(fmt(LABEL + wb + wm + 4.0)) y=(fmt(y + 17.0)) { (c.total()) }
                    }
                }
                details {
                    summary { "As a table" }
                    table class="data" aria-labelledby=(format!("h-{id}")) {
                        thead { tr { th scope="col" { (field) } th scope="col" { "Blocked" } th scope="col" { "Monitored" } } }
                        tbody {
                            @for (name, c) in rows {
                                tr {
                                    td class="mono" {
                                        @if *name == NONE { (name) }
                                        @else { a href=(format!("/audit?{}", serde_urlencoded::to_string([(field, *name), ("since", range)]).unwrap_or_default())) { (name) } }
                                    }
                                    td class="num" { (c.blocked) }
                                    td class="num" { (c.monitored) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A label that fits the chart's label column.
fn shorten(s: &str) -> String {
    if s.chars().count() > 16 {
        format!("{}…", s.chars().take(15).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(t: &str, user: &str, action: &str, id: &str) -> Entry {
        Entry::parse(&format!(
            r#"{{"time":"{t}","id":"{id}","kind":"request","user":"{user}","tool":"codex-cli","vendor":"openai","workflow":"payments","action":"{action}","reason":"rule_matched","rule":"r1"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn retries_collapse_into_one_attempt_and_a_pause_starts_another() {
        let t = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let mut s = Stats::new(
            t("2026-11-20T00:00:00Z"),
            t("2026-11-21T00:00:00Z"),
            Duration::from_secs(3600),
        );
        // Newest first: five retries a second apart at 10:30, then one at 09:00, and a
        // monitored call and another user's block in between.
        for (i, sec) in [5, 4, 3, 2, 1].iter().enumerate() {
            s.add(&row(
                &format!("2026-11-20T10:30:0{sec}.000Z"),
                "alice",
                "block",
                &format!("a{i}"),
            ));
            if i == 2 {
                s.add(&row("2026-11-20T10:30:03.500Z", "bob", "block", "b"));
                s.add(&row("2026-11-20T10:30:03.600Z", "alice", "monitor", "m"));
            }
        }
        s.add(&row("2026-11-20T09:00:00.000Z", "alice", "block", "old"));
        let alice: Vec<&Attempt> = s.attempts.iter().filter(|a| a.user == "alice").collect();
        assert_eq!(alice.len(), 2);
        assert_eq!(alice[0].count, 5);
        assert_eq!(alice[0].newest_id, "a0");
        assert_eq!(alice[0].first, t("2026-11-20T10:30:01Z"));
        assert_eq!(alice[0].last, t("2026-11-20T10:30:05Z"));
        assert_eq!(alice[1].count, 1);
        assert_eq!(s.blocked_users["alice"], 6);
        assert_eq!(
            s.over_time[10],
            Counts {
                blocked: 6,
                monitored: 1
            }
        );
        assert_eq!(
            s.over_time[9],
            Counts {
                blocked: 1,
                monitored: 0
            }
        );
        assert_eq!(
            s.by_tool["codex-cli"],
            Counts {
                blocked: 7,
                monitored: 1
            }
        );
        let link = alice[0].explorer_link();
        assert!(
            link.contains("since=2026-11-20T10%3A30%3A01.000Z"),
            "{link}"
        );
        assert!(
            link.contains("until=2026-11-20T10%3A30%3A05.001Z"),
            "{link}"
        );
    }

    #[test]
    fn tunnels_to_ai_hosts_are_counted_by_host_and_user() {
        let mut s = Stats::new(
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        for user in ["a", "b", "a"] {
            s.add(
                &Entry::parse(&format!(
                    r#"{{"kind":"tunnel","ai_host":"inference-apis","host":"api.together.xyz","user":"{user}","action":"allow"}}"#
                ))
                .unwrap(),
            );
        }
        s.add(&Entry::parse(r#"{"kind":"tunnel","host":"example.com","action":"allow"}"#).unwrap());
        let t = &s.ai_tunnels[&("inference-apis".to_string(), "api.together.xyz".to_string())];
        assert_eq!((t.count, t.users.len()), (3, 2));
        assert_eq!(s.ai_tunnels.len(), 1);
    }
}
