//! The provenance ledger in PostgreSQL (`storage.backend = "postgres"`): every replica writes
//! to the same tables (migrations/0004_provenance_ledger.sql and 0006), so a scan sees every
//! replica's captures. Entries are partitioned by day like the audit table, the fingerprint
//! index by month (migration 7: a lookup probes every partition); the sweep drops whole days
//! of entries and whole months of the index.
//! The gateway's replicas keep a membership filter of it ([`ReplicaFilter`]); a scan that
//! reads the tables directly has none.
//!
//! The trait is synchronous (the capture workers are threads); each call runs on the gateway's
//! runtime through its handle. Callers on the runtime itself use `spawn_blocking`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::replica_filter::ReplicaFilter;
use super::{Entry, Ledger, LedgerError, Matches};
use crate::storage::partitions::{self, DayPartitions};
use crate::storage::{Db, DbError};

/// Serialises partition creation across replicas (as the audit shipper does for its own; the
/// fingerprint index's months are made under it too, by `aigate_provenance_prints_month` in
/// migrations/0007).
const PARTITION_LOCK: i64 = 0x6169_6761_7465_7076;
/// Serialises the ledger's writes across replicas, from drawing their `seq` to their commit,
/// so entries commit in `seq` order ([`ReplicaFilter`] relies on it).
const WRITE_LOCK: i64 = 0x6169_6761_7465_7077;
/// The first batch of fingerprints a filtered lookup sends; each next one is twice as large, up
/// to [`MOST_ASKED`]. Small at first so the entries found early answer the rest of the lookup
/// from their own fingerprints.
const FIRST_ASKED: usize = 64;
const MOST_ASKED: usize = 8_192;

pub struct PostgresLedger {
    db: Arc<Db>,
    runtime: tokio::runtime::Handle,
    /// The day partitions of entries this replica has made sure of.
    days: DayPartitions,
    /// The months (`YYYY-MM`) of the fingerprint index it has made sure of: the first seven
    /// characters of an entry's time, which is always written in UTC (`…Z`).
    months: Mutex<Vec<String>>,
    /// The ledger's tables are there: the migrations ran (the exemption follower runs them too,
    /// but a capture may come before it has reached the database).
    migrated: std::sync::atomic::AtomicBool,
    /// The gateway's: a lookup asks PostgreSQL only what it may hold. `None` for a scan.
    filter: Option<Arc<ReplicaFilter>>,
}

fn pg(e: DbError) -> LedgerError {
    LedgerError::Postgres(e.to_string())
}

impl PostgresLedger {
    pub fn new(db: Arc<Db>, runtime: tokio::runtime::Handle) -> PostgresLedger {
        PostgresLedger {
            db,
            runtime,
            days: DayPartitions::new("aigate_provenance_entries", PARTITION_LOCK),
            months: Mutex::new(Vec::new()),
            migrated: std::sync::atomic::AtomicBool::new(false),
            filter: None,
        }
    }

    /// The gateway's ledger: as [`PostgresLedger::new`], with a membership filter of the
    /// tables built in the background and kept current at every lookup.
    pub fn filtered(db: Arc<Db>, runtime: tokio::runtime::Handle) -> PostgresLedger {
        let filter = Arc::new(ReplicaFilter::pending());
        filter.spawn_build(db.clone(), &runtime);
        PostgresLedger {
            filter: Some(filter),
            ..PostgresLedger::new(db, runtime)
        }
    }

    /// The filter is built (always false without one).
    pub fn filter_ready(&self) -> bool {
        self.filter.as_ref().is_some_and(|f| f.is_ready())
    }

    /// Fingerprints the filtered lookups have sent to PostgreSQL, for tests and benches.
    pub fn fingerprints_asked(&self) -> u64 {
        self.filter
            .as_ref()
            .map_or(0, |f| f.asked.load(Ordering::Relaxed))
    }

    /// The partitions the entries of `batch` are written to: their days' of the entries (UTC
    /// days, [`DayPartitions`]), their months' of the fingerprint index.
    async fn ensure_partitions(
        &self,
        client: &tokio_postgres::Client,
        batch: &[(Entry, Vec<u64>)],
    ) -> Result<(), DbError> {
        let times: Vec<&str> = batch.iter().map(|(e, _)| e.time.as_str()).collect();
        self.days.ensure(&self.db, client, &times).await?;
        for (entry, _) in batch {
            let month = entry.time.get(..7).unwrap_or_default();
            if self.lock_months().iter().any(|m| m == month) {
                continue;
            }
            self.db.note(
                client
                    .execute(
                        "SELECT aigate_provenance_prints_month($1::text::timestamptz)",
                        &[&entry.time],
                    )
                    .await,
            )?;
            self.lock_months().push(month.to_string());
        }
        Ok(())
    }

