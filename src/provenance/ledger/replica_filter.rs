//! A replica's membership filter of the shared PostgreSQL ledger.
//!
//! The fingerprint index is partitioned by time and PostgreSQL has no index across partitions,
//! so every fingerprint asked is looked up in every partition: 472 µs a fingerprint with a
//! year of day partitions (docs/provenance.md, "PostgreSQL"), 13 probes with months (migration
//! 7). A scan's fingerprints are
//! nearly all absent, so each replica keeps the embedded ledger's filter ([`Filter`]) of every
//! entry in the tables, and only what it may hold goes to PostgreSQL.
//!
//! The filter has to hold every committed entry, or a lookup would miss a real hit. Entries
//! carry a `seq` that writers draw under an advisory lock held to their commit
//! (migrations/0006), so the entries committed are always every `seq` up to some N (less the
//! numbers of writes that failed): the filter holds all of them up to `upto`, and a lookup
//! first reads the entries after it ("catching up"), its own replica's and the others' alike.
//! Replicas on the release before this one draw no lock: until every replica runs this one and
//! has restarted, an entry they wrote may be missing from a filter (docs/provenance.md).

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::filter::Filter;
use super::{ByPrint, Entry};
use crate::storage::{Db, DbError};

/// Entries read a query while building or catching up: a few MB of fingerprints.
const PAGE: i64 = 2_000;
/// Fingerprints and entries [`Known`] holds before it starts again (about 40 MB and 30 MB).
const KNOWN_PRINTS: usize = 2 << 20;
const KNOWN_ENTRIES: usize = 100_000;

/// Entries recent lookups found, each with the fingerprints no other entry holds. A scan asks a
/// group of files at a time, and the same answer turns up in group after group (a crate's
/// versions, a vendored copy): each lookup would otherwise ask PostgreSQL again for the entry
/// before it could answer from its list. Exact as the filter's markers are: a catch-up that
/// adds a fingerprint forgets it here under the filter's write lock, and an entry's sole
/// fingerprints are worked out and remembered under its read lock, so neither can come
/// between the other's two steps.
#[derive(Default)]
pub(super) struct Known {
    by_print: ByPrint<u32>,
    entries: Vec<Entry>,
}

impl Known {
    /// The one entry holding `print`, if a lookup found it.
    pub(super) fn entry_of(&self, print: u64) -> Option<&Entry> {
        let i = *self.by_print.get(&print)?;
        self.entries.get(i as usize)
    }

    fn remember(&mut self, entry: &Entry, sole: &[u64]) {
        // Found again by a lookup that asked one of its shared fingerprints first: its own
        // ones are here already (an entry's sole fingerprints only ever shrink, by `forget`).
        if sole
            .first()
            .and_then(|p| self.entry_of(*p))
            .is_some_and(|e| e.id == entry.id)
        {
            return;
        }
        if self.by_print.len() + sole.len() > KNOWN_PRINTS || self.entries.len() >= KNOWN_ENTRIES {
            self.clear();
        }
        let Ok(i) = u32::try_from(self.entries.len()) else {
            return;
        };
        self.entries.push(entry.clone());
        self.by_print.extend(sole.iter().map(|&p| (p, i)));
    }

    fn forget(&mut self, prints: &[u64]) {
        if self.by_print.is_empty() {
            return;
        }
        for p in prints {
            self.by_print.remove(p);
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_print.clear();
        self.entries.clear();
    }
}

pub(super) struct ReplicaFilter {
    filter: RwLock<Filter>,
    /// The highest `seq` the filter holds every entry up to. Catch-ups take turns on it, so an
    /// entry is never inserted twice (which would mark its fingerprints as shared).
    upto: tokio::sync::Mutex<i64>,
    /// A build is under way (the first, or a larger one once the filter is full).
    building: AtomicBool,
    /// Fingerprints sent to PostgreSQL by lookups, for tests and benches.
    pub(super) asked: AtomicU64,
    /// Locked after the filter when both are (see [`Known`]).
    known: std::sync::Mutex<Known>,
}

impl ReplicaFilter {
    pub(super) fn pending() -> ReplicaFilter {
        ReplicaFilter {
            filter: RwLock::new(Filter::pending()),
            upto: tokio::sync::Mutex::new(0),
            building: AtomicBool::new(false),
            asked: AtomicU64::new(0),
            known: std::sync::Mutex::new(Known::default()),
        }
    }

    pub(super) fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember `entry` (its fingerprints `prints`) as found: those no other entry holds now
    /// answer later lookups. Nothing while the filter is pending.
    pub(super) fn found(&self, entry: &Entry, prints: &[u64], sole: &mut Vec<u64>) {
        let filter = self.read();
        sole.clear();
        filter.sole(prints, sole);
        if !sole.is_empty() {
            self.known().remember(entry, sole);
        }
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, Filter> {
        self.filter.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_ready(&self) -> bool {
        self.read().is_ready()
    }

    /// Build a filter of every entry in the tables, then swap it in. Tried again while the
    /// database is down: until it is in place, lookups ask PostgreSQL
    /// everything, which is slow but exact.
    pub(super) fn spawn_build(
        self: &std::sync::Arc<Self>,
        db: std::sync::Arc<Db>,
        runtime: &tokio::runtime::Handle,
    ) {
        if self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        runtime.spawn(async move {
            // 5 s, doubling to a minute: a database down for hours is not a warning every 5 s.
            let mut wait = 5;
            loop {
                match me.build(&db).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_s = wait, "provenance ledger: the replica's filter could not be built; lookups ask PostgreSQL every fingerprint until it is");
                        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                        wait = (wait * 2).min(60);
                    }
                }
            }
            me.building.store(false, Ordering::Release);
        });
    }

