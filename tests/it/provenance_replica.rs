//! The PostgreSQL ledger's replica filter (src/provenance/ledger/replica_filter.rs), on a real
//! PostgreSQL: a replica's filtered lookup answers as the shared tables do, for every replica's
//! entries, those written after its filter was built included, while asking PostgreSQL only a
//! fraction of the fingerprints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use aigate::config::{PasswordSource, PostgresConfig};
use aigate::provenance::ledger::postgres::PostgresLedger;
use aigate::provenance::ledger::{Entry, Ledger, Matches};
use aigate::storage::Db;

fn db(pg: &crate::postgres::Postgres, replica: &str) -> Arc<Db> {
    Db::new(&PostgresConfig {
        url: pg.url(),
        password: PasswordSource::None,
        replica_id: replica.into(),
        resync_interval: Duration::from_secs(30),
        audit: false,
        pool_size: 4,
        ca_file: None,
    })
    .unwrap()
}

fn entry(id: &str, fingerprints: usize) -> Entry {
    Entry {
        id: id.into(),
        time: "2026-12-05T10:00:00.000Z".into(),
        time_ms: 1_796_464_800_000,
        user: "sam".into(),
        tool: "claude-code".into(),
        vendor: "anthropic".into(),
        model: None,
        workflow: None,
        exemption: None,
        fingerprints: fingerprints as u64,
        chars: 1000,
        truncated: false,
    }
}

