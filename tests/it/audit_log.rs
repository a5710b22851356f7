//! The audit writer on a real filesystem (the test directory is on the build's disk, not a
//! tmpfs, where pages cannot leave the cache).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigate::audit::{AuditLog, AuditRecord, KEEP_CACHED, Kind};
use aigate::config::Fsync;
use aigate::metrics::Metrics;

/// Bytes of `path` in the page cache, as util-linux's fincore reads them (mincore(2)).
fn cached(path: &Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "fincore: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore printed {text:?}"))
}

fn record(n: u64) -> AuditRecord {
    AuditRecord::new(
        format!("r{n}"),
        Kind::Request,
        "127.0.0.1:1".into(),
        "alice".into(),
        "api.anthropic.com".into(),
        443,
    )
}

#[tokio::test]
async fn lines_on_disk_leave_the_page_cache_and_the_newest_stay() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, Fsync::Batch, Arc::new(Metrics::default()), None).unwrap();
    let mut n = 0;
    while std::fs::metadata(&path).unwrap().len() < 3 * KEEP_CACHED {
        for _ in 0..1_000 {
            assert!(log.submit_acked(record(n)).await);
            n += 1;
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();

    // The fsync thread drops what its last fsync covered, every 10 ms while there are writes;
    // one more write after the others makes sure a round covers them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        assert!(log.submit_acked(record(n)).await);
        n += 1;
        let now = cached(&path);
        if now <= KEEP_CACHED + 1024 * 1024 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "{now} bytes of a {len}-byte audit log are still in the page cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        settled >= KEEP_CACHED / 2,
        "only {settled} bytes are cached: the newest part of the log must stay for its readers"
    );
    let text = std::fs::read(&path).unwrap();
    aigate::audit::chain::verify(&text[..]).expect("the log still verifies");
}
