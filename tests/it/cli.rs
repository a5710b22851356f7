//! The real binary: config errors as exact text, exit codes, `run`, `ca export`, `audit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::TestEnv;

fn aigate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aigate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("AIGATE_CONFIG")
        .env("RUST_LOG", "off");
    c
}

/// The shipped config with the proxy and the admin API on ports the OS picks, for the real binary.
fn shipped_on_free_ports() -> String {
    aigate::config::DEFAULT_CONFIG
        .replace("listen = \"127.0.0.1:3128\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9180\"", "listen = \"127.0.0.1:0\"")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = aigate().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Compare stderr with the expected file; `AIGATE_BLESS=1` rewrites it.
fn assert_stderr(fixture: &str) {
    let (code, _, stderr) = run(&[
        "check",
        "--config",
        &format!("tests/fixtures/{fixture}.toml"),
    ]);
    assert_eq!(code, 78, "{stderr}");
    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{fixture}.stderr"));
    if std::env::var_os("AIGATE_BLESS").is_some() {
        std::fs::write(&expected_path, &stderr).unwrap();
    }
    let expected = std::fs::read_to_string(expected_path).unwrap();
    assert_eq!(stderr, expected);
}

#[test]
fn check_lists_every_problem_with_its_key_path() {
    assert_stderr("bad-everything");
}

#[test]
fn check_lists_every_problem_of_the_workflow_catalog() {
    assert_stderr("bad-workflows");
}

#[test]
fn check_lists_every_problem_of_console_oidc_and_never_its_secret() {
    assert_stderr("bad-console-oidc");
    let (_, _, stderr) = run(&["check", "--config", "tests/fixtures/bad-console-oidc.toml"]);
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn check_reports_wrong_types_and_unknown_keys_together() {
    assert_stderr("bad-types");
}

#[test]
fn check_reports_toml_syntax_with_line_and_column() {
    assert_stderr("bad-syntax");
}

#[test]
fn the_shipped_config_checks_clean() {
    let (code, stdout, stderr) = run(&["check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("embedded default config: ok"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(&["check", "--config", "config/aigate.toml"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("config/aigate.toml: ok"), "{stdout}");
    assert_eq!(stderr, "", "the shipped config draws no warning");
}

/// Issue 15: a listener other hosts can reach, with no proxy authentication and no client
/// networks, is an open proxy into the network behind it. `check` says so (and still passes:
/// the file is valid); either setting silences it.
#[test]
fn check_warns_about_an_open_proxy_on_a_reachable_address() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let open = write(
        "open.toml",
        aigate::config::DEFAULT_CONFIG
            .replace("listen = \"127.0.0.1:3128\"", "listen = \"0.0.0.0:3128\""),
    );
    let (code, _, stderr) = run(&["check", "--config", &open]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr,
        "warning: gateway.listen = \"0.0.0.0:3128\" accepts connections from other hosts, with neither identity.require_auth = true nor gateway.allowed_clients: anyone who can reach it can use the gateway as an open proxy. Set one of them (docs/deployment.md, \"Client networks\")\n"
    );
    let text = std::fs::read_to_string(&open).unwrap();
    for (name, fixed) in [
        (
            "clients.toml",
            text.replace("# allowed_clients = [", "allowed_clients = ["),
        ),
        (
            "auth.toml",
            text.replace("require_auth = false", "require_auth = true"),
        ),
    ] {
        let path = write(name, fixed);
        let (code, _, stderr) = run(&["check", "--config", &path]);
        assert_eq!((code, stderr.as_str()), (0, ""), "{name}");
    }
}

#[test]
fn run_refuses_a_bad_config_before_binding() {
    let (code, _, stderr) = run(&["run", "--config", "tests/fixtures/bad-syntax.toml"]);
    assert_eq!(code, 78, "{stderr}");
}

#[test]
fn bad_usage_exits_64() {
    let (code, _, _) = run(&["explain"]);
    assert_eq!(code, 64);
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 64);
}

#[test]
fn explain_shows_every_rule_and_the_decision() {
    let (code, stdout, stderr) = run(&[
        "explain",
        "--host",
        "api.anthropic.com",
        "--path",
        "/v1/messages",
        "-H",
        "user-agent: claude-cli/2.1.12 (external, cli)",
        "-H",
        "x-app: cli",
        "--workflow",
        "code-analysis",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "tool:      claude-code (confidence high; evidence: user-agent, header:x-app)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("2. rival-coding-tools-in-protected-workflows   block    MATCH"),
        "{stdout}"
    );
    assert!(stdout.contains("decision:  block (reason rule_matched, rule \"rival-coding-tools-in-protected-workflows\"); an exemption can lift this block"), "{stdout}");
    let (_, stdout, _) = run(&[
        "explain",
        "--host",
        "api.anthropic.com",
        "-H",
        "user-agent: claude-cli/2.1.12",
        "--workflow",
        "docs",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["action"], "block", "allow-list: docs is not sanctioned");
    assert_eq!(v["rules"][0]["mismatch"], "workflow not listed");
    assert_eq!(v["rules"][1]["matched"], true);
    // A near-miss is claimed, not trusted; the catalog is shown.
    let (_, stdout, _) = run(&[
        "explain",
        "--host",
        "api.anthropic.com",
        "-H",
        "user-agent: claude-cli/2.1.12",
        "-H",
        "x-aigate-workflow: training_data",
    ]);
    assert!(
        stdout.contains("workflow:  untagged (claimed \"training_data\", which does not count: workflow_unknown)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("workflow catalog (a tag outside it, or one the user may not claim: decided as untagged):"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  vendor-evaluation    unprotected claimable by group ai-evaluation: sandboxed"
        ),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["explain", "--host", "example.org"]);
    assert!(stdout.contains("route:     tunnel"), "{stdout}");
    assert!(
        stdout.contains("decision:  allow (reason not_vendor)"),
        "{stdout}"
    );
    // A catalogued AI host is named as AI traffic outside inspection, as the record names it.
    let (_, stdout, _) = run(&["explain", "--host", "api.mistral.ai", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            v["ai_host"].as_str(),
            v["action"].as_str(),
            v["reason"].as_str()
        ),
        (Some("inference-apis"), Some("monitor"), Some("ai_host")),
        "{v}"
    );
    // A compressed body is decoded as the gateway decodes it: its signals count.
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.br");
    let mut enc = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    enc.write_all(
        br#"{"model":"claude-opus-4-1","system":"x-anthropic-billing-header: cc_version=2.1.197"}"#,
    )
    .unwrap();
    std::fs::write(&file, enc.into_inner()).unwrap();
    let (_, stdout, _) = run(&[
        "explain",
        "--host",
        "api.anthropic.com",
        "--path",
        "/v1/messages",
        "-H",
        "content-encoding: br",
        "--body-file",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["tool"].as_str(), v["model"].as_str()),
        (Some("claude-code"), Some("claude-opus-4-1")),
        "{v}"
    );
    let (code, _, stderr) = run(&[
        "explain",
        "--host",
        "api.anthropic.com",
        "-H",
        "content-encoding: compress",
        "--body",
        "{}",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the gateway refuses such a request (reason body_undecodable, error unsupported_content_encoding)"),
        "{stderr}"
    );
}

#[test]
fn hash_token_reads_stdin() {
    let mut child = aigate()
        .args(["user", "hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        aigate::identify::user::hash_token("s3cret")
    );
}

/// `aigate run` as a newcomer runs it: CA generated with a private key file, banner, traffic,
/// `ca export` printing the same certificate.
#[test]
fn run_starts_prints_where_to_point_clients_and_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("aigate.toml");
    // The tunnel below goes to an echo server on loopback, an internal destination.
    let text = shipped_on_free_ports().replace(
        "allowed_destinations = []",
        "allowed_destinations = [\"127.0.0.0/8\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["run", "--config", "aigate.toml"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for _ in 0..8 {
        banner.push(lines.next().unwrap().unwrap());
    }
    let addr = banner[0].split_whitespace().nth(3).unwrap().to_string();
    assert!(
        banner[0].starts_with("aigate listening on 127.0.0.1:"),
        "{banner:?}"
    );
    // Standard output is a pipe here, not a terminal: no one-time link (it would land in a
    // log), only where to sign in.
    let admin = banner[3].trim_start_matches("admin API:").trim();
    assert_eq!(
        banner[4],
        format!("console:        {admin}/signin"),
        "{banner:?}"
    );
    assert!(
        banner[6].contains(&format!("export HTTPS_PROXY=http://{addr}")),
        "{banner:?}"
    );
    assert!(
        banner[7].contains("export NODE_EXTRA_CA_CERTS=")
            && banner[7].contains("aigate-data/ca-cert.pem"),
        "{banner:?}"
    );
    let key = dir.path().join("aigate-data/ca-key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A tunnel to a non-vendor port through the real binary.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let echo = crate::common::start_echo().await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
    });
    let exported = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["ca", "export", "--config", "aigate.toml"])
        .output()
        .unwrap();
    let pem = std::fs::read_to_string(dir.path().join("aigate-data/ca-cert.pem")).unwrap();
    assert_eq!(String::from_utf8(exported.stdout).unwrap(), pem);
    assert!(!pem.contains("PRIVATE KEY"));
    // SIGTERM: a clean shutdown that flushes the audit log.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    // The shutdown ends the log on a checkpoint signed with the key in the state directory,
    // whose public half IT pins.
    let exported = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["audit", "key", "export", "--config", "aigate.toml"])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let public = dir.path().join("audit.pub");
    std::fs::write(&public, &exported.stdout).unwrap();
    let (code, stdout, stderr) = run(&[
        "audit",
        "verify",
        dir.path().join("aigate-data/audit.jsonl").to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The tunnel's decision and outcome, then the checkpoint.
    assert!(
        stdout.contains("3 records, 1 checkpoint, 1 signature valid")
            && stdout.contains("ok, 3 records")
            && stdout.contains("calls: 1 forwarded, 1 with an outcome"),
        "{stdout}"
    );
}

/// A real log from the gateway, then tampered with three ways.
#[tokio::test]
async fn audit_verify_catches_edit_delete_and_swap() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    for i in 0..5 {
        let _ = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "claude-cli/2.1.0 (external, cli)")
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
    let records = env.audit_n(5).await;
    assert_eq!(records.len(), 5);
    let log = env.gateway.audit().path().to_path_buf();
    let (code, stdout, _) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!(
            "{}: ok, 5 records, chain intact (last seq 5)\n",
            log.display()
        )),
        "{stdout}"
    );
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let check = |name: &str, lines: Vec<String>, expected: &str| {
        let p = env.dir.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let (code, _, stderr) = run(&["audit", "verify", p.to_str().unwrap()]);
        assert_eq!(code, 65, "{name}: {stderr}");
        assert_eq!(
            stderr,
            format!("aigate: {}: {expected}\n", p.display()),
            "{name}"
        );
    };
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"action\":\"block\"", "\"action\":\"allow\"");
    check(
        "edited.jsonl",
        edited,
        "line 3: record was edited: its content does not match its hash",
    );
    let mut deleted = lines.clone();
    deleted.remove(3);
    check(
        "deleted.jsonl",
        deleted,
        "line 4: record seq 4 is missing (found 5): records were deleted",
    );
    let mut swapped = lines.clone();
    swapped.swap(0, 1);
    check(
        "swapped.jsonl",
        swapped,
        "line 1: record seq 2 where 1 was expected: records were reordered or duplicated",
    );

    let (code, stdout, _) = run(&[
        "audit",
        "query",
        log.to_str().unwrap(),
        "--action",
        "block",
        "--tool",
        "claude-code",
        "--since",
        "1h",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 5);
    let (_, stdout, stderr) = run(&["audit", "query", log.to_str().unwrap(), "--action", "allow"]);
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout}");
    assert_eq!(stderr, "0 records\n");
}

