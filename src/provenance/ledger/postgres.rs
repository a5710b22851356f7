//! The provenance ledger in PostgreSQL (`storage.backend = "postgres"`): every replica writes
//! to the same two tables (migrations/0004_provenance_ledger.sql), so a scan sees every
//! replica's captures. Partitioned by day like the audit table; the sweep drops whole days.
//!
//! The trait is synchronous (the capture workers are threads); each call runs on the gateway's
//! runtime through its handle. Callers on the runtime itself use `spawn_blocking`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Entry, Ledger, LedgerError, Matches};
use crate::storage::{Db, DbError};

/// Serialises partition creation across replicas (as the audit shipper does for its own).
const PARTITION_LOCK: i64 = 0x6169_6761_7465_7076;

pub struct PostgresLedger {
    db: Arc<Db>,
    runtime: tokio::runtime::Handle,
    /// Days whose partitions this replica has made sure of.
    days: Mutex<Vec<String>>,
    /// The ledger's tables are there: the migrations ran (the exemption follower runs them too,
    /// but a capture may come before it has reached the database).
    migrated: std::sync::atomic::AtomicBool,
}

fn pg(e: DbError) -> LedgerError {
    LedgerError::Postgres(e.to_string())
}

impl PostgresLedger {
    pub fn new(db: Arc<Db>, runtime: tokio::runtime::Handle) -> PostgresLedger {
        PostgresLedger {
            db,
            runtime,
            days: Mutex::new(Vec::new()),
            migrated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn ensure_day(&self, client: &tokio_postgres::Client, day: &str) -> Result<(), DbError> {
        if self
            .days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d == day)
        {
            return Ok(());
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let start = time::Date::parse(day, &format)
            .map_err(|e| DbError::Unavailable(format!("entry time {day:?}: {e}")))?;
        let end = start
            .next_day()
            .ok_or_else(|| DbError::Unavailable(format!("entry time {day:?}")))?;
        let tag = day.replace('-', "");
        let sql = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({PARTITION_LOCK});
             CREATE TABLE IF NOT EXISTS aigate_provenance_entries_{tag} PARTITION OF aigate_provenance_entries
             FOR VALUES FROM ('{start}') TO ('{end}');
             CREATE TABLE IF NOT EXISTS aigate_provenance_fingerprints_{tag} PARTITION OF aigate_provenance_fingerprints
             FOR VALUES FROM ('{start}') TO ('{end}');
             COMMIT"
        );
        self.db.note(client.batch_execute(&sql).await)?;
        self.days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(day.to_string());
        Ok(())
    }

    async fn record_async(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), DbError> {
        use std::sync::atomic::Ordering;
        if !self.migrated.load(Ordering::Acquire) {
            self.db.migrate().await?;
            self.migrated.store(true, Ordering::Release);
        }
        let mut client = self.db.client().await?;
        let day = entry.time.get(..10).unwrap_or_default().to_string();
        self.ensure_day(&client, &day).await?;
        let body = serde_json::to_value(entry)
            .map_err(|e| DbError::Unavailable(format!("entry {}: {e}", entry.id)))?;
        // Signed: PostgreSQL has no unsigned bigint; the bits are the same.
        let hashes: Vec<i64> = fingerprints.iter().map(|h| *h as i64).collect();
        let tx = self.db.note(client.transaction().await)?;
        let inserted = self.db.note(
            tx.execute(
                "INSERT INTO aigate_provenance_entries (id, time, replica, body)
                 VALUES ($1, $2::text::timestamptz, $3, $4) ON CONFLICT DO NOTHING",
                &[&entry.id, &entry.time, &&**self.db.replica(), &body],
            )
            .await,
        )?;
        if inserted == 1 {
            self.db.note(
                tx.execute(
                    "INSERT INTO aigate_provenance_fingerprints (hash, entry_id, time)
                     SELECT h, $2, $3::text::timestamptz FROM UNNEST($1::bigint[]) AS u(h)
                     ON CONFLICT DO NOTHING",
                    &[&hashes, &entry.id, &entry.time],
                )
                .await,
            )?;
        }
        self.db.note(tx.commit().await)
    }

    async fn find_async(&self, fingerprints: &[u64]) -> Result<Matches, DbError> {
        let client = self.db.client().await?;
        let mut hashes: Vec<i64> = fingerprints.iter().map(|h| *h as i64).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let rows = self.db.note(
            client
                .query(
                    "SELECT hash, entry_id FROM aigate_provenance_fingerprints WHERE hash = ANY($1)",
                    &[&hashes],
                )
                .await,
        )?;
        let mut hits: Vec<(u64, String)> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)))
            .collect();
        hits.sort();
        hits.dedup();
        let mut ids: Vec<&str> = hits.iter().map(|h| h.1.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = self.db.note(
            client
                .query(
                    "SELECT body FROM aigate_provenance_entries WHERE id = ANY($1)",
                    &[&ids],
                )
                .await,
        )?;
        let mut entries = HashMap::new();
        for r in rows {
            let body: serde_json::Value = r.get(0);
            let e: Entry = serde_json::from_value(body)
                .map_err(|e| DbError::Unavailable(format!("a ledger entry is damaged: {e}")))?;
            entries.insert(e.id.clone(), e);
        }
        Ok(Matches { hits, entries })
    }

    async fn entry_async(&self, id: &str) -> Result<Option<Entry>, DbError> {
        let client = self.db.client().await?;
        let row = self.db.note(
            client
                .query_opt(
                    "SELECT body FROM aigate_provenance_entries WHERE id = $1 LIMIT 1",
                    &[&id],
                )
                .await,
        )?;
        row.map(|r| {
            serde_json::from_value(r.get::<_, serde_json::Value>(0))
                .map_err(|e| DbError::Unavailable(format!("ledger entry {id} is damaged: {e}")))
        })
        .transpose()
    }

    /// Drop the day partitions that end before `before_ms`; the entries removed.
    async fn sweep_async(&self, before_ms: i64) -> Result<u64, DbError> {
        let client = self.db.client().await?;
        let cutoff = time::OffsetDateTime::from_unix_timestamp(before_ms.div_euclid(1000))
            .map_err(|e| DbError::Unavailable(format!("retention cutoff: {e}")))?
            .date();
        let rows = self.db.note(
            client
                .query(
                    "SELECT c.relname FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     WHERE p.relname = 'aigate_provenance_entries'",
                    &[],
                )
                .await,
        )?;
        let format = time::macros::format_description!("[year][month][day]");
        let mut removed = 0u64;
        for r in rows {
            let name: String = r.get(0);
            let Some(tag) = name.strip_prefix("aigate_provenance_entries_") else {
                continue;
            };
            let Ok(day) = time::Date::parse(tag, &format) else {
                continue;
            };
            // A day partition holds calls up to its end: dropped once all of it is too old.
            if day.next_day().is_none_or(|end| end > cutoff) {
                continue;
            }
            let n: i64 = self
                .db
                .note(
                    client
                        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                        .await,
                )?
                .get(0);
            self.db.note(
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         SELECT pg_advisory_xact_lock({PARTITION_LOCK});
                         DROP TABLE IF EXISTS aigate_provenance_fingerprints_{tag};
                         DROP TABLE IF EXISTS {name};
                         COMMIT"
                    ))
                    .await,
            )?;
            self.days
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|d| d.replace('-', "") != tag);
            removed += n as u64;
        }
        Ok(removed)
    }
}

impl Ledger for PostgresLedger {
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError> {
        self.runtime
            .block_on(self.record_async(entry, fingerprints))
            .map_err(pg)
    }

    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError> {
        self.runtime
            .block_on(self.find_async(fingerprints))
            .map_err(pg)
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        self.runtime.block_on(self.entry_async(id)).map_err(pg)
    }

    fn sweep(&self, before_ms: i64) -> Result<u64, LedgerError> {
        self.runtime
            .block_on(self.sweep_async(before_ms))
            .map_err(pg)
    }
}
