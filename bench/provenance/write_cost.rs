//! What the embedded ledger's writes cost in CPU: the capture worker's group commits, as the
//! capture benchmark (`bench/capture.sh`) makes them, without the gateway around them.
//!
//! Writes `AIGATE_WRITE_ANSWERS` (default 100,000) answers of `AIGATE_WRITE_PRINTS` (default
//! 58: a 528-character answer, as `bench/capture.sh` sends) fingerprints each, in group commits
//! of `AIGATE_WRITE_BATCH` (default 22: about 4,400 answers a second in 200 fsyncs), into a
//! fresh ledger, then waits for the store's background work (memtable flushes, compactions)
//! to settle. `AIGATE_WRITE_SAME=1` gives every answer the same fingerprints, as `capture.sh`
//! without `--vary` sends the same text (measured 2026-12-06: no dearer than random ones).
//! Reports the CPU time of every thread of the process per answer: the writes themselves, and
//! the flushes and compactions they cause, which run on the same cores as the forwarding path
//! (docs/provenance.md, "Capture cost": what capture costs the gateway is its CPU time). CPU
//! time is the process's (`/proc/self/stat`), so threads that ended count too.
//! Run: `cargo bench --bench provenance_write_cost` (`CARGO_PROFILE_RELEASE_LTO=off` is enough).

use std::time::{Duration, Instant};

use aigate::provenance::ledger::embedded::EmbeddedLedger;
use aigate::provenance::ledger::{Entry, Ledger};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this process, threads that ended included, in ns (`/proc/self/stat`'s utime
/// and stime, in clock ticks of 10 ms: runs of seconds make that fine enough).
fn cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let field = |n: usize| {
        after_name
            .split(' ')
            .nth(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of the line; the name (field 2) is cut off, the state is field 3.
    (field(11) + field(12)) * 10_000_000
}

fn entry(n: u64, fingerprints: u64) -> Entry {
    Entry {
        id: format!("0193f1d2-7c4e-7a3b-8c9d-{n:012x}"),
        time: "2026-12-06T00:00:00.000Z".into(),
        time_ms: 1_796_500_000_000 + n as i64,
        user: "alice@example.com".into(),
        tool: "claude-code".into(),
        vendor: "anthropic".into(),
        model: Some("claude-sonnet-4-5".into()),
        workflow: Some("code-analysis".into()),
        exemption: None,
        fingerprints,
        chars: 528,
        truncated: false,
    }
}

fn main() {
    let answers = env("AIGATE_WRITE_ANSWERS", 100_000);
    let prints = env("AIGATE_WRITE_PRINTS", 58);
    let per_batch = env("AIGATE_WRITE_BATCH", 22).max(1);
    let same = env("AIGATE_WRITE_SAME", 0) == 1;
    let dir = std::env::temp_dir().join(format!("aigate-write-cost-{}", std::process::id()));
    let ledger = match EmbeddedLedger::open(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("provenance_write_cost: {e}");
            std::process::exit(1);
        }
    };
    ledger.wait_for_filter();
    let batches: Vec<Vec<(Entry, Vec<u64>)>> = (0..answers.div_ceil(per_batch))
        .map(|b| {
            (b * per_batch..((b + 1) * per_batch).min(answers))
                .map(|n| {
                    (
                        entry(n, prints),
                        (0..prints)
                            .map(|i| if same { mix(i) } else { mix(n << 20 | i) })
                            .collect(),
                    )
                })
                .collect()
        })
        .collect();
    let (cpu0, t0) = (cpu_ns(), Instant::now());
    for batch in &batches {
        if let Err(e) = ledger.record_many(batch) {
            eprintln!("provenance_write_cost: {e}");
            std::process::exit(1);
        }
    }
    let (cpu1, wall) = (cpu_ns(), t0.elapsed());
    // The flushes and compactions the writes started: settled once a second passes with
    // next to no CPU spent.
    let mut last = cpu1;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ns();
        if now - last < 5_000_000 {
            break;
        }
        last = now;
    }
    let cpu2 = cpu_ns();
    let disk = ledger.disk_space();
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
    let per = |ns: u64| ns as f64 / answers as f64 / 1e3;
    println!(
        "{answers} answers of {prints} fingerprints in commits of {per_batch}: {:.1} µs CPU an answer while writing ({:.0} answers a second, wall), {:.1} µs with the background work after, {:.1} µs in all; {:.1} MB on disk",
        per(cpu1 - cpu0),
        answers as f64 / wall.as_secs_f64(),
        per(cpu2 - cpu1),
        per(cpu2 - cpu0),
        disk as f64 / 1e6,
    );
}
