//! `/audit`: the audit explorer. A reviewer filters the log by the fields `aigate audit query`
//! filters by, pages it newest first, opens any record on its permalink (`/audit/{id}`), and
//! exports the filtered result. It is one more front end of `audit::query`: the URL's
//! parameters go through the same `Filter::parse` as the CLI's flags and `/v1/audit`'s
//! parameters, pages come from the same `read::page`, and the exports are written by the same
//! printers as `aigate audit query --format csv|json`. So the explorer, the CLI and the API
//! answer the same records for the same question.
//!
//! The filter lives in the URL (`/audit?action=block&tool=codex-cli&since=24h`): a filter is a
//! link that can be shared or bookmarked. The form is a plain GET form, so the page works
//! without JavaScript; htmx only swaps the results in place and keeps the URL in step.
//!
//! Who sees what: admins and auditors every record. A manager sees the records of the people
//! below them in the directory (the scope of `/v1/audit`, `read::scope`), in the list, on a
//! permalink (another person's record is "not found", so an id does not reveal whether it
//! exists) and in the exports.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use maud::{Markup, html};

use super::{Signed, page, page_with_status, see_other};
use crate::admin::AdminState;
use crate::admin::read::{AUDIT_READERS, page as read_page, scope};
use crate::audit::query::{self, Entry, Filter, Format, NONE, Output};
use crate::explain::{RecordedCall, of_record};

/// Rows per page: a screenful a reviewer scans.
const PAGE: usize = 50;

/// The filter fields of the form, in its order: (parameter, label, hint).
const FIELDS: &[(&str, &str, &str)] = &[
    ("action", "Action", "allow, monitor, block or abandoned"),
    (
        "reason",
        "Reason",
        "rule_matched, default_action, exempted, …",
    ),
    ("tool", "Tool", "claude-code, codex-cli, …"),
    ("vendor", "Vendor", "anthropic, openai, …"),
    ("workflow", "Workflow", "a workflow tag"),
    ("user", "User", "a user id"),
    ("rule", "Rule", "a rule's name, or - for none"),
    ("exemption", "Exemption", "an exemption id"),
    ("since", "Since", "24h, 7d or 2026-11-20T09:00:00Z"),
    ("until", "Until", "a time, or a duration back"),
    ("path", "Path contains", "text in the request path"),
];

/// The parameters of a console URL that are not filters: where the page starts, and its size
/// (`limit`, 1 to [`MAX_PAGE`]).
const PAGING: &[&str] = &["cursor", "limit"];
const MAX_PAGE: usize = 500;

/// The filter of a request's URL: its parameters without the empty ones (a plain GET form
/// sends every field, filled or not), in the form's order.
fn filter_params(raw: &[(String, String)]) -> Vec<(String, String)> {
    raw.iter()
        .filter(|(k, v)| !v.trim().is_empty() && !PAGING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect()
}

/// The query string of a filter (and an extra parameter), for links.
fn query_string(params: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut all: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(e) = extra {
        all.push(e);
    }
    serde_urlencoded::to_string(all).unwrap_or_default()
}

/// Parse the URL's filter for `signed`, scoped to what they may see. The error is the
/// parameter's problem in the API's words (`action = "deny": use allow, …`).
fn parse(
    state: &AdminState,
    signed: &Signed,
    params: &[(String, String)],
) -> Result<Filter, String> {
    let mut filter = Filter::parse(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        state.shared.clock.now(),
    )
    .map_err(|mut e| {
        if e.problem.starts_with(query::UNKNOWN) {
            e.problem.push_str("; and cursor");
        }
        e.for_api()
    })?;
    scope(state, &signed.caller, &mut filter);
    Ok(filter)
}

/// `GET /audit?…`: the filter form and a page of matching records, newest first.
pub async fn list(
    State(state): State<AdminState>,
    signed: Signed,
    headers: HeaderMap,
    Query(raw): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = signed.require(&state, AUDIT_READERS) {
        return refused;
    }
    let htmx = headers.contains_key("hx-request");
    // A plain form sends its empty fields too: the address a reviewer shares is the filter
    // alone. Without JavaScript a redirect cleans it; with htmx, the address htmx pushes.
    let clean = query_string(
        &raw.iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), v.trim().to_string()))
            .collect::<Vec<_>>(),
        None,
    );
    let address = if clean.is_empty() {
        "/audit".to_string()
    } else {
        format!("/audit?{clean}")
    };
    if !htmx && raw.iter().any(|(_, v)| v.trim() != v || v.is_empty()) {
        return see_other(&address);
    }
    let mut resp = list_page(&state, &signed, &raw).await;
    if htmx {
        if let Ok(v) = HeaderValue::from_str(&address) {
            resp.headers_mut().insert("hx-push-url", v);
        }
    }
    resp
}

