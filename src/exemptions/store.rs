//! The live set of exemptions: the journal on disk, the list in memory, and the snapshot the
//! data path reads. A grant or revocation is journalled (fsync) first, then published; a request
//! that starts after the call returns sees it.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::journal::{Entry, Journal, JournalError, Replay};
use super::{Exemption, Snapshot};

/// Past this many journal entries beyond the live set, the journal is compacted.
const COMPACT_SLACK: usize = 1000;
/// Expired or revoked exemptions stay in the journal this long, for reviewers.
const KEEP_ENDED: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no exemption with id {0:?}")]
    NotFound(String),
    #[error("exemption {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("cannot write the exemption journal: {0}")]
    Io(#[from] io::Error),
}

struct Inner {
    journal: Journal,
    list: Vec<Exemption>,
}

pub struct ExemptionStore {
    inner: Mutex<Inner>,
    snapshot: Arc<ArcSwap<Snapshot>>,
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
                inner: Mutex::new(Inner { journal, list }),
                snapshot,
            },
            replay,
        ))
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

    /// Journal, then publish. Returns only once the grant is on disk.
    pub fn grant(&self, exemption: Exemption, now: SystemTime) -> io::Result<()> {
        let mut inner = self.lock();
        inner.journal.append(&Entry::Grant {
            exemption: exemption.clone(),
        })?;
        inner.list.push(exemption);
        self.publish(&mut inner, now);
        Ok(())
    }

    pub fn revoke(&self, id: &str, by: &str, now: SystemTime) -> Result<Exemption, RevokeError> {
        let mut inner = self.lock();
        let Some(pos) = inner.list.iter().position(|e| &*e.id == id) else {
            return Err(RevokeError::NotFound(id.to_string()));
        };
        if inner.list[pos].revoked_at.is_some() {
            return Err(RevokeError::AlreadyRevoked(id.to_string()));
        }
        inner.journal.append(&Entry::Revoke {
            id: id.to_string(),
            at: now,
            by: by.to_string(),
        })?;
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
        if inner.journal.entries() > inner.list.len() + COMPACT_SLACK {
            let ended_before = now - KEEP_ENDED;
            inner.list.retain(|e| {
                e.expires_at > ended_before && e.revoked_at.is_none_or(|r| r > ended_before)
            });
            let keep = inner.list.clone();
            if let Err(e) = inner.journal.compact(&keep) {
                tracing::warn!(error = %e, "exemption journal compaction failed; it stays as it is");
            }
        }
    }
}
