//! Console sessions: server-side, so that signing out, an idle timeout or a revoked role ends
//! them at once, on every replica.
//!
//! The browser holds a random 256-bit id; the store keeps only its SHA-256, so a copy of the
//! store (a database dump, a backup) signs nobody in. A new id is made at every sign-in (a
//! session id planted before sign-in is worth nothing: session fixation), and sign-out deletes
//! the row. Each session has its own CSRF token (the synchronizer token of every form).
//!
//! One store per process: [`MemoryStore`] for the embedded default (one replica), the
//! PostgreSQL store (`session_pg.rs`) with `storage.backend = "postgres"`, so that a session
//! made on one replica is good on every other behind the load balancer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::admin::Caller;
use crate::config::Role;

/// A future a store returns (the trait is used as `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SessionError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no randomness from the operating system")]
    Random,
    #[error("session store: {0}")]
    Store(String),
}

/// What the store keeps of a signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub roles: Vec<Role>,
    /// The synchronizer token of this session's forms.
    pub csrf: String,
    /// How they signed in: `token`, `link` (the one-time link), `oidc`.
    pub via: String,
    pub created_at: SystemTime,
    pub last_seen: SystemTime,
}

impl Session {
    pub fn caller(&self) -> Caller {
        Caller {
            user: self.user.clone(),
            roles: self.roles.clone(),
        }
    }

    /// Still good at `now`: not idle past `idle`, not older than `max`.
    pub fn live_at(&self, now: SystemTime, idle: Duration, max: Duration) -> bool {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
        since(self.last_seen) < idle && since(self.created_at) < max
    }
}

/// A one-time sign-in link's grant: who it signs in, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceGrant {
    pub user: String,
    pub roles: Vec<Role>,
    pub expires_at: SystemTime,
}

/// Where sessions live. Every key is the SHA-256 (hex) of the secret the browser holds, never
/// the secret itself.
pub trait SessionStore: Send + Sync {
    fn insert<'a>(&'a self, key: &'a str, session: &'a Session) -> StoreFuture<'a, ()>;
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Session>>;
    /// Mark the session used at `now` (the idle timeout counts from here).
    fn touch<'a>(&'a self, key: &'a str, now: SystemTime) -> StoreFuture<'a, ()>;
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    fn insert_once<'a>(&'a self, key: &'a str, grant: &'a OnceGrant) -> StoreFuture<'a, ()>;
    /// The grant, removed in the same step (a link works once, even when two replicas are
    /// asked at the same moment), if it has not expired at `now`.
    fn take_once<'a>(&'a self, key: &'a str, now: SystemTime)
    -> StoreFuture<'a, Option<OnceGrant>>;
}

/// The embedded default's store: one replica, sessions gone at restart (sign in again).
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Session>>,
    once: Mutex<HashMap<String, OnceGrant>>,
}

/// Sessions a memory store keeps at most; the oldest are dropped first. A bound, so that
/// sign-ins cannot grow memory without limit.
const MEMORY_MAX_SESSIONS: usize = 10_000;

impl SessionStore for MemoryStore {
    fn insert<'a>(&'a self, key: &'a str, session: &'a Session) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MEMORY_MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            map.insert(key.to_string(), session.clone());
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            Ok(map.get(key).cloned())
        })
    }

    fn touch<'a>(&'a self, key: &'a str, now: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get_mut(key) {
                s.last_seen = now;
            }
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(key);
            Ok(())
        })
    }

    fn insert_once<'a>(&'a self, key: &'a str, grant: &'a OnceGrant) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.once.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(key.to_string(), grant.clone());
            Ok(())
        })
    }

    fn take_once<'a>(
        &'a self,
        key: &'a str,
        now: SystemTime,
    ) -> StoreFuture<'a, Option<OnceGrant>> {
        Box::pin(async move {
            let mut map = self.once.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, g| g.expires_at > now);
            Ok(map.remove(key))
        })
    }
}

/// 256 random bits, URL-safe: a session id, a CSRF token, a one-time link.
pub fn secret() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SessionError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The store key of a secret.
pub fn key_of(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal without an early exit, so the time taken does not say how much of a guess was right.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: SystemTime) -> Session {
        Session {
            user: "alice".into(),
            roles: vec![Role::Admin],
            csrf: "c".into(),
            via: "token".into(),
            created_at: now,
            last_seen: now,
        }
    }

    #[test]
    fn idle_and_absolute_timeouts() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = session(t0);
        let (idle, max) = (Duration::from_secs(60), Duration::from_secs(300));
        assert!(s.live_at(t0 + Duration::from_secs(59), idle, max));
        assert!(!s.live_at(t0 + Duration::from_secs(60), idle, max));
        s.last_seen = t0 + Duration::from_secs(290);
        assert!(s.live_at(t0 + Duration::from_secs(299), idle, max));
        assert!(!s.live_at(t0 + Duration::from_secs(300), idle, max));
    }

    #[tokio::test]
    async fn a_one_time_grant_works_once_and_not_after_expiry() {
        let store = MemoryStore::default();
        let t0 = SystemTime::now();
        let g = OnceGrant {
            user: "local-admin".into(),
            roles: vec![Role::Admin],
            expires_at: t0 + Duration::from_secs(60),
        };
        store.insert_once("k", &g).await.unwrap();
        store.insert_once("late", &g).await.unwrap();
        assert_eq!(store.take_once("k", t0).await.unwrap(), Some(g));
        assert_eq!(store.take_once("k", t0).await.unwrap(), None);
        assert_eq!(
            store
                .take_once("late", t0 + Duration::from_secs(61))
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn secrets_are_256_bits_and_keys_are_their_hash() {
        let a = secret().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, secret().unwrap());
        assert_eq!(key_of(&a).len(), 64);
        assert!(!key_of(&a).contains(&a));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
