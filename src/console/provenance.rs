//! `/provenance`: the provenance review queue. Open findings with a confirm form (quarantine,
//! an optional note) and a clear form (false positive, a reason required), then the decided
//! ones. Who may review and every rule are the JSON API's (`admin::findings::{REVIEWERS,
//! decide}`); this page only renders and parses the forms.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Signed, csrf_field, page, page_with_status, see_other, verify_csrf};
use crate::admin::AdminState;
use crate::admin::findings::{REVIEWERS, decide, list_for};
use crate::provenance::review::{Decision, Finding, Status};

#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    confirmed: Option<String>,
    cleared: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    reason: String,
}

pub async fn list(
    State(state): State<AdminState>,
    Query(flash): Query<Flash>,
    signed: Signed,
) -> Response {
    if let Err(refused) = signed.require(&state, REVIEWERS) {
        return refused;
    }
    let notice = match (&flash.confirmed, &flash.cleared) {
        (Some(id), _) => Some(format!(
            "Finding {id} confirmed: the file or record must be removed or rewritten."
        )),
        (_, Some(id)) => Some(format!("Finding {id} cleared as a false positive.")),
        _ => None,
    };
    let all = match list_for(&state, None).await {
        Ok(all) => all,
        Err(refused) => {
            return page_with_status(
                refused.status,
                "Provenance",
                &signed,
                html! {
                    h1 { "Provenance" }
                    p class="error" role="alert" { (refused.message) }
                },
            );
        }
    };
    let of = |s: Status| -> Vec<&Finding> {
        let mut v: Vec<&Finding> = all.iter().filter(|f| f.status == s).collect();
        if s != Status::Open {
            v.sort_by(|a, b| b.decided_at.cmp(&a.decided_at));
        }
        v
    };
    let body = html! {
        h1 { "Provenance" }
        p class="muted" {
            "Files and dataset records where "
            span class="mono" { "aigate provenance scan --record" }
            " found model output that came back through the gateway. Confirm a finding to quarantine it (the file or record must be removed or rewritten), or clear it as a false positive with a reason. Nothing is cleared automatically; every decision is an audit record."
        }
        @if let Some(n) = notice {
            p class="notice" role="status" { (n) }
        }
        (table("Open", "open", &of(Status::Open), &signed))
        (table("Confirmed", "confirmed", &of(Status::Confirmed), &signed))
        (table("Cleared", "cleared", &of(Status::Cleared), &signed))
    };
    page("Provenance", &signed, body)
}

fn responses(f: &Finding) -> Markup {
    let list = f.finding["responses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    html! {
        ul class="plain" {
            @for r in &list {
                @let id = s(&r["record_id"]);
                li {
                    a class="mono" href=(format!("/audit/{}", urlencode(&id))) { (id) }
                    " " (s(&r["tool"])) ", " (s(&r["user"])) ", " (s(&r["time"]))
                }
            }
        }
    }
}

fn lines(f: &Finding) -> String {
    f.finding["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r[0].as_u64()?, r[1].as_u64()?)))
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}–{b}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn table(title: &str, id: &str, list: &[&Finding], signed: &Signed) -> Markup {
    let open = id == "open";
    html! {
        section aria-labelledby=(format!("h-{id}")) {
            h2 id=(format!("h-{id}")) { (title) " " span class="muted" { "(" (list.len()) ")" } }
            @if list.is_empty() {
                p class="empty" { "None." }
            } @else {
                table class="data" {
                    thead {
                        tr {
                            th scope="col" { "Where" }
                            th scope="col" { "Match" }
                            th scope="col" { "Responses (record, tool, user, time)" }
                            th scope="col" { "Recorded" }
                            @if open { th scope="col" { "Decision" } } @else { th scope="col" { "Decided" } }
                        }
                    }
                    tbody {
                        @for f in list {
                            tr id=(format!("finding-{}", f.id)) {
                                td {
                                    span class="mono" { (f.location) }
                                    br; span class="muted mono" { (f.id) }
                                    @if let Some(p) = &f.previous {
                                        br; span class="muted" { "repeats " span class="mono" { (p) } }
                                    }
                                }
                                td {
                                    span class=(format!("badge b-{}", f.tier)) { (f.tier.replace('_', " ")) }
                                    br; (f.finding["matched_chars"].as_u64().unwrap_or(0)) " characters ("
                                    (format!("{:.0}%", f.finding["share"].as_f64().unwrap_or(0.0) * 100.0)) ")"
                                    br; span class="muted" { "lines " (lines(f)) }
                                }
                                td { (responses(f)) }
                                td {
                                    (f.recorded_at) br; span class="muted" { "by " (f.recorded_by) }
                                    @if f.seen > 1 { br; span class="muted" { "seen " (f.seen) " times" } }
                                }
                                @if open {
                                    td { (decide_forms(f, signed)) }
                                } @else {
                                    td {
                                        (f.decided_at.as_deref().unwrap_or("")) br;
                                        span class="muted" { "by " (f.decided_by.as_deref().unwrap_or("")) }
                                        @if let Some(r) = &f.reason { br; (r) }
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

fn decide_forms(f: &Finding, signed: &Signed) -> Markup {
    let confirm_id = format!("note-{}", f.id);
    let clear_id = format!("reason-{}", f.id);
    html! {
        form method="post" action=(format!("/provenance/{}/confirm", urlencode(&f.id))) class="decide" {
            (csrf_field(signed))
            label for=(confirm_id) { "Note (optional)" }
            input type="text" id=(confirm_id) name="note" autocomplete="off";
            button type="submit" class="danger" aria-label=(format!("Confirm finding {}", f.id)) { "Confirm (quarantine)" }
        }
        form method="post" action=(format!("/provenance/{}/clear", urlencode(&f.id))) class="decide" {
            (csrf_field(signed))
            label for=(clear_id) { "Reason (required)" }
            input type="text" id=(clear_id) name="reason" required autocomplete="off";
            button type="submit" aria-label=(format!("Clear finding {}", f.id)) { "Clear (false positive)" }
        }
    }
}

async fn decide_form(
    state: AdminState,
    id: String,
    signed: Signed,
    f: DecideForm,
    clear: bool,
) -> Response {
    if let Err(refused) = verify_csrf(&state, &signed, &f.csrf) {
        return refused;
    }
    if let Err(refused) = signed.require(&state, REVIEWERS) {
        return refused;
    }
    let decision = if clear {
        match Decision::clear(&f.reason) {
            Ok(d) => d,
            Err(message) => return not_decided(&signed, StatusCode::BAD_REQUEST, &message),
        }
    } else {
        Decision::confirm(Some(&f.note))
    };
    match decide(&state, &signed.caller, signed.client, &id, decision).await {
        Ok(done) => see_other(&format!(
            "/provenance?{}={}",
            if clear { "cleared" } else { "confirmed" },
            urlencode(&done.id)
        )),
        Err(refused) => not_decided(&signed, refused.status, &refused.message),
    }
}

fn not_decided(signed: &Signed, status: StatusCode, message: &str) -> Response {
    page_with_status(
        status,
        "Provenance",
        signed,
        html! {
            h1 { "Provenance" }
            p class="error" role="alert" { "Not decided: " (message) }
            p { a href="/provenance" { "Back to the review queue" } }
        },
    )
}

pub async fn confirm(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    signed: Signed,
    Form(f): Form<DecideForm>,
) -> Response {
    decide_form(state, id, signed, f, false).await
}

pub async fn clear(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    signed: Signed,
    Form(f): Form<DecideForm>,
) -> Response {
    decide_form(state, id, signed, f, true).await
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_string())
        .unwrap_or_default()
}