    async fn build(&self, db: &Db) -> Result<(), DbError> {
        db.migrate().await?;
        let client = db.client().await?;
        // Sized from the entries' own counts (their bodies, not the lists they will be read
        // with), or from what the filter in place holds when that is more.
        let count: i64 = db
            .note(
                client
                    .query_one(
                        "SELECT coalesce(sum((body->>'fingerprints')::bigint), 0)::bigint
                         FROM aigate_provenance_entries",
                        &[],
                    )
                    .await,
            )?
            .get(0);
        let held = self.read().items;
        let mut filter = Filter::with_capacity(u64::try_from(count).unwrap_or(0).max(held));
        let mut upto = 0;
        loop {
            let page = next_page(db, &client, upto).await?;
            let Some(last) = page.last() else { break };
            upto = last.0;
            for (_, prints) in &page {
                filter.insert(prints);
            }
        }
        // Entries committed while it read are after `upto`: the next catch-up adds them.
        let mut at = self.upto.lock().await;
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) = filter;
        *at = upto;
        tracing::info!(
            entries_upto = upto,
            fingerprints = self.read().items,
            "provenance ledger: the replica's filter is ready"
        );
        Ok(())
    }

    /// Add the entries committed since the last catch-up (every replica's). Nothing while the
    /// filter is pending: the build reads them. Asks for a larger build once it is full.
    pub(super) async fn catch_up(
        self: &std::sync::Arc<Self>,
        db: &std::sync::Arc<Db>,
        client: &tokio_postgres::Client,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), DbError> {
        let mut at = self.upto.lock().await;
        if !self.is_ready() {
            return Ok(());
        }
        // The sequence's last number, one row: when no entry was numbered after the filter's
        // last, there is nothing to read, and the query for entries after it (which plans and
        // probes every day's partition, tens of milliseconds with a year of them) is spared.
        let drawn: i64 = db
            .note(
                client
                    .query_one(
                        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                         FROM aigate_provenance_entries_seq",
                        &[],
                    )
                    .await,
            )?
            .get(0);
        if drawn <= *at {
            return Ok(());
        }
        loop {
            let page = next_page(db, client, *at).await?;
            let Some(last) = page.last() else { break };
            let mut filter = self.filter.write().unwrap_or_else(|p| p.into_inner());
            let mut known = self.known();
            for (_, prints) in &page {
                filter.insert(prints);
                known.forget(prints);
            }
            *at = last.0;
        }
        drop(at);
        let full = {
            let f = self.read();
            f.items > f.capacity
        };
        if full {
            self.spawn_build(db.clone(), runtime);
        }
        Ok(())
    }
}

/// Up to [`PAGE`] entries after `after`, in `seq` order, with their fingerprints. An entry
/// written by a replica on the release before `prints` (a rolling upgrade) has its fingerprints
/// read from the day-partitioned table that release writes them to (migration 7 forwards them
/// from there to the index lookups ask).
async fn next_page(
    db: &Db,
    client: &tokio_postgres::Client,
    after: i64,
) -> Result<Vec<(i64, Vec<u64>)>, DbError> {
    let rows = db.note(
        client
            .query(
                "SELECT seq, prints, id, time FROM aigate_provenance_entries
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &PAGE],
            )
            .await,
    )?;
    let mut page = Vec::with_capacity(rows.len());
    for r in &rows {
        let prints: Vec<i64> = match r.get::<_, Option<Vec<i64>>>(1) {
            Some(p) => p,
            None => db
                .note(
                    client
                        .query(
                            "SELECT hash FROM aigate_provenance_fingerprints
                             WHERE entry_id = $1 AND time = $2",
                            &[
                                &r.get::<_, String>(2),
                                &r.get::<_, std::time::SystemTime>(3),
                            ],
                        )
                        .await,
                )?
                .iter()
                .map(|f| f.get(0))
                .collect(),
        };
        page.push((
            r.get::<_, i64>(0),
            prints.into_iter().map(|h| h as u64).collect(),
        ));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            time: "2026-12-05T10:00:00.000Z".into(),
            time_ms: 0,
            user: "sam".into(),
            tool: "claude-code".into(),
            vendor: "anthropic".into(),
            model: None,
            workflow: None,
            exemption: None,
            fingerprints: 3,
            chars: 100,
            truncated: false,
        }
    }

    /// A scan finds the same entry in lookup after lookup: it is kept once, what a later
    /// entry shares is forgotten, and a full store starts again rather than grow.
    #[test]
    fn an_entry_found_again_is_remembered_once_and_forgotten_prints_stop_answering() {
        let mut k = Known::default();
        k.remember(&entry("a"), &[1, 2, 3]);
        k.remember(&entry("a"), &[1, 2, 3]);
        k.remember(&entry("b"), &[7]);
        assert_eq!(k.entries.len(), 2);
        assert_eq!(k.entry_of(2).map(|e| e.id.as_str()), Some("a"));
        k.forget(&[2, 9]);
        assert!(k.entry_of(2).is_none());
        assert_eq!(k.entry_of(3).map(|e| e.id.as_str()), Some("a"));
        for i in 0..KNOWN_ENTRIES as u64 {
            k.remember(&entry(&format!("e{i}")), &[1_000 + i]);
        }
        assert!(k.entries.len() < KNOWN_ENTRIES, "{}", k.entries.len());
        assert!(k.entry_of(7).is_none(), "the store started again");
    }
}