async fn list_page(state: &AdminState, signed: &Signed, raw: &[(String, String)]) -> Response {
    let mut params = filter_params(raw);
    let given = |name: &str| {
        raw.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let cursor = match given("cursor").map(str::parse::<u64>) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            return show(
                signed,
                &params,
                Err("cursor: not a page of this log; start again from the first page".into()),
            );
        }
    };
    let filter = match parse(state, signed, &params) {
        Ok(f) => f,
        Err(e) => return show(signed, &params, Err(e)),
    };
    let limit = match given("limit").map(str::parse::<usize>) {
        None => PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => {
            // Kept in the page's links, so the next page has the same size.
            params.push(("limit".into(), n.to_string()));
            n
        }
        Some(_) => {
            return show(
                signed,
                &params,
                Err(format!("limit: give a page size from 1 to {MAX_PAGE}")),
            );
        }
    };
    match read_page(state, filter, cursor, limit).await {
        Ok((rows, next)) => show(signed, &params, Ok((rows, next, cursor.is_some()))),
        Err((_, e)) => show(signed, &params, Err(e)),
    }
}

type Results = Result<(Vec<Entry>, Option<u64>, bool), String>;

fn show(signed: &Signed, params: &[(String, String)], results: Results) -> Response {
    let status = if results.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let given: HashMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let qs = query_string(params, None);
    // The exports take the whole result: the filter without the page size.
    let export_qs = query_string(&filter_params(params), None);
    let body = html! {
        h1 { "Audit" }
        form class="find" method="get" action="/audit/find" role="search" aria-label="Find a record by its id" {
            label for="find-id" { "Request id" }
            div class="actions" {
                input type="text" id="find-id" name="id" placeholder="the id from a deny message" autocomplete="off";
                button type="submit" { "Open" }
            }
        }
        form id="audit-filter" class="card filter" method="get" action="/audit"
            hx-get="/audit" hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" {
            h2 id="h-filter" { "Filter" }
            div class="filters" {
                @for (name, label, hint) in FIELDS {
                    div {
                        label for=(format!("f-{name}")) { (label) }
                        input type="text" id=(format!("f-{name}")) name=(name)
                            value=(given.get(name).copied().unwrap_or(""))
                            aria-describedby=(format!("f-{name}-hint"));
                        p class="hint" id=(format!("f-{name}-hint")) { (hint) }
                    }
                }
            }
            @for (name, value) in params.iter().filter(|(k, _)| PAGING.contains(&k.as_str())) {
                input type="hidden" name=(name) value=(value);
            }
            div class="actions" {
                button type="submit" { "Show" }
                a href="/audit" { "Clear" }
            }
        }
        div id="results" {
            @match &results {
                Err(e) => p class="error" id="filter-error" role="alert" { (e) },
                Ok((rows, next, paged)) => {
                    div class="actions results-head" {
                        p class="muted" {
                            @if rows.is_empty() { "No records match." }
                            @else { (rows.len()) " records, newest first" @if *paged { " (a later page)" } "." }
                        }
                        a class="button secondary" href=(format!("/audit.csv?{export_qs}")) download { "Export CSV" }
                        a class="button secondary" href=(format!("/audit.jsonl?{export_qs}")) download { "Export JSON Lines" }
                    }
                    @if !rows.is_empty() {
                        div class="scroll" { (table(rows)) }
                    }
                    nav class="pager" aria-label="Pages" {
                        @if *paged { a href=(format!("/audit?{qs}")) { "Newest" } }
                        @if let Some(n) = next {
                            a id="next-page" rel="next" href=(format!("/audit?{}", query_string(params, Some(("cursor", &n.to_string()))))) { "Older records" }
                        }
                    }
                }
            }
        }
    };
    let mut resp = page("Audit", signed, body);
    *resp.status_mut() = status;
    resp
}