    fn lock_months(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.months.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One transaction for the batch, under [`WRITE_LOCK`]: the entries' `seq` are drawn
    /// after it is taken and it is held to the commit.
    async fn record_async(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), DbError> {
        if !self.migrated.load(Ordering::Acquire) {
            self.db.migrate().await?;
            self.migrated.store(true, Ordering::Release);
        }
        let mut client = self.db.client().await?;
        self.ensure_partitions(&client, batch).await?;
        let tx = self.db.note(client.transaction().await)?;
        self.db.note(
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .await,
        )?;
        for (entry, fingerprints) in batch {
            let body = serde_json::to_value(entry)
                .map_err(|e| DbError::Unavailable(format!("entry {}: {e}", entry.id)))?;
            // Signed: PostgreSQL has no unsigned bigint; the bits are the same.
            let hashes: Vec<i64> = fingerprints.iter().map(|h| *h as i64).collect();
            let inserted = self.db.note(
                tx.execute(
                    "INSERT INTO aigate_provenance_entries (id, time, replica, body, prints)
                     VALUES ($1, $2::text::timestamptz, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &entry.id,
                        &entry.time,
                        &&**self.db.replica(),
                        &body,
                        &hashes,
                    ],
                )
                .await,
            )?;
            if inserted == 1 {
                self.db.note(
                    tx.execute(
                        "INSERT INTO aigate_provenance_prints (hash, entry_id, time)
                         SELECT h, $2, $3::text::timestamptz FROM UNNEST($1::bigint[]) AS u(h)
                         ON CONFLICT DO NOTHING",
                        &[&hashes, &entry.id, &entry.time],
                    )
                    .await,
                )?;
            }
        }
        self.db.note(tx.commit().await)
    }

    /// Without a filter: every fingerprint in one query.
    async fn find_async(&self, fingerprints: &[u64]) -> Result<Matches, DbError> {
        let client = self.db.client().await?;
        let mut hashes: Vec<u64> = fingerprints.to_vec();
        hashes.sort_unstable();
        hashes.dedup();
        let mut found = Matches::default();
        let hits = self.hits_of(&client, &hashes).await?;
        let ids: Vec<(&str, SystemTime)> = hits.iter().map(|h| (h.1.as_str(), h.2)).collect();
        self.add_entries(&client, &ids, &mut found, None).await?;
        found.hits = hits.into_iter().map(|(h, id, _)| (h, id)).collect();
        found.keep_read();
        Ok(found)
    }

    /// With the replica's filter: first the entries committed since the last lookup go into
    /// it, then only the fingerprints it may hold are asked, in growing batches. As in the
    /// embedded ledger (`EmbeddedLedger::find`), an entry found answers from its own list the
    /// fingerprints it holds and no other entry does (no marker in the filter), without a
    /// query: for the rest of this lookup and for the next ones ([`ReplicaFilter::found`]).
    async fn find_filtered(
        &self,
        filter: &Arc<ReplicaFilter>,
        fingerprints: &[u64],
    ) -> Result<Matches, DbError> {
        let client = self.db.client().await?;
        let mut wanted = Vec::new();
        self.screen(filter, &client, fingerprints, &mut wanted)
            .await?;
        let mut found = Matches::default();
        let mut batch = Vec::new();
        let (mut at, mut size) = (0, FIRST_ASKED);
        let (mut queries, mut asked) = (0, 0);
        while at < wanted.len() {
            batch.clear();
            {
                let known = filter.known();
                while at < wanted.len() && batch.len() < size {
                    let h = wanted[at];
                    at += 1;
                    match known.entry_of(h) {
                        Some(e) => {
                            found.hits.push((h, e.id.clone()));
                            if !found.entries.contains_key(&e.id) {
                                found.entries.insert(e.id.clone(), e.clone());
                            }
                        }
                        None => batch.push(h),
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            filter
                .asked
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let hits = self.hits_of(&client, &batch).await?;
            let new: Vec<(&str, SystemTime)> = hits
                .iter()
                .filter(|h| !found.entries.contains_key(&h.1))
                .map(|h| (h.1.as_str(), h.2))
                .collect();
            self.add_entries(&client, &new, &mut found, Some(filter))
                .await?;
            found
                .hits
                .extend(hits.into_iter().map(|(h, id, _)| (h, id)));
            size = (size * 2).min(MOST_ASKED);
            queries += 1;
            asked += batch.len();
        }
        tracing::debug!(
            fingerprints = fingerprints.len(),
            past_filter = wanted.len(),
            asked,
            queries,
            entries = found.entries.len(),
            "provenance lookup (PostgreSQL)"
        );
        found.keep_read();
        found.hits.sort();
        Ok(found)
    }

    /// What of `fingerprints` the replica's filter may hold, into `out` (sorted, distinct),
    /// after it has taken in the entries every replica committed since its last catch-up:
    /// without that, one another replica wrote meanwhile would be dropped here.
    async fn screen(
        &self,
        filter: &Arc<ReplicaFilter>,
        client: &tokio_postgres::Client,
        fingerprints: &[u64],
        out: &mut Vec<u64>,
    ) -> Result<(), DbError> {
        filter.catch_up(&self.db, client, &self.runtime).await?;
        filter.read().passing(fingerprints, out);
        Ok(())
    }

    /// `(fingerprint, entry id, entry time)` for every row holding one of `hashes`, sorted and
    /// distinct.
    async fn hits_of(
        &self,
        client: &deadpool_postgres::Client,
        hashes: &[u64],
    ) -> Result<Vec<(u64, String, SystemTime)>, DbError> {
        let hashes: Vec<i64> = hashes.iter().map(|h| *h as i64).collect();
        // Prepared once per connection, so PostgreSQL can keep one plan of it: planning it over
        // a year of day partitions takes 8 to 35 ms, more than a lookup of a few fingerprints.
        let query = self.db.note(
            client
                .prepare_cached(
                    "SELECT hash, entry_id, time FROM aigate_provenance_prints
                     WHERE hash = ANY($1)",
                )
                .await,
        )?;
        let rows = self.db.note(client.query(&query, &[&hashes]).await)?;
        let mut hits: Vec<(u64, String, SystemTime)> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
            .collect();
        hits.sort();
        hits.dedup();
        Ok(hits)
    }

    /// Reads the entries `ids` (with their times; repeats allowed) into `found`; with `expand`,
    /// each one is remembered with its fingerprints no other entry holds. The times let
    /// PostgreSQL read only their days' partitions (planning and probing all of a year's took
    /// about 50 ms a query).
    async fn add_entries(
        &self,
        client: &tokio_postgres::Client,
        ids: &[(&str, SystemTime)],
        found: &mut Matches,
        expand: Option<&Arc<ReplicaFilter>>,
    ) -> Result<(), DbError> {
        let (mut names, mut times): (Vec<&str>, Vec<SystemTime>) = ids.iter().copied().unzip();
        names.sort_unstable();
        names.dedup();
        times.sort_unstable();
        times.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let rows = self.db.note(
            client
                .query(
                    "SELECT body, prints FROM aigate_provenance_entries
                     WHERE id = ANY($1) AND time = ANY($2)",
                    &[&names, &times],
                )
                .await,
        )?;
        let mut sole = Vec::new();
        for r in rows {
            let body: serde_json::Value = r.get(0);
            let e: Entry = serde_json::from_value(body)
                .map_err(|e| DbError::Unavailable(format!("a ledger entry is damaged: {e}")))?;
            // An entry without its list (written by the release before it) is not expanded.
            if let (Some(filter), Some(prints)) = (expand, r.get::<_, Option<Vec<i64>>>(1)) {
                let prints: Vec<u64> = prints.into_iter().map(|h| h as u64).collect();
                filter.found(&e, &prints, &mut sole);
            }
            found.entries.insert(e.id.clone(), e);
        }
        Ok(())
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

    /// Drop the day partitions of entries, and the months of the fingerprint index, that end
    /// by `before_ms` (all they hold is older); the entries removed.
    async fn sweep_async(&self, before_ms: i64) -> Result<u64, DbError> {
        let client = self.db.client().await?;
        let mut removed = 0u64;
        for name in self.days.ending_by(&self.db, &client, before_ms).await? {
            let n: i64 = self
                .db
                .note(
                    client
                        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                        .await,
                )?
                .get(0);
            // The day table of fingerprints releases before 7 wrote, named as the entries'.
            let tag = name.trim_start_matches("aigate_provenance_entries_");
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
            removed += n as u64;
        }
        self.days.forget_before(before_ms);
        // A month of the fingerprint index once all of it is too old. Until then, the
        // fingerprints of the days dropped above answer nothing: lookups keep only the hits
        // whose entry they read.
        for name in
            partitions::ending_by(&self.db, &client, "aigate_provenance_prints", before_ms).await?
        {
            self.db.note(
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         SELECT pg_advisory_xact_lock({PARTITION_LOCK});
                         DROP TABLE IF EXISTS {name};
                         COMMIT"
                    ))
                    .await,
            )?;
        }
        self.lock_months().clear();
        // The entries lookups remembered may be among those dropped. (Another replica's sweep
        // drops the same days within the hour: they share `provenance.retention`.)
        if let Some(filter) = &self.filter {
            filter.known().clear();
        }
        Ok(removed)
    }
}

impl Ledger for PostgresLedger {
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError> {
        self.record_many(&[(entry.clone(), fingerprints.to_vec())])
    }

    /// One transaction for the capture worker's batch (all or none).
    fn record_many(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        self.runtime.block_on(self.record_async(batch)).map_err(pg)
    }

    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError> {
        let found = match &self.filter {
            Some(filter) => self
                .runtime
                .block_on(self.find_filtered(filter, fingerprints)),
            None => self.runtime.block_on(self.find_async(fingerprints)),
        };
        found.map_err(pg)
    }

    /// The replica's filter, caught up first (`screen`, as a lookup does).
    fn may_hold(&self, fingerprints: &[u64], out: &mut Vec<u64>) -> Result<(), LedgerError> {
        let Some(filter) = &self.filter else {
            super::all_may_be_held(fingerprints, out);
            return Ok(());
        };
        self.runtime
            .block_on(async {
                let client = self.db.client().await?;
                self.screen(filter, &client, fingerprints, out).await
            })
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
