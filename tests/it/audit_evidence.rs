//! An audit trail that proves its own completeness (issue 15): signed checkpoints, rotation
//! with the chain across files, and a cut, removed, moved or forged log each named by the real
//! `aigate audit verify` binary, or by the writer when it starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aigate::audit::{AuditLog, AuditRecord, Kind, chain};
use aigate::config::{AuditIntegrity, Fsync, OnGap};
use aigate::metrics::Metrics;

fn integrity(dir: &Path) -> AuditIntegrity {
    AuditIntegrity {
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(3600),
        signing_key: dir.join("audit-signing.key"),
        generate_key: true,
        rotate_size: None,
        rotate_interval: None,
        on_gap: OnGap::Record,
    }
}

fn open(path: &Path, cfg: &AuditIntegrity) -> AuditLog {
    try_open(path, cfg).expect("open")
}

fn try_open(
    path: &Path,
    cfg: &AuditIntegrity,
) -> Result<AuditLog, aigate::audit::AuditWriterError> {
    AuditLog::open_with(
        path,
        Fsync::Batch,
        Arc::new(Metrics::default()),
        None,
        Some(cfg),
    )
}

fn record(n: usize) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("r{n}"),
        Kind::Request,
        "127.0.0.1:1".into(),
        "alice".into(),
        "api.anthropic.com".into(),
        443,
    );
    r.path = Some(format!("/v1/messages/{}", "x".repeat(200)));
    r
}

/// `n` records, then a clean stop: a shutdown checkpoint, flushed, in the state file.
async fn write(log: &AuditLog, from: usize, n: usize) {
    for i in from..from + n {
        assert!(log.submit_acked(record(i)).await);
    }
}

async fn stop(log: AuditLog) {
    log.checkpoint_on_shutdown();
    assert!(log.flush().await);
    drop(log);
}

