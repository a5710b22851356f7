//! The embedded provenance ledger at the size issue 17 names: a million responses.
//!
//! Builds a ledger of `AIGATE_LEDGER_RESPONSES` (default 1,000,000) synthetic responses with the
//! real spread of fingerprints per response (58 for a 528-character answer to ~500 for a long
//! file write: `58 + 442·u²`, u uniform, mean ~205), through `EmbeddedLedger::bulk_load` (sorted
//! streams, no fsync per batch: the capture worker's path would take hours at this size), then:
//! - reopens it and times that (until the ledger answers: the gateway serves from then on), then
//!   the membership filter's build from `entry_prints`, which runs in the background after open
//!   (lookups go to the store until it is swapped in), and one lookup made meanwhile;
//! - times a scan-like lookup workload: documents of 950 fingerprints (10 KB at 95,000 lookups
//!   per MB scanned), one `Ledger::find` each, nearly all absent (one fingerprint in 1,000 is a
//!   recorded one), and reports ns per lookup and the MB/s of source that rate allows;
//! - times the capture worker's writes on the full ledger (batches of 16 answers of 58
//!   fingerprints, fsynced), to show a large ledger does not slow them.
//!
//! Synthetic fingerprints are uniform 64-bit values, as keyed SipHash outputs are.
//!
//! `AIGATE_LEDGER_DIR` keeps the ledger (default: a temporary directory, removed at the end).
//! `AIGATE_LEDGER_STATE=DIR` instead builds it where the gateway keeps it in state directory
//! DIR (`DIR/provenance/ledger`, kept), creates the fingerprint key there if missing, and, with
//! `AIGATE_LEDGER_ANSWERS=PATH`, makes the last `AIGATE_LEDGER_REAL` (default 1,000) of the
//! responses real ones: every `AIGATE_LEDGER_EVERY`th (default 97th) text file under PATH, whole,
//! fingerprinted with that key as the capture worker does. A real `aigate provenance scan` of
//! PATH then has something to find (`bench/provenance-scan.sh`, the scan end to end).
//! `AIGATE_LEDGER_PG=URL` (with `AIGATE_LEDGER_STATE`) writes the same responses to the
//! PostgreSQL ledger at URL instead, through `PostgresLedger::record_many` (the replicas' own
//! write, 200 responses a transaction), their times spread over `AIGATE_LEDGER_DAYS` (default
//! 365) day partitions, and stops: `bench/provenance-scan.sh --ledger postgres` then scans it
//! through a replica.
//! Run: `cargo bench --bench provenance_ledger` (release, LTO off is enough:
//! `CARGO_PROFILE_RELEASE_LTO=off`).

use std::time::Instant;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aigate::provenance::fingerprint::{Fingerprinter, Key};
use aigate::provenance::ledger::embedded::{self, EmbeddedLedger};
use aigate::provenance::ledger::{Entry, Ledger};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fingerprints of response `n`.
fn count(n: u64) -> u64 {
    let u = (mix(n ^ 0x5eed) >> 11) as f64 / (1u64 << 53) as f64;
    58 + (442.0 * u * u) as u64
}

fn print(n: u64, i: u64) -> u64 {
    mix((n << 20) | i)
}

