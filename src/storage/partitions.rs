//! Day partitions of the shared tables (the audit table, the ledger's entries), bounded by the
//! UTC day whatever the server's time zone (migrations/0008_day_partitions_in_utc.sql).
//!
//! A row's partition is made when the first row that needs it is written: rows are checked
//! against the partitions this replica already knows, and only a row outside all of them asks
//! PostgreSQL, which makes the partition (or names the one another replica made) under the
//! table's advisory lock and answers its bounds.

use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;

use super::{Db, DbError};

/// The partitions of one table this replica knows exist, as `[start, end)` in Unix ms.
pub struct DayPartitions {
    parent: &'static str,
    /// The advisory lock writers of `parent` take to make partitions, the one releases before
    /// migration 8 took too.
    lock: i64,
    known: Mutex<Vec<(i64, i64)>>,
}

impl DayPartitions {
    pub const fn new(parent: &'static str, lock: i64) -> DayPartitions {
        DayPartitions {
            parent,
            lock,
            known: Mutex::new(Vec::new()),
        }
    }

    /// Makes sure a partition holds a row at each of `times` (RFC 3339, the text inserted).
    pub async fn ensure(
        &self,
        db: &Db,
        client: &tokio_postgres::Client,
        times: &[&str],
    ) -> Result<(), DbError> {
        for &time in times {
            // A time Rust cannot read is still asked: PostgreSQL's reading is the one inserted.
            let at = time::OffsetDateTime::parse(time, &Rfc3339)
                .ok()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
            if at.is_some_and(|at| self.covers(at)) {
                continue;
            }
            let row = db.note(
                client
                    .query_one(
                        "SELECT (extract(epoch FROM lo) * 1000)::bigint,
                                (extract(epoch FROM hi) * 1000)::bigint
                         FROM aigate_day_partition($1::text::regclass, $2::text::timestamptz, $3)",
                        &[&self.parent, &time, &self.lock],
                    )
                    .await,
            )?;
            self.lock_known().push((row.get(0), row.get(1)));
        }
        Ok(())
    }

    /// Forget the partitions that end by `before_ms`, which a sweep dropped.
    pub fn forget_before(&self, before_ms: i64) {
        self.lock_known().retain(|&(_, end)| end > before_ms);
    }

    /// The partitions of the table that end by `before_ms` (all their rows are older), by name.
    pub async fn ending_by(
        &self,
        db: &Db,
        client: &tokio_postgres::Client,
        before_ms: i64,
    ) -> Result<Vec<String>, DbError> {
        ending_by(db, client, self.parent, before_ms).await
    }

    fn covers(&self, at: i64) -> bool {
        self.lock_known()
            .iter()
            .any(|&(start, end)| start <= at && at < end)
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, Vec<(i64, i64)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The partitions of `parent` that end by `before_ms`, by name: those a retention sweep drops
/// whole. Read from their bounds, so partitions made in another time zone, or cut short to fill
/// what one left, are dropped when all of their rows are old enough and not before.
pub async fn ending_by(
    db: &Db,
    client: &tokio_postgres::Client,
    parent: &str,
    before_ms: i64,
) -> Result<Vec<String>, DbError> {
    let rows = db.note(
        client
            .query(
                "SELECT name FROM aigate_partition_bounds($1::text::regclass)
                 WHERE hi <= 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'
                 ORDER BY lo",
                &[&parent, &before_ms],
            )
            .await,
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
