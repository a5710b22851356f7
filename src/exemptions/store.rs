//! The live set of exemptions: where they are kept (the journal on disk, or PostgreSQL shared by
//! replicas), the list in memory, and the snapshot the data path reads. A grant or revocation is
//! made durable first (fsync, or a committed transaction), then published; a request that starts
//! after the call returns sees it.
//!
//! A grant's cover check and its insert are one step per subject: the check reads every grant
//! acknowledged before it, so grants sent at the same moment cannot each fit a limit that they
//! exceed together (issue 15). The file backend holds the list's lock from the read through the
//! fsync; PostgreSQL holds an advisory lock on the subject, shared by every replica, from the
//! re-read through the commit (`shared::insert`).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::grant::{self, GrantError, GrantRequest, Grantor};
use super::journal::{Entry, Journal, JournalError, Replay};
use super::{Exemption, Snapshot};
use crate::config::Config;
use crate::storage::Db;

/// Past this many journal entries beyond the live set, the journal is compacted.
const COMPACT_SLACK: usize = 1000;
/// Expired or revoked exemptions stay in the journal this long, for reviewers.
const KEEP_ENDED: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no exemption with id {0:?}")]
    NotFound(String),
    #[error("exemption {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("cannot write the exemption journal: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Db(String),
    /// The grant rules refuse it, judged against the grants stored when it would be inserted.
    #[error("{0}")]
    Refused(GrantError),
}

struct Inner {
    /// `None` when PostgreSQL keeps them.
    journal: Option<Journal>,
    list: Vec<Exemption>,
}

pub struct ExemptionStore {
    inner: Mutex<Inner>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    db: Option<Arc<Db>>,
}

