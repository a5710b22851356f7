//! Sessions and one-time links in PostgreSQL (`storage.backend = "postgres"`): every replica
//! reads the same rows, so a browser signed in through one replica is signed in on all.

use std::sync::Arc;
use std::time::SystemTime;

use super::session::{OnceGrant, Session, SessionError, SessionStore, StoreFuture};
use crate::storage::Db;

pub struct PgStore {
    db: Arc<Db>,
}

impl PgStore {
    pub fn new(db: Arc<Db>) -> PgStore {
        PgStore { db }
    }
}

fn store_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::Store(e.to_string())
}

impl SessionStore for PgStore {
    fn insert<'a>(&'a self, key: &'a str, session: &'a Session) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let body = serde_json::to_value(session).map_err(store_error)?;
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .execute(
                    "INSERT INTO aigate_console_sessions (key, body, created_at, last_seen) VALUES ($1, $2, $3, $4)",
                    &[&key, &body, &session.created_at, &session.last_seen],
                )
                .await;
            self.db.note(r).map_err(store_error)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .query_opt(
                    "SELECT body, last_seen FROM aigate_console_sessions WHERE key = $1",
                    &[&key],
                )
                .await;
            let Some(row) = self.db.note(r).map_err(store_error)? else {
                return Ok(None);
            };
            let mut session: Session = serde_json::from_value(row.get(0)).map_err(store_error)?;
            // The column is what `touch` moves; the body keeps the sign-in's copy.
            session.last_seen = row.get(1);
            Ok(Some(session))
        })
    }

    fn touch<'a>(&'a self, key: &'a str, now: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .execute(
                    "UPDATE aigate_console_sessions SET last_seen = $2 WHERE key = $1 AND last_seen < $2",
                    &[&key, &now],
                )
                .await;
            self.db.note(r).map_err(store_error)?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .execute(
                    "DELETE FROM aigate_console_sessions WHERE key = $1",
                    &[&key],
                )
                .await;
            self.db.note(r).map_err(store_error)?;
            Ok(())
        })
    }

    fn insert_once<'a>(&'a self, key: &'a str, grant: &'a OnceGrant) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let body = serde_json::to_value(grant).map_err(store_error)?;
            let client = self.db.client().await.map_err(store_error)?;
            let r = client
                .execute(
                    "INSERT INTO aigate_console_once (key, body, expires_at) VALUES ($1, $2, $3)",
                    &[&key, &body, &grant.expires_at],
                )
                .await;
            self.db.note(r).map_err(store_error)?;
            Ok(())
        })
    }

    fn take_once<'a>(
        &'a self,
        key: &'a str,
        now: SystemTime,
    ) -> StoreFuture<'a, Option<OnceGrant>> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(store_error)?;
            // DELETE … RETURNING: of two replicas asked at once, one gets the row.
            let r = client
                .query_opt(
                    "DELETE FROM aigate_console_once WHERE key = $1 RETURNING body, expires_at",
                    &[&key],
                )
                .await;
            let Some(row) = self.db.note(r).map_err(store_error)? else {
                return Ok(None);
            };
            let expires_at: SystemTime = row.get(1);
            if expires_at <= now {
                return Ok(None);
            }
            serde_json::from_value(row.get(0))
                .map(Some)
                .map_err(store_error)
        })
    }
}

/// Sessions past both timeouts are of no use to anyone: deleted now and then, by whichever
/// replica signs someone in.
pub async fn prune(db: &Db, now: SystemTime, idle: std::time::Duration, max: std::time::Duration) {
    let idle_before = now.checked_sub(idle).unwrap_or(SystemTime::UNIX_EPOCH);
    let created_before = now.checked_sub(max).unwrap_or(SystemTime::UNIX_EPOCH);
    let Ok(client) = db.client().await else {
        return;
    };
    let r = client
        .execute(
            "DELETE FROM aigate_console_sessions WHERE last_seen < $1 OR created_at < $2",
            &[&idle_before, &created_before],
        )
        .await;
    let _ = db.note(r);
    let r = client
        .execute(
            "DELETE FROM aigate_console_once WHERE expires_at < $1",
            &[&now],
        )
        .await;
    let _ = db.note(r);
}