fn verify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["audit", "verify"])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The public half, as `aigate audit key export` prints it for a config whose state directory
/// holds the key.
fn export_key(dir: &Path) -> PathBuf {
    let config = dir.join("aigate.toml");
    std::fs::write(
        &config,
        format!("[gateway]\nstate_dir = {:?}\n", dir.display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["audit", "key", "export", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    assert!(!pem.contains("PRIVATE"));
    let path = dir.join("audit.pub");
    std::fs::write(&path, pem).unwrap();
    path
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn checkpoints_are_signed_and_verify_checks_them_against_the_pinned_key() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = integrity(dir.path());
    let log = open(&path, &cfg);
    write(&log, 0, 25).await;
    stop(log).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(&cfg.signing_key).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
    let records = lines(&path);
    let checkpoints: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["reason"] == "audit_checkpoint")
        .collect();
    // After records 10 and 20 (every 10), and at shutdown.
    assert_eq!(checkpoints.len(), 3, "{records:?}");
    assert_eq!(checkpoints[0]["seq"], 11);
    assert_eq!(checkpoints[0]["admin"]["checkpoint"]["seq"], 10);
    assert_eq!(checkpoints[2]["admin"]["cause"], "shutdown");
    assert_eq!(records.last().unwrap()["reason"], "audit_checkpoint");

    let key = export_key(dir.path());
    let (code, stdout, stderr) = verify(&[s(&path), "--key", s(&key)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("checked 1 file, 28 records, 3 checkpoints, 3 signatures valid (key "),
        "{stdout}"
    );
    assert!(stdout.contains(", pinned)"), "{stdout}");

    // Another gateway's key: every signature is someone else's.
    let other = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let log = open(&other.path().join("audit.jsonl"), &integrity(other.path()));
    drop(log);
    let other_key = export_key(other.path());
    let (code, _, stderr) = verify(&[s(&path), "--key", s(&other_key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("line 11: checkpoint is signed by key ")
            && stderr.contains(", not by the pinned key "),
        "{stderr}"
    );

    let (code, stdout, _) = verify(&[s(&path), "--key", s(&key), "--format", "json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 28);
    assert_eq!(report["checkpoints"], 3);
    assert_eq!(report["signatures_valid"], 3);
    assert_eq!(report["last_checkpoint"], 27);
}

#[tokio::test]
async fn a_forged_append_is_caught_with_the_pinned_key() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path, &integrity(dir.path()));
    write(&log, 0, 5).await;
    stop(log).await;
    let key = export_key(dir.path());
    let original = std::fs::read(&path).unwrap();
    let last = lines(&path).pop().unwrap();
    let (seq, prev) = (
        last["seq"].as_u64().unwrap(),
        last["hash"].as_str().unwrap().to_string(),
    );

    // A record with a correct, recomputed hash after the last checkpoint.
    let mut forged = original.clone();
    chain::seal(&record(99), seq + 1, &prev, &mut forged).unwrap();
    std::fs::write(&path, &forged).unwrap();
    let (code, _, stderr) = verify(&[s(&path), "--key", s(&key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "records {}..{} after the last checkpoint (seq {seq}) are not covered by a signature",
            seq + 1,
            seq + 1
        )),
        "{stderr}"
    );

    // And a checkpoint over it, signed with the forger's own key.
    let forger = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let signer =
        aigate::audit::checkpoint::Signer::load_or_create(&forger.path().join("k"), true).unwrap();
    let hash = lines(&path).pop().unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let cp = signer.sign(seq + 1, &hash, "2026-01-01T00:00:00.000Z", None);
    let rec = aigate::audit::checkpoint::record(&cp, aigate::audit::checkpoint::Cause::Shutdown);
    chain::seal(&rec, seq + 2, &hash, &mut forged).unwrap();
    std::fs::write(&path, &forged).unwrap();
    let (code, _, stderr) = verify(&[s(&path), "--key", s(&key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(&format!("line {}: checkpoint is signed by key", seq + 2)),
        "{stderr}"
    );
    // Without the pinned key the forger's checkpoint looks fine: that is what pinning is for.
    let (code, stdout, _) = verify(&[s(&path)]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("named in the log: pin it with --key"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_cut_tail_is_named_by_verify_and_recorded_at_start() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = integrity(dir.path());
    let log = open(&path, &cfg);
    write(&log, 0, 25).await;
    stop(log).await;
    // 28 lines: the last one, the shutdown checkpoint, attests seq 27. Cut the last 6.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(22).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let (code, _, stderr) = verify(&[s(&path)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("the log ends at seq 22 but checkpoint 27 exists (")
            && stderr.contains("records 23..28 are missing"),
        "{stderr}"
    );
    // The same from the checkpoint record's line as a SIEM kept it, the state file gone too.
    let siem = dir.path().join("siem-checkpoint.json");
    std::fs::write(&siem, text.lines().last().unwrap()).unwrap();
    let state = dir.path().join("audit.checkpoint.json");
    let kept_state = std::fs::read(&state).unwrap();
    std::fs::remove_file(&state).unwrap();
    let (code, _, _) = verify(&[s(&path)]);
    assert_eq!(code, 0, "without any outside copy the cut cannot be seen");
    let (code, _, stderr) = verify(&[s(&path), "--checkpoint", s(&siem)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("the log ends at seq 22 but checkpoint 27 exists"),
        "{stderr}"
    );
    std::fs::write(&state, kept_state).unwrap();

    // `on_gap = "refuse"`: no start, and a message naming the fix.
    let refuse = AuditIntegrity {
        on_gap: OnGap::Refuse,
        ..cfg.clone()
    };
    let err = try_open(&path, &refuse).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("ends at seq 22 but the last checkpoint")
            && msg.contains("records 23..28 are missing")
            && msg.contains("audit.on_gap = \"record\""),
        "{msg}"
    );
    assert_eq!(lines(&path).len(), 22, "a refused start writes nothing");

    // The default: a chain_gap record naming the range, and the chain goes on from the
    // checkpoint.
    let log = open(&path, &cfg);
    write(&log, 100, 2).await;
    stop(log).await;
    let records = lines(&path);
    let gap = &records[22];
    assert_eq!(gap["reason"], "chain_gap");
    assert_eq!(gap["seq"], 29);
    assert_eq!(gap["admin"]["gap"]["from"], 23);
    assert_eq!(gap["admin"]["gap"]["to"], 28);
    assert_eq!(gap["admin"]["gap"]["cause"], "log_shortened");
    let (code, _, stderr) = verify(&[s(&path)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("line 23: chain_gap: aigate found at start that records 23..28 were missing (log shortened)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deleted_log_is_not_started_over_at_seq_1() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = integrity(dir.path());
    let log = open(&path, &cfg);
    write(&log, 0, 5).await;
    stop(log).await;
    std::fs::remove_file(&path).unwrap();
    let log = open(&path, &cfg);
    write(&log, 10, 1).await;
    stop(log).await;
    let records = lines(&path);
    assert_eq!(records[0]["reason"], "chain_gap");
    assert_eq!(
        records[0]["seq"], 7,
        "continues after the shutdown checkpoint (seq 6)"
    );
    assert_eq!(records[0]["admin"]["gap"]["cause"], "log_missing");
    let (code, _, stderr) = verify(&[s(&path)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(
            "line 1: chain_gap: aigate found at start that records 1..6 were missing (log missing)"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn rotation_continues_the_chain_and_verify_names_a_removed_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditIntegrity {
        checkpoint_every: 100,
        rotate_size: Some(64 * 1024),
        ..integrity(dir.path())
    };
    let log = open(&path, &cfg);
    // ~600 bytes a line: a file every ~110 records.
    write(&log, 0, 400).await;
    stop(log).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    assert_eq!(
        files[0].file_name().unwrap(),
        "audit.000000000001.jsonl",
        "{files:?}"
    );
    // Each rotated file ends on a checkpoint; the next starts with a header linking to it.
    let first = lines(&files[0]);
    let second = lines(&files[1]);
    assert_eq!(first.last().unwrap()["reason"], "audit_checkpoint");
    assert_eq!(first.last().unwrap()["admin"]["cause"], "rotation");
    assert_eq!(second[0]["reason"], "audit_file_start");
    assert_eq!(second[0]["prev"], first.last().unwrap()["hash"]);
    assert_eq!(
        second[0]["admin"]["file"]["previous"],
        "audit.000000000001.jsonl"
    );
    assert!(std::fs::metadata(&files[0]).unwrap().len() >= 64 * 1024);

    let key = export_key(dir.path());
    let (code, stdout, stderr) = verify(&[s(dir.path()), "--key", s(&key)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("checked {} files, ", files.len())),
        "{stdout}"
    );

    // A rotated file in the middle removed.
    let removed = files[1].file_name().unwrap().to_string_lossy().into_owned();
    let kept = dir.path().join("kept-aside");
    std::fs::rename(&files[1], &kept).unwrap();
    let (code, _, stderr) = verify(&[s(dir.path()), "--key", s(&key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "are not in this directory: the file {removed} is missing"
        )),
        "{stderr}"
    );
    std::fs::rename(&kept, &files[1]).unwrap();
    // The active file removed: the series ends before the checkpoint kept outside the log.
    std::fs::remove_file(&path).unwrap();
    let (code, _, stderr) = verify(&[s(dir.path()), "--key", s(&key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("but checkpoint"), "{stderr}");
}

#[tokio::test]
async fn rotation_by_time() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditIntegrity {
        rotate_interval: Some(Duration::from_secs(1)),
        ..integrity(dir.path())
    };
    let log = open(&path, &cfg);
    write(&log, 0, 3).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    write(&log, 3, 3).await;
    stop(log).await;
    assert!(dir.path().join("audit.000000000001.jsonl").exists());
    let (code, stdout, stderr) = verify(&[s(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test]
async fn a_log_moved_while_running_is_noticed_and_writing_goes_on_at_the_path() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = open(&path, &integrity(dir.path()));
    write(&log, 0, 3).await;
    let moved = dir.path().join("moved.jsonl");
    std::fs::rename(&path, &moved).unwrap();
    // The housekeeping thread looks every 250 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no new file at the path"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write(&log, 3, 3).await;
    stop(log).await;
    assert_eq!(
        lines(&moved).len(),
        3,
        "nothing more follows the moved file"
    );
    let records = lines(&path);
    assert_eq!(records[0]["reason"], "audit_file_start");
    assert_eq!(records[0]["admin"]["file"]["cause"], "moved_or_deleted");
    assert_eq!(records[0]["seq"], 4);
    assert_eq!(records[1]["id"], "r3");

    // The file alone: the move is named.
    let (code, _, stderr) = verify(&[s(&path)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(
            "line 1: records 1..3 were in a file moved or deleted while aigate was writing it"
        ),
        "{stderr}"
    );
    // With the moved file beside it, the series is whole.
    let (code, stdout, stderr) = verify(&[s(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Deleted instead: the same, and the directory cannot account for records 1..3.
    std::fs::remove_file(&moved).unwrap();
    let (code, _, stderr) = verify(&[s(dir.path())]);
    assert_eq!(code, 65, "{stderr}");
}

#[test]
fn a_configured_key_that_is_missing_is_refused_not_generated() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = AuditIntegrity {
        signing_key: dir.path().join("mounted/audit.key"),
        generate_key: false,
        ..integrity(dir.path())
    };
    let err = try_open(&dir.path().join("audit.jsonl"), &cfg)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("cannot read the audit signing key"),
        "{err}"
    );
    assert!(!dir.path().join("mounted/audit.key").exists());
}

/// With `storage.audit`, checkpoint records are shipped to PostgreSQL with the rest: a copy of
/// the newest one off the gateway's disk. A log cut on the gateway, with the state file beside
/// it deleted too, is still named by `audit verify --config` (the config's log, checked against
/// the table).
#[tokio::test]
async fn a_cut_log_is_named_against_the_checkpoint_in_postgres() {
    let pg = crate::postgres::Postgres::start();
    let env = crate::common::TestEnv::builder()
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"",
                pg.url()
            ),
        )
        .replace("checkpoint_every = 1000", "checkpoint_every = 3")
        .start()
        .await;
    let client = env.client(false);
    for i in 0..6 {
        let _ = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "claude-cli/2.1.0 (external, cli)")
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
    let log = env.gateway.audit().path().to_path_buf();
    // Checkpoints at seq 4 (after 3 records) and 8 (after 6): wait for the shipper.
    let db = pg.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM aigate_audit WHERE replica = 'a' AND seq = 8 AND line LIKE '%audit_checkpoint%'",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint 8 never reached the table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = env.config_path.clone();
    // The table's checkpoints verify with the gateway's key, pinned, and not with another.
    let out = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["audit", "key", "export", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = env.dir.path().join("audit.pub");
    std::fs::write(&key, &out.stdout).unwrap();
    let (code, stdout, stderr) = verify(&["--postgres", "--config", s(&config), "--key", s(&key)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("replica a: ok, ")
            && stdout.contains(", 2 checkpoints, 2 signatures valid (key "),
        "{stdout}"
    );
    let other = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    drop(open(
        &other.path().join("audit.jsonl"),
        &integrity(other.path()),
    ));
    let other_key = export_key(other.path());
    let (code, _, stderr) = verify(&["--postgres", "--config", s(&config), "--key", s(&other_key)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("replica a: checkpoint at seq 4 is signed by key ")
            && stderr.contains("not by the pinned key: forged"),
        "{stderr}"
    );
    let crate::common::TestEnv { gateway, dir, .. } = env;
    gateway.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&log, kept.join("\n") + "\n").unwrap();
    // The state file goes too, so only the table can tell. It may not be there at all: the
    // shutdown's save is best effort (seen once on a loaded machine), which this test tolerates.
    match std::fs::remove_file(log.with_file_name("audit.checkpoint.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }

    let (code, _, _) = verify(&[s(&log)]);
    assert_eq!(code, 0, "the file alone cannot tell");
    let (code, _, stderr) = verify(&["--config", s(&config)]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains(
            "the log ends at seq 5 but checkpoint 7 exists (the PostgreSQL table aigate_audit, replica a, signed "
        ) && stderr.contains("records 6..8 are missing"),
        "{stderr}"
    );
    drop(dir);
}

/// A rotation that cannot happen (here: the rotated name is taken) keeps writing to the current
/// file and waits before trying again, instead of adding a checkpoint and a file header on
/// every write.
#[tokio::test]
async fn a_failed_rotation_is_not_retried_on_every_write() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.jsonl");
    let taken = dir.path().join("audit.000000000001.jsonl");
    std::fs::write(&taken, "not ours\n").unwrap();
    let cfg = AuditIntegrity {
        checkpoint_every: 1000,
        rotate_size: Some(64 * 1024),
        ..integrity(dir.path())
    };
    let log = open(&path, &cfg);
    write(&log, 0, 400).await;
    stop(log).await;
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "not ours\n");
    let records = lines(&path);
    assert_eq!(
        records.len(),
        400 + 3,
        "one try: a checkpoint and a header, and the shutdown's checkpoint"
    );
    let headers = records
        .iter()
        .filter(|r| r["reason"] == "audit_file_start")
        .count();
    assert_eq!(headers, 1);
    let (code, stdout, stderr) = verify(&[s(&path)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A gateway whose audit log is shipped to `pg` (replica `a`), with a checkpoint every
/// `every` records.
async fn shipping_to(pg: &crate::postgres::Postgres, every: u32) -> crate::common::TestEnv {
    crate::common::TestEnv::builder()
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"",
                pg.url()
            ),
        )
        .replace(
            "checkpoint_every = 1000",
            &format!("checkpoint_every = {every}"),
        )
        .start()
        .await
}

async fn some_calls(env: &crate::common::TestEnv, n: usize) {
    let client = env.client(false);
    for i in 0..n {
        let _ = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "claude-cli/2.1.0 (external, cli)")
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
}

/// Whether the table holds `seq` of replica `a`.
async fn in_table(db: &tokio_postgres::Client, seq: i64) -> bool {
    db.query_one(
        "SELECT count(*) FROM aigate_audit WHERE replica = 'a' AND seq = $1",
        &[&seq],
    )
    .await
    .map(|r| r.get::<_, i64>(0) == 1)
    .unwrap_or(false)
}

/// The checkpoint a stopping gateway writes last is in PostgreSQL when the shutdown returns:
/// the table's copy of where this replica's chain ended (issue 15: it often was not).
#[tokio::test]
async fn the_shutdown_checkpoint_reaches_postgres_before_the_gateway_exits() {
    let pg = crate::postgres::Postgres::start();
    let env = shipping_to(&pg, 1000).await;
    some_calls(&env, 3).await;
    let log = env.gateway.audit().path().to_path_buf();
    let crate::common::TestEnv { gateway, dir, .. } = env;
    gateway.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["reason"], "audit_checkpoint");
    assert_eq!(last["admin"]["cause"], "shutdown");
    let db = pg.client().await;
    assert!(
        in_table(&db, last["seq"].as_i64().unwrap()).await,
        "the shutdown checkpoint (seq {}) is in the table",
        last["seq"]
    );
    drop(dir);
}

/// At start, the log is held to the newest checkpoint in PostgreSQL too: a log cut on the
/// gateway with the state file deleted beside it starts with a `chain_gap` record naming the
/// missing range, not a chain that silently goes on from the cut.
#[tokio::test]
async fn a_cut_log_without_its_state_file_is_caught_at_start_against_postgres() {
    let pg = crate::postgres::Postgres::start();
    let env = shipping_to(&pg, 3).await;
    some_calls(&env, 6).await;
    // Checkpoints at seq 4 and 8; wait until the table has the second.
    let db = pg.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !in_table(&db, 8).await {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint 8 never reached the table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = env.gateway.audit().path().to_path_buf();
    let config = env.config_path.clone();
    let crate::common::TestEnv { gateway, dir, .. } = env;
    gateway.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&log, kept.join("\n") + "\n").unwrap();
    match std::fs::remove_file(log.with_file_name("audit.checkpoint.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }

    let cfg = aigate::config::load(Some(&config)).unwrap();
    let again = aigate::app::App::start(cfg).await.unwrap();
    again.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let gap: serde_json::Value = serde_json::from_str(text.lines().nth(5).unwrap()).unwrap();
    assert_eq!(gap["reason"], "chain_gap", "{text}");
    assert_eq!(gap["error"], "log_shortened");
    let g = &gap["admin"]["gap"];
    assert_eq!(g["from"], 6);
    assert!(g["to"].as_u64().unwrap() >= 8, "{g}");
    assert_eq!(g["checkpoint_from"], "postgres");
    assert_eq!(gap["seq"].as_u64().unwrap(), g["to"].as_u64().unwrap() + 1);
    drop(dir);
}

/// The audit table's day partitions are UTC days whatever the server's time zone. Bounded by
/// date literals, a day's partition is read in the server's zone; records outside it, late in
/// the UTC day on a server east of UTC or early on one west of it, failed to insert and held the
/// shipper there for good (the day's table existed, so it was never made again). The zone is
/// picked so that now falls outside "today" read in it. Fails with partitions bounded in the
/// session's zone.
#[tokio::test]
async fn the_audit_log_ships_at_any_hour_whatever_the_server_s_time_zone() {
    let pg = crate::postgres::Postgres::start();
    let hour = time::OffsetDateTime::now_utc().hour();
    // 14 hours east, "today" ended at 10:00 UTC; 12 hours west, it starts at 12:00 UTC.
    let zone = if hour >= 10 {
        "Etc/GMT-14"
    } else {
        "Etc/GMT+12"
    };
    pg.client()
        .await
        .batch_execute(&format!("ALTER DATABASE postgres SET timezone TO '{zone}'"))
        .await
        .unwrap();
    let env = shipping_to(&pg, 1000).await;
    some_calls(&env, 3).await;
    let text = std::fs::read_to_string(env.gateway.audit().path()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let seq = last["seq"].as_i64().unwrap();
    let db = pg.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !in_table(&db, seq).await {
        assert!(
            std::time::Instant::now() < deadline,
            "record {seq} never reached the table (server in {zone})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One partition, or two when the calls straddle midnight UTC.
    let bounds = crate::postgres::column(
        &db,
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'aigate_audit'::regclass",
    )
    .await;
    // Shown in the server's zone: midnight UTC is 14:00 there, or 12:00 the day before.
    assert!(!bounds.is_empty());
    for b in &bounds {
        assert!(
            b.matches(" 14:00:00+14").count() == 2 || b.matches(" 12:00:00-12").count() == 2,
            "{bounds:?}"
        );
    }
    drop(env);
}
