//! Time-boxed exemptions from `exemptable` rules.
//!
//! The gateway core only reads a [`Snapshot`]: an immutable index that `policy::decide` consults
//! with the request's `now`, so expiry needs no background job. Granting, revoking and the durable
//! journal build new snapshots and swap them in (issue #3).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::policy::Call;

/// Who an exemption is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub id: Arc<str>,
    pub subject: Subject,
    pub tools: Vec<String>,
    /// `None`: every workflow.
    pub workflows: Option<Vec<String>>,
    pub starts_at: SystemTime,
    pub expires_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

impl Exemption {
    /// Active at `now` and covering this tool and workflow (the subject is checked by the index).
    pub fn covers(&self, call: &Call<'_>, now: SystemTime) -> bool {
        self.starts_at <= now
            && now < self.expires_at
            && self.revoked_at.is_none_or(|r| now < r)
            && self.tools.iter().any(|t| t == call.tool)
            && self
                .workflows
                .as_ref()
                .is_none_or(|w| w.iter().any(|w| w == call.workflow))
    }
}

/// An immutable index of exemptions by subject.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    by_user: HashMap<String, Vec<Exemption>>,
    by_group: HashMap<String, Vec<Exemption>>,
}

impl Snapshot {
    pub fn new(exemptions: impl IntoIterator<Item = Exemption>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for e in exemptions {
            let index = match &e.subject {
                Subject::User(u) => snapshot.by_user.entry(u.clone()),
                Subject::Group(g) => snapshot.by_group.entry(g.clone()),
            };
            index.or_default().push(e);
        }
        snapshot
    }

    pub fn len(&self) -> usize {
        self.by_user
            .values()
            .chain(self.by_group.values())
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first exemption that covers the call at `now`, by user, then by group.
    pub fn covering(&self, call: &Call<'_>, now: SystemTime) -> Option<&Exemption> {
        let by_user = self.by_user.get(call.user).into_iter().flatten();
        let by_group = call
            .groups
            .iter()
            .filter_map(|g| self.by_group.get(g.as_str()))
            .flatten();
        by_user.chain(by_group).find(|e| e.covers(call, now))
    }
}
