//! OIDC sign-ins started and not yet finished: what the callback needs to finish one (the PKCE
//! verifier, the nonce, the browser binding, where to go next), found by the `state` the
//! provider sends back.
//!
//! One store per process, as for sessions: [`MemoryPending`] for the embedded default (one
//! replica), [`PgPending`] with `storage.backend = "postgres"`, because behind a load balancer
//! the provider's redirect back may reach another replica than the one that sent the browser
//! there, and that replica must know the sign-in.
//!
//! Both are bounded the same way: a sign-in lives [`PENDING_TTL`], one client address holds at
//! most [`MAX_PENDING_PER_SOURCE`] and all of them at most [`MAX_PENDING`] (starting sign-ins
//! costs the store a row, and an outsider can start them). Keys are the SHA-256 of `state`, and
//! the browser binding is kept as the SHA-256 of the cookie: a copy of the table lets nobody
//! finish a sign-in. A take removes the row in the same step, so a `state` works once even
//! when two replicas are asked at the same moment.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::storage::Db;

/// How long a person may take at the provider's sign-in page.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Pending sign-ins held at most, and per client address: an address that starts more than
/// this within `PENDING_TTL` waits (429).
pub const MAX_PENDING: usize = 10_000;
pub const MAX_PENDING_PER_SOURCE: usize = 20;

/// A started sign-in, as the callback needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    /// SHA-256 (hex) of the browser's binding cookie.
    pub browser_key: String,
    /// The PKCE code verifier (the secret behind the challenge sent to the provider).
    pub pkce: String,
    pub nonce: String,
    /// Where to go once signed in: a local path.
    pub next: String,
    pub source: IpAddr,
    pub started: SystemTime,
}

impl PendingSignIn {
    fn live_at(&self, now: SystemTime) -> bool {
        now.duration_since(self.started)
            .map_or(true, |age| age < PENDING_TTL)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("too many sign-ins started from this address; finish one or wait 10 minutes")]
    Busy,
    #[error("the store of started sign-ins: {0}")]
    Store(String),
}

pub type PendingFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PendingError>> + Send + 'a>>;

/// Where pending sign-ins live. `key` is the SHA-256 (hex) of the `state` parameter.
pub trait PendingStore: Send + Sync {
    /// Keep `p` under `key`, unless its address (or everyone) is over the bound: `Busy`.
    fn put<'a>(&'a self, key: &'a str, p: &'a PendingSignIn) -> PendingFuture<'a, ()>;
    /// The pending sign-in, removed in the same step, if it is still live at `now`.
    fn take<'a>(
        &'a self,
        key: &'a str,
        now: SystemTime,
    ) -> PendingFuture<'a, Option<PendingSignIn>>;
}

/// The embedded default: one replica, pending sign-ins gone at restart (start again).
#[derive(Debug, Default)]
pub struct MemoryPending {
    map: Mutex<HashMap<String, PendingSignIn>>,
}

impl MemoryPending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingSignIn>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PendingStore for MemoryPending {
    fn put<'a>(&'a self, key: &'a str, p: &'a PendingSignIn) -> PendingFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.lock();
            map.retain(|_, x| x.live_at(p.started));
            let from_source = map.values().filter(|x| x.source == p.source).count();
            if from_source >= MAX_PENDING_PER_SOURCE || map.len() >= MAX_PENDING {
                return Err(PendingError::Busy);
            }
            map.insert(key.to_string(), p.clone());
            Ok(())
        })
    }

    fn take<'a>(
        &'a self,
        key: &'a str,
        now: SystemTime,
    ) -> PendingFuture<'a, Option<PendingSignIn>> {
        Box::pin(async move { Ok(self.lock().remove(key).filter(|p| p.live_at(now))) })
    }
}

/// `storage.backend = "postgres"`: every replica reads the same rows
/// (`aigate_oidc_pending`, migrations/0005).
pub struct PgPending {
    db: Arc<Db>,
}

