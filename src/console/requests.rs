//! The request loop's pages: the public request page a deny message links to (`/r/{id}`), and
//! the approvers' queue (`/requests`). Both ask `requests::flow`, as the JSON API does
//! (`admin::requests`): the submit rules, who may decide, and approval as a grant are there,
//! never here.
//!
//! `/r/{id}` needs no sign-in: the draft id is the capability (80 random bits, from the deny
//! message). Its form cannot carry a session's CSRF token, so a post the browser marks as
//! cross-site is refused; an attacker's page cannot know the id anyway. Unknown and expired ids
//! are the API's audited 404/410 (bounded per client) and the same 429 pause for guessing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::bare_page;
use super::{Signed, csrf_field, page, page_with_status, see_other, verify_csrf};
use crate::admin::AdminState;
use crate::admin::requests::{deps, requester_may_submit, visible};
use crate::config::{Role, format_duration, parse_duration};
use crate::exemptions::Subject;
use crate::exemptions::grant::Grantor;
use crate::requests::flow::{self, FlowError, Submission};
use crate::requests::rules::PRESETS;
use crate::requests::store::Submitted;
use crate::requests::{Draft, ExemptionRequest, State as RequestState, decider_refusal};

const DECIDERS: &[Role] = &[Role::Admin, Role::Manager, Role::Approver];
const READERS: &[Role] = &[Role::Admin, Role::Manager, Role::Approver, Role::Auditor];

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[derive(Debug, Default, Deserialize)]
pub struct SubmitForm {
    #[serde(default)]
    justification: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    ticket: String,
}

/// A page for a link that leads nowhere: the API's audited refusal, as a page.
fn link_page(
    state: &AdminState,
    client: SocketAddr,
    method: &Method,
    path: &str,
    e: FlowError,
) -> Response {
    let (status, title) = match e {
        FlowError::DraftExpired(_) => (StatusCode::GONE, "This request link has expired"),
        _ => (StatusCode::NOT_FOUND, "Unknown request link"),
    };
    // Audited and counted like the API's refusals (and paused past the client's share).
    let _ =
        crate::admin::requests::link_refusal(state, client, method, path, status, &e.to_string());
    bare_page(
        status,
        title,
        html! {
            h1 { (title) }
            p class="error" { (e.to_string()) }
            p { "Make the call again: the new deny message carries a fresh link." }
        },
    )
}

fn paused_page() -> Response {
    bare_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many unknown links",
        html! {
            h1 { "Too many unknown request links" }
            p { "Too many unknown or expired request links came from your address. Wait a minute, then open the link from the deny message again." }
        },
    )
}

/// `GET /r/{id}`: what was blocked and why, then the form, or the request's live status.
pub async fn show(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/r/{id}");
    if state.guessing.paused(client.ip(), SystemTime::now()) {
        return paused_page();
    }
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    if !crate::requests::plausible_id(&id) {
        return link_page(
            &state,
            client,
            &Method::GET,
            &path,
            FlowError::UnknownDraft(id.chars().take(40).collect()),
        );
    }
    match flow::live_draft(&d, &id).await {
        Ok(draft) => render_draft(
            &state,
            &cfg,
            &draft,
            None,
            &SubmitForm::default(),
            StatusCode::OK,
        ),
        Err(e) => link_page(&state, client, &Method::GET, &path, e),
    }
}

