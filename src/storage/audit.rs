//! The audit log in PostgreSQL: every replica's file, shipped to one table.
//!
//! The replica's file stays the primary log, written before each response completes; a shipper
//! task copies its complete lines, in order, to `aigate_audit` in batches, so the data path
//! never waits for the database and a database outage loses nothing (shipping resumes from the
//! table's last `seq` for this replica). Each line goes in exactly as sealed, so every replica's
//! chain verifies in the table as it does in its file.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::partitions::DayPartitions;
use super::{Db, DbError};
use crate::audit::chain::{self, ChainError, ChainHead, ChainProblem};
use crate::audit::query::{Entry, Filter, Groups, Summary};

const BATCH: usize = 1000;
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The advisory lock that serialises partition creation across replicas.
const PARTITION_LOCK: i64 = 0x6169_6761_7465_7061;

/// What the shipper reads of a line (records are flat: chain fields beside the record's).
#[derive(serde::Deserialize)]
struct Head<'a> {
    seq: i64,
    time: &'a str,
}

/// The last `seq` of this replica that the table holds, as the shipper last saw it: the
/// gateway's shutdown waits on it, so its last checkpoint reaches the table before exit.
pub type Shipped = tokio::sync::watch::Sender<u64>;

/// Ship the replica's audit file for as long as the gateway runs.
pub async fn ship(db: Arc<Db>, path: PathBuf, shipped: Arc<Shipped>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if let Err(e) = ship_session(&db, &path, &shipped).await {
            tracing::warn!(error = %e, retry_in = ?backoff, "shipping the audit log to PostgreSQL paused");
        } else {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn ship_session(db: &Db, path: &std::path::Path, shipped: &Shipped) -> Result<(), DbError> {
    db.migrate().await?;
    let client = db.client().await?;
    let last: i64 = db
        .note(
            client
                .query_one(
                    "SELECT coalesce(max(seq), 0) FROM aigate_audit WHERE replica = $1",
                    &[&&**db.replica()],
                )
                .await,
        )?
        .get(0);
    let mut last = last;
    shipped.send_replace(u64::try_from(last).unwrap_or(0));
    let mut reader =
        Tail::open_series(path, last).map_err(|e| DbError::Unavailable(e.to_string()))?;
    let days = DayPartitions::new("aigate_audit", PARTITION_LOCK);
    loop {
        let batch = reader
            .next_batch()
            .map_err(|e| DbError::Unavailable(format!("reading {}: {e}", path.display())))?;
        if batch.is_empty() {
            // The file was rotated (or moved) and this one is done: go on with the next.
            if reader.superseded(path) {
                reader = Tail::open_series(path, last)
                    .map_err(|e| DbError::Unavailable(e.to_string()))?;
                continue;
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        let times: Vec<&str> = batch.iter().map(|(_, time, _)| time.as_str()).collect();
        days.ensure(db, &client, &times).await?;
        let seqs: Vec<i64> = batch.iter().map(|b| b.0).collect();
        let times: Vec<&str> = batch.iter().map(|b| b.1.as_str()).collect();
        let lines: Vec<&str> = batch.iter().map(|b| b.2.as_str()).collect();
        db.note(
            client
                .execute(
                    "INSERT INTO aigate_audit (replica, seq, time, line)
                     SELECT $1, s, t::timestamptz, l FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS u(s, t, l)
                     ON CONFLICT DO NOTHING",
                    &[&&**db.replica(), &seqs, &times, &lines],
                )
                .await,
        )?;
        reader.commit();
        last = seqs.last().copied().unwrap_or(last);
        shipped.send_replace(u64::try_from(last).unwrap_or(0));
    }
}

/// Complete lines of the audit file after a given `seq`.
struct Tail {
    reader: BufReader<std::fs::File>,
    /// Where the lines handed out by the last batch end.
    pending: u64,
    committed: u64,
}

impl Tail {
    /// Open the file of a rotated series that holds the records after `after_seq`: a rotated
    /// file (named by its first seq) when shipping fell behind a rotation, else the active one.
    fn open_series(active: &std::path::Path, after_seq: i64) -> std::io::Result<Tail> {
        let want = u64::try_from(after_seq).unwrap_or(0) + 1;
        let rotated = crate::audit::rotated::rotated_files(active);
        // The newest rotated file that starts at or before `want`, unless the active file does.
        let active_first = std::fs::File::open(active).ok().and_then(|f| {
            let mut line = Vec::new();
            BufReader::new(f).read_until(b'\n', &mut line).ok()?;
            let head = serde_json::from_slice::<Head>(&line).ok()?;
            u64::try_from(head.seq).ok()
        });
        let from_rotated = rotated
            .iter()
            .rev()
            .find(|(first, _)| *first <= want)
            .filter(|_| active_first.is_none_or(|a| a > want));
        match from_rotated {
            Some((_, file)) => Tail::open(file, after_seq),
            None => Tail::open(active, after_seq),
        }
    }

    /// Whether a newer file follows this one: it is not the one at the active path any more.
    fn superseded(&self, active: &std::path::Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(active), self.reader.get_ref().metadata()) {
                (Ok(a), Ok(ours)) => (a.dev(), a.ino()) != (ours.dev(), ours.ino()),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = active;
            false
        }
    }

    fn open(path: &std::path::Path, after_seq: i64) -> std::io::Result<Tail> {
        let file = std::fs::File::open(path)?;
        let mut tail = Tail {
            reader: BufReader::new(file),
            pending: 0,
            committed: 0,
        };
        // Skip what the table already has: a binary search gets close (a session starts at
        // every reconnect, and the file can be gigabytes), a scan finishes.
        tail.committed = tail.near(after_seq)?;
        tail.reader.seek(SeekFrom::Start(tail.committed))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = tail.reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            let seq = serde_json::from_str::<Head>(&line).map_or(0, |h| h.seq);
            if seq > after_seq {
                break;
            }
            tail.committed += n as u64;
        }
        tail.pending = tail.committed;
        tail.reader.seek(SeekFrom::Start(tail.committed))?;
        Ok(tail)
    }

    /// A line start at most `NEAR` bytes before the first line with a `seq` above `after_seq`
    /// (or 0). Lines are in `seq` order; a probe that lands on a line that is not a record
    /// only makes the final scan longer.
    fn near(&mut self, after_seq: i64) -> std::io::Result<u64> {
        const NEAR: u64 = 64 * 1024;
        let (mut lo, mut hi) = (0, self.reader.get_ref().metadata()?.len());
        // Bytes, not a String: a probe can land inside a multi-byte character.
        let mut line = Vec::new();
        while hi - lo > NEAR {
            let mid = lo + (hi - lo) / 2;
            self.reader.seek(SeekFrom::Start(mid))?;
            // The rest of the line `mid` falls in, then the next whole line.
            let skipped = self.reader.read_until(b'\n', &mut line)? as u64;
            line.clear();
            self.reader.read_until(b'\n', &mut line)?;
            let seq = if line.ends_with(b"\n") {
                serde_json::from_slice::<Head>(&line).ok().map(|h| h.seq)
            } else {
                None
            };
            line.clear();
            match seq {
                // Every line up to this one is already in the table.
                Some(seq) if seq <= after_seq => lo = mid + skipped,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    fn next_batch(&mut self) -> std::io::Result<Vec<(i64, String, String)>> {
        self.reader.seek(SeekFrom::Start(self.committed))?;
        self.pending = self.committed;
        let mut out = Vec::new();
        let mut line = String::new();
        while out.len() < BATCH {
            line.clear();
            let n = self.reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                // Not yet complete: the writer is mid-line, or this is the end.
                break;
            }
            self.pending += n as u64;
            let text = line.trim_end_matches('\n');
            match serde_json::from_str::<Head>(text) {
                Ok(h) => out.push((h.seq, h.time.to_string(), text.to_string())),
                Err(_) => tracing::warn!("an audit line that is not a record was not shipped"),
            }
        }
        Ok(out)
    }

    fn commit(&mut self) {
        self.committed = self.pending;
    }
}

/// What a replica's checkpoints in the table say: how many, how many signatures verify (by
/// the pinned key, or each by the key it names), and the first that does not.
#[derive(Debug, Default)]
pub struct Checkpoints {
    pub count: u64,
    pub valid: u64,
    pub last: Option<u64>,
    pub key_id: Option<String>,
    pub problem: Option<String>,
}

/// Every checkpoint record of `replica`, checked: it names the record before it (its `prev`),
/// and its signature verifies. The chain itself is `verify`'s.
pub async fn checkpoints(
    db: &Db,
    replica: &str,
    key: Option<&crate::audit::checkpoint::PublicKey>,
) -> Result<Checkpoints, DbError> {
    use crate::audit::checkpoint::{Signature, of_record};
    let client = db.client().await?;
    let mut out = Checkpoints::default();
    let mut after: i64 = 0;
    loop {
        let rows = db.note(
            client
                .query(
                    "SELECT seq, line FROM aigate_audit WHERE replica = $1 AND seq > $2
                     AND line LIKE '%\"reason\":\"audit_checkpoint\"%' ORDER BY seq LIMIT 1000",
                    &[&replica, &after],
                )
                .await,
        )?;
        if rows.is_empty() {
            return Ok(out);
        }
        for row in &rows {
            after = row.get(0);
            let line: &str = row.get(1);
            let Some((stored, cp)) =
                serde_json::from_str::<crate::audit::record::StoredRecord>(line)
                    .ok()
                    .and_then(|r| of_record(&r.record).map(|cp| (r, cp)))
            else {
                continue;
            };
            out.count += 1;
            let problem = if cp.seq + 1 != stored.seq || cp.hash != stored.prev {
                Some(format!(
                    "checkpoint at seq {} claims seq {} with another hash: forged",
                    stored.seq, cp.seq
                ))
            } else {
                match cp.check(key, stored.record.replica.as_deref()) {
                    Signature::Valid => None,
                    Signature::OtherKey => Some(format!(
                        "checkpoint at seq {} is signed by key {}, not by the pinned key: forged",
                        stored.seq, cp.key_id
                    )),
                    Signature::Invalid => Some(format!(
                        "checkpoint at seq {}: its signature does not verify: forged or edited",
                        stored.seq
                    )),
                }
            };
            match problem {
                Some(p) => {
                    out.problem.get_or_insert(p);
                }
                None => {
                    out.valid += 1;
                    out.last = Some(cp.seq);
                    out.key_id = Some(cp.key_id);
                }
            }
        }
    }
}

/// The newest checkpoint of `replica` in the table: a copy of it outside the gateway's disk, so
/// a log cut there is named (`audit verify` compares the file with it).
pub async fn newest_checkpoint(
    db: &Db,
    replica: &str,
) -> Result<Option<crate::audit::checkpoint::Saved>, DbError> {
    let client = db.client().await?;
    // Newest first along the (replica, seq) key; the LIKE only filters what the index yields.
    let row = db.note(
        client
            .query_opt(
                "SELECT line FROM aigate_audit WHERE replica = $1
                 AND line LIKE '%\"reason\":\"audit_checkpoint\"%' ORDER BY seq DESC LIMIT 1",
                &[&replica],
            )
            .await,
    )?;
    Ok(row.and_then(|r| {
        let line: &str = r.get(0);
        crate::audit::checkpoint::saved_from_line(line.as_bytes())
    }))
}

/// Each replica's chain in the table, checked as `audit verify` checks a file.
pub async fn verify(db: &Db) -> Result<Vec<(String, Result<ChainHead, ChainError>)>, DbError> {
    let client = db.client().await?;
    let replicas: Vec<String> = db
        .note(
            client
                .query(
                    "SELECT DISTINCT replica FROM aigate_audit ORDER BY replica",
                    &[],
                )
                .await,
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for replica in replicas {
        let mut head = ChainHead::default();
        let mut result = Ok(());
        let mut after: i64 = 0;
        let mut row_no = 0usize;
        'pages: loop {
            let rows = db.note(
                client
                    .query(
                        "SELECT seq, line FROM aigate_audit WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT 10000",
                        &[&replica, &after],
                    )
                    .await,
            )?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                row_no += 1;
                after = row.get(0);
                let line: &str = row.get(1);
                match chain::check_line(&head, line) {
                    Ok((seq, hash)) => {
                        head.records += 1;
                        head.last_seq = seq;
                        head.last_hash = hash;
                    }
                    Err(problem) => {
                        result = Err(ChainError {
                            line: row_no,
                            problem,
                        });
                        break 'pages;
                    }
                }
            }
        }
        out.push((replica, result.map(|()| head)));
    }
    Ok(out)
}

/// The admin API's newest-first page, from every replica. The cursor is the table's `pos`.
pub async fn newest_first(
    db: &Db,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Entry>, Option<u64>), DbError> {
    let mut out = Vec::new();
    let mut next = None;
    walk_newest(db, filter, before, |pos, entry| {
        out.push(entry);
        if out.len() == limit {
            next = u64::try_from(pos).ok();
            return false;
        }
        true
    })
    .await?;
    Ok((out, next))
}

/// The admin API's `group_by`: counts over every replica's matching records.
pub async fn summarize(
    db: &Db,
    filter: &Filter,
    group_by: Vec<&'static str>,
    limit: usize,
) -> Result<Groups, DbError> {
    let mut summary = Summary::new(group_by);
    walk_newest(db, filter, None, |_, entry| {
        summary.add(&entry);
        true
    })
    .await?;
    Ok(summary.largest(limit))
}

/// Every row that passes `filter`, newest first, from every replica (a call joined into one
/// row): what the console's Overview counts when the audit table is in PostgreSQL, so that
/// each replica's Overview shows all of them, not its own share.
pub async fn each_row(
    db: &Db,
    filter: &Filter,
    mut visit: impl FnMut(&Entry),
) -> Result<(), DbError> {
    walk_newest(db, filter, None, |_, entry| {
        visit(&entry);
        true
    })
    .await
}

/// The records of call `id` (its decision, progress and outcome, or its one record), newest
/// first, as written, from whichever replica wrote them: the console's record page with the
/// audit table in PostgreSQL. `at` is the call's time: every record of a call carries the
/// call's start time (audit/calls.rs), so only the rows of that moment are read, in one day's
/// partition. `scope`'s `users` applies.
pub async fn call_records(
    db: &Db,
    scope: &Filter,
    id: &str,
    at: SystemTime,
    max: usize,
) -> Result<Vec<Entry>, DbError> {
    let client = db.client().await?;
    let from = at
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let to = at + Duration::from_secs(1);
    // Every record writes its id as `"id":"…"` (audit/json.rs); the rows found are checked
    // again once parsed, so a value that merely contains it is not taken.
    let needle = format!("\"id\":{}", serde_json::Value::from(id));
    let limit = i64::try_from(max.saturating_mul(4)).unwrap_or(i64::MAX);
    let rows = db.note(
        client
            .query(
                "SELECT line FROM aigate_audit
                 WHERE time >= $1 AND time < $2 AND strpos(line, $3) > 0
                 ORDER BY pos DESC LIMIT $4",
                &[&from, &to, &needle, &limit],
            )
            .await,
    )?;
    Ok(rows
        .iter()
        .filter_map(|row| Entry::parse(row.get(0)))
        .filter(|e| e.text("id") == id)
        .filter(|e| {
            scope
                .users
                .as_ref()
                .is_none_or(|u| u.contains(e.text("user").as_ref()))
        })
        .take(max)
        .collect())
}

/// Hand the records that pass `filter` to `visit`, newest first, from before `before` (a `pos`),
/// until `visit` says stop. The filter's time window narrows the rows the table reads.
async fn walk_newest(
    db: &Db,
    filter: &Filter,
    before: Option<u64>,
    mut visit: impl FnMut(i64, Entry) -> bool,
) -> Result<(), DbError> {
    let client = db.client().await?;
    let cursor = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    // Rows above the cursor are read too, only to join: a call shown on an earlier page by its
    // outcome must not come back on this one as open by its decision (audit/calls.rs). A slim
    // outcome's row comes out once its decision (or progress) is read.
    let mut before = i64::MAX;
    let mut calls = crate::audit::calls::NewestFirst::default();
    let since = filter.since.unwrap_or(SystemTime::UNIX_EPOCH);
    let until = filter
        .until
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(86_400));
    loop {
        let rows = db.note(
            client
                .query(
                    "SELECT pos, line FROM aigate_audit
                     WHERE pos < $1 AND time >= $2 AND time < $3
                     ORDER BY pos DESC LIMIT 500",
                    &[&before, &since, &until],
                )
                .await,
        )?;
        let Some(last) = rows.last() else {
            break;
        };
        before = last.get(0);
        for row in &rows {
            let line: &str = row.get(1);
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            calls.push(Placed(row.get(0), entry));
            while let Some(Placed(pos, entry)) = calls.ready() {
                if pos < cursor && filter.accepts(&entry) && !visit(pos, entry) {
                    return Ok(());
                }
            }
        }
    }
    for Placed(pos, entry) in calls.finish() {
        if pos < cursor && filter.accepts(&entry) && !visit(pos, entry) {
            break;
        }
    }
    Ok(())
}

/// A row of the table and its `pos`, joined as a record is (audit/calls.rs).
struct Placed(i64, Entry);

impl crate::audit::calls::Part for Placed {
    fn id(&self) -> &str {
        self.1.id()
    }
    fn kind(&self) -> Option<crate::audit::Kind> {
        self.1.kind()
    }
    fn outcome_follows(&self) -> bool {
        self.1.outcome_follows()
    }
    fn started(&self) -> (String, u64) {
        self.1.started()
    }
    fn into_row(self) -> Self {
        Placed(self.0, self.1.into_row())
    }
    fn is_slim(&self) -> bool {
        self.1.is_slim()
    }
    fn complete_from(&mut self, earlier: &Self) {
        self.1.complete_from(&earlier.1);
    }
}

/// A chain problem as `audit verify` words it, for one replica.
pub fn describe(replica: &str, e: &ChainError) -> String {
    let what = match e.problem {
        ChainProblem::Unreadable { .. } => "row is not an audit record".to_string(),
        _ => e.to_string(),
    };
    format!("replica {replica}: {what}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::audit::{AuditRecord, Kind};

    /// A log of `n` records whose paths are mostly three-byte characters (so probes land inside
    /// them), with a line that is not a record after `seq` 700.
    fn log(n: i64) -> (tempfile::TempDir, PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (mut out, mut starts) = (Vec::new(), Vec::new());
        let mut prev = chain::GENESIS.to_string();
        for seq in 1..=n {
            let mut r = AuditRecord::new(
                format!("id-{seq}"),
                Kind::Request,
                "127.0.0.1:1".into(),
                "jürgen".into(),
                "api.anthropic.com".into(),
                443,
            );
            r.path = Some(format!("/v1/{}", "€".repeat(40 + (seq % 7) as usize)));
            starts.push(out.len() as u64);
            prev = chain::seal(&r, seq as u64, &prev, &mut out).unwrap();
            if seq == 700 {
                out.extend_from_slice("not a record: ünïcödé\n".as_bytes());
            }
        }
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&out)
            .unwrap();
        (dir, path, starts)
    }

    /// A rotated series: `audit.000000000001.jsonl` (1..=10), `audit.000000000011.jsonl`
    /// (11..=20), `audit.jsonl` (21..=25). Shipping that fell behind a rotation resumes in the
    /// rotated file, and moves on to the next file at its end.
    #[test]
    fn resumes_in_the_rotated_file_that_holds_the_next_seq() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        let mut prev = chain::GENESIS.to_string();
        for (name, seqs) in [
            ("audit.000000000001.jsonl", 1..=10),
            ("audit.000000000011.jsonl", 11..=20),
            ("audit.jsonl", 21..=25),
        ] {
            let mut out = Vec::new();
            for seq in seqs {
                let r = AuditRecord::new(
                    format!("id-{seq}"),
                    Kind::Request,
                    "127.0.0.1:1".into(),
                    "a".into(),
                    "h".into(),
                    443,
                );
                prev = chain::seal(&r, seq, &prev, &mut out).unwrap();
            }
            std::fs::write(dir.path().join(name), out).unwrap();
        }
        let first = |after: i64| {
            let mut tail = Tail::open_series(&active, after).unwrap();
            let batch = tail.next_batch().unwrap();
            (batch.first().map(|b| b.0), tail.superseded(&active))
        };
        assert_eq!(first(0), (Some(1), true));
        assert_eq!(first(9), (Some(10), true));
        assert_eq!(first(10), (Some(11), true));
        assert_eq!(first(19), (Some(20), true));
        assert_eq!(first(20), (Some(21), false));
        assert_eq!(first(25), (None, false));
    }

    #[test]
    fn resumes_after_the_tables_last_seq_without_reading_the_file_from_the_start() {
        let n = 3_000;
        let (_dir, path, starts) = log(n);
        for after in [0, 1, 2, 699, 700, 701, 1_500, 2_999, n, n + 10] {
            let mut tail = Tail::open(&path, after).unwrap();
            let first = tail.next_batch().unwrap().first().map(|b| b.0);
            let want = (after < n).then_some(after + 1);
            assert_eq!(first, want, "after seq {after}");
            // The search got within reach of the line; the scan did the rest.
            let exact = usize::try_from(after)
                .ok()
                .and_then(|i| starts.get(i).copied())
                .unwrap_or_else(|| std::fs::metadata(&path).unwrap().len());
            let near = tail.near(after).unwrap();
            assert!(
                near <= exact && exact - near <= 64 * 1024 + 4096,
                "{after}: {near} {exact}"
            );
        }
    }
}