/// SplitMix64: fingerprints as uniform as keyed hashes, the same in every run.
fn prints(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

/// `count` entries of 200 fingerprints, each sharing 20 with the one before (code shared
/// between two answers): ids `{tag}-0`….
fn answers(tag: &str, seed: u64, count: usize) -> Vec<(Entry, Vec<u64>)> {
    let mut out: Vec<(Entry, Vec<u64>)> = Vec::new();
    for i in 0..count {
        let mut p = prints(seed + i as u64 * 1_000, 180);
        match out.last() {
            Some((_, before)) => p.extend_from_slice(&before[..20]),
            None => p.extend(prints(seed + 999_999, 20)),
        }
        out.push((entry(&format!("{tag}-{i}"), p.len()), p));
    }
    out
}

/// The ledgers' runtime: their calls block on it, so the test's own thread is not one of its.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_ready(l: &PostgresLedger) {
    for _ in 0..400 {
        if l.filter_ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the replica's filter was not built in 10 s");
}

/// The one number `sql` selects.
async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn sorted(mut m: Matches) -> (Vec<(u64, String)>, Vec<String>) {
    m.hits.sort();
    let mut ids: Vec<String> = m.entries.into_keys().collect();
    ids.sort();
    (m.hits, ids)
}

/// Two gateways' ledgers (replicas a and b, each with its filter) and a scan's (none) on one
/// PostgreSQL. Whatever either replica wrote, before or after b's filter was built, b answers
/// exactly as the tables do: the same hits (shared fingerprints naming both entries) and
/// entries. It asks PostgreSQL few of them: absent ones stop at the filter, and an entry found
/// answers its own, in this lookup and the next; its screen (`may-hold`) drops none of them.
/// Fails if a lookup or a screen does not first add the
/// entries committed since the last one, if an entry found answered fingerprints another entry
/// holds too, or if one remembered still does once another entry holds them.
#[test]
fn a_replica_s_filter_answers_as_the_tables_do_for_every_replica_s_writes() {
    let pg = crate::postgres::Postgres::start();
    let rt = runtime();
    let a = PostgresLedger::filtered(db(&pg, "a"), rt.handle().clone());
    // Written before b exists: b's build reads them.
    let early = answers("early", 1, 20);
    a.record_many(&early).unwrap();
    let b = PostgresLedger::filtered(db(&pg, "b"), rt.handle().clone());
    let tables = PostgresLedger::new(db(&pg, "scan"), rt.handle().clone());
    wait_ready(&a);
    wait_ready(&b);

    let absent = prints(7_777_777, 5_000);
    let ask = |l: &PostgresLedger, q: &[u64]| sorted(l.find(q).unwrap());
    // b's answer, and how many fingerprints it asked PostgreSQL for it.
    let ask_b = |q: &[u64]| {
        let before = b.fingerprints_asked();
        let answer = ask(&b, q);
        (answer, b.fingerprints_asked() - before)
    };
    // Nothing but absent fingerprints: the filter stops nearly all of them.
    let (answer, asked) = ask_b(&absent);
    assert_eq!(answer, (vec![], vec![]));
    assert!(
        asked <= 50,
        "{asked} of 5,000 absent fingerprints were asked"
    );

    let mut query: Vec<u64> = absent.clone();
    query.extend(early.iter().flat_map(|(_, p)| p.iter().copied()));
    let want = ask(&tables, &query);
    assert_eq!(want.1.len(), 20);
    // 20 × 200 hits; 19 × 20 fingerprints are held by two entries.
    assert_eq!(want.0.len(), 20 * 200, "the tables' own answer");
    let shared = want.0.windows(2).filter(|w| w[0].0 == w[1].0).count();
    assert_eq!(shared, 19 * 20, "the tables' own answer");
    let (answer, asked) = ask_b(&query);
    assert_eq!(answer, want);
    // The 380 shared ones (and a few more: the first batches, what no entry found answered).
    assert!(
        (380..1_200).contains(&asked),
        "{asked} of 4,000 present fingerprints were asked"
    );

    // Asked again, b answers the entries it found from what it remembers of them: only the
    // shared fingerprints go to PostgreSQL.
    let (answer, asked) = ask_b(&query);
    assert_eq!(answer, want);
    assert!(
        (380..600).contains(&asked),
        "{asked} of 4,000 present fingerprints were asked again"
    );

    // After b's filter was built and caught up: a writes, and b writes its own. The first of
    // a's holds 30 fingerprints b remembers as early-0's alone: from then on both hold them.
    let mut late_a = answers("late-a", 50_000_000, 10);
    late_a[0].1.extend_from_slice(&early[0].1[..30]);
    late_a[0].0.fingerprints += 30;
    let late_b = answers("late-b", 60_000_000, 10);
    a.record_many(&late_a).unwrap();
    for (e, p) in &late_b {
        b.record(e, p).unwrap();
    }
    let mut query = absent;
    for (_, p) in early.iter().chain(&late_a).chain(&late_b) {
        query.extend_from_slice(p);
    }
    // b's screen (what a scan through b's admin API asks first, `may-hold`) takes in a's new
    // entries before it answers: it drops none of their fingerprints, and nearly every absent
    // one.
    let mut passed = Vec::new();
    b.may_hold(&query, &mut passed).unwrap();
    let mut held: Vec<u64> = early
        .iter()
        .chain(&late_a)
        .chain(&late_b)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    held.sort_unstable();
    held.dedup();
    assert!(passed.is_sorted());
    let dropped = held
        .iter()
        .filter(|h| passed.binary_search(h).is_err())
        .count();
    assert_eq!(
        dropped, 0,
        "fingerprints of entries b holds were screened out"
    );
    assert!(
        passed.len() - held.len() <= 50,
        "{} absent fingerprints passed the screen",
        passed.len() - held.len()
    );
    let want = ask(&tables, &query);
    assert_eq!(want.1.len(), 40);
    assert_eq!(ask(&b, &query), want);
    assert_eq!(ask(&a, &query), want);
    drop((a, b, tables));
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// An entry as a release before schema 7 wrote it: its fingerprints in the day-partitioned
/// table; schema 5's (`list` false) without the entry's list and `seq`, schema 6's with both.
async fn write_as_before_7(c: &tokio_postgres::Client, e: &Entry, prints: &[u64], list: bool) {
    let hashes: Vec<i64> = prints.iter().map(|h| *h as i64).collect();
    let body = serde_json::to_value(e).unwrap();
    if list {
        c.execute(
            "INSERT INTO aigate_provenance_entries (id, time, replica, body, prints)
             VALUES ($1, $2::text::timestamptz, 'old', $3, $4)",
            &[&e.id, &e.time, &body, &hashes],
        )
        .await
        .unwrap();
    } else {
        c.execute(
            "INSERT INTO aigate_provenance_entries (id, time, replica, body)
             VALUES ($1, $2::text::timestamptz, 'old', $3)",
            &[&e.id, &e.time, &body],
        )
        .await
        .unwrap();
    }
    c.execute(
        "INSERT INTO aigate_provenance_fingerprints (hash, entry_id, time)
         SELECT h, $2, $3::text::timestamptz FROM UNNEST($1::bigint[]) AS u(h)",
        &[&hashes, &e.id, &e.time],
    )
    .await
    .unwrap();
}

/// The schema as a release before `version` left it: the migrations below it applied and
/// recorded, and the partitions of 5 December 2026 that release made.
async fn schema_before(c: &tokio_postgres::Client, version: i32) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.as_str() < format!("{version:04}").as_str())
        .collect();
    names.sort();
    for n in &names {
        c.batch_execute(&std::fs::read_to_string(dir.join(n)).unwrap())
            .await
            .unwrap();
    }
    c.batch_execute(&format!(
        "CREATE TABLE aigate_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO aigate_schema_migrations (version, name)
             SELECT v, 'before' FROM generate_series(1, {}) v;
         CREATE TABLE aigate_provenance_entries_20261205 PARTITION OF aigate_provenance_entries
             FOR VALUES FROM ('2026-12-05') TO ('2026-12-06');
         CREATE TABLE aigate_provenance_fingerprints_20261205 PARTITION OF aigate_provenance_fingerprints
             FOR VALUES FROM ('2026-12-05') TO ('2026-12-06');",
        version - 1
    ))
    .await
    .unwrap();
}

