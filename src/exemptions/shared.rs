//! Exemptions in PostgreSQL, for several replicas.
//!
//! A grant or revocation is committed to `aigate_exemptions` together with a
//! `NOTIFY aigate_exemptions` carrying its id (NOTIFY is delivered on commit, so no replica
//! hears of a change that did not happen). Every replica LISTENs on a connection of its own,
//! fetches the row it hears about and republishes its snapshot; a full resync at start, after
//! each reconnect and every `storage.resync_interval` is the safety net for anything missed.
//! While the database is unreachable the replica keeps its last snapshot: expiry is checked
//! against the clock on every request, so exemptions still end on time.

use std::time::{Duration, SystemTime};

use super::Exemption;
use super::grant::GrantError;
use super::store::{ExemptionStore, StoreError};
use crate::storage::mirror::Mirror;
use crate::storage::{Db, DbError};

const CHANNEL: &str = "aigate_exemptions";
/// Ended exemptions stay visible to reviewers this long, as in the file journal.
const KEEP_ENDED: Duration = Duration::from_secs(90 * 86_400);

fn parse(body: serde_json::Value) -> Option<Exemption> {
    match serde_json::from_value(body) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "an exemption row is not an exemption; skipped");
            None
        }
    }
}

/// The first key of the two-key advisory lock on a subject's grants (the second is a hash of
/// the subject), so it never meets the single-key locks of migrations and partitions.
const SUBJECT_LOCK_CLASS: i32 = 0x6167_6578; // "agex"

/// Store a new grant if `check` accepts it against the subject's grants as committed now;
/// returns once it is committed (and announced). Every replica takes the same advisory lock on
/// the subject before re-reading its grants, and holds it until the commit: two grants for one
/// subject, on one replica or two, are checked one after the other, the second seeing the
/// first. (A replica's in-memory list may lag by a notification; the re-read does not.)
pub async fn insert(
    db: &Db,
    e: &Exemption,
    check: impl FnOnce(&[Exemption]) -> Result<(), GrantError>,
) -> Result<(), StoreError> {
    let body = serde_json::to_value(e).map_err(|e| StoreError::Db(e.to_string()))?;
    let subject = serde_json::to_value(&e.subject).map_err(|e| StoreError::Db(e.to_string()))?;
    let lock_key = format!("{:?}", e.subject);
    let mut client = db.client().await.map_err(db_err)?;
    let result = async {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&SUBJECT_LOCK_CLASS, &lock_key],
        )
        .await?;
        let held: Vec<Exemption> = tx
            .query(
                "SELECT body FROM aigate_exemptions WHERE body->'subject' = $1",
                &[&subject],
            )
            .await?
            .into_iter()
            .filter_map(|r| parse(r.get(0)))
            .collect();
        if let Err(refused) = check(&held) {
            return Ok(Err(StoreError::Refused(refused)));
        }
        tx.execute(
            "INSERT INTO aigate_exemptions (id, body, expires_at) VALUES ($1, $2, $3)",
            &[&&*e.id, &body, &e.expires_at],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &&*e.id])
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
    .await;
    db.note(result).map_err(db_err)?
}

/// Revoke in the database, which decides whether the exemption exists and is still in force.
pub async fn revoke(db: &Db, id: &str, by: &str, now: SystemTime) -> Result<Exemption, StoreError> {
    let mut client = db.client().await.map_err(db_err)?;
    let result = async {
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT body FROM aigate_exemptions WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(StoreError::NotFound(id.to_string())));
        };
        let Some(mut e) = parse(row.get(0)) else {
            return Ok(Err(StoreError::NotFound(id.to_string())));
        };
        if e.revoked_at.is_some() {
            return Ok(Err(StoreError::AlreadyRevoked(id.to_string())));
        }
        e.revoked_at = Some(now);
        e.revoked_by = Some(by.to_string());
        let body = serde_json::to_value(&e).unwrap_or_default();
        tx.execute(
            "UPDATE aigate_exemptions SET body = $2, revoked_at = $3, updated_at = now() WHERE id = $1",
            &[&id, &body, &now],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
            .await?;
        tx.commit().await?;
        Ok(Ok(e))
    }
    .await;
    db.note(result).map_err(db_err)?
}

fn db_err(e: DbError) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Every exemption reviewers should still see: in force, or ended less than 90 days ago.
async fn load_all(
    client: &tokio_postgres::Client,
) -> Result<Vec<Exemption>, tokio_postgres::Error> {
    let since = SystemTime::now() - KEEP_ENDED;
    let rows = client
        .query(
            "SELECT body FROM aigate_exemptions
             WHERE expires_at > $1 AND (revoked_at IS NULL OR revoked_at > $1)
             ORDER BY id",
            &[&since],
        )
        .await?;
    Ok(rows.into_iter().filter_map(|r| parse(r.get(0))).collect())
}

/// Every replica mirrors the exemptions in force (and recently ended) for its data path.
impl Mirror for ExemptionStore {
    type Row = Exemption;
    const CHANNEL: &'static str = CHANNEL;
    const WHAT: &'static str = "exemptions";

    async fn load_all(
        client: &tokio_postgres::Client,
    ) -> Result<Vec<Exemption>, tokio_postgres::Error> {
        load_all(client).await
    }

    async fn load_one(
        client: &tokio_postgres::Client,
        id: &str,
    ) -> Result<Option<Exemption>, tokio_postgres::Error> {
        let row = client
            .query_opt("SELECT body FROM aigate_exemptions WHERE id = $1", &[&id])
            .await?;
        Ok(row.and_then(|r| parse(r.get(0))))
    }

    fn mirror_all(&self, rows: Vec<Exemption>) {
        self.replace_all(rows);
    }

    fn mirror_one(&self, row: Exemption) {
        self.upsert(row);
    }
}
