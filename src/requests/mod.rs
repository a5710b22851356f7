//! The exemption request loop's domain (issue 16): blocked → request link (a draft) → request →
//! approved or denied (or expired) → the next call passes. No HTTP here: the JSON API
//! (`admin::requests`) and the console pages ask these types, and approval grants through
//! `exemptions::grant`, the same rules and code as `POST /v1/exemptions`.
//!
//! - `drafts`: what a deny message links to; created on the data path, bounded, short-lived.
//! - `store`: submitted requests, durable like grants (journal or PostgreSQL).
//! - `rules`: what may be submitted, approved and denied (pure).
//! - `notify`: outbound webhooks to approvers and requesters.

pub mod drafts;
pub mod flow;
pub mod notify;
pub mod rules;
pub mod shared;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::exemptions::{rfc3339, rfc3339_opt};

pub use drafts::{Draft, DraftFacts, Drafts, Lookup};
pub use store::{RequestStore, StoreError};

use crate::config::{Config, NotifyEvent, Role};
use crate::exemptions::grant::GrantError;

/// The request loop as the data path, the API and the console see it.
pub struct Requests {
    pub drafts: Drafts,
    pub store: Arc<RequestStore>,
    notifier: Option<notify::Notifier>,
    /// The admin listener as bound: the console's address when `console.public_url` is unset.
    admin_addr: SocketAddr,
}

/// What a deny message adds for the request loop.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DenyExtras {
    /// `{console}/r/{id}`.
    pub link: Option<String>,
    /// The state of an open (or lately denied) request for the same user, tool and workflow.
    pub status: Option<String>,
}

impl Requests {
    pub fn new(
        drafts: Drafts,
        store: Arc<RequestStore>,
        notifier: Option<notify::Notifier>,
        admin_addr: SocketAddr,
    ) -> Requests {
        Requests {
            drafts,
            store,
            notifier,
            admin_addr,
        }
    }

    pub fn draft_url(&self, cfg: &Config, id: &str) -> String {
        format!("{}/r/{id}", cfg.console_url(self.admin_addr))
    }

    /// A request's page in the console (for approvers; needs a sign-in).
    pub fn request_url(&self, cfg: &Config, id: &str) -> String {
        format!("{}/requests/{id}", cfg.console_url(self.admin_addr))
    }

    /// The link and request status for a blocked call. Called on the data path: one map probe
    /// and, for a new draft, one allocation of the draft; nothing waits.
    pub fn deny_extras(&self, cfg: &Config, f: &DraftFacts<'_>, now: SystemTime) -> DenyExtras {
        let link = self
            .drafts
            .draft_for(f, now, cfg.console.draft_ttl)
            .map(|d| self.draft_url(cfg, &d.id));
        let status = self
            .store
            .latest_for(f.user, f.tool, f.workflow)
            .and_then(|r| status_line(cfg, &r, now));
        DenyExtras { link, status }
    }

    /// A draft by its link's id: this replica's, else (PostgreSQL) the shared table's.
    pub async fn find_draft(&self, id: &str, now: SystemTime) -> Lookup {
        match self.drafts.get(id, now) {
            Lookup::Unknown => {}
            found => return found,
        }
        let Some(db) = self.store.db() else {
            return Lookup::Unknown;
        };
        match shared::find_draft(db, &self.drafts, id).await {
            Some(d) if d.expires_at > now => Lookup::Live(d),
            Some(d) => Lookup::Expired(d),
            None => Lookup::Unknown,
        }
    }

    /// Tell the hooks that want it.
    pub fn notify(&self, cfg: &Config, kind: NotifyEvent, r: &ExemptionRequest) {
        let Some(n) = &self.notifier else { return };
        if cfg.console.notify.is_empty() {
            return;
        }
        let event = notify::Event {
            kind,
            request: r.clone(),
            tool_name: cfg.tool_name(&r.tool).unwrap_or(&r.tool).to_string(),
            approvers: approvers(cfg, &r.user),
            url: self.request_url(cfg, &r.id),
        };
        n.send(&cfg.console, &event);
    }
}

/// Who may decide a request of `user`: their manager chain (nearest first), then everyone
/// holding the approver or admin role, in name order; never `user`.
pub fn approvers(cfg: &Config, user: &str) -> Vec<String> {
    let dir = &cfg.identity.directory;
    let mut out: Vec<String> = Vec::new();
    let mut current = dir.get(user).and_then(|u| u.manager.clone());
    for _ in 0..64 {
        let Some(m) = current else { break };
        if !out.contains(&m) {
            out.push(m.clone());
        }
        current = dir.get(&m).and_then(|u| u.manager.clone());
    }
    let deciders = |roles: &[Role]| roles.contains(&Role::Approver) || roles.contains(&Role::Admin);
    let mut others: Vec<String> = dir
        .users()
        .filter(|u| deciders(&u.roles))
        .map(|u| u.id.to_string())
        .chain(
            cfg.admin
                .tokens
                .iter()
                .filter(|t| deciders(&t.roles))
                .map(|t| t.user.clone()),
        )
        .collect();
    others.sort();
    others.dedup();
    for o in others {
        if !out.contains(&o) {
            out.push(o);
        }
    }
    out.retain(|o| o != user);
    out
}

