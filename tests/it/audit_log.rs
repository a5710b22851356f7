//! The audit writer on a real filesystem (test directories are on the build's disk, not a
//! tmpfs, where pages cannot leave the cache).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
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

fn open(path: &Path) -> AuditLog {
    open_with(path, Fsync::Batch)
}

fn open_with(path: &Path, fsync: Fsync) -> AuditLog {
    AuditLog::open(path, fsync, Arc::new(Metrics::default()), None).expect("open")
}

fn record(id: &str) -> AuditRecord {
    AuditRecord::new(
        id.into(),
        Kind::Request,
        "127.0.0.1:1".into(),
        "alice".into(),
        "api.anthropic.com".into(),
        443,
    )
}

#[tokio::test]
async fn lines_on_disk_leave_the_page_cache_and_the_newest_stay() {
    older_lines_leave_the_page_cache(Fsync::Batch).await;
}

/// Without fsync the older pages are dirty when first advised; they must still go.
#[tokio::test]
async fn without_fsync_older_lines_still_leave_the_page_cache() {
    older_lines_leave_the_page_cache(Fsync::Never).await;
}

async fn older_lines_leave_the_page_cache(fsync: Fsync) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open_with(&path, fsync);
    let mut n = 0;
    while std::fs::metadata(&path).unwrap().len() < 3 * KEEP_CACHED {
        for _ in 0..1_000 {
            assert!(log.submit_acked(record(&format!("r{n}"))).await);
            n += 1;
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();

    // The fsync thread drops what its last fsync covered (or, without fsync, what the kernel
    // has written back since the round before), every 10 ms while there are writes; one more
    // write after the others makes sure a round covers them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        assert!(log.submit_acked(record(&format!("r{n}"))).await);
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

#[tokio::test]
async fn an_acknowledged_record_is_in_the_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path);
    assert!(log.submit_acked(record("r1")).await);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.contains("\"id\":\"r1\"") && text.ends_with('\n'),
        "{text}"
    );
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off_and_kept_in_the_next_record() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path);
    log.submit(record("r1"));
    assert!(log.flush().await);
    drop(log);
    let torn = "{\"v\":1,\"seq\":2,\"prev\":\"ab";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("reopen");
    f.write_all(torn.as_bytes()).expect("tear");
    drop(f);

    let log = open(&path);
    log.submit(record("r3"));
    assert!(log.flush().await);
    let text = std::fs::read_to_string(&path).expect("read");
    aigate::audit::chain::verify(text.as_bytes()).expect("the chain verifies after recovery");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["reason"], "audit_recovered");
    assert_eq!(lines[1]["admin"]["torn_line"], torn);
    assert_eq!(lines[2]["id"], "r3");
}

/// An outcome or progress record is chained at once and written with the next write; with no
/// next write, the flusher thread writes it within its window, without anyone flushing.
#[tokio::test]
async fn a_deferred_record_reaches_the_file_by_itself() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path);
    let mut decision = record("call");
    decision.outcome_follows = true;
    assert!(log.submit_ref_acked(&decision).await);
    let mut outcome = decision.clone();
    outcome.kind = Kind::Outcome;
    outcome.outcome_follows = false;
    log.submit_deferred(outcome);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().count() == 2 {
            assert!(
                text.lines()
                    .nth(1)
                    .unwrap()
                    .contains("\"kind\":\"outcome\"")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outcome was never written: {text}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Decisions sealed together go out in one write (the proxy seals a call's decision, yields
/// once, and the first call back writes for all): after the first `written`, every decision
/// sealed before it is in the file, in chain order, and theirs are acknowledged at once.
#[tokio::test]
async fn decisions_sealed_together_are_written_by_the_first_acknowledgement() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path);
    let seqs: Vec<u64> = (0..3)
        .map(|i| {
            let mut decision = record(&format!("call{i}"));
            decision.outcome_follows = true;
            log.seal_kept(&decision).expect("sealed")
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(log.written(seqs[0]).await);
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert_eq!(ids, vec!["\"call0\"", "\"call1\"", "\"call2\""]);
    assert!(matches!(
        log.written(seqs[2]),
        aigate::audit::Ack::Done(true)
    ));
    aigate::audit::chain::verify(text.as_bytes()).expect("the chain verifies");
}
