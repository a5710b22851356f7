//! `/exemptions`: active, upcoming, expired and revoked exemptions, and the grant and revoke
//! forms. Who sees which exemption, who may grant, and every grant rule are the JSON API's
//! (`admin::exemptions::{visible, grant_for, revoke_for}`); this page only renders and parses
//! the form. A refused grant shows the API's own message above the form, filled in as sent.

use std::time::SystemTime;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Signed, csrf_field, page_with_status, see_other, verify_csrf};
use crate::admin::AdminState;
use crate::admin::exemptions::{GRANTORS, GrantBody, READERS, grant_for, revoke_for, visible};
use crate::config::Role;
use crate::exemptions::{Exemption, Subject};

/// Durations offered in the form, capped by `admin.max_exemption`.
const PRESETS: &[(&str, &str, u64)] = &[
    ("1h", "1 hour", 3600),
    ("1d", "1 day", 86_400),
    ("3d", "3 days", 3 * 86_400),
    ("7d", "1 week", 7 * 86_400),
];

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    granted: Option<String>,
    revoked: Option<String>,
}

/// What the grant form holds, as sent: shown again when the grant is refused.
#[derive(Debug, Default, Clone)]
struct Draft {
    user: String,
    group: String,
    tools: Vec<String>,
    workflows: String,
    duration: String,
    starts_at: String,
    reason: String,
    ticket: String,
}

impl Draft {
    fn from_pairs(pairs: &[(String, String)]) -> (Draft, String) {
        let mut d = Draft::default();
        let mut csrf = String::new();
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => csrf = v.clone(),
                "user" => d.user = v.trim().to_string(),
                "group" => d.group = v.trim().to_string(),
                "tools" => d.tools.push(v.clone()),
                "workflows" => d.workflows = v.clone(),
                "for" => d.duration = v.clone(),
                "starts_at" => d.starts_at = v.trim().to_string(),
                "reason" => d.reason = v.clone(),
                "ticket" => d.ticket = v.trim().to_string(),
                _ => {}
            }
        }
        (d, csrf)
    }

    /// The JSON API's body, so that both take one path through the rules.
    fn body(&self) -> GrantBody {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let workflows: Vec<String> = self
            .workflows
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
        GrantBody {
            user: some(&self.user),
            group: some(&self.group),
            tools: self.tools.clone(),
            workflows: (!workflows.is_empty()).then_some(workflows),
            starts_at: some(&self.starts_at),
            expires_at: None,
            duration: some(&self.duration),
            reason: some(&self.reason),
            ticket: some(&self.ticket),
        }
    }
}

pub async fn list(
    State(state): State<AdminState>,
    Query(flash): Query<Flash>,
    signed: Signed,
) -> Response {
    if let Err(refused) = signed.require(&state, READERS) {
        return refused;
    }
    let notice = match (&flash.granted, &flash.revoked) {
        (Some(id), _) => Some(format!("Exemption {id} granted.")),
        (_, Some(id)) => Some(format!("Exemption {id} revoked.")),
        _ => None,
    };
    render(
        &state,
        &signed,
        StatusCode::OK,
        notice,
        None,
        &Draft::default(),
    )
}

