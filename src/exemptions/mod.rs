//! Time-boxed exemptions from `exemptable` rules.
//!
//! The data path only reads a [`Snapshot`]: an immutable index that `policy::decide` consults
//! with the request's `now`, so expiry needs no background job. The `journal` makes every grant
//! and revocation durable (fsync) before it is acknowledged; replaying it rebuilds the snapshot.

pub mod grant;
pub mod journal;
pub mod shared;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::policy::Call;

/// Who an exemption is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    User(String),
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exemption {
    pub id: Arc<str>,
    pub subject: Subject,
    pub tools: Vec<String>,
    /// `None`: every workflow.
    pub workflows: Option<Vec<String>>,
    #[serde(with = "rfc3339")]
    pub starts_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub expires_at: SystemTime,
    #[serde(default, with = "rfc3339_opt")]
    pub revoked_at: Option<SystemTime>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub granted_by: String,
    #[serde(default, with = "rfc3339_opt")]
    pub created_at: Option<SystemTime>,
    #[serde(default)]
    pub revoked_by: Option<String>,
    /// The exemption request whose approval created it (`requests`), so a reviewer can follow
    /// the story from the exemption back to the blocked call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Timestamps in the journal and the API: RFC 3339, UTC.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

pub mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Exemption {
    /// In force at `now`: started, not expired, not revoked.
    pub fn active_at(&self, now: SystemTime) -> bool {
        self.starts_at <= now && now < self.expires_at && self.revoked_at.is_none_or(|r| now < r)
    }

    /// Active at `now` and covering this tool and workflow (the subject is checked by the index).
    pub fn covers(&self, call: &Call<'_>, now: SystemTime) -> bool {
        self.active_at(now)
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
