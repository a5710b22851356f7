//! Request drafts: what a deny message's link (`/r/{id}`) points at. A draft binds the blocked
//! call (its audit record id, the user, tool, vendor, workflow and rule) and lets whoever holds
//! the link ask for an exemption for exactly that, until it expires (`console.draft_ttl`).
//!
//! Drafts are made on the data path, so making one must be cheap and bounded: a sharded map
//! (no global lock), one draft reused for repeated blocks of the same user, tool, workflow and
//! rule (Codex retries a 403 five times), at most `MAX_DRAFTS` held (past it, expired ones are
//! swept and, if still full, the deny message goes without a link rather than the gateway
//! growing without bound). With PostgreSQL the draft is written to the database off the data
//! path (a bounded queue to a writer task), so another replica can open the link.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::exemptions::rfc3339;

/// Drafts held at most.
pub const MAX_DRAFTS: usize = 100_000;
/// Drafts waiting to be written to PostgreSQL at most; past it a draft stays on this replica.
const PERSIST_QUEUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub id: Arc<str>,
    /// The audit record of the (first) blocked call.
    pub record_id: String,
    pub user: String,
    /// The gateway could not tell who made the call: nothing can be exempted for them.
    pub anonymous: bool,
    pub tool: String,
    pub tool_name: String,
    pub vendor: String,
    pub vendor_name: String,
    pub workflow: String,
    pub rule: Option<String>,
    pub rule_description: Option<String>,
    /// The deciding rule yields to exemptions.
    pub exemptable: bool,
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub expires_at: SystemTime,
}

/// What the data path knows when it blocks a call.
#[derive(Debug, Clone, Copy)]
pub struct DraftFacts<'a> {
    pub record_id: &'a str,
    pub user: &'a str,
    pub anonymous: bool,
    pub tool: &'a str,
    pub tool_name: &'a str,
    pub vendor: &'a str,
    pub vendor_name: &'a str,
    pub workflow: &'a str,
    pub rule: Option<&'a str>,
    pub rule_description: Option<&'a str>,
    pub exemptable: bool,
}

/// What a link's id finds.
#[derive(Debug, Clone)]
pub enum Lookup {
    Live(Arc<Draft>),
    Expired(Arc<Draft>),
    Unknown,
}

pub struct Drafts {
    by_id: DashMap<Arc<str>, Arc<Draft>>,
    /// user, tool, workflow, rule -> the draft repeated blocks reuse.
    by_key: DashMap<String, Arc<str>>,
    cap: usize,
    persist: Option<mpsc::Sender<Arc<Draft>>>,
}

impl Default for Drafts {
    fn default() -> Drafts {
        Drafts::new(MAX_DRAFTS)
    }
}

impl Drafts {
    pub fn new(cap: usize) -> Drafts {
        Drafts {
            by_id: DashMap::new(),
            by_key: DashMap::new(),
            cap,
            persist: None,
        }
    }

    /// Drafts also go to the database through `tx` (see `store::persist_drafts`).
    pub fn with_persist(mut self, tx: mpsc::Sender<Arc<Draft>>) -> Drafts {
        self.persist = Some(tx);
        self
    }

