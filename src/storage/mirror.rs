//! Tables that every replica mirrors in memory (exemptions, requests), kept current the same
//! way: a change is committed with a `NOTIFY` on the table's channel carrying the row's id;
//! each replica LISTENs on a connection of its own, re-reads the row it hears about, and
//! reloads the whole table at start, after each reconnect and every `storage.resync_interval`
//! as the safety net for anything missed. One follower loop for all of them, so a fix to the
//! reconnect or resync logic reaches every mirrored table.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Db, DbError};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// An in-memory copy of one PostgreSQL table.
pub trait Mirror: Send + Sync + 'static {
    type Row: Send;
    /// The channel a commit notifies, with the changed row's id as payload.
    const CHANNEL: &'static str;
    /// What the table holds, for the log line when the follower loses the database.
    const WHAT: &'static str;

    /// Every row the copy should hold.
    fn load_all(
        client: &tokio_postgres::Client,
    ) -> impl Future<Output = Result<Vec<Self::Row>, tokio_postgres::Error>> + Send;

    /// One row by id; `None` when it is gone or unreadable.
    fn load_one(
        client: &tokio_postgres::Client,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self::Row>, tokio_postgres::Error>> + Send;

    /// Replace the whole copy (a resync).
    fn mirror_all(&self, rows: Vec<Self::Row>);

    /// Insert or replace one row (a notification).
    fn mirror_one(&self, row: Self::Row);
}

/// Follow the table for as long as the gateway runs: migrate, LISTEN, resync, apply each
/// notification; on any failure mark the database down, wait (0.5 s, doubling up to 10 s) and
/// start again. While it is down the copy keeps its last state.
pub async fn follow<M: Mirror>(db: Arc<Db>, mirror: Arc<M>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match session(&db, &*mirror).await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                db.set_up(false);
                tracing::warn!(error = %e, retry_in = ?backoff, table = M::WHAT, "sync with PostgreSQL lost");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's worth of following; returns when the connection is lost.
async fn session<M: Mirror>(db: &Db, mirror: &M) -> Result<(), DbError> {
    db.migrate().await?;
    // Held whole: dropping it (or its driver) ends the connection.
    let mut listener = db.listen(M::CHANNEL).await?;
    let client = &listener.client;
    mirror.mirror_all(db.note(M::load_all(client).await)?);
    let mut resync = tokio::time::interval(db.cfg.resync_interval);
    resync.tick().await;
    loop {
        tokio::select! {
            note = listener.notes.recv() => {
                let Some(id) = note else {
                    return Err(DbError::Unavailable("the LISTEN connection closed".into()));
                };
                if let Some(row) = db.note(M::load_one(client, &id).await)? {
                    mirror.mirror_one(row);
                }
            }
            _ = resync.tick() => {
                mirror.mirror_all(db.note(M::load_all(client).await)?);
            }
        }
    }
}