fn entry(n: u64, fingerprints: u64) -> Entry {
    Entry {
        id: format!("0193-bench-{n:010}"),
        time: "2026-11-01T00:00:00.000Z".into(),
        time_ms: 1_793_500_000_000 + n as i64,
        user: format!("user{}", n % 500),
        tool: "claude-code".into(),
        vendor: "anthropic".into(),
        model: Some("claude-sonnet-4-5".into()),
        workflow: None,
        exemption: None,
        fingerprints,
        chars: fingerprints * 528 / 58,
        truncated: false,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Real answers: every `every`th text file under `root` (in the scan's walk order), up to
/// `max`, each fingerprinted whole with the state directory's key and deduplicated, as the
/// capture worker records a `Write` of that file.
fn real_answers(state: &Path, root: &Path, max: u64, every: u64) -> Vec<(String, Vec<u64>)> {
    let key = match Key::load_or_create(state) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let fp = Fingerprinter::new(&key);
    let mut out = Vec::new();
    let walk = ignore::WalkBuilder::new(root)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut seen_files = 0u64;
    for entry in walk.flatten() {
        if out.len() as u64 >= max {
            break;
        }
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        if bytes.len() < 400
            || bytes.len() > 64 << 10
            || bytes[..bytes.len().min(8192)].contains(&0)
        {
            continue;
        }
        seen_files += 1;
        if seen_files % every != 0 {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut seen = HashSet::new();
        let prints: Vec<u64> = fp
            .all(&text)
            .iter()
            .map(|f| f.hash)
            .filter(|h| seen.insert(*h))
            .collect();
        out.push((entry.path().display().to_string(), prints));
    }
    out
}

/// The responses written to the PostgreSQL ledger at `url` (see the module's doc).
fn to_postgres(
    url: &str,
    responses: u64,
    days: u64,
    first_real: u64,
    count_of: &dyn Fn(u64) -> u64,
    print_of: &dyn Fn(u64, u64) -> u64,
) {
    use aigate::config::{PasswordSource, PostgresConfig};
    use aigate::provenance::ledger::postgres::PostgresLedger;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let db = aigate::storage::Db::new(&PostgresConfig {
        url: url.into(),
        password: PasswordSource::None,
        replica_id: "bench".into(),
        resync_interval: std::time::Duration::from_secs(30),
        audit: false,
        pool_size: 2,
        ca_file: None,
    });
    let db = match db {
        Ok(db) => db,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let ledger = PostgresLedger::new(db, rt.handle().clone());
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(200);
    let mut prints = 0u64;
    // 2026-01-01, then one day after another.
    let day0 = 1_767_225_600_000i64;
    for n in 0..responses {
        let c = count_of(n);
        let mut e = entry(n, c);
        if n >= first_real {
            e.id = format!("0193-real-{n:010}");
        }
        e.time_ms = day0 + (n % days) as i64 * 86_400_000 + (n / days) as i64 % 86_400_000;
        e.time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms as u64),
        )
        .to_string();
        prints += c;
        batch.push((e, (0..c).map(|i| print_of(n, i)).collect::<Vec<u64>>()));
        if batch.len() == 200 || n + 1 == responses {
            if let Err(e) = ledger.record_many(&batch) {
                eprintln!("provenance_ledger: {e}");
                std::process::exit(1);
            }
            batch.clear();
        }
    }
    println!(
        "written to PostgreSQL: {responses} responses, {prints} fingerprints, over {days} days, in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}

fn main() {
    let responses = env("AIGATE_LEDGER_RESPONSES", 1_000_000);
    let state = std::env::var_os("AIGATE_LEDGER_STATE").map(PathBuf::from);
    let (dir, keep) = match std::env::var("AIGATE_LEDGER_DIR") {
        Ok(d) => (PathBuf::from(d), true),
        Err(_) => (
            std::env::temp_dir().join(format!("aigate-ledger-bench-{}", std::process::id())),
            false,
        ),
    };
    let (path, keep) = match &state {
        Some(s) => (embedded::path(s), true),
        None => (dir.join("ledger"), keep),
    };
    let built = path.join("index").exists();
    let ledger = match EmbeddedLedger::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let real = match (&state, std::env::var_os("AIGATE_LEDGER_ANSWERS")) {
        (Some(s), Some(root)) if !built => real_answers(
            s,
            Path::new(&root),
            env("AIGATE_LEDGER_REAL", 1_000).min(responses),
            env("AIGATE_LEDGER_EVERY", 97).max(1),
        ),
        (Some(s), _) => {
            // The key only (a scan needs it); a built ledger keeps the answers it has.
            if let Err(e) = Key::load_or_create(s) {
                eprintln!("provenance_ledger: {e}");
                std::process::exit(1);
            }
            Vec::new()
        }
        _ => Vec::new(),
    };
    // Responses numbered from `first_real` on are the real ones.
    let first_real = responses - real.len() as u64;
    let real = std::sync::Arc::new(real);
    let count_of = {
        let real = real.clone();
        move |n: u64| {
            if n >= first_real {
                real[(n - first_real) as usize].1.len() as u64
            } else {
                count(n)
            }
        }
    };
    let print_of = {
        let real = real.clone();
        move |n: u64, i: u64| {
            if n >= first_real {
                real[(n - first_real) as usize].1[i as usize]
            } else {
                print(n, i)
            }
        }
    };
    let total: u64 = (0..responses).map(&count_of).sum();
    if let Ok(url) = std::env::var("AIGATE_LEDGER_PG") {
        let days = env("AIGATE_LEDGER_DAYS", 365).max(1);
        to_postgres(&url, responses, days, first_real, &count_of, &print_of);
        return;
    }
    if !built || ledger.is_empty().unwrap_or(true) {
        let t0 = Instant::now();
        let (c1, p1) = (count_of.clone(), print_of.clone());
        let entries = (0..responses).map(move |n| {
            let c = c1(n);
            let mut e = entry(n, c);
            if n >= first_real {
                e.id = format!("0193-real-{n:010}");
            }
            (e, (0..c).map(|i| p1(n, i)).collect::<Vec<u64>>())
        });
        if !real.is_empty() {
            println!(
                "real answers: {} files of {} as responses {first_real}..{responses} (ids 0193-real-…), {} fingerprints",
                real.len(),
                std::env::var("AIGATE_LEDGER_ANSWERS").unwrap_or_default(),
                real.iter().map(|(_, p)| p.len()).sum::<usize>()
            );
        }
        // The index in key order, 16 passes by the top 4 bits (a few hundred MB at a time).
        let (c2, p2) = (count_of.clone(), print_of.clone());
        let index = (0..16u64).flat_map(move |b| {
            let mut part = Vec::new();
            for n in 0..responses {
                for i in 0..c2(n) {
                    let h = p2(n, i);
                    if h >> 60 == b {
                        part.push((h, n));
                    }
                }
            }
            part.sort_unstable();
            part.dedup();
            part.into_iter()
        });
        if let Err(e) = ledger.bulk_load(entries, index) {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
        println!(
            "built: {responses} responses, {total} fingerprints ({:.0} a response) in {:.0} s",
            total as f64 / responses as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    drop(ledger);

    let t0 = Instant::now();
    let ledger = match EmbeddedLedger::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let open_s = t0.elapsed().as_secs_f64();
    // A find while the filter builds: answered by the store alone.
    let t1 = Instant::now();
    let early: Vec<u64> = (0..950u64).map(|i| mix(i ^ 0xbad_cafe)).collect();
    let building = !ledger.filter_ready();
    let early_hits = match ledger.find(&early) {
        Ok(m) => m.hits.len(),
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let early_us = t1.elapsed().as_secs_f64() * 1e6 / early.len() as f64;
    ledger.wait_for_filter();
    let ready_s = t0.elapsed().as_secs_f64();
    println!(
        "open: answers after {open_s:.2} s; filter built in the background, ready after {ready_s:.1} s; a find of 950 absent fingerprints {} the build: {early_us:.1} µs a lookup ({early_hits} hits)",
        if building { "during" } else { "after" }
    );
    let (filter_bytes, filter_items) = ledger.filter_size();
    let disk = ledger.disk_space();
    let captured = total * 528 / 58;
    println!(
        "filter {:.0} MB for {filter_items} fingerprints ({:.2} bytes each); ledger on disk {:.2} GB = {:.1} bytes a fingerprint, {:.1} MB per MB captured (at 58 fingerprints per 528 characters)",
        filter_bytes as f64 / 1e6,
        filter_bytes as f64 / filter_items.max(1) as f64,
        disk as f64 / 1e9,
        disk as f64 / total.max(1) as f64,
        disk as f64 / captured.max(1) as f64,
    );

    // Scan-like lookups: documents of 950 fingerprints, one in 1,000 recorded.
    let docs = env("AIGATE_LEDGER_DOCS", 20_000);
    let mut x = 0xfeed_u64;
    let mut lookups = 0u64;
    let mut hits = 0u64;
    let mut doc = Vec::with_capacity(950);
    let t0 = Instant::now();
    for _ in 0..docs {
        doc.clear();
        for _ in 0..950 {
            x = mix(x);
            if x % 1000 == 0 {
                let n = (x >> 20) % responses;
                doc.push(print_of(n, (x >> 8) % count_of(n)));
            } else {
                doc.push(x ^ 0xabcd_ef01_2345_6789);
            }
        }
        lookups += doc.len() as u64;
        match ledger.find(&doc) {
            Ok(m) => hits += m.hits.len() as u64,
            Err(e) => {
                eprintln!("provenance_ledger: {e}");
                std::process::exit(1);
            }
        }
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "lookups: {lookups} in {docs} finds of 950, {hits} hits: {:.0} ns a lookup, {:.1} M lookups a second = {:.0} MB/s of source at 95,000 lookups per MB (the ledger's share of a scan)",
        s * 1e9 / lookups as f64,
        lookups as f64 / s / 1e6,
        lookups as f64 / s / 95_000.0,
    );

    // The capture worker's writes on the full ledger: 16 answers of 58 a batch, fsynced.
    let batches = env("AIGATE_LEDGER_BATCHES", 200);
    let t0 = Instant::now();
    for b in 0..batches {
        let batch: Vec<(Entry, Vec<u64>)> = (0..16)
            .map(|k| {
                let n = responses + b * 16 + k;
                (entry(n, 58), (0..58).map(|i| print(n, i)).collect())
            })
            .collect();
        if let Err(e) = ledger.record_many(&batch) {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "writes on the full ledger: {batches} batches of 16 answers (58 fingerprints each), {:.2} ms a batch (fsync included), {:.0} answers a second",
        s * 1e3 / batches as f64,
        (batches * 16) as f64 / s,
    );
    drop(ledger);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