/// A ledger written before schema 6 (no `prints`, no `seq`): the migration fills both from
/// the fingerprint table, and a replica's filter then holds those entries, and one written
/// afterwards the old way, without its list.
#[test]
fn entries_written_before_the_replica_filter_are_in_it_after_the_migration() {
    let pg = crate::postgres::Postgres::start();
    let rt = runtime();
    let old = answers("old", 3, 5);
    rt.block_on(async {
        let c = pg.client().await;
        schema_before(&c, 6).await;
        for (e, p) in &old {
            write_as_before_7(&c, e, p, false).await;
        }
    });
    let a = PostgresLedger::filtered(db(&pg, "a"), rt.handle().clone());
    wait_ready(&a);
    let tables = PostgresLedger::new(db(&pg, "scan"), rt.handle().clone());
    let query: Vec<u64> = old.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let want = sorted(tables.find(&query).unwrap());
    assert_eq!(want.1.len(), 5);
    let before = a.fingerprints_asked();
    assert_eq!(sorted(a.find(&query).unwrap()), want);
    // The filter holds them (and their markers): an entry found answers its own.
    assert!(a.fingerprints_asked() - before < 400);
    // Schema 7 moved their fingerprints to the index by month and emptied the day table.
    let count = |sql: &str| rt.block_on(async { count(&pg.client().await, sql).await });
    assert_eq!(
        count("SELECT count(*) FROM aigate_provenance_fingerprints"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM aigate_provenance_prints_202612"),
        5 * 200
    );
    // Replicas still on releases 5 and 6 write one more each the old way (a rolling upgrade):
    // the day table forwards their fingerprints to the index, and the next lookup's catch-up
    // reads release 5's from the day table.
    let (e5, p5) = &answers("older", 4_000_000, 1)[0];
    let (e6, p6) = &answers("release-6", 5_000_000, 1)[0];
    rt.block_on(async {
        let c = pg.client().await;
        write_as_before_7(&c, e5, p5, false).await;
        write_as_before_7(&c, e6, p6, true).await;
    });
    let mut query = query;
    query.extend_from_slice(p5);
    query.extend_from_slice(p6);
    let want = sorted(tables.find(&query).unwrap());
    assert_eq!(want.1.len(), 7);
    assert_eq!(sorted(a.find(&query).unwrap()), want);
    assert_eq!(
        count("SELECT count(*) FROM aigate_provenance_prints"),
        7 * 200
    );
    rt.block_on(async {
        let c = pg.client().await;
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE cardinality(prints) = 200), count(DISTINCT seq)
                 FROM aigate_provenance_entries",
                &[],
            )
            .await
            .unwrap();
        // The migrations filled the five before them; release 5's after them has a `seq` and
        // no list, release 6's both.
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (6, 7));
    });
    drop((a, tables));
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Retention on the PostgreSQL ledger: entries go by the day, the fingerprint index by the
/// month (migration 7), once all of that month is too old. Until then the fingerprints of the
/// days swept in it are still in the index, and answer nothing, whether the tables are read
/// directly or through a replica whose filter still holds them.
#[test]
fn the_sweep_drops_days_of_entries_and_only_whole_months_of_fingerprints() {
    let pg = crate::postgres::Postgres::start();
    let rt = runtime();
    let on = |tag: &str, seed: u64, time: &str| {
        let mut set = answers(tag, seed, 2);
        for (e, _) in &mut set {
            e.time = time.into();
        }
        set
    };
    let october = on("oct", 1, "2026-10-20T10:00:00.000Z");
    let first = on("dec1", 100_000, "2026-12-01T10:00:00.000Z");
    let fifth = on("dec5", 200_000, "2026-12-05T10:00:00.000Z");
    let a = PostgresLedger::filtered(db(&pg, "a"), rt.handle().clone());
    let tables = PostgresLedger::new(db(&pg, "scan"), rt.handle().clone());
    let all: Vec<_> = october
        .iter()
        .chain(&first)
        .chain(&fifth)
        .cloned()
        .collect();
    a.record_many(&all).unwrap();
    wait_ready(&a);
    let query: Vec<u64> = all.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(sorted(tables.find(&query).unwrap()).1.len(), 6);
    let months = || {
        rt.block_on(async {
            let c = pg.client().await;
            let made = bounds(&c, "aigate_provenance_prints").await;
            made.into_iter().map(|(name, _)| name).collect::<Vec<_>>()
        })
    };
    assert_eq!(
        months(),
        [
            "aigate_provenance_prints_202610",
            "aigate_provenance_prints_202612"
        ]
    );

    // Everything before 3 December: October's days and month, and 1 December's day.
    assert_eq!(a.sweep(1_796_256_000_000).unwrap(), 4);
    assert_eq!(months(), ["aigate_provenance_prints_202612"]);
    let left = rt.block_on(async {
        let c = pg.client().await;
        count(
            &c,
            "SELECT count(*) FROM aigate_provenance_prints WHERE entry_id LIKE 'dec1-%'",
        )
        .await
    });
    assert_eq!(
        left,
        2 * 200,
        "1 December's fingerprints stay with their month"
    );
    let want = (
        {
            let mut hits: Vec<(u64, String)> = fifth
                .iter()
                .flat_map(|(e, p)| p.iter().map(|h| (*h, e.id.clone())))
                .collect();
            hits.sort();
            hits
        },
        vec!["dec5-0".to_string(), "dec5-1".to_string()],
    );
    for (who, l) in [("the tables", &tables), ("replica a", &a)] {
        let got = sorted(l.find(&query).unwrap());
        let swept = got.0.iter().filter(|h| !h.1.starts_with("dec5")).count();
        assert_eq!(swept, 0, "{who} answered hits of swept entries");
        assert!(got == want, "{who}: {} hits of {:?}", got.0.len(), got.1);
    }
    drop((a, tables));
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Migration 7 copies the day table into the month index, then empties it. A replica still on
/// release 6 that writes its fingerprints in between would lose them to the emptying: its write
/// waits for the migration instead, and once it commits goes to the index through the trigger.
#[test]
fn a_write_to_the_day_table_during_migration_7_waits_and_is_not_lost() {
    let pg = crate::postgres::Postgres::start();
    let rt = runtime();
    let (old, late) = (answers("old", 3, 2), answers("late", 9_000_000, 1));
    rt.block_on(async {
        let migrator = pg.client().await;
        schema_before(&migrator, 7).await;
        for (e, p) in &old {
            write_as_before_7(&migrator, e, p, true).await;
        }
        // The migration, stopped in its transaction right after its copy.
        let sql = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations/0007_provenance_prints_by_month.sql"),
        )
        .unwrap();
        let cut = sql.find("UPDATE aigate_provenance_entries e").unwrap();
        migrator.batch_execute("BEGIN").await.unwrap();
        migrator.batch_execute(&sql[..cut]).await.unwrap();

        // Release 6 writes the entry's row, then its fingerprints to the day table.
        let writer = pg.client().await;
        let (e, p) = &late[0];
        let hashes: Vec<i64> = p.iter().map(|h| *h as i64).collect();
        writer
            .execute(
                "INSERT INTO aigate_provenance_entries (id, time, replica, body, prints)
                 VALUES ($1, $2::text::timestamptz, 'old', $3, $4)",
                &[&e.id, &e.time, &serde_json::to_value(e).unwrap(), &hashes],
            )
            .await
            .unwrap();
        let write = "INSERT INTO aigate_provenance_fingerprints (hash, entry_id, time)
                     SELECT h, $2, $3::text::timestamptz FROM UNNEST($1::bigint[]) AS u(h)
                     ON CONFLICT DO NOTHING";
        writer
            .batch_execute("SET lock_timeout = '300ms'")
            .await
            .unwrap();
        let blocked = writer.execute(write, &[&hashes, &e.id, &e.time]).await;
        assert!(
            blocked.is_err(),
            "a write to the day table went through during the migration"
        );
        migrator.batch_execute(&sql[cut..]).await.unwrap();
        migrator.batch_execute("COMMIT").await.unwrap();
        writer
            .execute(write, &[&hashes, &e.id, &e.time])
            .await
            .unwrap();
        let indexed = count(&writer, "SELECT count(*) FROM aigate_provenance_prints").await;
        assert_eq!(
            indexed,
            3 * 200,
            "the month index after the migration and the write"
        );
    });
}