pub async fn grant(
    State(state): State<AdminState>,
    signed: Signed,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let (draft, csrf) = Draft::from_pairs(&pairs);
    if let Err(refused) = verify_csrf(&state, &signed, &csrf) {
        return refused;
    }
    if let Err(refused) = signed.require(&state, GRANTORS) {
        return refused;
    }
    match grant_for(&state, &signed.caller, signed.client, draft.body()).await {
        Ok(e) => see_other(&format!("/exemptions?granted={}", urlencode(&e.id))),
        Err(refused) => render(
            &state,
            &signed,
            refused.status,
            None,
            Some(&refused.message),
            &draft,
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    signed: Signed,
    Form(f): Form<RevokeForm>,
) -> Response {
    if let Err(refused) = verify_csrf(&state, &signed, &f.csrf) {
        return refused;
    }
    if let Err(refused) = signed.require(&state, GRANTORS) {
        return refused;
    }
    match revoke_for(&state, &signed.caller, signed.client, &id).await {
        Ok(e) => see_other(&format!("/exemptions?revoked={}", urlencode(&e.id))),
        Err(refused) => page_with_status(
            refused.status,
            "Exemptions",
            &signed,
            html! {
                h1 { "Exemptions" }
                p class="error" role="alert" { "Not revoked: " (refused.message) }
                p { a href="/exemptions" { "Back to exemptions" } }
            },
        ),
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active,
    Upcoming,
    Expired,
    Revoked,
}

fn state_of(e: &Exemption, now: SystemTime) -> Phase {
    if e.revoked_at.is_some() {
        Phase::Revoked
    } else if e.active_at(now) {
        Phase::Active
    } else if e.starts_at > now {
        Phase::Upcoming
    } else {
        Phase::Expired
    }
}

fn render(
    state: &AdminState,
    signed: &Signed,
    status: StatusCode,
    notice: Option<String>,
    error: Option<&str>,
    draft: &Draft,
) -> Response {
    let now = state.shared.clock.now();
    let mut all: Vec<Exemption> = state
        .store
        .list()
        .into_iter()
        .filter(|e| visible(state, &signed.caller, e))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.starts_at));
    let of =
        |s: Phase| -> Vec<&Exemption> { all.iter().filter(|e| state_of(e, now) == s).collect() };
    let can_grant = GRANTORS.iter().any(|r| signed.caller.has(*r));
    let body = html! {
        h1 { "Exemptions" }
        p class="muted" {
            "Time-boxed exceptions to exemptable rules. Granted by the subject's manager or an admin, never to oneself; every grant and revocation is an audit record."
        }
        @if let Some(n) = &notice {
            p class="notice" role="status" { (n) }
        }
        (table("Active", "active", &of(Phase::Active), signed, can_grant, now))
        (table("Upcoming", "upcoming", &of(Phase::Upcoming), signed, can_grant, now))
        @if can_grant {
            (grant_form(state, signed, error, draft))
        }
        (table("Expired", "expired", &of(Phase::Expired), signed, false, now))
        (table("Revoked", "revoked", &of(Phase::Revoked), signed, false, now))
    };
    page_with_status(status, "Exemptions", signed, body)
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn subject(s: &Subject) -> Markup {
    match s {
        Subject::User(u) => html! { (u) },
        Subject::Group(g) => html! { "group " strong { (g) } },
    }
}

fn table(
    title: &str,
    id: &str,
    list: &[&Exemption],
    signed: &Signed,
    revocable: bool,
    now: SystemTime,
) -> Markup {
    let badge = format!("badge b-{id}");
    html! {
        section aria-labelledby=(format!("h-{id}")) {
            h2 id=(format!("h-{id}")) { (title) " " span class="muted" { "(" (list.len()) ")" } }
            @if list.is_empty() {
                p class="empty" { "None." }
            } @else {
                table class="data" {
                    thead {
                        tr {
                            th scope="col" { "Subject" }
                            th scope="col" { "Tools" }
                            th scope="col" { "Workflows" }
                            th scope="col" { "From" }
                            th scope="col" { "Until" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Granted by" }
                            @if revocable { th scope="col" { span class="muted" { "Action" } } }
                        }
                    }
                    tbody {
                        @for e in list {
                            tr id=(format!("ex-row-{}", e.id)) {
                                td { (subject(&e.subject)) br; span class=(badge) { (title) } }
                                td { (e.tools.join(", ")) }
                                td {
                                    @match &e.workflows {
                                        None => span class="muted" { "all" },
                                        Some(w) => (w.join(", ")),
                                    }
                                }
                                td { (when(e.starts_at)) }
                                td {
                                    @if let Some(r) = e.revoked_at {
                                        "revoked " (when(r))
                                        @if let Some(by) = &e.revoked_by { " by " (by) }
                                    } @else {
                                        (when(e.expires_at))
                                        @if e.expires_at > now && e.starts_at <= now {
                                            br; span class="muted" { "in " (remaining(e.expires_at, now)) }
                                        }
                                    }
                                }
                                td {
                                    (e.reason)
                                    @if let Some(t) = &e.ticket { br; span class="muted" { "ticket " (t) } }
                                }
                                td { (e.granted_by) }
                                @if revocable {
                                    td {
                                        form method="post" action=(format!("/exemptions/{}/revoke", e.id)) {
                                            (csrf_field(signed))
                                            button type="submit" class="danger" aria-label=(format!("Revoke exemption {}", e.id)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `secs` as the API's `for` takes it: "14d", "36h", "90m", "45s".
fn spec(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn remaining(until: SystemTime, now: SystemTime) -> String {
    let secs = until.duration_since(now).map_or(0, |d| d.as_secs());
    let d = std::time::Duration::from_secs(secs - secs % 60);
    crate::config::format_duration(d)
}

fn grant_form(state: &AdminState, signed: &Signed, error: Option<&str>, d: &Draft) -> Markup {
    let cfg = state.shared.config.load();
    let mut tools: Vec<(&str, &str)> = cfg.tools.iter().map(|t| (&*t.id, &*t.name)).collect();
    tools.dedup_by(|a, b| a.0 == b.0);
    let mut seen = std::collections::HashSet::new();
    tools.retain(|t| seen.insert(t.0));
    let max = cfg.admin.max_exemption.as_secs();
    let presets: Vec<_> = PRESETS.iter().filter(|(_, _, s)| *s <= max).collect();
    let longest = spec(max);
    let longest_words = crate::config::format_duration(cfg.admin.max_exemption);
    let chosen = if d.duration.is_empty() {
        "1d"
    } else {
        d.duration.as_str()
    };
    let people: Vec<String> = cfg
        .identity
        .directory
        .users()
        .map(|u| u.id.to_string())
        .collect();
    let admin = signed.caller.has(Role::Admin);
    html! {
        section class="card" aria-labelledby="h-grant" {
            h2 id="h-grant" { "Grant an exemption" }
            @if let Some(e) = error {
                p class="error" role="alert" id="grant-error" { "Not granted: " (e) }
            }
            form method="post" action="/exemptions" class="grid" {
                (csrf_field(signed))
                div {
                    label for="g-user" { "User" }
                    input type="text" id="g-user" name="user" value=(d.user) list="people" autocomplete="off"
                        aria-describedby="g-user-hint";
                    datalist id="people" {
                        @for p in &people { option value=(p) {} }
                    }
                    p class="hint" id="g-user-hint" { "One of your reports (admins: anyone). Not yourself." }
                }
                div {
                    label for="g-group" { "Or a group" }
                    input type="text" id="g-group" name="group" value=(d.group) autocomplete="off"
                        aria-describedby="g-group-hint";
                    p class="hint" id="g-group-hint" {
                        @if admin { "A whole group instead of one user." } @else { "Only admins exempt groups." }
                    }
                }
                fieldset class="wide" {
                    legend { "Tools" }
                    div class="checks" {
                        @for (id, name) in &tools {
                            label {
                                input type="checkbox" name="tools" value=(id) checked[d.tools.iter().any(|t| t == id)];
                                (name) " " span class="muted mono" { "(" (id) ")" }
                            }
                        }
                    }
                }
                div {
                    label for="g-workflows" { "Workflows" }
                    input type="text" id="g-workflows" name="workflows" value=(d.workflows) autocomplete="off"
                        aria-describedby="g-workflows-hint";
                    p class="hint" id="g-workflows-hint" { "Comma-separated tags; empty for every workflow." }
                }
                div {
                    label for="g-for" { "Duration" }
                    select id="g-for" name="for" aria-describedby="g-for-hint" {
                        @for (value, label, _) in &presets {
                            option value=(value) selected[*value == chosen] { (label) }
                        }
                        @if !presets.iter().any(|p| p.2 == max) {
                            option value=(longest) selected[longest == chosen] { "the longest allowed (" (longest_words) ")" }
                        }
                    }
                    p class="hint" id="g-for-hint" { "At most " (longest_words) " (admin.max_exemption)." }
                }
                div {
                    label for="g-starts" { "Starts" }
                    input type="text" id="g-starts" name="starts_at" value=(d.starts_at) placeholder="now"
                        autocomplete="off" aria-describedby="g-starts-hint";
                    p class="hint" id="g-starts-hint" { "Empty for now, or a time such as 2026-12-07T09:00:00Z." }
                }
                div {
                    label for="g-ticket" { "Ticket" }
                    input type="text" id="g-ticket" name="ticket" value=(d.ticket) autocomplete="off";
                }
                div class="wide" {
                    label for="g-reason" { "Reason" }
                    textarea id="g-reason" name="reason" required
                        aria-describedby=[error.map(|_| "grant-error")] { (d.reason) }
                }
                div class="wide actions" {
                    button type="submit" { "Grant exemption" }
                }
            }
        }
    }
}