    pub fn persist_channel() -> (mpsc::Sender<Arc<Draft>>, mpsc::Receiver<Arc<Draft>>) {
        mpsc::channel(PERSIST_QUEUE)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The draft for this blocked call: a live one for the same user, tool, workflow and rule
    /// with at least half its time left, else a new one. `None` when the map is full of live
    /// drafts.
    pub fn draft_for(
        &self,
        f: &DraftFacts<'_>,
        now: SystemTime,
        ttl: Duration,
    ) -> Option<Arc<Draft>> {
        let key = format!(
            "{}\0{}\0{}\0{}",
            f.user,
            f.tool,
            f.workflow,
            f.rule.unwrap_or("")
        );
        if let Some(id) = self.by_key.get(&key).map(|id| id.clone())
            && let Some(d) = self.by_id.get(&id).map(|d| d.clone())
            && d.expires_at > now + ttl / 2
        {
            return Some(d);
        }
        if self.by_id.len() >= self.cap {
            self.sweep(now);
            if self.by_id.len() >= self.cap {
                tracing::warn!(
                    held = self.by_id.len(),
                    "request drafts: the map is full of live drafts; this deny message goes without a link"
                );
                return None;
            }
        }
        let draft = Arc::new(Draft {
            id: Arc::from(super::unguessable_id().as_str()),
            record_id: f.record_id.to_string(),
            user: f.user.to_string(),
            anonymous: f.anonymous,
            tool: f.tool.to_string(),
            tool_name: f.tool_name.to_string(),
            vendor: f.vendor.to_string(),
            vendor_name: f.vendor_name.to_string(),
            workflow: f.workflow.to_string(),
            rule: f.rule.map(str::to_string),
            rule_description: f.rule_description.map(str::to_string),
            exemptable: f.exemptable,
            created_at: now,
            expires_at: now + ttl,
        });
        self.by_id.insert(draft.id.clone(), draft.clone());
        self.by_key.insert(key, draft.id.clone());
        if let Some(tx) = &self.persist
            && tx.try_send(draft.clone()).is_err()
        {
            tracing::warn!(
                "request drafts: the database writer is behind; this link opens on this replica only"
            );
        }
        Some(draft)
    }

    /// A draft this replica holds.
    pub fn get(&self, id: &str, now: SystemTime) -> Lookup {
        match self.by_id.get(id).map(|d| d.clone()) {
            Some(d) if d.expires_at > now => Lookup::Live(d),
            Some(d) => Lookup::Expired(d),
            None => Lookup::Unknown,
        }
    }

    /// A draft read from the database (another replica made it).
    pub fn remember(&self, d: Arc<Draft>) {
        if self.by_id.len() < self.cap {
            self.by_id.insert(d.id.clone(), d);
        }
    }

    /// Forget drafts expired for longer than their own lifetime (until then an old link still
    /// says "expired" rather than "unknown").
    pub fn sweep(&self, now: SystemTime) {
        self.by_id.retain(|_, d| {
            let life = d
                .expires_at
                .duration_since(d.created_at)
                .unwrap_or_default();
            d.expires_at + life > now
        });
        self.by_key.retain(|_, id| self.by_id.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(user: &'a str, rule: Option<&'a str>) -> DraftFacts<'a> {
        DraftFacts {
            record_id: "rec-1",
            user,
            anonymous: false,
            tool: "claude-code",
            tool_name: "Claude Code",
            vendor: "anthropic",
            vendor_name: "Anthropic",
            workflow: "untagged",
            rule,
            rule_description: None,
            exemptable: true,
        }
    }

    #[test]
    fn repeated_blocks_reuse_a_live_draft_and_the_map_stays_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let drafts = Drafts::new(2);
        let a = drafts
            .draft_for(&facts("alice", Some("ban")), t0, day)
            .unwrap();
        let again = drafts
            .draft_for(
                &facts("alice", Some("ban")),
                t0 + Duration::from_secs(60),
                day,
            )
            .unwrap();
        assert_eq!(a.id, again.id, "a retry reuses the link");
        let other_rule = drafts
            .draft_for(&facts("alice", Some("other")), t0, day)
            .unwrap();
        assert_ne!(a.id, other_rule.id);
        assert!(
            drafts
                .draft_for(&facts("bob", Some("ban")), t0, day)
                .is_none(),
            "full of live drafts: no link rather than unbounded growth"
        );
        // Past half its life a draft is not handed out again: a fresh one is made.
        let later = t0 + day * 3;
        let fresh = drafts
            .draft_for(&facts("alice", Some("ban")), later, day)
            .unwrap();
        assert_ne!(fresh.id, a.id);
        assert_eq!(drafts.len(), 1, "the expired ones were swept to make room");
        assert!(matches!(drafts.get(&fresh.id, later), Lookup::Live(_)));
        assert!(matches!(
            drafts.get(&fresh.id, later + day + Duration::from_secs(1)),
            Lookup::Expired(_)
        ));
        assert!(matches!(drafts.get("nope", later), Lookup::Unknown));
    }
}