/// `POST /r/{id}`: submit; then back to `/r/{id}`, which shows the request's status.
pub async fn submit(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<SubmitForm>,
) -> Response {
    let path = format!("/r/{id}");
    if state.guessing.paused(client.ip(), SystemTime::now()) {
        return paused_page();
    }
    if let Some(why) = super::cross_site(&headers) {
        crate::admin::record_refusal(
            &state,
            None,
            client,
            &Method::POST,
            &path,
            StatusCode::FORBIDDEN,
            Some((crate::policy::Reason::AdminDenied, format!("csrf: {why}"))),
        );
        return bare_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            html! { h1 { "This form was refused" } p { (why) "." } p { "Nothing was sent. Open the link from the deny message and submit from there." } },
        );
    }
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, client);
    if !crate::requests::plausible_id(&id) {
        return link_page(
            &state,
            client,
            &Method::POST,
            &path,
            FlowError::UnknownDraft(id.chars().take(40).collect()),
        );
    }
    let draft = match flow::live_draft(&d, &id).await {
        Ok(draft) => draft,
        Err(e) => return link_page(&state, client, &Method::POST, &path, e),
    };
    // The OIDC hook: with sign-in configured, the signed-in person must be the blocked user.
    if let Err(why) = requester_may_submit(&state, &headers, &draft) {
        return render_draft(
            &state,
            &cfg,
            &draft,
            Some(&why),
            &form,
            StatusCode::FORBIDDEN,
        );
    }
    let duration = match parse_duration(form.duration.trim()) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("duration: {e}");
            return render_draft(
                &state,
                &cfg,
                &draft,
                Some(&why),
                &form,
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let s = Submission {
        draft: id.clone(),
        justification: form.justification.clone(),
        duration,
        ticket: Some(form.ticket.clone()),
    };
    match flow::submit(&d, s).await {
        Ok(Submitted::New(_) | Submitted::Existing(_)) => see_other(&path),
        Err(e @ (FlowError::UnknownDraft(_) | FlowError::DraftExpired(_))) => {
            link_page(&state, client, &Method::POST, &path, e)
        }
        Err(FlowError::Storage(m)) => render_draft(
            &state,
            &cfg,
            &draft,
            Some(&m),
            &form,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        Err(e) => render_draft(
            &state,
            &cfg,
            &draft,
            Some(&e.to_string()),
            &form,
            StatusCode::BAD_REQUEST,
        ),
    }
}

fn render_draft(
    state: &AdminState,
    cfg: &crate::config::Config,
    draft: &Draft,
    error: Option<&str>,
    form: &SubmitForm,
    status: StatusCode,
) -> Response {
    let request = state
        .requests
        .store
        .latest_for(&draft.user, &draft.tool, &draft.workflow)
        .filter(|r| r.draft == *draft.id || r.is_open());
    let body = html! {
        h1 { "aigate blocked " (draft.tool_name) }
        section class="card" aria-labelledby="what" {
            h2 id="what" { "What was blocked" }
            dl class="facts" {
                dt { "Tool" } dd { (draft.tool_name) " " span class="muted mono" { "(" (draft.tool) ")" } }
                dt { "Vendor" } dd { (draft.vendor_name) }
                dt { "Workflow" } dd class="mono" { (draft.workflow) }
                dt { "Rule" } dd { span class="mono" { (draft.rule.as_deref().unwrap_or("(default action)")) }
                    @if let Some(desc) = &draft.rule_description { ": " (desc) } }
                dt { "User" } dd class="mono" { (draft.user) }
                dt { "When" } dd { (when(draft.created_at)) }
                dt { "Record" } dd class="mono" { (draft.record_id) }
            }
        }
        @if draft.anonymous {
            section class="card" aria-labelledby="why" {
                h2 id="why" { "This call cannot be exempted" }
                p class="error" { (crate::requests::rules::SubmitError::Anonymous.to_string()) }
            }
        } @else if let Some(r) = &request {
            (status_card(r))
        } @else {
            (request_form(cfg, draft, error, form))
        }
    };
    bare_page(
        status,
        &format!("Request an exemption for {}", draft.tool_name),
        body,
    )
}

fn status_card(r: &ExemptionRequest) -> Markup {
    html! {
        section class="card" aria-labelledby="status" {
            h2 id="status" { "Your request " span class="mono" { (r.id) } }
            p { span class={"badge b-" (r.state.as_str())} { (r.state.as_str()) } }
            dl class="facts" {
                dt { "Asked" } dd { (format_duration(Duration::from_secs(r.duration_secs))) ", " (when(r.created_at)) }
                dt { "Why" } dd { (r.justification) }
                @if let Some(t) = &r.ticket { dt { "Ticket" } dd { (t) } }
                @match r.state {
                    RequestState::Open => { dt { "Expires" } dd { (when(r.expires_at)) " if nobody answers" } }
                    RequestState::Approved => {
                        dt { "Approved by" } dd { (r.decided_by.as_deref().unwrap_or("")) }
                        dt { "For" } dd { (format_duration(Duration::from_secs(r.approved_secs.unwrap_or(r.duration_secs)))) " from " (r.decided_at.map(when).unwrap_or_default()) }
                        dt { "Exemption" } dd class="mono" { (r.exemption.as_deref().unwrap_or("")) }
                    }
                    RequestState::Denied => {
                        dt { "Denied by" } dd { (r.decided_by.as_deref().unwrap_or("")) }
                        dt { "Comment" } dd { (r.comment.as_deref().unwrap_or("")) }
                    }
                    RequestState::Expired => { dt { "Expired" } dd { (r.decided_at.map(when).unwrap_or_default()) ", unanswered" } }
                }
            }
            p class="hint" { "This page shows the request's status; reload it to see a decision. Your next call goes through once it is approved." }
        }
    }
}

fn request_form(
    cfg: &crate::config::Config,
    draft: &Draft,
    error: Option<&str>,
    form: &SubmitForm,
) -> Markup {
    let max = cfg.admin.max_exemption;
    let chosen = if form.duration.is_empty() {
        "1d"
    } else {
        form.duration.as_str()
    };
    let presets: Vec<(&str, &str)> = PRESETS
        .iter()
        .zip(["1h", "1d", "3d", "7d"])
        .filter(|((_, d), _)| *d <= max)
        .map(|((label, _), spec)| (spec, *label))
        .collect();
    html! {
        section class="card" aria-labelledby="ask" {
            h2 id="ask" { "Request a time-boxed exemption" }
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            form method="post" action={"/r/" (draft.id)} {
                div class="grid" {
                    div class="wide" {
                        label for="justification" { "Why do you need it? (required)" }
                        textarea id="justification" name="justification" rows="4" required { (form.justification) }
                    }
                    div {
                        label for="duration" { "For how long" }
                        select id="duration" name="duration" {
                            @for (spec, label) in &presets {
                                option value=(spec) selected[*spec == chosen] { (label) }
                            }
                        }
                        p class="hint" { "At most " (format_duration(max)) "." }
                    }
                    div {
                        label for="ticket" { "Ticket (optional)" }
                        input id="ticket" name="ticket" type="text" value=(form.ticket);
                    }
                }
                div class="actions" { button type="submit" { "Send the request" } }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

/// `GET /requests`: open requests first (the queue), then the history.
pub async fn list(State(state): State<AdminState>, signed: Signed) -> Response {
    if let Err(refused) = signed.require(&state, READERS) {
        return refused;
    }
    render_list(&state, &signed, None, StatusCode::OK).await
}

/// `GET /requests/{id}`: the webhook's link; the queue, this one first.
pub async fn one(
    State(state): State<AdminState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = signed.require(&state, READERS) {
        return refused;
    }
    match state.requests.store.get(&id) {
        Some(r) if visible(&state, &signed.caller, &r) => {
            render_list(&state, &signed, None, StatusCode::OK).await
        }
        Some(_) => signed.forbidden(
            &state,
            "to be the requester's manager, an approver, an auditor or an admin",
        ),
        None => page_with_status(
            StatusCode::NOT_FOUND,
            "No such request",
            &signed,
            html! { h1 { "No such request" } p { "No exemption request " code { (id) } "." } },
        ),
    }
}

pub async fn approve(
    State(state): State<AdminState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    decide(state, signed, id, form, true).await
}

pub async fn deny(
    State(state): State<AdminState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    decide(state, signed, id, form, false).await
}

async fn decide(
    state: AdminState,
    signed: Signed,
    id: String,
    form: DecideForm,
    approve: bool,
) -> Response {
    if let Err(refused) = signed.require(&state, DECIDERS) {
        return refused;
    }
    if let Err(refused) = verify_csrf(&state, &signed, &form.csrf) {
        return refused;
    }
    let cfg = state.shared.config.load();
    let d = deps(&state, &cfg, signed.client);
    let grantor = Grantor::with_roles(&signed.caller.user, &signed.caller.roles);
    let result = if approve {
        let duration = match form.duration.trim() {
            "" => None,
            s => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    return render_list(
                        &state,
                        &signed,
                        Some(format!("duration: {e}")),
                        StatusCode::BAD_REQUEST,
                    )
                    .await;
                }
            },
        };
        let comment = Some(form.comment.clone());
        flow::approve(&d, &id, &grantor, duration, comment)
            .await
            .map(|(r, _)| r)
    } else {
        flow::deny(&d, &id, &grantor, &form.comment).await
    };
    match result {
        Ok(_) => see_other("/requests"),
        Err(FlowError::Grant(g)) if decider_refusal(&cfg, &g, &signed.caller.user).is_some() => {
            let why = decider_refusal(&cfg, &g, &signed.caller.user).unwrap_or_default();
            signed.refused(&state, &why)
        }
        Err(e) => {
            render_list(
                &state,
                &signed,
                Some(e.to_string()),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// Blocks of each (user, tool, workflow) in the last 7 days, from the audit log: how often the
/// requester was stopped for this.
async fn blocked_counts(state: &AdminState) -> HashMap<(String, String, String), u64> {
    let path = state.shared.audit.path().to_path_buf();
    let now = state.shared.clock.now();
    let result = tokio::task::spawn_blocking(move || {
        let filter = crate::audit::query::Filter::parse(
            [("action", "block"), ("kind", "request"), ("since", "7d")],
            now,
        )
        .map_err(|e| std::io::Error::other(e.for_api()))?;
        crate::audit::query::summarize_file(
            &path,
            &filter,
            vec!["user", "tool", "workflow"],
            10_000,
        )
    })
    .await;
    let mut out = HashMap::new();
    match result {
        Ok(Ok(groups)) => {
            for (key, count) in groups.rows {
                if let [user, tool, workflow] = key.as_slice() {
                    out.insert((user.clone(), tool.clone(), workflow.clone()), count);
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "console: cannot count blocked calls for the request queue")
        }
        Err(e) => tracing::warn!(error = %e, "console: the blocked-call count stopped"),
    }
    out
}

async fn render_list(
    state: &AdminState,
    signed: &Signed,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let all: Vec<ExemptionRequest> = state
        .requests
        .store
        .list()
        .into_iter()
        .filter(|r| visible(state, &signed.caller, r))
        .collect();
    let counts = blocked_counts(state).await;
    let exemptions = state.store.list();
    let past = |user: &str, tool: &str| {
        exemptions
            .iter()
            .filter(|e| {
                matches!(&e.subject, Subject::User(u) if u == user)
                    && e.tools.iter().any(|t| t == tool)
            })
            .count()
    };
    let may_decide = DECIDERS.iter().any(|r| signed.caller.has(*r));
    let (open, done): (Vec<_>, Vec<_>) = all.into_iter().partition(ExemptionRequest::is_open);
    let body = html! {
        h1 { "Exemption requests" }
        @if let Some(e) = &error { p class="error" role="alert" { (e) } }
        section class="card" aria-labelledby="queue" {
            h2 id="queue" { "Waiting (" (open.len()) ")" }
            @if open.is_empty() { p class="empty" { "No request is waiting." } }
            @for r in &open {
                article class="request" id=(r.id) {
                    h3 { (r.user) " asks for " span class="mono" { (r.tool) } " in " span class="mono" { (r.workflow) } }
                    dl class="facts" {
                        dt { "Rule" } dd class="mono" { (r.rule.as_deref().unwrap_or("")) }
                        dt { "Why" } dd { (r.justification) }
                        dt { "Asked" } dd { (format_duration(Duration::from_secs(r.duration_secs))) ", " (when(r.created_at)) }
                        @if let Some(t) = &r.ticket { dt { "Ticket" } dd { (t) } }
                        dt { "Blocked (7 days)" } dd { (counts.get(&(r.user.clone(), r.tool.clone(), r.workflow.clone())).copied().unwrap_or(0)) " calls" }
                        dt { "Past exemptions" } dd { (past(&r.user, &r.tool)) " for this tool" }
                        dt { "Request" } dd class="mono" { (r.id) }
                    }
                    @if may_decide {
                        div class="grid" {
                            form method="post" action={"/requests/" (r.id) "/approve"} {
                                (csrf_field(signed))
                                label for={"duration-" (r.id)} { "Approve for" }
                                select id={"duration-" (r.id)} name="duration" {
                                    option value="" selected { "as asked (" (format_duration(Duration::from_secs(r.duration_secs))) ")" }
                                    @for ((label, d), spec) in PRESETS.iter().zip(["1h", "1d", "3d", "7d"]) {
                                        @if d.as_secs() < r.duration_secs { option value=(spec) { (label) } }
                                    }
                                }
                                label for={"acomment-" (r.id)} { "Comment (optional)" }
                                input id={"acomment-" (r.id)} name="comment" type="text";
                                div class="actions" { button type="submit" { "Approve" } }
                            }
                            form method="post" action={"/requests/" (r.id) "/deny"} {
                                (csrf_field(signed))
                                label for={"dcomment-" (r.id)} { "Why not (required to deny)" }
                                input id={"dcomment-" (r.id)} name="comment" type="text" required;
                                div class="actions" { button type="submit" class="danger" { "Deny" } }
                            }
                        }
                    }
                }
            }
        }
        section class="card" aria-labelledby="history" {
            h2 id="history" { "History" }
            @if done.is_empty() { p class="empty" { "No decided requests." } }
            @else {
                table class="data" {
                    thead { tr { th { "Request" } th { "User" } th { "Tool" } th { "Workflow" } th { "State" } th { "By" } th { "Comment" } th { "Exemption" } } }
                    tbody {
                        @for r in &done {
                            tr {
                                td class="mono" { (r.id) }
                                td { (r.user) }
                                td class="mono" { (r.tool) }
                                td class="mono" { (r.workflow) }
                                td { span class={"badge b-" (r.state.as_str())} { (r.state.as_str()) } }
                                td { (r.decided_by.as_deref().unwrap_or("")) }
                                td { (r.comment.as_deref().unwrap_or("")) }
                                td class="mono" { (r.exemption.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    };
    if status == StatusCode::OK {
        page("Requests", signed, body)
    } else {
        page_with_status(status, "Requests", signed, body)
    }
}