impl ExemptionStore {
    pub fn open(
        path: &Path,
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> Result<(ExemptionStore, Replay), JournalError> {
        let (journal, list, replay) = Journal::open(path)?;
        snapshot.store(Arc::new(Snapshot::new(list.iter().cloned())));
        Ok((
            ExemptionStore {
                inner: Mutex::new(Inner {
                    journal: Some(journal),
                    list,
                }),
                snapshot,
                db: None,
            },
            replay,
        ))
    }

    /// Exemptions kept in PostgreSQL. The list starts empty (nothing exempted: fail closed) and
    /// is filled by `storage::mirror::follow`.
    pub fn shared(db: Arc<Db>, snapshot: Arc<ArcSwap<Snapshot>>) -> ExemptionStore {
        snapshot.store(Arc::new(Snapshot::new([])));
        ExemptionStore {
            inner: Mutex::new(Inner {
                journal: None,
                list: Vec::new(),
            }),
            snapshot,
            db: Some(db),
        }
    }

    pub fn db(&self) -> Option<&Arc<Db>> {
        self.db.as_ref()
    }

    /// The database's view replaces ours (a resync).
    pub fn replace_all(&self, list: Vec<Exemption>) {
        let mut inner = self.lock();
        inner.list = list;
        self.publish(&mut inner, SystemTime::now());
    }

    /// One exemption as the database now has it (a notification, or our own change).
    pub fn upsert(&self, e: Exemption) {
        let mut inner = self.lock();
        match inner.list.iter_mut().find(|x| x.id == e.id) {
            Some(slot) => *slot = e,
            None => inner.list.push(e),
        }
        self.publish(&mut inner, SystemTime::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the list half-updated (push/replace only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<Exemption> {
        self.lock().list.clone()
    }

    pub fn get(&self, id: &str) -> Option<Exemption> {
        self.lock().list.iter().find(|e| &*e.id == id).cloned()
    }

    /// `check` the grant against the subject's stored grants, then make it durable, then
    /// publish; no other grant is stored between the check and the insert. Returns only once the
    /// grant is on disk or committed.
    pub async fn grant(
        &self,
        exemption: Exemption,
        now: SystemTime,
        check: impl FnOnce(&[Exemption]) -> Result<(), GrantError>,
    ) -> Result<(), StoreError> {
        if let Some(db) = &self.db {
            super::shared::insert(db, &exemption, check).await?;
            self.upsert(exemption);
            return Ok(());
        }
        // Held from the check through the fsync: a concurrent grant waits and sees this one.
        let mut inner = self.lock();
        check(&inner.list).map_err(StoreError::Refused)?;
        if let Some(journal) = inner.journal.as_mut() {
            journal.append(&Entry::Grant {
                exemption: exemption.clone(),
            })?;
        }
        inner.list.push(exemption);
        self.publish(&mut inner, now);
        Ok(())
    }

    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<Exemption, StoreError> {
        if let Some(db) = &self.db {
            let revoked = super::shared::revoke(db, id, by, now).await?;
            self.upsert(revoked.clone());
            return Ok(revoked);
        }
        let mut inner = self.lock();
        let Some(pos) = inner.list.iter().position(|e| &*e.id == id) else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if inner.list[pos].revoked_at.is_some() {
            return Err(StoreError::AlreadyRevoked(id.to_string()));
        }
        if let Some(journal) = inner.journal.as_mut() {
            journal.append(&Entry::Revoke {
                id: id.to_string(),
                at: now,
                by: by.to_string(),
            })?;
        }
        let e = &mut inner.list[pos];
        e.revoked_at = Some(now);
        e.revoked_by = Some(by.to_string());
        let revoked = e.clone();
        self.publish(&mut inner, now);
        Ok(revoked)
    }

    fn publish(&self, inner: &mut Inner, now: SystemTime) {
        self.snapshot
            .store(Arc::new(Snapshot::new(inner.list.iter().cloned())));
        let Some(entries) = inner.journal.as_ref().map(Journal::entries) else {
            return;
        };
        if entries > inner.list.len() + COMPACT_SLACK {
            let ended_before = now - KEEP_ENDED;
            inner.list.retain(|e| {
                e.expires_at > ended_before && e.revoked_at.is_none_or(|r| r > ended_before)
            });
            let keep = inner.list.clone();
            if let Some(Err(e)) = inner.journal.as_mut().map(|j| j.compact(&keep)) {
                tracing::warn!(error = %e, "exemption journal compaction failed; it stays as it is");
            }
        }
    }
}

/// Make an exemption from a grant request: the one path for `POST /v1/exemptions` and for an
/// approved exemption request. The grant rules run against the subject's grants as stored at
/// the insert (see `ExemptionStore::grant`); the exemption is durable when this returns.
/// `request` names the exemption request it answers, if any.
pub async fn issue(
    store: &ExemptionStore,
    cfg: &Config,
    grantor: &Grantor,
    req: &GrantRequest,
    now: SystemTime,
    request: Option<String>,
) -> Result<Exemption, StoreError> {
    let known: Vec<&str> = cfg.tools.iter().map(|t| &*t.id).collect();
    let limits = grant::Limits {
        max_duration: cfg.admin.max_exemption,
        window: cfg.admin.exemption_window,
        max_lead: cfg.admin.max_exemption_lead,
    };
    let exemption = Exemption {
        id: Arc::from(format!("ex-{}", uuid::Uuid::now_v7()).as_str()),
        subject: req.subject.clone(),
        tools: req.tools.clone(),
        workflows: req.workflows.clone(),
        starts_at: req.starts_at.unwrap_or(now),
        expires_at: req.expires_at.unwrap_or(now),
        revoked_at: None,
        reason: req.reason.clone().unwrap_or_default(),
        ticket: req.ticket.clone(),
        granted_by: grantor.user.clone(),
        created_at: Some(now),
        revoked_by: None,
        request,
    };
    let check = |held: &[Exemption]| {
        grant::check(
            req,
            grantor,
            &cfg.identity.directory,
            &cfg.policy,
            &known,
            &limits,
            held,
            now,
        )
    };
    store.grant(exemption.clone(), now, check).await?;
    Ok(exemption)
}