impl PgPending {
    pub fn new(db: Arc<Db>) -> PgPending {
        PgPending { db }
    }
}

fn store_error(e: impl std::fmt::Display) -> PendingError {
    PendingError::Store(e.to_string())
}

impl PendingStore for PgPending {
    fn put<'a>(&'a self, key: &'a str, p: &'a PendingSignIn) -> PendingFuture<'a, ()> {
        Box::pin(async move {
            let body = serde_json::to_value(p).map_err(store_error)?;
            let source = p.source.to_string();
            let oldest = p
                .started
                .checked_sub(PENDING_TTL)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let per_source = i64::try_from(MAX_PENDING_PER_SOURCE).unwrap_or(i64::MAX);
            let all = i64::try_from(MAX_PENDING).unwrap_or(i64::MAX);
            let client = self.db.client().await.map_err(store_error)?;
            // Expired rows go first, so that they count towards no bound.
            let r = client
                .execute(
                    "DELETE FROM aigate_oidc_pending WHERE started_at <= $1",
                    &[&oldest],
                )
                .await;
            self.db.note(r).map_err(store_error)?;
            // The bound and the insert in one statement. Two replicas inserting at the same
            // moment may each pass it once: the bound is a limit on growth, not an exact count.
            let r = client
                .execute(
                    "INSERT INTO aigate_oidc_pending (key, body, source, started_at)
                     SELECT $1, $2, $3, $4
                     WHERE (SELECT count(*) FROM aigate_oidc_pending WHERE source = $3) < $5
                       AND (SELECT count(*) FROM aigate_oidc_pending) < $6",
                    &[&key, &body, &source, &p.started, &per_source, &all],
                )
                .await;
            match self.db.note(r).map_err(store_error)? {
                0 => Err(PendingError::Busy),
                _ => Ok(()),
            }
        })
    }

    fn take<'a>(
        &'a self,
        key: &'a str,
        now: SystemTime,
    ) -> PendingFuture<'a, Option<PendingSignIn>> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .query_opt(
                    "DELETE FROM aigate_oidc_pending WHERE key = $1 RETURNING body",
                    &[&key],
                )
                .await;
            let Some(row) = self.db.note(r).map_err(store_error)? else {
                return Ok(None);
            };
            let p: PendingSignIn = serde_json::from_value(row.get(0)).map_err(store_error)?;
            Ok(Some(p).filter(|p| p.live_at(now)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(source: [u8; 4], started: SystemTime) -> PendingSignIn {
        PendingSignIn {
            browser_key: "b".into(),
            pkce: "v".into(),
            nonce: "n".into(),
            next: "/".into(),
            source: IpAddr::from(source),
            started,
        }
    }

    #[tokio::test]
    async fn a_pending_sign_in_is_taken_once_and_not_after_it_expired() {
        let store = MemoryPending::default();
        let t0 = SystemTime::now();
        store.put("k", &pending([10, 0, 0, 1], t0)).await.unwrap();
        store.put("old", &pending([10, 0, 0, 1], t0)).await.unwrap();
        assert!(store.take("k", t0).await.unwrap().is_some());
        assert!(store.take("k", t0).await.unwrap().is_none());
        assert!(store.take("old", t0 + PENDING_TTL).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn one_address_holds_a_bounded_share_until_they_expire() {
        let store = MemoryPending::default();
        let t0 = SystemTime::now();
        for i in 0..MAX_PENDING_PER_SOURCE {
            store
                .put(&format!("k{i}"), &pending([10, 0, 0, 1], t0))
                .await
                .unwrap();
        }
        let over = store.put("over", &pending([10, 0, 0, 1], t0)).await;
        assert!(matches!(over, Err(PendingError::Busy)));
        // Another address is not held up by this one.
        store
            .put("other", &pending([10, 0, 0, 2], t0))
            .await
            .unwrap();
        // Once the first ones expired, the address may start again.
        store
            .put("later", &pending([10, 0, 0, 1], t0 + PENDING_TTL))
            .await
            .unwrap();
    }
}