/// Why a decider the grant rules refuse for who they are may not decide, and what to do
/// instead: the one wording of the JSON API's 403 and the console's refusal page. `None` for
/// refusals about what is asked (duration, cover), which are a 400 with the grant's message.
pub fn decider_refusal(cfg: &Config, g: &GrantError, by: &str) -> Option<String> {
    let names = |user: &str| {
        let list = approvers(cfg, user);
        if list.is_empty() {
            "nobody is configured yet; ask an admin".to_string()
        } else {
            list.join(", ")
        }
    };
    match g {
        GrantError::SelfGrant => Some(format!(
            "nobody decides their own exemption request, whatever their role: ask your manager or an approver to decide it (who can: {})",
            names(by)
        )),
        GrantError::NotTheirManager { grantor, subject } => Some(format!(
            "{grantor} is not {subject}'s manager (nor above them in the directory): deciding it needs {subject}'s manager chain or the approver or admin role. Ask one of them (who can: {}), or an admin for the approver role",
            names(subject)
        )),
        _ => None,
    }
}

/// One sentence on the request for this call, for the deny message: waiting (for whom, since
/// when), or denied lately (by whom, why). Typed text is put on one line.
pub fn status_line(cfg: &Config, r: &ExemptionRequest, now: SystemTime) -> Option<String> {
    match r.state {
        State::Open => {
            let who = approvers(cfg, &r.user)
                .into_iter()
                .next()
                .unwrap_or_else(|| "an approver".to_string());
            Some(format!(
                "Your request {} is waiting for {} since {} UTC.",
                r.id,
                one_line(&who, 64),
                hh_mm(r.created_at)
            ))
        }
        State::Denied
            if r.decided_at
                .is_some_and(|at| now < at + cfg.console.draft_ttl) =>
        {
            Some(format!(
                "Your request {} was denied by {}: {}.",
                r.id,
                one_line(r.decided_by.as_deref().unwrap_or("?"), 64),
                one_line(r.comment.as_deref().unwrap_or(""), 200).trim_end_matches('.')
            ))
        }
        _ => None,
    }
}

/// "10:02" (UTC): a terminal line has no room for more, and the request is at most
/// `console.request_ttl` old.
fn hh_mm(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-12-04T10:02:33Z
    s.get(11..16).unwrap_or(&s).to_string()
}

/// An id nobody can guess: 80 random bits, base32 (lowercase, no padding), 16 characters.
/// Short enough to stay on one terminal line with the rest of the link, and 2^80 ids leave
/// guessing hopeless even before the per-client rate limit.
pub fn unguessable_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 10];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The OS random source failing is not something to paper over with a weaker id; a
        // v7 UUID's random tail (74 bits from the same kind of source) is the fallback.
        let u = uuid::Uuid::now_v7();
        bytes.copy_from_slice(&u.as_bytes()[6..16]);
    }
    base32(&bytes)
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Whether `s` could be an id this module made (the API answers anything else at once, without
/// a lookup).
pub fn plausible_id(s: &str) -> bool {
    (10..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Approved,
    Denied,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
        }
    }
}

/// A submitted exemption request. The journal and the database keep it whole; every change
/// writes the whole request again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExemptionRequest {
    /// `rq-` and an unguessable id: the stable URL of its status page.
    pub id: Arc<str>,
    /// The draft (request link) it was made from.
    pub draft: String,
    /// The audit record of the blocked call.
    pub record_id: String,
    pub user: String,
    pub tool: String,
    pub vendor: String,
    pub workflow: String,
    pub rule: Option<String>,
    pub justification: String,
    /// What was asked for, in seconds.
    pub duration_secs: u64,
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// Unanswered by then, it expires (`console.request_ttl`).
    #[serde(with = "rfc3339")]
    pub expires_at: SystemTime,
    pub state: State,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default, with = "rfc3339_opt")]
    pub decided_at: Option<SystemTime>,
    /// The approver's or denier's comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// What was granted, in seconds (at most `duration_secs`).
    #[serde(default)]
    pub approved_secs: Option<u64>,
    /// The exemption the approval created.
    #[serde(default)]
    pub exemption: Option<String>,
}

impl ExemptionRequest {
    /// The key of "one open request per user, tool and workflow".
    pub fn key(&self) -> (String, String, String) {
        (self.user.clone(), self.tool.clone(), self.workflow.clone())
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }
}

/// Text someone typed, made safe for one line of a terminal or a chat message: control
/// characters (escape sequences, newlines, bidi overrides) become spaces, and it is cut.
pub fn one_line(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                ' '
            } else {
                c
            }
        })
        .take(max_chars)
        .collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_base32_characters_and_differ() {
        let a = unguessable_id();
        let b = unguessable_id();
        assert_eq!(a.len(), 16);
        assert!(plausible_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert!(!plausible_id("../../etc"));
        assert!(!plausible_id("short"));
    }

    #[test]
    fn typed_text_stays_on_one_line() {
        assert_eq!(
            one_line("no\x1b[31m red\nnew line\u{202e}evil", 100),
            "no [31m red new line evil"
        );
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
