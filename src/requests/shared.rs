//! Requests and drafts in PostgreSQL, for several replicas: a request made on one replica is
//! approved on another. As with exemptions (`exemptions::shared`), a change is committed with
//! a `NOTIFY aigate_requests` carrying its id; every replica LISTENs, re-reads the row and
//! republishes, with a full resync at start, after each reconnect and every
//! `storage.resync_interval`. Drafts are written by a task fed from the data path's bounded
//! queue, and read from the table when a link opens on a replica that did not make it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::ExemptionRequest;
use super::drafts::{Draft, Drafts};
use super::store::{RequestStore, StoreError, Submitted};
use crate::storage::mirror::Mirror;
use crate::storage::{Db, DbError};

const CHANNEL: &str = "aigate_requests";
/// Decided requests stay visible to reviewers this long.
const KEEP_DECIDED: Duration = Duration::from_secs(90 * 86_400);

fn db_err(e: DbError) -> StoreError {
    StoreError::Db(e.to_string())
}

fn parse(body: serde_json::Value) -> Option<ExemptionRequest> {
    match serde_json::from_value(body) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "a request row is not a request; skipped");
            None
        }
    }
}

/// Insert unless an open request for the key exists (the partial unique index decides, for
/// every replica at once); then the open one is returned.
pub async fn submit(db: &Db, r: &ExemptionRequest) -> Result<Submitted, StoreError> {
    let body = serde_json::to_value(r).map_err(|e| StoreError::Db(e.to_string()))?;
    let client = db.client().await.map_err(db_err)?;
    let result = async {
        let inserted = client
            .execute(
                "INSERT INTO aigate_requests (id, body, user_id, tool, workflow, state, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, tool, workflow) WHERE state = 'open' DO NOTHING",
                &[
                    &&*r.id,
                    &body,
                    &r.user,
                    &r.tool,
                    &r.workflow,
                    &r.state.as_str(),
                    &r.expires_at,
                    &r.created_at,
                ],
            )
            .await?;
        if inserted == 1 {
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &&*r.id])
                .await?;
            return Ok(Some(Submitted::New(r.clone())));
        }
        let open = client
            .query_opt(
                "SELECT body FROM aigate_requests WHERE user_id = $1 AND tool = $2 AND workflow = $3 AND state = 'open'",
                &[&r.user, &r.tool, &r.workflow],
            )
            .await?;
        Ok(open.and_then(|row| parse(row.get(0))).map(Submitted::Existing))
    }
    .await;
    match db.note(result).map_err(db_err)? {
        Some(done) => Ok(done),
        // Decided between the insert and the read: the caller may submit again.
        None => Err(StoreError::Db(
            "the open request was decided while this one was submitted; submit again".into(),
        )),
    }
}

/// Decide an open request in one transaction (row lock), so two replicas cannot both decide it.
pub async fn decide(
    db: &Db,
    id: &str,
    change: impl FnOnce(&mut ExemptionRequest),
) -> Result<ExemptionRequest, StoreError> {
    let mut client = db.client().await.map_err(db_err)?;
    let result = async {
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT body FROM aigate_requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(mut r) = row.and_then(|row| parse(row.get(0))) else {
            return Ok(Err(StoreError::NotFound(id.to_string())));
        };
        if !r.is_open() {
            return Ok(Err(StoreError::NotOpen(id.to_string(), r.state.as_str())));
        }
        change(&mut r);
        let body = serde_json::to_value(&r).unwrap_or_default();
        tx.execute(
            "UPDATE aigate_requests SET body = $2, state = $3, updated_at = now() WHERE id = $1",
            &[&id, &body, &r.state.as_str()],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
            .await?;
        tx.commit().await?;
        Ok(Ok(r))
    }
    .await;
    db.note(result).map_err(db_err)?
}

/// Open requests past their time.
pub async fn due(db: &Db, now: SystemTime) -> Result<Vec<String>, StoreError> {
    let client = db.client().await.map_err(db_err)?;
    let rows = client
        .query(
            "SELECT id FROM aigate_requests WHERE state = 'open' AND expires_at <= $1",
            &[&now],
        )
        .await;
    Ok(db
        .note(rows)
        .map_err(db_err)?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
}

/// Write drafts from the data path's queue, for as long as the gateway runs. A draft that
/// cannot be written stays on its replica (its link still opens there).
pub async fn persist_drafts(db: Arc<Db>, mut rx: mpsc::Receiver<Arc<Draft>>) {
    while let Some(d) = rx.recv().await {
        let Ok(body) = serde_json::to_value(&*d) else {
            continue;
        };
        let result = async {
            let client = db.client().await?;
            let done = client
                .execute(
                    "INSERT INTO aigate_request_drafts (id, body, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                    &[&&*d.id, &body, &d.expires_at],
                )
                .await;
            db.note(done)
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "request draft not written to PostgreSQL; its link opens on this replica only");
        }
    }
}

/// A draft another replica made.
pub async fn find_draft(db: &Db, drafts: &Drafts, id: &str) -> Option<Arc<Draft>> {
    let client = db.client().await.ok()?;
    let row = client
        .query_opt(
            "SELECT body FROM aigate_request_drafts WHERE id = $1",
            &[&id],
        )
        .await;
    let row = db.note(row).ok()??;
    let d: Draft = serde_json::from_value(row.get(0)).ok()?;
    let d = Arc::new(d);
    drafts.remember(d.clone());
    Some(d)
}

async fn load_all(
    client: &tokio_postgres::Client,
) -> Result<Vec<ExemptionRequest>, tokio_postgres::Error> {
    let since = SystemTime::now() - KEEP_DECIDED;
    let rows = client
        .query(
            "SELECT body FROM aigate_requests WHERE state = 'open' OR updated_at > $1 ORDER BY id",
            &[&since],
        )
        .await?;
    Ok(rows.into_iter().filter_map(|r| parse(r.get(0))).collect())
}

/// Every replica mirrors the open and recently decided requests, for the deny message and the
/// console.
impl Mirror for RequestStore {
    type Row = ExemptionRequest;
    const CHANNEL: &'static str = CHANNEL;
    const WHAT: &'static str = "requests";

    async fn load_all(
        client: &tokio_postgres::Client,
    ) -> Result<Vec<ExemptionRequest>, tokio_postgres::Error> {
        load_all(client).await
    }

    async fn load_one(
        client: &tokio_postgres::Client,
        id: &str,
    ) -> Result<Option<ExemptionRequest>, tokio_postgres::Error> {
        let row = client
            .query_opt("SELECT body FROM aigate_requests WHERE id = $1", &[&id])
            .await?;
        Ok(row.and_then(|r| parse(r.get(0))))
    }

    fn mirror_all(&self, rows: Vec<ExemptionRequest>) {
        self.replace_all(rows);
    }

    fn mirror_one(&self, row: ExemptionRequest) {
        self.upsert(row);
    }
}