fn action_badge(action: &str) -> Markup {
    let class = match action {
        "block" => "badge b-revoked",
        "monitor" => "badge b-upcoming",
        "allow" => "badge b-active",
        _ => "badge b-expired",
    };
    html! { span class=(class) { (action) } }
}

/// A record's time without its milliseconds and zone letter, for a narrow column.
fn short_time(t: &str) -> &str {
    t.get(..19).unwrap_or(t)
}

fn table(rows: &[Entry]) -> Markup {
    html! {
        table class="data audit" aria-labelledby="h-filter" {
            caption { "Matching records" }
            thead {
                tr {
                    th scope="col" { "Time (UTC)" }
                    th scope="col" { "Action" }
                    th scope="col" { "Reason" }
                    th scope="col" { "User" }
                    th scope="col" { "Tool" }
                    th scope="col" { "Workflow" }
                    th scope="col" { "Request" }
                    th scope="col" { "Rule" }
                    th scope="col" { "Record" }
                }
            }
            tbody {
                @for r in rows {
                    @let id = r.text("id");
                    tr {
                        td class="mono nowrap" { (short_time(&r.text("time"))) }
                        td { (action_badge(&r.text("action"))) }
                        td class="mono" { (r.text("reason")) }
                        td class="mono" { (r.text("user")) }
                        td class="mono" { (r.text("tool")) }
                        td class="mono" { (r.text("workflow")) }
                        td class="mono path" { (r.text("host")) @if r.get("path").is_some() { wbr; (r.text("path")) } }
                        td class="mono" { (r.text("rule")) }
                        td class="mono" {
                            a href=(format!("/audit/{}", urlencode(&id))) aria-label=(format!("Record {id}")) { (id.get(..8).unwrap_or(&id)) "…" }
                        }
                    }
                }
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    // A path segment: ids are UUIDs, but a link never trusts that.
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /audit/find?id=…`: the request id a deny message printed opens its record.
pub async fn find(
    State(state): State<AdminState>,
    signed: Signed,
    Query(raw): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = signed.require(&state, AUDIT_READERS) {
        return refused;
    }
    // Pasted from a terminal: surrounding spaces, quotes or a trailing full stop go.
    let id = raw
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| {
            v.trim()
                .trim_matches(|c: char| c == '"' || c == '\'' || c == '.')
        })
        .unwrap_or("");
    if id.is_empty() {
        return see_other("/audit");
    }
    see_other(&format!("/audit/{}", urlencode(id)))
}

/// `GET /audit/{id}`: one call, as the log recorded it, and what the policy says of it.
pub async fn record(
    State(state): State<AdminState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = signed.require(&state, AUDIT_READERS) {
        return refused;
    }
    let params = vec![("id".to_string(), id.clone())];
    let filter = match parse(&state, &signed, &params) {
        Ok(f) => f,
        Err(e) => return not_found(&signed, &id, Some(&e)),
    };
    let row = match read_page(&state, filter.clone(), None, 1).await {
        Ok((mut rows, _)) if !rows.is_empty() => rows.remove(0),
        Ok(_) => return not_found(&signed, &id, None),
        Err((status, e)) => {
            return page_with_status(
                status,
                "Audit",
                &signed,
                html! { h1 { "Audit" } p class="error" { (e) } },
            );
        }
    };
    // The call's own lines (decision, progress, outcome), from the audit table (every
    // replica's) or the log's files.
    let parts = if let Some(db) = state.store.db().filter(|db| db.cfg.audit) {
        let at = row.time().unwrap_or_else(|| state.shared.clock.now());
        match crate::storage::audit::call_records(db, &filter, &id, at, 16).await {
            Ok(parts) => Some(parts),
            Err(e) => {
                tracing::warn!(error = %e, "console: cannot read a call's records from the audit table");
                None
            }
        }
    } else {
        let path = state.shared.audit.path().to_path_buf();
        tokio::task::spawn_blocking(move || query::call_records(&path, &filter, 16))
            .await
            .ok()
            .and_then(Result::ok)
    };
    let body = record_body(&state, &row, parts.as_deref());
    page(&format!("Record {id}"), &signed, body)
}

fn not_found(signed: &Signed, id: &str, problem: Option<&str>) -> Response {
    page_with_status(
        StatusCode::NOT_FOUND,
        "No such record",
        signed,
        html! {
            h1 { "No such record" }
            p { "No audit record " code { (id) } " that you may see." }
            @if let Some(p) = problem { p class="muted" { (p) } }
            p { "A request id is printed in the deny message and the " code { "x-aigate-request-id" } " header. "
                a href="/audit" { "Back to the explorer" } }
        },
    )
}

/// A labelled value; absent fields show a dash.
fn fact(label: &str, value: impl AsRef<str>) -> Markup {
    html! { dt { (label) } dd class="mono" { (value.as_ref()) } }
}

fn list_of(e: &Entry, field: &str) -> Vec<String> {
    match e.get(field) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect(),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect(),
        Some(other) => vec![
            other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string),
        ],
        None => Vec::new(),
    }
}

fn record_body(state: &AdminState, r: &Entry, parts: Option<&[Entry]>) -> Markup {
    let id = r.text("id");
    let kind = r.text("kind");
    let filter_link = |field: &str| {
        let v = r.text(field);
        html! {
            @if v == NONE { span class="muted" { (NONE) } }
            @else { a href=(format!("/audit?{}", query_string(&[(field.to_string(), v.to_string())], None))) { (v) } }
        }
    };
    // The policy's answer for this call, from today's rules (the same `policy::explain` that
    // `aigate explain` prints), at the call's time.
    let considered = (kind == "request").then(|| {
        let cfg = state.shared.config.load();
        let snapshot = state.shared.exemptions.load();
        let text = |f: &str| r.get(f).and_then(|v| v.as_str());
        let call = RecordedCall {
            tool: text("tool").unwrap_or("unknown"),
            vendor: text("vendor").unwrap_or(""),
            workflow: text("workflow").unwrap_or("untagged"),
            user: text("user").unwrap_or("anonymous"),
            model: text("model"),
            workflow_reason: text("workflow_reason"),
            side_call: text("reason") == Some("side_call"),
        };
        let at = r.time().unwrap_or_else(|| state.shared.clock.now());
        (
            of_record(&cfg, &call, &snapshot, at),
            cfg.version.to_string(),
        )
    });
    let evidence = list_of(r, "evidence");
    let conflicts = list_of(r, "tool_conflicts");
    let conflict_evidence = list_of(r, "tool_conflict_evidence");
    html! {
        p class="muted" { a href="/audit" { "Audit" } " › record" }
        h1 { "Record " span class="mono" { (id) } }
        div class="card" {
            h2 id="h-decision" { "Decision" }
            dl class="facts" {
                dt { "Action" } dd { (action_badge(&r.text("action"))) @if r.text("would_block") == "true" { " " span class="badge b-revoked" { "would block" } } }
                dt { "Reason" } dd class="mono" { (filter_link("reason")) }
                dt { "Rule" } dd class="mono" { (filter_link("rule")) }
                dt { "Exemption" } dd class="mono" {
                    @if r.text("exemption") == NONE { span class="muted" { (NONE) } }
                    @else { a href="/exemptions?show=all" { (r.text("exemption")) } }
                }
                (fact("Policy version", r.text("policy_version")))
                (fact("Time (UTC)", r.text("time")))
                (fact("Kind", &kind))
                @if r.get("outcome_follows").is_some() { dt { "State" } dd { "the call is still open: no outcome record yet" } }
            }
        }
        div class="card" {
            h2 id="h-ident" { "Identification" }
            dl class="facts" {
                dt { "User" } dd class="mono" { (filter_link("user")) " " span class="muted" { "(" (r.text("user_source")) ")" } }
                (fact("Client", r.text("client")))
                dt { "Tool" } dd class="mono" { (filter_link("tool")) " " span class="muted" { "confidence " (r.text("tool_confidence")) } }
                dt { "Evidence" } dd {
                    @if evidence.is_empty() { span class="muted" { "none: no signature matched" } }
                    @else { ul class="plain" { @for e in &evidence { li class="mono" { (e) } } } }
                }
                dt { "Conflicts" } dd {
                    @if conflicts.is_empty() { span class="muted" { "none" } }
                    @else { ul class="plain" { @for c in &conflicts { li class="mono" { (c) } } @for c in &conflict_evidence { li class="mono muted" { (c) } } } }
                }
                (fact("User agent", r.text("user_agent")))
                dt { "Vendor" } dd class="mono" { (filter_link("vendor")) }
                (fact("AI host group", r.text("ai_host")))
                (fact("Host", format!("{}:{}", r.text("host"), r.text("port"))))
                (fact("Request", format!("{} {}", r.text("method"), r.text("path"))))
                (fact("Model", r.text("model")))
                dt { "Workflow" } dd class="mono" { (filter_link("workflow")) " " span class="muted" { "(" (r.text("workflow_source")) ")" } }
                @if r.get("workflow_claimed").is_some() {
                    (fact("Workflow claimed", format!("{} — {}", r.text("workflow_claimed"), r.text("workflow_reason"))))
                }
            }
        }
        div class="card" {
            h2 id="h-timing" { "Outcome and timings" }
            dl class="facts" {
                (fact("Status", r.text("status")))
                (fact("Error", r.text("error")))
                (fact("Bytes up / down", format!("{} / {}", r.text("bytes_up"), r.text("bytes_down"))))
                (fact("Time to first byte", millis(r, "ttfb_ms")))
                (fact("Duration", millis(r, "duration_ms")))
                (fact("Replica", r.text("replica")))
                (fact("Provenance", r.text("provenance")))
            }
        }
        @if let Some((c, version)) = &considered {
            div class="card" {
                h2 id="h-rules" { "Rules considered" }
                p class="muted" {
                    "What " code { "aigate explain" } " answers for this call with today's policy (version " (version) ") at the call's time; first match wins."
                    @if r.text("policy_version") != version.as_str() && r.get("policy_version").is_some() {
                        strong { " The call was decided by policy version " (r.text("policy_version")) "." }
                    }
                }
                table class="data" aria-labelledby="h-rules" {
                    thead { tr { th scope="col" { "Rule" } th scope="col" { "Action" } th scope="col" { "Matched" } th scope="col" { "Why not" } } }
                    tbody {
                        @for line in &c.rules {
                            tr class=[line.matched.then_some("hit")] {
                                td class="mono" { (line.rule) }
                                td { (line.action) }
                                td { @if line.matched { strong { "yes" } } @else { "no" } }
                                td class="muted" { (line.mismatch.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
                p id="explain-decision" {
                    "Decision today: " (action_badge(&c.action)) " " code { (c.reason) }
                    @if let Some(rule) = &c.rule { " by " code { (rule) } }
                    @if c.exemptable { " (an exemption can lift this block)" }
                }
            }
        }
        div class="card" {
            h2 id="h-parts" { "Records of this call" }
            @match parts {
                None => p class="muted" { "The records as written are in the audit table; this page shows the joined row." },
                Some(parts) => {
                    p class="muted" { "As written in the log, newest first: a forwarded call has a decision record before its first byte went upstream and an outcome record when it ended (docs/audit-schema.md)." }
                    @for p in parts {
                        details class="raw" {
                            summary { span class="mono" { "seq " (p.text("seq")) } " · " (p.text("kind")) " · " (p.text("action")) " · " (short_time(&p.text("time"))) }
                            pre class="mono" { (pretty(p)) }
                        }
                    }
                }
            }
        }
    }
}

/// A duration field in milliseconds, or the dash of an absent one.
fn millis(r: &Entry, field: &str) -> String {
    match r.get(field).and_then(serde_json::Value::as_f64) {
        Some(ms) => format!("{ms:.1} ms"),
        None => NONE.to_string(),
    }
}

fn pretty(e: &Entry) -> String {
    serde_json::from_str::<serde_json::Value>(e.line())
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| e.line().to_string())
}

/// `GET /audit.csv?…` and `/audit.jsonl?…`: every record the filter matches, streamed as it is
/// read, in the format `aigate audit query --format csv|json` prints (oldest first, the same
/// columns, the same joined rows).
pub async fn export_csv(
    state: State<AdminState>,
    signed: Signed,
    raw: Query<Vec<(String, String)>>,
) -> Response {
    export(state, signed, raw, Format::Csv).await
}

pub async fn export_jsonl(
    state: State<AdminState>,
    signed: Signed,
    raw: Query<Vec<(String, String)>>,
) -> Response {
    export(state, signed, raw, Format::Json).await
}

async fn export(
    State(state): State<AdminState>,
    signed: Signed,
    Query(raw): Query<Vec<(String, String)>>,
    format: Format,
) -> Response {
    if let Err(refused) = signed.require(&state, AUDIT_READERS) {
        return refused;
    }
    let params = filter_params(&raw);
    let filter = match parse(&state, &signed, &params) {
        Ok(f) => f,
        Err(e) => return show(&signed, &params, Err(e)),
    };
    state.shared.audit.flush().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    if let Some(db) = state.store.db().filter(|db| db.cfg.audit).cloned() {
        // The audit table: page by page, newest first (its order), in the same format.
        tokio::spawn(async move {
            let mut cursor = None;
            let mut first = true;
            loop {
                let Ok((rows, next)) =
                    crate::storage::audit::newest_first(&db, &filter, cursor, 1000).await
                else {
                    break;
                };
                let mut buf = Vec::new();
                let written = if first || format == Format::Json {
                    query::write_records(&rows, format, &mut buf)
                } else {
                    // The header once: later pages without it.
                    let mut with = Vec::new();
                    let r = query::write_records(&rows, format, &mut with);
                    let cut = with.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
                    buf.extend_from_slice(&with[cut..]);
                    r
                };
                first = false;
                if written.is_err() || tx.send(Bytes::from(buf)).await.is_err() {
                    break;
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        });
    } else {
        let path = state.shared.audit.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx));
            let result = query::run_file(
                &path,
                &filter,
                &Output::Records { limit: None },
                format,
                &mut out,
            )
            .and_then(|_| std::io::Write::flush(&mut out));
            if let Err(e) = result {
                // The client went away, or the log could not be read: the body ends short.
                tracing::warn!(error = %e, "console: audit export ended early");
            }
        });
    }
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "audit.csv"),
        _ => ("application/x-ndjson", "audit.jsonl"),
    };
    let mut resp = Body::new(ChannelBody(rx)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// Bytes written on the export's blocking thread, sent to the response body as they come.
struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The response body of an export: the chunks from the channel, until the writer is done.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_form_fields_and_the_cursor_are_not_filters() {
        let raw = vec![
            ("action".to_string(), "block".to_string()),
            ("user".to_string(), "  ".to_string()),
            ("cursor".to_string(), "12".to_string()),
            ("path".to_string(), " /v1/x ".to_string()),
        ];
        assert_eq!(
            filter_params(&raw),
            vec![
                ("action".to_string(), "block".to_string()),
                ("path".to_string(), "/v1/x".to_string())
            ]
        );
        assert_eq!(
            query_string(&filter_params(&raw), Some(("cursor", "9"))),
            "action=block&path=%2Fv1%2Fx&cursor=9"
        );
    }

    #[test]
    fn ids_are_escaped_in_links() {
        assert_eq!(urlencode("0190ab-c_d"), "0190ab-c_d");
        assert_eq!(urlencode("a/b?c"), "a%2Fb%3Fc");
    }
}