/// `aigate run` on a fresh machine (embedded defaults, no admin token anywhere) prints a
/// one-time console link that signs in the built-in local admin, once.
#[test]
fn run_prints_a_one_time_console_link_for_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        shipped_on_free_ports().replace("# signin_link = \"terminal\"", "signin_link = \"always\"");
    std::fs::write(dir.path().join("aigate.toml"), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["run", "--config", "aigate.toml"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    let line = &banner[4];
    assert!(
        line.starts_with("console:        http://127.0.0.1:"),
        "{banner:?}"
    );
    assert!(
        line.ends_with("   (one-time sign-in, 15 minutes)"),
        "{line}"
    );
    let link = line.split_whitespace().nth(1).unwrap().to_string();
    assert!(link.contains("/signin/once/"), "{link}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let first = http.get(&link).send().await.unwrap();
        assert_eq!(first.status(), 303);
        let cookie = first.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let base = link.split("/signin/once/").next().unwrap();
        let page = http
            .get(format!("{base}/exemptions"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.text()
                .await
                .unwrap()
                .contains("<span class=\"user\">local-admin</span>")
        );
        assert_eq!(
            http.get(&link).send().await.unwrap().status(),
            401,
            "single use"
        );
    });
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    // The link went to the terminal only: the audit log has the sign-in, not the secret.
    let audit = std::fs::read_to_string(dir.path().join("aigate-data/audit.jsonl")).unwrap();
    let secret = link.rsplit('/').next().unwrap();
    assert!(audit.contains("console_signed_in"));
    assert!(!audit.contains(secret));
}

/// Start the real binary in `dir`; returns it and (proxy, admin) addresses from its banner.
fn spawn_gateway(dir: &Path) -> (std::process::Child, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigate"));
    cmd.current_dir(dir)
        .args(["run", "--config", "aigate.toml"]);
    spawn_gateway_with(cmd)
}

/// Start `cmd`, which runs the real binary (perhaps under `prlimit`), with its logs off;
/// returns it and (proxy, admin) addresses from its banner.
pub(crate) fn spawn_gateway_with(mut cmd: Command) -> (std::process::Child, String, String) {
    let mut child = cmd
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    let proxy = banner[0].split_whitespace().nth(3).unwrap().to_string();
    let admin = banner[3]
        .trim_start_matches("admin API:")
        .trim()
        .to_string();
    (child, proxy, admin)
}

/// The audit log's helper threads (fsync, the deferred-record flusher, housekeeping) run at
/// the lowest priority (nice 19), so they never preempt a request; the threads that serve
/// requests keep theirs.
#[test]
fn the_audit_fsync_thread_runs_at_the_lowest_priority() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aigate.toml"), shipped_on_free_ports()).unwrap();
    let (mut child, _, _) = spawn_gateway(dir.path());
    // /proc/<pid>/task/<tid>/stat: the fields after the parenthesised name; nice is field 19.
    let nice_of = |task: &Path| -> i64 {
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    };
    let threads = || -> Vec<(String, i64)> {
        std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .map(|task| {
                let task = task.unwrap().path();
                let name = std::fs::read_to_string(task.join("comm")).unwrap();
                (name.trim().to_string(), nice_of(&task))
            })
            .collect()
    };
    // comm is cut to 15 bytes: aigate-audit-sync, -flush, -housekeeping.
    let helpers = ["aigate-audit-sy", "aigate-audit-fl", "aigate-audit-ho"];
    let all_low = |seen: &[(String, i64)]| {
        helpers
            .iter()
            .all(|h| seen.iter().any(|(n, nice)| n == h && *nice == 19))
    };
    // Each thread lowers its own priority as it starts: give them a moment.
    let mut seen = threads();
    for _ in 0..50 {
        if all_low(&seen) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        seen = threads();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(all_low(&seen), "{seen:?}");
    // The request workers keep the process's own priority (the main thread's: 0, or what the
    // gateway was started under, `nice .ci/run` included).
    let own = seen
        .iter()
        .find(|(n, _)| n == "aigate")
        .map(|(_, nice)| *nice)
        .unwrap();
    assert!(own < 19, "{seen:?}");
    assert!(
        seen.iter()
            .any(|(n, nice)| n == "tokio-rt-worker" && *nice == own),
        "{seen:?}"
    );
}

/// A grant acknowledged by the API survives `kill -9` of the real binary.
#[test]
fn an_acknowledged_grant_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let token = "root-token-for-kill-test";
    let text = shipped_on_free_ports().replace(
        "# users_file = \"users.toml\"",
        "users_file = \"users.toml\"",
    ) + &format!(
        "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n",
        aigate::identify::user::hash_token(token)
    );
    std::fs::write(dir.path().join("aigate.toml"), text).unwrap();
    std::fs::write(dir.path().join("users.toml"), "[[users]]\nid = \"alice\"\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let (mut child, _, admin) = spawn_gateway(dir.path());
    let mut ids = Vec::new();
    for i in 0..5 {
        let resp: serde_json::Value = rt.block_on(async {
            let r = client
                .post(format!("{admin}/v1/exemptions"))
                .bearer_auth(token)
                .json(&serde_json::json!({"user": "alice", "tools": ["claude-code"], "for": "2d", "reason": format!("pilot {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json().await.unwrap()
        });
        ids.push(resp["id"].as_str().unwrap().to_string());
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();

    let (mut child, _, admin) = spawn_gateway(dir.path());
    let listed: serde_json::Value = rt.block_on(async {
        client
            .get(format!("{admin}/v1/exemptions?active=true"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let got: Vec<&str> = listed["exemptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The example PAC file must route every vendor host of the shipped policy to the gateway.
#[test]
fn the_example_pac_file_lists_every_shipped_vendor_host() {
    let pac = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/proxy.pac.example"),
    )
    .unwrap();
    let cfg = aigate::config::load(None).unwrap();
    for vendor in &cfg.vendors {
        for host in &vendor.hosts {
            let needle = match host {
                aigate::host::HostPattern::Exact(h) => format!("\"{h}\""),
                aigate::host::HostPattern::Suffix(s) => format!("dnsDomainIs(host, \".{s}\")"),
                aigate::host::HostPattern::Labels(_) => format!("shExpMatch(host, \"{host}\")"),
            };
            assert!(
                pac.contains(&needle),
                "deploy/proxy.pac.example misses {host}"
            );
        }
    }
}

/// SIGHUP reloads the policy of the real binary; an invalid file is refused with check's text.
#[test]
fn sighup_reloads_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let text = shipped_on_free_ports();
    std::fs::write(dir.path().join("aigate.toml"), &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["run", "--config", "aigate.toml"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let _ = out.next();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let line = err.next().unwrap().unwrap();
    assert!(
        line.starts_with("aigate: policy reloaded (version "),
        "{line}"
    );
    std::fs::write(
        dir.path().join("aigate.toml"),
        format!("{text}\n[policy]\n"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let line = err.next().unwrap().unwrap();
    assert!(line.starts_with("aigate: reload refused, the running policy stays in force: aigate.toml: 1 problem found"), "{line}");
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn completions_for_each_shell() {
    for (shell, mark) in [
        ("bash", "complete -F _aigate"),
        ("zsh", "#compdef aigate"),
        ("fish", "complete -c aigate"),
    ] {
        let (code, out, _) = run(&["completions", shell]);
        assert_eq!(code, 0);
        assert!(out.contains(mark), "{shell}");
        assert!(
            out.contains("exemption") && out.contains("audit"),
            "{shell} completes the subcommands"
        );
    }
}

/// `log.format = "json"`: one JSON object per line on stderr, for log shippers.
#[test]
fn json_logs_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let text = shipped_on_free_ports().replace("format = \"pretty\"", "format = \"json\"");
    std::fs::write(dir.path().join("aigate.toml"), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["run", "--config", "aigate.toml"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first thing logged on a fresh state directory: the new CA.
    let line = err.next().unwrap().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "generated a new aigate CA");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The generated PAC file, run by a real JavaScript engine (node) with the standard PAC helper.
#[test]
fn pac_routes_vendor_hosts_through_the_gateway() {
    let (code, pac, err) = run(&["pac", "--proxy", "aigate.corp.example:3128"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aigate.pac");
    std::fs::write(&file, pac).unwrap();
    let script = r#"
        const fs = require("fs");
        // The PAC standard's helper, as browsers define it.
        function dnsDomainIs(host, domain) { return host.length >= domain.length && host.substring(host.length - domain.length) === domain; }
        function shExpMatch(str, shexp) { return new RegExp("^" + shexp.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$").test(str); }
        eval(fs.readFileSync(process.argv[1], "utf8"));
        const hosts = ["api.anthropic.com", "API.OpenAI.com.", "chatgpt.com", "generativelanguage.googleapis.com", "proxy.individual.githubcopilot.com", "githubcopilot.com", "example.org", "anthropic.com", "evilapi.anthropic.com.example", "us-east5-aiplatform.googleapis.com", "bedrock-runtime.eu-west-1.amazonaws.com", "my-res.openai.azure.com", "s3.eu-west-1.amazonaws.com", "api.mistral.ai"];
        console.log(JSON.stringify(hosts.map(h => [h, FindProxyForURL("https://" + h + "/", h)])));
    "#;
    let out = Command::new("node")
        .args(["-e", script, file.to_str().unwrap()])
        .output()
        .expect("node is needed for the PAC test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    let via = "PROXY aigate.corp.example:3128";
    let want = [
        ("api.anthropic.com", via),
        ("API.OpenAI.com.", via),
        ("chatgpt.com", via),
        ("generativelanguage.googleapis.com", via),
        ("proxy.individual.githubcopilot.com", via),
        ("githubcopilot.com", "DIRECT"),
        ("example.org", "DIRECT"),
        ("anthropic.com", "DIRECT"),
        ("evilapi.anthropic.com.example", "DIRECT"),
        ("us-east5-aiplatform.googleapis.com", via),
        ("bedrock-runtime.eu-west-1.amazonaws.com", via),
        ("my-res.openai.azure.com", via),
        ("s3.eu-west-1.amazonaws.com", "DIRECT"),
        ("api.mistral.ai", via),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(h, r)| (h.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, want);
    let (code, _, err) = run(&["pac", "--config", "tests/fixtures/listen-any.toml"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("say how clients reach the gateway with --proxy HOST:PORT"),
        "{err}"
    );
}

/// docs/configuration.md and config/aigate.toml name the same keys (commented-out ones count).
#[test]
fn configuration_doc_and_shipped_config_cover_the_same_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml_text = std::fs::read_to_string(root.join("config/aigate.toml")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut in_toml = std::collections::BTreeSet::new();
    let mut section = String::new();
    // Free-form maps are tables in the file and rows in the doc.
    let maps = [
        "upstream.resolve",
        "identity.source_addresses",
        "ai_hosts.actions",
    ];
    for line in toml_text.lines() {
        // A commented-out table header (`# [[admin.tokens]]`) opens its section like a real one.
        let t = line.trim();
        let t = if t.starts_with("# [") { &t[2..] } else { t };
        if let Some(s) = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            in_toml.insert(format!("[[{s}]]"));
            section = format!("[[{s}]]");
            continue;
        }
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        // Array-of-table fields (and their sub-tables, `[tools.headers]`) and free-form maps are
        // documented per table; a dotted table of its own (`[console.oidc]`) key by key.
        let parent = section.split('.').next().unwrap_or_default();
        if section.starts_with("[[")
            || maps.contains(&section.as_str())
            || in_toml.contains(&format!("[[{parent}]]"))
        {
            continue;
        }
        // `# # key = …`: a commented-out alternative inside a commented-out example.
        let key_line = t.trim_start_matches("# ");
        if let Some((key, _)) = key_line.split_once(" = ") {
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                in_toml.insert(format!("{section}.{key}"));
            }
        }
    }
    for m in maps {
        assert!(
            toml_text.contains(&format!("[{m}]")),
            "{m} missing from config/aigate.toml"
        );
    }
    let mut in_doc = std::collections::BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        for key in first.split(',') {
            in_doc.insert(key.trim().trim_matches('`').to_string());
        }
    }
    for m in maps {
        assert!(in_doc.contains(m), "{m} undocumented");
    }
    let missing_in_doc: Vec<&String> = in_toml.iter().filter(|k| !in_doc.contains(*k)).collect();
    let missing_in_toml: Vec<&String> = in_doc
        .iter()
        .filter(|k| !in_toml.contains(*k) && !maps.contains(&k.as_str()))
        .collect();
    assert!(
        missing_in_doc.is_empty(),
        "keys in config/aigate.toml but not in docs/configuration.md: {missing_in_doc:?}"
    );
    assert!(
        missing_in_toml.is_empty(),
        "keys in docs/configuration.md but not in config/aigate.toml: {missing_in_toml:?}"
    );
}

/// A full disk, for real: the binary runs with a file-size limit (writes past it fail with
/// EFBIG, as on a full disk), fails closed, and once the limit is lifted on the running process
/// the queued records are written and calls go through again, without a restart.
#[tokio::test]
async fn audit_disk_full_fails_closed_and_recovers_without_restart() {
    let env = TestEnv::builder()
        .append("\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n")
        // The file-size limit below is for the audit log; the provenance ledger's file would
        // not even be created under it.
        .replace(
            "enabled = true\n# Only these tools",
            "enabled = false\n# Only these tools",
        )
        .start()
        .await;
    binary_config(&env, "full");
    // `ulimit -f` is in 1024-byte blocks; SIGXFSZ is ignored so a write fails instead of killing.
    let mut child = Command::new("bash")
        .current_dir(env.dir.path())
        .args([
            "-c",
            &format!(
                "trap '' XFSZ; ulimit -S -f 6; exec {} run --config full.toml",
                env!("CARGO_BIN_EXE_aigate")
            ),
        ])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = client_of(&mut child, &env.dir.path().join("full"));
    let send = || {
        client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "Anthropic/Python 0.69.0")
            .body("{}")
            .send()
    };
    let mut refused = None;
    for _ in 0..100 {
        // The answer whose record hits the limit is cut off (fail_closed), not completed.
        let Ok(resp) = send().await else { continue };
        if resp.status() == 503 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the audit log must fill up and the gateway fail closed");
    assert_eq!(refused.headers()["x-aigate-reason"], "audit_unavailable");
    let forwarded_before = env.vendor.requests().len();

    // The disk recovers.
    let lifted = Command::new("prlimit")
        .args([
            "--pid",
            &child.id().to_string(),
            "--fsize=unlimited:unlimited",
        ])
        .status()
        .unwrap();
    assert!(lifted.success());
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if send().await.unwrap().status() == 200 {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "calls go through again once the log is writable, without a restart"
    );
    assert_eq!(
        env.vendor.requests().len(),
        forwarded_before + 1,
        "nothing was forwarded while failing closed"
    );
    // Wait off the runtime: the client's connection must keep answering (the drain's GOAWAY
    // and PING) while the gateway shuts down.
    let started = std::time::Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the idle connection closed at once: {:?}",
        started.elapsed()
    );
    let log = env.dir.path().join("full/audit.jsonl");
    let (code, stdout, stderr) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first refusal is either a decision that could not be written (its outcome says
    // `error = "audit_unavailable"`) or, once the log is known unwritable, a call refused before
    // the policy (`reason = "audit_unavailable"`): which one depends on where in a record the
    // size limit falls.
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "audit_unavailable" || r["error"] == "audit_unavailable"),
        "the refusals were kept and written after recovery: {stdout}"
    );
}

/// A client through the gateway binary `child` started: its proxy address from the banner, its
/// CA from `state`.
pub(crate) fn client_of(child: &mut std::process::Child, state: &Path) -> reqwest::Client {
    gateway_of(child, state).0
}

/// As `client_of`, with the proxy address and the gateway's CA certificate (PEM).
fn gateway_of(
    child: &mut std::process::Child,
    state: &Path,
) -> (reqwest::Client, std::net::SocketAddr, String) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let proxy = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string();
    // Drain the rest of the banner, so the gateway's writes to stdout never block.
    std::thread::spawn(move || lines.for_each(drop));
    let ca = std::fs::read(state.join("ca-cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    (
        client,
        proxy.parse().unwrap(),
        String::from_utf8(ca).unwrap(),
    )
}

/// The env's config with its own state directory, for a binary of its own.
pub(crate) fn binary_config(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let state = env.dir.path().join("state");
    let text = text.replace(
        &format!("{state:?}"),
        &format!("{:?}", env.dir.path().join(name)),
    );
    let path = env.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `kill -9` of the real binary under load: every answer a client received whole has its
/// record in the file, and the chain verifies. A line torn by the kill is cut off on restart and
/// kept in an `audit_recovered` record, so the chain still verifies afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answered_request() {
    let env = TestEnv::builder()
        .append("\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n")
        .start()
        .await;
    let config = binary_config(&env, "kill");
    let state = env.dir.path().join("kill");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_aigate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let client = client_of(&mut child, &state);
    // A slow disk: every write(2) of the gateway (the audit log; sockets use send) takes 20 ms,
    // so records lag far behind the traffic. A gateway that answered before writing would lose
    // the lagging records to the kill.
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=write"])
        .args(["-e", "inject=write:delay_enter=20000", "-p"])
        .arg(child.id().to_string())
        .spawn()
        .expect("strace (apt-get install strace)");
    let traced = format!("/proc/{}/status", child.id());
    for _ in 0..100 {
        let status = std::fs::read_to_string(&traced).unwrap();
        if !status.contains("TracerPid:\t0\n") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Allowed calls (forwarded, answered by the vendor) and blocked ones (answered by aigate),
    // from 8 clients at once, until the gateway dies.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for n in 0..8 {
        let (client, answered) = (client.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            for i in 0u64.. {
                let ua = if (n + i) % 3 == 0 {
                    "claude-cli/2.1.0 (external, cli)"
                } else {
                    "Anthropic/Python 0.69.0"
                };
                let Ok(resp) = client
                    .post("https://api.anthropic.com/v1/messages")
                    .header("user-agent", ua)
                    .body("{\"model\":\"claude-sonnet-4-5\"}")
                    .send()
                    .await
                else {
                    return;
                };
                let id = crate::common::request_id(resp.headers());
                // Only an answer received whole counts as answered.
                if resp.bytes().await.is_err() {
                    return;
                }
                answered.lock().unwrap().push(id);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = strace.wait_with_output();
    for task in load {
        task.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "load: {} answers", answered.len());

    let log = state.join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let written: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !written.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record: {missing:?}",
        missing.len(),
        answered.len()
    );
    let torn = !text.is_empty() && !text.ends_with('\n');
    let (code, _, stderr) = run(&["audit", "verify", log.to_str().unwrap()]);
    if torn {
        assert_eq!(code, 65);
        assert!(stderr.contains("torn write"), "{stderr}");
    } else {
        assert_eq!(code, 0, "{stderr}");
    }

    // A restart continues the chain; a torn line is kept in a record, not left to look like
    // tampering.
    let mut child = spawn();
    let client = client_of(&mut child, &state);
    let resp = client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let pid = child.id().to_string();
    let exited = tokio::task::spawn_blocking(move || {
        Command::new("kill").arg(pid).status().unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success());
    let (code, stdout, stderr) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let recovered = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"audit_recovered\""))
        .count();
    assert_eq!(recovered, usize::from(torn));
}

/// A stdout whose reader is already gone, deterministically: a socket whose peer is closed
/// fails every write with EPIPE, as a pipe does once `head` has exited.
#[cfg(unix)]
fn closed_stdout() -> Stdio {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(theirs);
    Stdio::from(std::os::fd::OwnedFd::from(ours))
}

/// Issue 18: `aigate audit query … | head` printed "Broken pipe (os error 32)". Every command
/// that prints ends quietly, with exit 0, when its reader goes away.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("aigate.toml");
    std::fs::write(
        &cfg,
        shipped_on_free_ports().replace(
            "state_dir = \"./aigate-data\"",
            &format!("state_dir = {state:?}"),
        ),
    )
    .unwrap();
    let loaded = aigate::config::load(Some(&cfg)).unwrap();
    aigate::tls::CertificateAuthority::load_or_create(&loaded.ca, &state).unwrap();
    std::fs::write(state.join("audit.jsonl"), "").unwrap();
    let cfg = cfg.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["check", "--config", cfg],
        &["explain", "--host", "api.anthropic.com"],
        &["completions", "bash"],
        &["pac", "--proxy", "gw.example:3128"],
        &["ca", "export", "--config", cfg],
        &["audit", "query", "--config", cfg],
        &["audit", "verify", "--config", cfg],
    ];
    for args in commands {
        let out = aigate()
            .args(*args)
            .stdout(closed_stdout())
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{args:?}"
        );
    }
}

/// Issue 18: the `pretty` log format wrote colour escape codes into a redirected file.
#[test]
fn pretty_logs_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aigate.toml"), shipped_on_free_ports()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .current_dir(dir.path())
        .args(["run", "--config", "aigate.toml"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("generated a new aigate CA"), "{line}");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

/// Issue 18: "1 rules" in `check`'s summary.
#[test]
fn check_counts_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("one.toml");
    std::fs::write(
        &cfg,
        "[[vendors]]\nid = \"anthropic\"\nname = \"Anthropic\"\nhosts = [\"api.anthropic.com\"]\nerror_format = \"anthropic\"\n\
         [[tools]]\nid = \"claude-code\"\nname = \"Claude Code\"\nuser_agent = \"^claude-cli/\"\n\
         [[rules]]\nname = \"r\"\naction = \"block\"\ntools = [\"claude-code\"]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: ok (1 vendor, 1 tool signature, 1 rule, default action monitor)\n\
             vendors and tools: this file's only; a config file replaces the shipped ones \
             (include_defaults = true extends them instead)\n",
            cfg.display()
        )
    );
}

/// Issue 18: `audit verify` showed `[FILE]` as optional but exited 64 without it. Both review
/// commands default to the log the config names, and say where they looked when it is not there.
#[test]
fn audit_commands_default_to_the_configs_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aigate.toml"), shipped_on_free_ports()).unwrap();
    let in_dir = |args: &[&str]| {
        let out = aigate()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Nothing there yet: an error naming the place and the way to point at the right one.
    let (code, _, err) = in_dir(&["audit", "verify", "--config", "aigate.toml"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        "aigate: no audit log at ./aigate-data/audit.jsonl (state directory ./aigate-data, from \
         aigate.toml); this command reads the gateway's state and never creates it: run it with \
         the gateway's config (--config FILE or AIGATE_CONFIG), or name the log file\n"
    );
    assert!(!dir.path().join("aigate-data").exists());
    // A real log from the real binary.
    let (mut child, _, _) = spawn_gateway(dir.path());
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (code, out, err) = in_dir(&["audit", "verify", "--config", "aigate.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("./aigate-data/audit.jsonl: ok"), "{out}");
    let (code, out, err) = in_dir(&["audit", "query", "--config", "aigate.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TIME "), "{out}");
}

/// Issue 18: `ca export` run without the gateway's config generated a second, unrelated CA in
/// `./aigate-data` and printed it. A command that reads state never creates it.
#[test]
fn ca_export_never_creates_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = aigate()
        .current_dir(dir.path())
        .args(["ca", "export"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "aigate: no CA certificate at ./aigate-data/ca-cert.pem (state directory ./aigate-data, \
         from embedded default config); this command reads the gateway's state and never creates \
         it: run it with the gateway's config (--config FILE or AIGATE_CONFIG); `aigate run` \
         creates the CA on its first start\n"
    );
    assert!(!dir.path().join("aigate-data").exists());
    let out = aigate()
        .current_dir(dir.path())
        .args(["doctor", "--proxy", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr).unwrap().contains(
            "on a client machine, pass the gateway's CA: aigate doctor --ca aigate-ca.pem"
        ),
    );
    assert!(!dir.path().join("aigate-data").exists());
}

const AUDITOR_TOKEN: &str = "query-auditor-token-0001";

/// A gateway with a monitor rule and an auditor token, after three blocked Claude Code calls,
/// two OpenAI SDK calls the default action monitors and one Anthropic SDK call a rule monitors.
async fn reviewed_gateway() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::builder()
        .append(&format!(
            "\n[[rules]]\nname = \"watch-anthropic-sdk\"\naction = \"monitor\"\ntools = [\"anthropic-sdk\"]\n\
             \n[[admin.tokens]]\nuser = \"sam\"\nroles = [\"auditor\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(AUDITOR_TOKEN)
        ))
        .start()
        .await;
    let client = env.client(false);
    let calls: [(&str, &str); 6] = [
        (
            "api.anthropic.com/v1/messages",
            "claude-cli/2.1.0 (external, cli)",
        ),
        ("api.openai.com/v1/chat/completions", "OpenAI/Python 2.1.0"),
        (
            "api.anthropic.com/v1/messages",
            "claude-cli/2.1.0 (external, cli)",
        ),
        ("api.anthropic.com/v1/messages", "Anthropic/Python 0.69.0"),
        ("api.openai.com/v1/chat/completions", "OpenAI/Python 2.1.0"),
        (
            "api.anthropic.com/v1/messages",
            "claude-cli/2.1.0 (external, cli)",
        ),
    ];
    for (url, ua) in calls {
        let resp = client
            .post(format!("https://{url}"))
            .header("user-agent", ua)
            .header("x-stainless-lang", "python")
            .body("{}")
            .send()
            .await
            .unwrap();
        drop(resp.bytes().await.unwrap());
    }
    env.audit_n(6).await;
    let log = env.gateway.audit().path().to_path_buf();
    (env, log)
}

/// Issue 18: "who was blocked, by which rule, in the last day" is one command, and the summary
/// tells a rule's monitor from the default action's.
#[tokio::test]
async fn audit_query_summarises_by_any_field_in_every_format() {
    let (_env, log) = reviewed_gateway().await;
    let log = log.to_str().unwrap();
    let query = |args: &[&str]| {
        let mut all = vec!["audit", "query", log];
        all.extend_from_slice(args);
        run(&all)
    };
    let (code, stdout, stderr) = query(&[
        "--action",
        "block",
        "--since",
        "24h",
        "--group-by",
        "user,rule",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "USER       RULE                                       COUNT\n\
         anonymous  rival-coding-tools-in-protected-workflows  3\n"
    );
    assert_eq!(stderr, "3 records in 1 group\n");

    let (_, stdout, _) = query(&[
        "--action",
        "monitor",
        "--group-by",
        "rule,reason,would_block",
    ]);
    assert_eq!(
        stdout,
        "RULE                 REASON          WOULD_BLOCK  COUNT\n\
         -                    default_action  false        2\n\
         watch-anthropic-sdk  rule_matched    true         1\n"
    );
    let (_, stdout, _) = query(&["--summary", "--format", "csv"]);
    assert_eq!(
        stdout,
        "action,reason,count\nblock,rule_matched,3\nmonitor,default_action,2\nmonitor,rule_matched,1\n"
    );
    let (_, stdout, _) = query(&["--group-by", "tool", "--limit", "1", "--format", "jsonl"]);
    assert_eq!(stdout, "{\"tool\":\"claude-code\",\"count\":3}\n");
}

#[tokio::test]
async fn audit_query_filters_on_every_field_it_documents() {
    let (_env, log) = reviewed_gateway().await;
    let log = log.to_str().unwrap();
    let count = |args: &[&str]| {
        let mut all = vec!["audit", "query", log, "--format", "json"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run(&all);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout.lines().count()
    };
    assert_eq!(count(&[]), 6);
    assert_eq!(
        count(&["--rule", "rival-coding-tools-in-protected-workflows"]),
        3
    );
    assert_eq!(count(&["--rule", "-"]), 2, "no rule: the default action");
    assert_eq!(count(&["--reason", "default_action"]), 2);
    assert_eq!(count(&["--action", "monitor", "--would-block", "true"]), 1);
    assert_eq!(count(&["--vendor", "openai"]), 2);
    assert_eq!(count(&["--kind", "request", "--tool", "anthropic-sdk"]), 1);
    assert_eq!(count(&["--exemption", "-", "--user", "anonymous"]), 6);
    assert_eq!(count(&["--kind", "tunnel"]), 0);
    assert_eq!(count(&["--since", "1h", "--until", "1h"]), 0);
    assert_eq!(count(&["--until", "2000-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["--since", "2000-01-01T00:00:00Z"]), 6);
    // --limit: the newest calls, in the log's order; --id: one call. A forwarded call's
    // decision and outcome are one row, at its outcome, with the decision's kind.
    let text = std::fs::read_to_string(log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ends: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["outcome_follows"] != true)
        .collect();
    let (_, newest, _) = run(&["audit", "query", log, "--format", "json", "--limit", "2"]);
    let newest: Vec<serde_json::Value> = newest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(newest.len(), 2);
    for (row, end) in newest.iter().zip(&ends[ends.len() - 2..]) {
        assert_eq!((&row["id"], &row["seq"]), (&end["id"], &end["seq"]));
        assert_eq!(row["kind"], "request");
    }
    let (_, table, note) = run(&["audit", "query", log, "--limit", "2"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    let next = newest[0]["seq"].as_u64().unwrap();
    assert_eq!(
        note,
        format!(
            "the newest 2 records, older ones left out by --limit (next page: --cursor {next})\n"
        )
    );
    let (_, _, note) = run(&["audit", "query", log, "--limit", "6"]);
    assert_eq!(note, "6 records\n");
    let blocked = text
        .lines()
        .find(|l| l.contains("\"action\":\"block\""))
        .unwrap();
    let id = serde_json::from_str::<serde_json::Value>(blocked).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, one, _) = run(&["audit", "query", log, "--format", "json", "--id", &id]);
    assert_eq!(
        one,
        format!("{blocked}\n"),
        "a call aigate answered: its one line"
    );

    for (args, message) in [
        (
            &["--action", "deny"][..],
            "--action \"deny\": use allow, monitor, block or abandoned",
        ),
        (
            &["--would-block", "yes"][..],
            "--would-block \"yes\": use true or false",
        ),
        (
            &["--until", "last week"][..],
            "--until \"last week\": write an RFC 3339 time (2026-11-20T09:00:00Z) or a duration back from now (24h)",
        ),
    ] {
        let mut all = vec!["audit", "query", log];
        all.extend_from_slice(args);
        let (code, _, stderr) = run(&all);
        assert_eq!(
            (code, stderr.trim_end()),
            (64, format!("aigate: {message}").as_str()),
            "{args:?}"
        );
    }
    let (code, _, stderr) = run(&["audit", "query", log, "--group-by", "user,usr"]);
    assert_eq!(code, 64);
    assert!(
        stderr.starts_with(
            "aigate: --group-by: \"usr\" is not a record field; use one or more of v, seq"
        ),
        "{stderr}"
    );
}

/// Records written by hand: a field the gateway's AI host catalog adds (`ai_host`, the catalog
/// group of an uninspected AI host), a user name
/// with control characters and one long enough to push every column, and CSV quoting.
#[test]
fn audit_query_tables_align_escape_and_csv_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let record = |seq: u64, time: &str, user: &str, extra: &str| {
        let mut r = serde_json::json!({
            "v": 1, "seq": seq, "prev": "0", "time": time, "id": format!("id-{seq}"),
            "kind": "tunnel", "client": "127.0.0.1:5000", "user": user, "tool": null,
            "vendor": null, "host": "api.mistral.ai", "port": 443, "action": "allow",
            "reason": "not_vendor", "rule": null, "exemption": null, "would_block": false,
            "status": 200, "hash": "0"
        });
        if !extra.is_empty() {
            r["ai_host"] = serde_json::Value::String(extra.into());
        }
        r.to_string()
    };
    let lines = [
        record(1, "2026-01-05T10:00:00.000Z", "alice", "inference-apis"),
        record(2, "2026-02-05T10:00:00.000Z", "evil\u{1b}[2J\nname", ""),
        record(
            3,
            "2026-03-05T10:00:00.000Z",
            "a-very-long-user-name-from-the-directory@corp.example",
            "inference-apis",
        ),
        record(4, "2026-03-06T10:00:00.000Z", "o'brien, \"pat\"", ""),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let log = log.to_str().unwrap();

    let (code, stdout, stderr) = run(&[
        "audit",
        "query",
        log,
        "--ai-host",
        "inference-apis",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{}\n{}\n", lines[0], lines[2]));
    let (_, stdout, _) = run(&[
        "audit",
        "query",
        log,
        "--ai-host",
        "-",
        "--until",
        "2026-03-01T00:00:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(stdout, format!("{}\n", lines[1]));
    let (_, stdout, _) = run(&[
        "audit",
        "query",
        log,
        "--kind",
        "tunnel",
        "--group-by",
        "ai_host",
    ]);
    assert_eq!(
        stdout,
        "AI_HOST         COUNT\n-               2\ninference-apis  2\n"
    );

    let (_, table, _) = run(&["audit", "query", log]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "no record may break a row: {table}");
    assert!(rows[2].contains("evil\\u{1b}[2J\\nname"), "{table}");
    assert!(!table.contains('\u{1b}'));
    // Every column after USER starts at the same place in every row, the long name included.
    let tool_at = rows[0].find("TOOL").unwrap();
    for row in &rows[1..] {
        assert_eq!(&row[tool_at..tool_at + 2], "- ", "{table}");
    }

    let (_, csv_text, _) = run(&[
        "audit",
        "query",
        log,
        "--format",
        "csv",
        "--user",
        "o'brien, \"pat\"",
    ]);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let user_col = header.iter().position(|h| h == "user").unwrap();
    assert_eq!(&rows[0][user_col], "o'brien, \"pat\"");
    assert!(csv_text.contains("\"o'brien, \"\"pat\"\"\""), "{csv_text}");
    let rule_col = header.iter().position(|h| h == "rule").unwrap();
    assert_eq!(&rows[0][rule_col], "", "an absent field is an empty cell");
}

/// The CLI and the admin API parse one filter and answer the same records.
#[tokio::test]
async fn audit_query_and_the_admin_api_answer_the_same_records() {
    let (env, log) = reviewed_gateway().await;
    let log = log.to_str().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (flags, params) in [
        (
            &["--action", "block", "--since", "1h"][..],
            "action=block&since=1h",
        ),
        (
            &["--rule", "-", "--vendor", "openai"][..],
            "rule=-&vendor=openai",
        ),
        (&["--would-block", "true"][..], "would_block=true"),
        (&["--limit", "4"][..], "limit=4"),
        (&["--path", "/v1/mess"][..], "path=/v1/mess"),
    ] {
        let mut all = vec!["audit", "query", log, "--format", "json"];
        all.extend_from_slice(flags);
        let (code, stdout, stderr) = run(&all);
        assert_eq!(code, 0, "{stderr}");
        let from_cli: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let page: serde_json::Value = http
            .get(format!(
                "http://{}/v1/audit?{params}",
                env.gateway.admin_addr
            ))
            .bearer_auth(AUDITOR_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut from_api = page["records"].as_array().unwrap().clone();
        from_api.reverse();
        assert!(!from_cli.is_empty(), "{flags:?}");
        assert_eq!(from_cli, from_api, "{flags:?}");
    }
    // Pages: the CLI's next cursor is the API's, and the next page is the same from both.
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let after = cursor
            .as_deref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let page: serde_json::Value = http
            .get(format!(
                "http://{}/v1/audit?limit=2{after}",
                env.gateway.admin_addr
            ))
            .bearer_auth(AUDITOR_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut all = vec!["audit", "query", log, "--format", "json", "--limit", "2"];
        if let Some(c) = &cursor {
            all.extend_from_slice(&["--cursor", c]);
        }
        let (code, stdout, stderr) = run(&all);
        assert_eq!(code, 0, "{stderr}");
        let from_cli: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut from_api = page["records"].as_array().unwrap().clone();
        from_api.reverse();
        assert_eq!(from_cli, from_api, "page after {cursor:?}");
        pages += 1;
        match page["next_cursor"].as_u64() {
            Some(next) => {
                assert_eq!(stderr, format!("next page: --cursor {next}\n"));
                cursor = Some(next.to_string());
            }
            None => break,
        }
    }
    assert!(pages >= 3, "6 calls in pages of 2");
    // Counts: --group-by's JSON lines are the API's groups.
    for (flags, params) in [
        (&["--group-by", "user,rule"][..], "group_by=user,rule"),
        (
            &["--action", "monitor", "--group-by", "tool,would_block"][..],
            "action=monitor&group_by=tool,would_block",
        ),
    ] {
        let mut all = vec!["audit", "query", log, "--format", "json"];
        all.extend_from_slice(flags);
        let (_, stdout, _) = run(&all);
        let from_cli: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let answer: serde_json::Value = http
            .get(format!(
                "http://{}/v1/audit?{params}",
                env.gateway.admin_addr
            ))
            .bearer_auth(AUDITOR_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!from_cli.is_empty(), "{flags:?}");
        assert_eq!(
            serde_json::Value::from(from_cli),
            answer["groups"],
            "{flags:?}"
        );
    }
    let (_, bad) = (
        0,
        http.get(format!(
            "http://{}/v1/audit?would_block=yes",
            env.gateway.admin_addr
        ))
        .bearer_auth(AUDITOR_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    assert_eq!(
        bad,
        "{\"error\":\"would_block = \\\"yes\\\": use true or false\"}"
    );
    let unknown: serde_json::Value = http
        .get(format!("http://{}/v1/audit?limt=5", env.gateway.admin_addr))
        .bearer_auth(AUDITOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        unknown["error"],
        "limt = \"5\": unknown filter; use one of id, action, kind, tool, user, workflow, rule, \
         reason, vendor, exemption, ai_host, would_block, path, since, until; and limit, cursor, group_by"
    );
}

/// Issue 18: a users file whose `manager` names nobody, or whose managers form a cycle, passed
/// `check`.
#[test]
fn check_refuses_a_missing_manager_and_a_manager_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("aigate.toml");
    std::fs::write(
        &cfg,
        aigate::config::DEFAULT_CONFIG.replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        ),
    )
    .unwrap();
    let cases = [
        (
            "[[users]]\nid = \"alice\"\nmanager = \"bobb\"\n[[users]]\nid = \"bob\"\n",
            "users[0].manager = \"bobb\": no user with that id in this file; add them or fix the id",
        ),
        (
            "[[users]]\nid = \"alice\"\nmanager = \"bob\"\n[[users]]\nid = \"bob\"\nmanager = \"alice\"\n",
            "users[0].manager: a manager cycle (alice -> bob -> alice); the chain of managers must end at someone with no manager",
        ),
    ];
    // A default the workflow catalog does not list would decide this user's untagged calls
    // under a tag no rule can name.
    std::fs::write(
        dir.path().join("users.toml"),
        "[[users]]\nid = \"alice\"\ndefault_workflow = \"training_data\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("identity.users_file: user \"alice\": default_workflow = \"training_data\" is not in the workflow catalog; known workflows are "),
        "{stderr}"
    );
    for (users, message) in cases {
        std::fs::write(dir.path().join("users.toml"), users).unwrap();
        let (code, _, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "identity.users_file = \"users.toml\": users file {}: {message}",
                dir.path().join("users.toml").display()
            )),
            "{stderr}"
        );
    }
}

/// `[ai_hosts]` mistakes, each named with its key path (issue 14).
#[test]
fn check_names_every_ai_host_catalog_problem() {
    assert_stderr("bad-ai-hosts");
}

/// Issue 18: a config with zero vendors passed `check` with "ok (0 vendors, …)", and nothing
/// would be intercepted. It warns, says that a file replaces the shipped catalogs, and
/// `include_defaults = true` extends them instead.
#[test]
fn a_file_replaces_the_shipped_catalogs_unless_it_includes_them() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = aigate::config::load(None).unwrap();
    let (vendors, tools) = (shipped.vendors.len(), shipped.tools.len());
    let check = |text: &str| {
        let cfg = dir.path().join("aigate.toml");
        std::fs::write(&cfg, text).unwrap();
        let (code, stdout, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        (stdout, stderr)
    };
    let (stdout, stderr) = check("[policy]\ndefault_action = \"block\"\n");
    assert!(
        stdout.contains(
            ": ok (0 vendors, 0 tool signatures, 0 rules, default action block)\n\
             vendors and tools: this file's only; a config file replaces the shipped ones \
             (include_defaults = true extends them instead)\n"
        ),
        "{stdout}"
    );
    assert_eq!(
        stderr,
        "warning: vendors: none, so nothing is intercepted: every call is tunnelled untouched and \
         no rule ever applies. A config file replaces the shipped catalogs entirely; list \
         [[vendors]] and [[tools]], or put include_defaults = true at the top of the file to \
         extend the shipped ones\n"
    );
    let (stdout, stderr) = check("include_defaults = true\n[policy]\ndefault_action = \"block\"\n");
    assert!(
        stdout.contains(&format!(
            ": ok ({vendors} vendors, {tools} tool signatures, 0 rules, default action block)\n\
             vendors and tools: this file's, then the shipped ones (include_defaults = true)\n"
        )),
        "{stdout}"
    );
    assert_eq!(stderr, "");
    // A vendor of its own joins the shipped ones; one with a shipped id replaces it.
    let (stdout, _) = check(
        "include_defaults = true\n\
         [[vendors]]\nid = \"acme\"\nname = \"Acme AI\"\nhosts = [\"api.acme.example\"]\nerror_format = \"openai\"\n\
         [[vendors]]\nid = \"anthropic\"\nname = \"Anthropic via proxy\"\nhosts = [\"anthropic.corp.example\"]\nerror_format = \"anthropic\"\n",
    );
    assert!(
        stdout.contains(&format!(": ok ({} vendors,", vendors + 1)),
        "{stdout}"
    );
    let cfg = dir.path().join("aigate.toml");
    let (_, stdout, _) = run(&[
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--host",
        "anthropic.corp.example",
        "-H",
        "user-agent: claude-cli/2.1.12",
    ]);
    assert!(stdout.contains("tool:      claude-code"), "{stdout}");
    // A wrong type is a problem with its key path.
    let text = "include_defaults = \"yes\"\n";
    std::fs::write(&cfg, text).unwrap();
    let (code, _, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "include_defaults = \"yes\": write true (extend the shipped vendors and tools) or false"
        ),
        "{stderr}"
    );
}

/// Issue 18: docs/policy.md's "roll out as monitor first", done to the shipped exemptable rule,
/// made the file invalid.
#[test]
fn an_exemptable_rule_can_be_rolled_out_as_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = aigate::config::DEFAULT_CONFIG;
    let text = shipped.replacen(
        "action = \"block\"\nexemptable = true",
        "action = \"monitor\"\nexemptable = true",
        1,
    );
    assert_ne!(text, shipped);
    let cfg = dir.path().join("rollout.toml");
    std::fs::write(&cfg, text).unwrap();
    let (code, stdout, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

/// Issue 18: README.md linked `../shared/DESIGN.md` and `../shared/STYLE.md`, which do not exist
/// in a clone. Every relative link in the README, CONTRIBUTING.md and docs/ names a file of this
/// repository, and no page still calls PostgreSQL "a later issue".
#[test]
fn every_relative_doc_link_resolves_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(!text.contains("a later issue"), "{}", page.display());
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let inside = page
                .parent()
                .unwrap()
                .join(file)
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root.canonicalize().unwrap()));
            if !inside {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        !readme.contains("../shared/"),
        "README points outside the clone"
    );
    for deploy in [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/pdb.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(deploy)).unwrap();
        assert!(!text.contains("a later issue"), "{deploy}");
    }
}

/// `kill -9` of the real binary during an allowed SSE stream and during an open WebSocket (issue
/// 15): both calls reached the vendor, so both have their decision record in the log, written
/// before the vendor saw a byte, and the progress records of the live session. After the
/// restart each has an `outcome_lost` outcome, and `audit verify` and `audit query` join them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_and_mid_websocket_leaves_their_records() {
    use futures_util::{SinkExt, StreamExt};
    let env = TestEnv::builder()
        .append("\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n")
        .replace("progress_interval = \"60s\"", "progress_interval = \"1s\"")
        .start()
        .await;
    let config = binary_config(&env, "killstream");
    let state = env.dir.path().join("killstream");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_aigate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let (client, proxy, ca) = gateway_of(&mut child, &state);

    // An SSE stream: the vendor sends its first event and holds the rest.
    let mut stream = client
        .post("https://api.anthropic.com/sse")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body("{\"model\":\"claude-sonnet-4-5\",\"stream\":true}")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let sse_id = crate::common::request_id(stream.headers());
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message"));

    // A Codex-style WebSocket, open and in use.
    let tls = crate::common::tls_through_at(
        proxy,
        &ca,
        "api.openai.com:443",
        "",
        "api.openai.com",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let req = http::Request::builder()
        .uri("wss://api.openai.com/v1/responses")
        .header("host", "api.openai.com")
        .header("user-agent", "OpenAI/Python 2.1.0")
        .header("x-stainless-lang", "python")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    let ws_id = crate::common::request_id(resp.headers());
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hello"
    );
    assert_eq!(
        env.vendor.requests().len(),
        2,
        "both calls reached the vendor"
    );

    // Long enough for a progress record of each (progress_interval = 1s).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();
    drop((stream, ws));

    let log = state.join("audit.jsonl");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let of = |records: &[serde_json::Value], id: &str, kind: &str| -> Vec<serde_json::Value> {
        records
            .iter()
            .filter(|r| r["id"] == id && r["kind"] == kind)
            .cloned()
            .collect()
    };
    let before = lines();
    for (id, tool, action) in [
        (&sse_id, "anthropic-sdk", "allow"),
        (&ws_id, "openai-sdk", "monitor"),
    ] {
        let decision = of(&before, id, "request");
        assert_eq!(decision.len(), 1, "the decision of {id}: {before:#?}");
        assert_eq!(decision[0]["outcome_follows"], true);
        assert_eq!(decision[0]["tool"], tool);
        assert_eq!(decision[0]["action"], action);
        let progress = of(&before, id, "progress");
        assert!(
            !progress.is_empty(),
            "a progress record of {id}: {before:#?}"
        );
        assert!(of(&before, id, "outcome").is_empty());
    }
    let sse_progress = of(&before, &sse_id, "progress");
    assert!(sse_progress.last().unwrap()["bytes_down"].as_u64().unwrap() >= first.len() as u64);
    let ws_progress = of(&before, &ws_id, "progress");
    let last = ws_progress.last().unwrap();
    assert!(last["bytes_up"].as_u64().unwrap() > 0 && last["bytes_down"].as_u64().unwrap() > 0);
    let (code, stdout, stderr) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("2 forwarded, 0 with an outcome"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&sse_id) && stdout.contains(&ws_id),
        "{stdout}"
    );

    // The restart accounts for both calls before it serves anything.
    let mut child = spawn();
    let _ = gateway_of(&mut child, &state);
    let pid = child.id().to_string();
    let exited = tokio::task::spawn_blocking(move || {
        Command::new("kill").arg(pid).status().unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success());
    let after = lines();
    for id in [&sse_id, &ws_id] {
        let outcome = of(&after, id, "outcome");
        assert_eq!(outcome.len(), 1, "the outcome of {id}: {after:#?}");
        assert_eq!(outcome[0]["error"], "outcome_lost");
    }
    assert_eq!(
        of(&after, &sse_id, "outcome")[0]["bytes_down"],
        sse_progress.last().unwrap()["bytes_down"],
        "the bytes of the last progress record"
    );
    let (code, stdout, stderr) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("2 forwarded, 2 with an outcome (2 outcome_lost), 0 without one"),
        "{stdout}"
    );
    // `audit query` shows each call once, joined.
    let (code, stdout, stderr) =
        run(&["audit", "query", log.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in [&sse_id, &ws_id] {
        let row: Vec<_> = rows.iter().filter(|r| r["id"] == *id).collect();
        assert_eq!(row.len(), 1, "{rows:#?}");
        assert_eq!(row[0]["kind"], "request");
        assert_eq!(row[0]["error"], "outcome_lost");
    }
}

/// A decision written before a rotation, left open by a `kill -9` after it, is in the rotated
/// file, not the current one: the restart still gives it its `outcome_lost` (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_a_rotation_still_accounts_for_the_open_call() {
    let env = TestEnv::builder()
        .append("\n[[rules]]\nname = \"sdk\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n")
        .replace("rotate_size = \"1GiB\"", "rotate_size = \"64KiB\"")
        .start()
        .await;
    let config = binary_config(&env, "killrotate");
    let state = env.dir.path().join("killrotate");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_aigate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let (client, _, _) = gateway_of(&mut child, &state);
    let mut stream = client
        .post("https://api.anthropic.com/sse")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body("{\"model\":\"claude-sonnet-4-5\",\"stream\":true}")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let sse_id = crate::common::request_id(stream.headers());
    stream.chunk().await.unwrap().unwrap();

    // More than 64 KiB of other calls: the file holding the stream's decision is rotated.
    let log = state.join("audit.jsonl");
    let rotated = state.join("audit.000000000001.jsonl");
    for _ in 0..400 {
        if rotated.exists() {
            break;
        }
        let resp = client
            .post("https://api.anthropic.com/v1/messages")
            .header("user-agent", "Anthropic/Python 0.69.0")
            .body("{\"model\":\"claude-sonnet-4-5\"}")
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap();
    }
    assert!(rotated.exists(), "the log was rotated");
    let text = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert!(text(&rotated).contains(&sse_id));
    assert!(
        !text(&log).contains(&sse_id),
        "the decision is not in the current file"
    );
    child.kill().unwrap(); // SIGKILL: the stream is open
    child.wait().unwrap();
    drop(stream);

    let mut child = spawn();
    let _ = gateway_of(&mut child, &state);
    let pid = child.id().to_string();
    let exited = tokio::task::spawn_blocking(move || {
        Command::new("kill").arg(pid).status().unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success());
    let outcomes: Vec<serde_json::Value> = text(&log)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["id"] == sse_id.as_str() && r["kind"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    assert_eq!(outcomes[0]["error"], "outcome_lost");
    let (code, _, stderr) = run(&["audit", "verify", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

/// A CONNECT tunnel that aigate does not intercept is audited like a stream: its decision is in
/// the log once it is open, progress records follow while it runs, and a `kill -9` leaves a
/// decision that the restart closes with `outcome_lost` (issue 15: one record at its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_tunnel_leaves_its_decision_progress_and_outcome_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::builder()
        .replace("progress_interval = \"60s\"", "progress_interval = \"1s\"")
        .start()
        .await;
    let config = binary_config(&env, "killtunnel");
    let state = env.dir.path().join("killtunnel");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_aigate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let (_, proxy, _) = gateway_of(&mut child, &state);
    let mut tunnel = crate::common::connect_raw_at(proxy, "echo.internal.test:7000", "")
        .await
        .unwrap();
    tunnel.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");

    let log = state.join("audit.jsonl");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let of = |records: &[serde_json::Value], kind: &str| -> Vec<serde_json::Value> {
        records
            .iter()
            .filter(|r| r["host"] == "echo.internal.test" && r["kind"] == kind)
            .cloned()
            .collect()
    };
    // The decision is there while the tunnel is open.
    let decision = of(&lines(), "tunnel");
    assert_eq!(decision.len(), 1, "{:#?}", lines());
    assert_eq!(decision[0]["outcome_follows"], true);
    assert_eq!(decision[0]["reason"], "not_vendor");
    assert_eq!(decision[0]["status"], 200);
    let id = decision[0]["id"].as_str().unwrap().to_string();

    // Long enough for progress records (progress_interval = 1s).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    child.kill().unwrap(); // SIGKILL: the tunnel is open
    child.wait().unwrap();
    drop(tunnel);
    let before = lines();
    let progress = of(&before, "progress");
    assert!(!progress.is_empty(), "{before:#?}");
    let last = progress.last().unwrap();
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["bytes_up"], 5);
    assert_eq!(last["bytes_down"], 5);
    assert!(of(&before, "outcome").is_empty());

    let mut child = spawn();
    let _ = gateway_of(&mut child, &state);
    let pid = child.id().to_string();
    let exited = tokio::task::spawn_blocking(move || {
        Command::new("kill").arg(pid).status().unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success());
    let outcome = of(&lines(), "outcome");
    assert_eq!(outcome.len(), 1, "{:#?}", lines());
    assert_eq!(outcome[0]["id"], id.as_str());
    assert_eq!(outcome[0]["error"], "outcome_lost");
    assert_eq!(outcome[0]["bytes_down"], 5);
}
