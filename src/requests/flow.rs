//! The request loop's steps, each with its audit record and notification: submit from a draft,
//! approve (a grant through `exemptions::store::issue`, the code and rules of
//! `POST /v1/exemptions`), deny, and expire. The JSON API and the console pages call these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::drafts::{Draft, Lookup};
use super::rules::{self, DecideError, SubmitError};
use super::store::{StoreError as RequestStoreError, Submitted};
use super::{ExemptionRequest, Requests, State};
use crate::audit::{AuditLog, AuditRecord, Kind};
use crate::config::{Config, NotifyEvent};
use crate::exemptions::grant::{GrantError, GrantRequest, Grantor};
use crate::exemptions::store::{ExemptionStore, StoreError};
use crate::exemptions::{Exemption, Subject};
use crate::policy::{Action, Reason};

/// What the steps need from the running gateway.
pub struct Deps<'a> {
    pub config: &'a Config,
    pub audit: &'a AuditLog,
    pub exemptions: &'a ExemptionStore,
    pub requests: &'a Requests,
    /// Who is asking, for the record (`client`).
    pub client: String,
    pub now: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no request link with id {0:?}: check the link in the deny message")]
    UnknownDraft(String),
    #[error("this request link expired at {0}; make the call again for a fresh link")]
    DraftExpired(String),
    #[error("{0}")]
    Submit(#[from] SubmitError),
    #[error("{0}")]
    Decide(#[from] DecideError),
    /// The grant rules refuse the approval (not their manager, self-approval, cover limit, …).
    #[error("{0}")]
    Grant(GrantError),
    #[error("no exemption request with id {0:?}")]
    NotFound(String),
    #[error("request {0} is already {1}; only an open request can be decided")]
    NotOpen(String, &'static str),
    /// Could not be stored durably; nothing changed.
    #[error("{0}")]
    Storage(String),
}

impl From<RequestStoreError> for FlowError {
    fn from(e: RequestStoreError) -> FlowError {
        match e {
            RequestStoreError::NotFound(id) => FlowError::NotFound(id),
            RequestStoreError::NotOpen(id, s) => FlowError::NotOpen(id, s),
            other => FlowError::Storage(other.to_string()),
        }
    }
}

/// What a submit asks.
#[derive(Debug, Clone)]
pub struct Submission {
    pub draft: String,
    pub justification: String,
    pub duration: Duration,
    pub ticket: Option<String>,
}

/// The draft a link names, live.
pub async fn live_draft(d: &Deps<'_>, id: &str) -> Result<Arc<Draft>, FlowError> {
    match d.requests.find_draft(id, d.now).await {
        Lookup::Live(draft) => Ok(draft),
        Lookup::Expired(draft) => Err(FlowError::DraftExpired(
            humantime::format_rfc3339_seconds(draft.expires_at).to_string(),
        )),
        Lookup::Unknown => Err(FlowError::UnknownDraft(id.to_string())),
    }
}

/// Submit a request from a draft. A second submit for the same user, tool and workflow while
/// one is open returns the open one (`Submitted::Existing`), and writes nothing.
pub async fn submit(d: &Deps<'_>, s: Submission) -> Result<Submitted, FlowError> {
    let draft = live_draft(d, &s.draft).await?;
    let ticket = s
        .ticket
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    rules::check_submit(
        &draft,
        &d.config.policy,
        &s.justification,
        s.duration,
        ticket.as_deref(),
        d.config.admin.max_exemption,
    )?;
    let r = ExemptionRequest {
        id: Arc::from(format!("rq-{}", super::unguessable_id()).as_str()),
        draft: draft.id.to_string(),
        record_id: draft.record_id.clone(),
        user: draft.user.clone(),
        tool: draft.tool.clone(),
        vendor: draft.vendor.clone(),
        workflow: draft.workflow.clone(),
        rule: draft.rule.clone(),
        justification: s.justification.trim().to_string(),
        duration_secs: s.duration.as_secs(),
        ticket,
        created_at: d.now,
        expires_at: d.now + d.config.console.request_ttl,
        state: State::Open,
        decided_by: None,
        decided_at: None,
        comment: None,
        approved_secs: None,
        exemption: None,
    };
    let done = d.requests.store.submit(r).await?;
    if let Submitted::New(r) = &done {
        // The link is the capability: the requester is the blocked user the draft names.
        record(
            d,
            &r.user,
            Reason::ExemptionRequested,
            r,
            "POST",
            "/v1/requests",
            201,
        );
        d.requests.notify(d.config, NotifyEvent::Requested, r);
    }
    Ok(done)
}

/// Approve as asked (`duration: None`) or shorter. The exemption starts now (its clock starts
/// at approval), is made by the grant rules and code of `POST /v1/exemptions`, and carries the
/// request's id; the request then carries the exemption's.
pub async fn approve(
    d: &Deps<'_>,
    id: &str,
    by: &Grantor,
    duration: Option<Duration>,
    comment: Option<String>,
) -> Result<(ExemptionRequest, Exemption), FlowError> {
    let Some(r) = d.requests.store.get(id) else {
        return Err(FlowError::NotFound(id.to_string()));
    };
    if !r.is_open() {
        return Err(FlowError::NotOpen(id.to_string(), r.state.as_str()));
    }
    let asked = Duration::from_secs(r.duration_secs);
    let granted = duration.unwrap_or(asked);
    rules::check_approval(asked, granted)?;
    let comment = comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > rules::MAX_COMMENT)
    {
        return Err(DecideError::CommentTooLong.into());
    }
    let grant = GrantRequest {
        subject: Subject::User(r.user.clone()),
        tools: vec![r.tool.clone()],
        workflows: Some(vec![r.workflow.clone()]),
        starts_at: None,
        expires_at: Some(d.now + granted),
        reason: Some(format!("{} (request {})", r.justification, r.id)),
        ticket: r.ticket.clone(),
    };
    let exemption = match crate::exemptions::store::issue(
        d.exemptions,
        d.config,
        by,
        &grant,
        d.now,
        Some(r.id.to_string()),
    )
    .await
    {
        Ok(e) => e,
        Err(StoreError::Refused(g)) => return Err(FlowError::Grant(g)),
        Err(e) => return Err(FlowError::Storage(e.to_string())),
    };
    grant_record(d, &by.user, &exemption);
    let decided = d
        .requests
        .store
        .decide(id, |r| {
            r.state = State::Approved;
            r.decided_by = Some(by.user.clone());
            r.decided_at = Some(d.now);
            r.comment = comment.clone();
            r.approved_secs = Some(granted.as_secs());
            r.exemption = Some(exemption.id.to_string());
        })
        .await;
    let decided = match decided {
        Ok(r) => r,
        Err(e) => {
            // Someone else decided it (or it expired) between our read and the grant: the
            // grant must not outlive the refusal.
            if let Err(revoke) = d.exemptions.revoke(&exemption.id, "aigate", d.now).await {
                tracing::error!(error = %revoke, exemption = %exemption.id, "cannot revoke the grant of a request decided elsewhere");
            }
            return Err(e.into());
        }
    };
    record(
        d,
        &by.user,
        Reason::ExemptionRequestApproved,
        &decided,
        "POST",
        &format!("/v1/requests/{id}/approve"),
        200,
    );
    d.requests.notify(d.config, NotifyEvent::Approved, &decided);
    Ok((decided, exemption))
}

/// Deny with a comment. Who may deny is who may approve (the grant rules' authority check).
pub async fn deny(
    d: &Deps<'_>,
    id: &str,
    by: &Grantor,
    comment: &str,
) -> Result<ExemptionRequest, FlowError> {
    let Some(r) = d.requests.store.get(id) else {
        return Err(FlowError::NotFound(id.to_string()));
    };
    if !r.is_open() {
        return Err(FlowError::NotOpen(id.to_string(), r.state.as_str()));
    }
    crate::exemptions::grant::authority(
        by,
        &d.config.identity.directory,
        &Subject::User(r.user.clone()),
    )
    .map_err(FlowError::Grant)?;
    rules::check_denial(comment)?;
    let comment = comment.trim().to_string();
    let decided = d
        .requests
        .store
        .decide(id, |r| {
            r.state = State::Denied;
            r.decided_by = Some(by.user.clone());
            r.decided_at = Some(d.now);
            r.comment = Some(comment);
        })
        .await?;
    record(
        d,
        &by.user,
        Reason::ExemptionRequestDenied,
        &decided,
        "POST",
        &format!("/v1/requests/{id}/deny"),
        200,
    );
    d.requests.notify(d.config, NotifyEvent::Denied, &decided);
    Ok(decided)
}

/// Expire what is due; each expired request is an audit record and tells the requester.
pub async fn expire(d: &Deps<'_>) -> usize {
    let expired = d.requests.store.expire_due(d.now).await;
    for r in &expired {
        record(d, "aigate", Reason::ExemptionRequestExpired, r, "", "", 0);
        d.requests.notify(d.config, NotifyEvent::Expired, r);
    }
    expired.len()
}

/// The request's audit record: `kind = admin`, the request whole in `admin`, its tool, workflow
/// and rule in their own fields (so the explorer's filters find it), and the exemption once
/// there is one.
fn record(
    d: &Deps<'_>,
    actor: &str,
    reason: Reason,
    r: &ExemptionRequest,
    method: &str,
    path: &str,
    status: u16,
) {
    let mut rec = AuditRecord::new(
        uuid::Uuid::now_v7().to_string(),
        Kind::Admin,
        d.client.clone(),
        actor.into(),
        String::new(),
        0,
    );
    if !method.is_empty() {
        rec.method = Some(method.to_string());
        rec.path = Some(path.to_string());
        rec.status = Some(status);
    }
    rec.action = Action::Allow;
    rec.reason = reason;
    rec.tool = Some(r.tool.as_str().into());
    rec.workflow = Some(r.workflow.clone());
    rec.rule = r.rule.as_deref().map(Into::into);
    rec.exemption = r.exemption.as_deref().map(Into::into);
    rec.admin = serde_json::to_value(r)
        .ok()
        .map(|v| serde_json::json!({ "request": v }));
    d.audit.submit(rec);
}

/// The grant's own record, as `POST /v1/exemptions` writes it (`exemption_granted`), so the
/// exemption's history reads the same whichever way it was made.
fn grant_record(d: &Deps<'_>, actor: &str, e: &Exemption) {
    let mut rec = AuditRecord::new(
        uuid::Uuid::now_v7().to_string(),
        Kind::Admin,
        d.client.clone(),
        actor.into(),
        String::new(),
        0,
    );
    rec.method = Some("POST".into());
    rec.path = Some("/v1/exemptions".into());
    rec.action = Action::Allow;
    rec.reason = Reason::ExemptionGranted;
    rec.status = Some(201);
    rec.exemption = Some(e.id.clone());
    rec.admin = serde_json::to_value(e).ok();
    d.audit.submit(rec);
}
