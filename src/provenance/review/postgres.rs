//! The review queue in PostgreSQL (`storage.backend = "postgres"`): one queue for every
//! replica (`aigate_findings`, migrations/0005), so a finding recorded through one replica is
//! listed, and decided, through any other, and decided once.
//!
//! The rules are the module's (`apply`, and `record`'s "one open finding per key"); this file
//! only holds each operation in one transaction. Recording takes an advisory lock on the key,
//! so two replicas recording the same finding at once count it seen instead of adding two (the
//! partial unique index would refuse the second anyway). Deciding locks the row, so of two
//! reviewers deciding at once through two replicas, the second is told it is already decided.
//!
//! The trait is synchronous (the embedded store is redb); each call runs on the gateway's
//! runtime through its handle, from the `spawn_blocking` the API already uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Decision, Finding, FindingStore, Status, StoreError, apply};
use crate::storage::{Db, DbError};

pub struct PostgresFindings {
    db: Arc<Db>,
    runtime: tokio::runtime::Handle,
    /// The table is there: the migrations ran (the exemption follower runs them too, but a
    /// review may come before it has reached the database).
    migrated: AtomicBool,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("in PostgreSQL: {e}"))
}

fn parse(body: serde_json::Value) -> Result<Finding, StoreError> {
    serde_json::from_value(body).map_err(|e| failed(format!("a finding is damaged: {e}")))
}

fn encode(f: &Finding) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(f).map_err(failed)
}

impl PostgresFindings {
    pub fn new(db: Arc<Db>, runtime: tokio::runtime::Handle) -> PostgresFindings {
        PostgresFindings {
            db,
            runtime,
            migrated: AtomicBool::new(false),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            self.db.migrate().await.map_err(failed)?;
            self.migrated.store(true, Ordering::Release);
        }
        self.db.client().await.map_err(failed)
    }

    fn note<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        self.db.note(r).map_err(|e: DbError| failed(e))
    }

    async fn record_async(&self, mut new: Finding) -> Result<(Finding, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = self.note(client.transaction().await)?;
        self.note(
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&new.key],
            )
            .await,
        )?;
        let open = self.note(
            tx.query_opt(
                "SELECT body FROM aigate_findings WHERE key = $1 AND status = 'open' FOR UPDATE",
                &[&new.key],
            )
            .await,
        )?;
        if let Some(row) = open {
            let mut f = parse(row.get(0))?;
            f.seen += 1;
            f.last_seen_at = new.recorded_at.clone();
            let body = encode(&f)?;
            self.note(
                tx.execute(
                    "UPDATE aigate_findings SET body = $2 WHERE id = $1",
                    &[&f.id, &body],
                )
                .await,
            )?;
            self.note(tx.commit().await)?;
            return Ok((f, false));
        }
        // The last decided finding with this key, if any, for `previous`.
        let previous = self.note(
            tx.query_opt(
                "SELECT id FROM aigate_findings WHERE key = $1 AND status <> 'open'
                 ORDER BY id DESC LIMIT 1",
                &[&new.key],
            )
            .await,
        )?;
        new.previous = previous.map(|r| r.get(0));
        let body = encode(&new)?;
        self.note(
            tx.execute(
                "INSERT INTO aigate_findings (id, key, status, body) VALUES ($1, $2, $3, $4)",
                &[&new.id, &new.key, &new.status.as_str(), &body],
            )
            .await,
        )?;
        self.note(tx.commit().await)?;
        Ok((new, true))
    }

    async fn list_async(&self, status: Option<Status>) -> Result<Vec<Finding>, StoreError> {
        let client = self.client().await?;
        let rows = match status {
            Some(s) => self.note(
                client
                    .query(
                        "SELECT body FROM aigate_findings WHERE status = $1 ORDER BY id",
                        &[&s.as_str()],
                    )
                    .await,
            )?,
            None => self.note(
                client
                    .query("SELECT body FROM aigate_findings ORDER BY id", &[])
                    .await,
            )?,
        };
        rows.into_iter().map(|r| parse(r.get(0))).collect()
    }

    async fn get_async(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        let client = self.client().await?;
        let row = self.note(
            client
                .query_opt("SELECT body FROM aigate_findings WHERE id = $1", &[&id])
                .await,
        )?;
        row.map(|r| parse(r.get(0))).transpose()
    }

    async fn decide_async(
        &self,
        id: &str,
        decision: &Decision,
        by: &str,
        now: &str,
    ) -> Result<Finding, StoreError> {
        let mut client = self.client().await?;
        let tx = self.note(client.transaction().await)?;
        let row = self.note(
            tx.query_opt(
                "SELECT body FROM aigate_findings WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await,
        )?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        let mut f = parse(row.get(0))?;
        apply(&mut f, decision, by, now)?;
        let body = encode(&f)?;
        self.note(
            tx.execute(
                "UPDATE aigate_findings SET status = $2, body = $3 WHERE id = $1",
                &[&id, &f.status.as_str(), &body],
            )
            .await,
        )?;
        self.note(tx.commit().await)?;
        Ok(f)
    }
}

impl FindingStore for PostgresFindings {
    fn record(&self, new: Finding) -> Result<(Finding, bool), StoreError> {
        self.runtime.block_on(self.record_async(new))
    }

    fn list(&self, status: Option<Status>) -> Result<Vec<Finding>, StoreError> {
        self.runtime.block_on(self.list_async(status))
    }

    fn get(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        self.runtime.block_on(self.get_async(id))
    }

    fn decide(
        &self,
        id: &str,
        decision: &Decision,
        by: &str,
        now: &str,
    ) -> Result<Finding, StoreError> {
        self.runtime
            .block_on(self.decide_async(id, decision, by, now))
    }
}
