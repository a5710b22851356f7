//! Scan speed (issue 17, section 3: "at least 50 MB/s of source on one core"), on one thread,
//! over Rust sources of the crates in the cargo cache (nothing fetched):
//!
//! - `fingerprint/both`, `fingerprint/text`, `fingerprint/code`: bytes to keyed fingerprints;
//!   `fingerprint/both_reference`: the same by the straightforward implementation that defines
//!   them (`src/provenance/fingerprint/reference.rs`), the speed before `fast.rs`;
//! - `scan/in_memory`: the whole matcher (fingerprints, stop-list, lookups, runs, findings) on
//!   each file, against an in-memory ledger of other files (a hash map; the embedded ledger's
//!   own lookup cost is ledger17's part and measured in `provenance_accuracy`).
//!
//! Before criterion's wall-clock numbers it prints MB per CPU-second of the same work (the
//! thread's time on a CPU, from `/proc/thread-self/schedstat`): on a shared machine that is
//! what one core does, where the wall clock also counts waiting for a core.
//!
//! `cargo bench --bench provenance_speed` (`CARGO_PROFILE_BENCH_LTO=off` builds much faster and
//! measures within a few per cent). `AIGATE_SPEED_MB` sets the size of the scanned set
//! (default 8).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use aigate::provenance::fingerprint::{Fingerprinter, Key, StopList};
use aigate::provenance::scan::matcher::ResponseFilter;
use aigate::provenance::scan::{Matcher, Response, Thresholds};

#[path = "mem.rs"]
mod mem;
use mem::Mem;

/// Source files of the cargo cache in a fixed order, each under 256 KiB, until `limit` bytes.
fn sources(limit: usize) -> Vec<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let root = Path::new(&home).join(".cargo/registry/src");
    let mut out = Vec::new();
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        entries.reverse();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs")
                && let Ok(text) = std::fs::read_to_string(&p)
                && text.len() <= 256 * 1024
            {
                total += text.len();
                out.push(text);
                if total >= limit {
                    return out;
                }
            }
        }
    }
    out
}

/// This thread's time on a CPU (Linux: `/proc/thread-self/schedstat`, nanoseconds), so a
/// shared machine's waiting is not counted as work. `None` elsewhere.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// MB per CPU-second of `f` over `bytes`, the best of five runs: what one core does when it is
/// not shared (criterion's wall-clock numbers count the time the thread waited for a core).
fn per_cpu_second(name: &str, bytes: usize, mut f: impl FnMut() -> usize) {
    let mut best = f64::MAX;
    let mut sink = 0;
    for _ in 0..5 {
        let (Some(a), n, Some(b)) = (cpu_ns(), f(), cpu_ns()) else {
            return;
        };
        sink += n;
        best = best.min((b - a) as f64 / 1e9);
    }
    black_box(sink);
    eprintln!(
        "provenance_speed: {name}: {:.1} MB per CPU-second",
        bytes as f64 / 1e6 / best
    );
}

fn bench(c: &mut Criterion) {
    let mb: usize = std::env::var("AIGATE_SPEED_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    // Responses, then the baseline, then the scanned set, from one walk: disjoint files.
    let all = sources((mb + 12) << 20);
    let (mut responses, mut baseline, mut scanned) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = [0usize; 3];
    for (i, text) in all.iter().enumerate() {
        let which = if bytes[0] < 8 << 20 && i % 3 == 0 {
            0
        } else if bytes[1] < 4 << 20 && i % 3 == 1 {
            1
        } else {
            2
        };
        bytes[which] += text.len();
        [&mut responses, &mut baseline, &mut scanned][which].push(text.as_str());
    }
    // A few scanned files are responses too, so the finding path is measured as well.
    for r in responses.iter().step_by(50) {
        scanned.push(r);
        bytes[2] += r.len();
    }
    let key = Key::from_bytes([42; 32]);
    let fp = Fingerprinter::new(&key);
    let mut mem = Mem::default();
    for (i, r) in responses.iter().enumerate() {
        for x in fp.all(r) {
            mem.by_hash.entry(x.hash).or_default().push(i as u32);
        }
        mem.entries.push(Response {
            record_id: format!("r{i}"),
            time: "2026-11-01T00:00:00Z".into(),
            user: Some("alice".into()),
            tool: Some("claude-code".into()),
            vendor: None,
            model: None,
        });
    }
    let stop = StopList::from_hashes(baseline.iter().flat_map(|b| fp.all(b)).map(|x| x.hash));
    let lookups: usize = scanned.iter().map(|s| fp.all(s).len()).sum();
    eprintln!(
        "provenance_speed: scanned {} files, {:.1} MB ({:.0} fingerprints per MB); ledger {} responses, {} fingerprints; stop-list {}",
        scanned.len(),
        bytes[2] as f64 / 1e6,
        lookups as f64 / (bytes[2] as f64 / 1e6),
        responses.len(),
        mem.by_hash.len(),
        stop.len(),
    );
    let matcher = Matcher {
        fingerprinter: &fp,
        stop: &stop,
        ledger: &mem,
        thresholds: Thresholds::default(),
        filter: ResponseFilter::default(),
    };

    let both = |s: &str, out: &mut Vec<_>| {
        out.clear();
        fp.code_into(s, out);
        fp.text_into(s, out);
        out.len()
    };
    let mut out = Vec::new();
    per_cpu_second("fingerprint/both", bytes[2], || {
        scanned.iter().map(|s| both(s, &mut out)).sum()
    });
    per_cpu_second("fingerprint/both_reference", bytes[2], || {
        scanned.iter().map(|s| fp.all_reference(s).len()).sum()
    });
    per_cpu_second("scan/in_memory", bytes[2], || {
        scanned
            .iter()
            .filter(|s| matches!(matcher.document(s, 1), Ok(Some(_))))
            .count()
    });

    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Bytes(bytes[2] as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("both", |b| {
        b.iter(|| {
            let mut n = 0;
            for s in &scanned {
                out.clear();
                fp.code_into(s, &mut out);
                fp.text_into(s, &mut out);
                n += out.len();
            }
            black_box(n)
        })
    });
    g.bench_function("both_reference", |b| {
        b.iter(|| {
            let mut n = 0;
            for s in &scanned {
                n += fp.all_reference(s).len();
            }
            black_box(n)
        })
    });
    g.bench_function("text", |b| {
        b.iter(|| {
            let mut n = 0;
            for s in &scanned {
                out.clear();
                fp.text_into(s, &mut out);
                n += out.len();
            }
            black_box(n)
        })
    });
    g.bench_function("code", |b| {
        b.iter(|| {
            let mut n = 0;
            for s in &scanned {
                out.clear();
                fp.code_into(s, &mut out);
                n += out.len();
            }
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(bytes[2] as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("in_memory", |b| {
        b.iter(|| {
            let mut found = 0;
            for s in &scanned {
                if let Ok(Some(_)) = matcher.document(s, 1) {
                    found += 1;
                }
            }
            black_box(found)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