/// The ledger's partitions, with their bounds as PostgreSQL holds them, in UTC.
async fn bounds(c: &tokio_postgres::Client, parent: &str) -> Vec<(String, String)> {
    c.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    c.query(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = $1 ORDER BY 2",
        &[&parent],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Entries are partitioned by their UTC day whatever the server's time zone. A day partition
/// bounded by date literals is read in the session's zone: on a server east of UTC an entry late
/// in the UTC day then belongs to no partition, and on one west of it an entry early in the day
/// does, and its write fails (the day's table exists, so it was never made again). Also what an
/// earlier release made that way: the gap it leaves is filled, its overlap is not made twice,
/// and the sweep drops partitions by their bounds. Fails with partitions bounded in the
/// session's zone, or made once per named day.
#[test]
fn entries_are_written_at_any_hour_whatever_the_server_s_time_zone() {
    let pg = crate::postgres::Postgres::start();
    let rt = runtime();
    // One answer at each of `times`, each written on its own (ids `{tag}0`…); all of them.
    let write_at = |ledger: &PostgresLedger, tag: &str, seed: u64, times: &[&str]| {
        let mut written = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let mut set = answers(&format!("{tag}{i}"), seed + i as u64, 1);
            set[0].0.time = t.to_string();
            ledger.record_many(&set).expect(t);
            written.extend(set);
        }
        written
    };
    let zone = |z: &str| {
        let sql = format!("ALTER DATABASE postgres SET timezone TO '{z}'");
        rt.block_on(async { pg.client().await.batch_execute(&sql).await.unwrap() });
    };
    // A fresh ledger on a server in Tokyo (UTC+9), then one in Los Angeles (UTC-8).
    zone("Asia/Tokyo");
    let tokyo = PostgresLedger::new(db(&pg, "tokyo"), rt.handle().clone());
    let mut written = write_at(
        &tokyo,
        "t",
        1_000,
        &[
            "2026-12-01T00:00:00.000Z",
            "2026-12-01T14:59:59.999Z",
            "2026-12-01T15:00:00.000Z",
            "2026-12-01T23:59:59.999Z",
        ],
    );
    drop(tokyo);
    zone("America/Los_Angeles");
    let la = PostgresLedger::new(db(&pg, "la"), rt.handle().clone());
    written.extend(write_at(
        &la,
        "l",
        2_000,
        &[
            "2026-12-02T00:00:00.000Z",
            "2026-12-02T07:59:59.999Z",
            "2026-12-02T08:00:00.000Z",
        ],
    ));
    let c = rt.block_on(pg.client());
    assert_eq!(
        rt.block_on(bounds(&c, "aigate_provenance_entries")),
        [
            (
                "aigate_provenance_entries_20261201".to_string(),
                "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2026-12-02 00:00:00+00')"
                    .to_string()
            ),
            (
                "aigate_provenance_entries_20261202".to_string(),
                "FOR VALUES FROM ('2026-12-02 00:00:00+00') TO ('2026-12-03 00:00:00+00')"
                    .to_string()
            ),
        ]
    );

    // What an earlier release made on this server: 4 December in Tokyo's day (3 December 15:00
    // to 4 December 15:00 UTC), 5 December in Los Angeles' (8:00 to 8:00).
    rt.block_on(async {
        for (zone, day, from, to) in [
            ("Asia/Tokyo", "20261204", "2026-12-04", "2026-12-05"),
            (
                "America/Los_Angeles",
                "20261205",
                "2026-12-05",
                "2026-12-06",
            ),
        ] {
            c.batch_execute(&format!(
                "SET TIME ZONE '{zone}';
                 CREATE TABLE aigate_provenance_entries_{day} PARTITION OF aigate_provenance_entries
                 FOR VALUES FROM ('{from}') TO ('{to}')"
            ))
            .await
            .unwrap();
        }
    });
    written.extend(write_at(
        &la,
        "o",
        3_000,
        &[
            "2026-12-03T10:00:00.000Z", // before Tokyo's 4 December
            "2026-12-03T20:00:00.000Z", // Tokyo's 4 December
            "2026-12-04T16:00:00.000Z", // between Tokyo's 4 December and LA's 5 December
            "2026-12-05T07:59:59.999Z",
            "2026-12-06T07:00:00.000Z", // LA's 5 December
            "2026-12-06T09:00:00.000Z",
        ],
    ));
    let query: Vec<u64> = written
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let found = sorted(la.find(&query).unwrap()).1;
    assert_eq!(found.len(), written.len(), "{found:?}");
    let made = rt.block_on(bounds(&c, "aigate_provenance_entries"));
    let names: Vec<&str> = made.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "aigate_provenance_entries_20261201",
            "aigate_provenance_entries_20261202",
            "aigate_provenance_entries_20261203",
            "aigate_provenance_entries_20261204",
            "aigate_provenance_entries_20261204_1500",
            "aigate_provenance_entries_20261205_0000",
            "aigate_provenance_entries_20261205",
            "aigate_provenance_entries_20261206",
        ],
        "{made:#?}"
    );
    assert_eq!(
        made[2].1,
        "FOR VALUES FROM ('2026-12-03 00:00:00+00') TO ('2026-12-03 15:00:00+00')"
    );
    assert_eq!(
        made[4].1,
        "FOR VALUES FROM ('2026-12-04 15:00:00+00') TO ('2026-12-05 00:00:00+00')"
    );
    assert_eq!(
        made[5].1,
        "FOR VALUES FROM ('2026-12-05 00:00:00+00') TO ('2026-12-05 08:00:00+00')"
    );
    assert_eq!(
        made[7].1,
        "FOR VALUES FROM ('2026-12-06 08:00:00+00') TO ('2026-12-07 00:00:00+00')"
    );

    // Everything that ends by 5 December 8:00 UTC: the first six partitions, eleven entries.
    assert_eq!(la.sweep(1_796_457_600_000).unwrap(), 11);
    let left: Vec<String> = rt
        .block_on(bounds(&c, "aigate_provenance_entries"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        left,
        [
            "aigate_provenance_entries_20261205",
            "aigate_provenance_entries_20261206"
        ]
    );
    drop(la);
    rt.shutdown_timeout(Duration::from_secs(5));
}
