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
//! Run: `cargo bench --bench provenance_ledger` (release, LTO off is enough:
//! `CARGO_PROFILE_RELEASE_LTO=off`).

use std::time::Instant;

use aigate::provenance::ledger::embedded::EmbeddedLedger;
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

fn main() {
    let responses = env("AIGATE_LEDGER_RESPONSES", 1_000_000);
    let (dir, keep) = match std::env::var("AIGATE_LEDGER_DIR") {
        Ok(d) => (std::path::PathBuf::from(d), true),
        Err(_) => (
            std::env::temp_dir().join(format!("aigate-ledger-bench-{}", std::process::id())),
            false,
        ),
    };
    let path = dir.join("ledger");
    let built = path.join("index").exists();
    let ledger = match EmbeddedLedger::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("provenance_ledger: {e}");
            std::process::exit(1);
        }
    };
    let total: u64 = (0..responses).map(count).sum();
    if !built || ledger.is_empty().unwrap_or(true) {
        let t0 = Instant::now();
        let entries = (0..responses).map(|n| {
            let c = count(n);
            (
                entry(n, c),
                (0..c).map(|i| print(n, i)).collect::<Vec<u64>>(),
            )
        });
        // The index in key order, 16 passes by the top 4 bits (a few hundred MB at a time).
        let index = (0..16u64).flat_map(move |b| {
            let mut part = Vec::new();
            for n in 0..responses {
                for i in 0..count(n) {
                    let h = print(n, i);
                    if h >> 60 == b {
                        part.push((h, n));
                    }
                }
            }
            part.sort_unstable();
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
                doc.push(print(n, (x >> 8) % count(n)));
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
