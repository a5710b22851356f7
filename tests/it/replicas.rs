//! Several replicas sharing one real PostgreSQL: grants and revocations reach every replica
//! within a second, a database outage neither loses an acknowledged grant nor stops enforcement,
//! and every replica's audit chain lands in the shared table and verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestClock, TestEnv, client_for};
use crate::postgres::Postgres;

const ROOT: &str = "root-admin-token-for-replicas";

/// Replica "a" (the env's gateway) on `pg`; loopback clients are alice.
async fn replica_a(pg: &Postgres, clock: Option<Arc<TestClock>>) -> TestEnv {
    let mut b = replica_a_builder(pg);
    if let Some(c) = clock {
        b = b.clock(c);
    }
    b.start().await
}

/// [`replica_a`]'s set-up, for a test that changes more of it.
fn replica_a_builder(pg: &Postgres) -> crate::common::Builder {
    TestEnv::builder()
        .replace("# users_file = \"users.toml\"", "users_file = \"users.toml\"")
        .replace(
            "backend = \"file\"",
            &format!(
                "backend = \"postgres\"\nurl = \"{}\"\nreplica_id = \"a\"\nresync_interval = \"2s\"",
                pg.url()
            ),
        )
        .replace(
            "# \"10.20.0.0/16\" = \"ci-runners\"",
            "\"127.0.0.1\" = \"alice\"",
        )
        .append(&format!(
            "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(ROOT)
        ))
        .users("[[users]]\nid = \"alice\"\n")
}

async fn admin_call(
    admin: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .request(method, format!("http://{admin}{path}"))
        .bearer_auth(ROOT);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn grant(admin: std::net::SocketAddr) -> (u16, Value) {
    admin_call(
        admin,
        reqwest::Method::POST,
        "/v1/exemptions",
        Some(json!({"user": "alice", "tools": ["claude-code"], "for": "1h", "reason": "bake-off"})),
    )
    .await
}

async fn claude_status(client: &reqwest::Client) -> u16 {
    client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .body("{\"model\":\"claude-sonnet-4-5\"}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Poll until the call gets `want`; returns how long it took.
async fn until_status(client: &reqwest::Client, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if claude_status(client).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "no {want} within {within:?}: the change did not reach this replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `aigate audit verify --postgres`, the real binary.
fn verify_postgres(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["audit", "verify", "--postgres", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// `aigate db migrate`, the real binary, on the shipped config with `storage` in place of
/// `backend = "file"` (written to `dir/aigate.toml`).
fn migrate_with(dir: &std::path::Path, storage: &str) -> std::process::Output {
    let config = dir.join("aigate.toml");
    std::fs::write(
        &config,
        aigate::config::DEFAULT_CONFIG.replace("backend = \"file\"", storage),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["db", "migrate", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

async fn until_up(gw: &aigate::AppHandle, up: bool) {
    for _ in 0..300 {
        if gw.storage_up() == Some(up) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("storage never became up = {up}");
}

/// Replica B beside `env`'s A: the same config and database, its own state and replica id;
/// returns once both follow the database.
async fn replica_b(env: &TestEnv) -> aigate::AppHandle {
    let b = env
        .variant("b", |t| {
            t.replace("replica_id = \"a\"", "replica_id = \"b\"")
        })
        .await;
    until_up(&env.gateway, true).await;
    until_up(&b, true).await;
    b
}

#[tokio::test]
async fn a_grant_on_one_replica_holds_on_the_other_within_a_second() {
    let pg = Postgres::start();
    let env = replica_a(&pg, None).await;
    let b = replica_b(&env).await;
    let via_a = client_for(&env.gateway, "", true);
    let via_b = client_for(&b, "", true);
    assert_eq!(claude_status(&via_a).await, 403);
    assert_eq!(claude_status(&via_b).await, 403);

    let (status, ex) = grant(env.gateway.admin_addr).await;
    assert_eq!(status, 201, "{ex}");
    let seen = until_status(&via_b, 200, Duration::from_secs(1)).await;
    eprintln!("grant via A reached B after {seen:?}");

    let id = ex["id"].as_str().unwrap();
    let (status, _) = admin_call(
        b.admin_addr,
        reqwest::Method::DELETE,
        &format!("/v1/exemptions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let seen = until_status(&via_a, 403, Duration::from_secs(1)).await;
    eprintln!("revoke via B reached A after {seen:?}");

    // Both replicas' audit chains land in the table and verify.
    for gw in [&env.gateway, &b] {
        assert!(gw.audit().flush().await);
    }
    let db = pg.client().await;
    let mut replicas = Vec::new();
    for _ in 0..100 {
        replicas = db
            .query(
                "SELECT replica, count(*) FROM aigate_audit GROUP BY replica ORDER BY replica",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        // Each replica ships on its own: b's first records can be in while its revocation,
        // written after them, is not yet (seen once in CI).
        let revoked: i64 = db
            .query_one(
                "SELECT count(*) FROM aigate_audit WHERE line LIKE '%\"exemption_revoked\"%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if replicas.len() == 2 && revoked > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        replicas.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let partitions: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'aigate_audit'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitions >= 1, "records go to a day partition");
    let out = verify_postgres(&env.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("replica a: ok") && stdout.contains("replica b: ok"),
        "{stdout}"
    );

    // Tampering with one row is caught, naming the replica.
    db.execute(
        "UPDATE aigate_audit SET line = replace(line, '\"status\":403', '\"status\":200') WHERE replica = 'b' AND line LIKE '%\"status\":403%'",
        &[],
    )
    .await
    .unwrap();
    let out = verify_postgres(&env.config_path);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replica b:") && stderr.contains("edited"),
        "{stderr}"
    );

    // The admin API reads every replica's records from the table.
    let (status, page) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::GET,
        "/v1/audit?kind=admin&limit=10",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let reasons: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        reasons.contains(&"exemption_granted") && reasons.contains(&"exemption_revoked"),
        "the grant (replica a) and the revocation (replica b) in one place: {page}"
    );
    // Counts too: every replica's records, grouped.
    let (status, summary) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::GET,
        "/v1/audit?kind=admin&group_by=reason,replica",
        None,
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    let groups = summary["groups"].as_array().unwrap();
    let count = |reason: &str, replica: &str| {
        groups
            .iter()
            .find(|g| g["reason"] == reason && g["replica"] == replica)
            .map(|g| g["count"].clone())
    };
    assert_eq!(
        count("exemption_granted", "a"),
        Some(serde_json::json!(1)),
        "{summary}"
    );
    assert_eq!(
        count("exemption_revoked", "b"),
        Some(serde_json::json!(1)),
        "{summary}"
    );
}

/// Issue 15: each replica checked a grant's cover against its own in-memory list, so grants
/// sent at once to two replicas could each fit a limit they exceed together. Twenty one-day
/// grants for one subject on different days, ten through each replica at once: exactly 14 days
/// of cover are accepted and committed (14 in any 30 days allowed). Five subjects in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_on_two_replicas_stay_within_the_cover_limit() {
    let pg = Postgres::start();
    let env = replica_a(&pg, None).await;
    let b = replica_b(&env).await;
    let db = pg.client().await;
    const DAY: u64 = 86_400;
    let now = std::time::SystemTime::now();
    for round in 0..5 {
        let group = format!("race-{round}");
        let grants = (0..20u64).map(|i| {
            let starts = now + Duration::from_secs(i * DAY + 60);
            let body = json!({"group": &group, "tools": ["claude-code"], "reason": "race",
                "starts_at": humantime::format_rfc3339_seconds(starts).to_string(), "for": "1d"});
            let admin = if i % 2 == 0 {
                env.gateway.admin_addr
            } else {
                b.admin_addr
            };
            admin_call(admin, reqwest::Method::POST, "/v1/exemptions", Some(body))
        });
        let results = futures_util::future::join_all(grants).await;
        for (status, body) in &results {
            assert!(*status == 201 || *status == 400, "{status} {body}");
        }
        let accepted = results.iter().filter(|(s, _)| *s == 201).count();
        let stored: i64 = db
            .query_one(
                "SELECT count(*) FROM aigate_exemptions WHERE body->'subject' = $1",
                &[&json!({ "group": &group })],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!((accepted, stored), (14, 14), "grants for group {group}");
    }
}

#[tokio::test]
async fn with_the_database_down_replicas_enforce_their_snapshot_and_refuse_grants() {
    let pg = Postgres::start();
    let clock = Arc::new(TestClock::default());
    let env = replica_a(&pg, Some(clock.clone())).await;
    let b = replica_b(&env).await;
    let via_a = client_for(&env.gateway, "", true);
    let via_b = client_for(&b, "", true);
    let (status, _) = grant(env.gateway.admin_addr).await;
    assert_eq!(status, 201);
    until_status(&via_b, 200, Duration::from_secs(1)).await;

    pg.stop();
    // Enforcement goes on from the snapshot: the exemption still holds on both.
    assert_eq!(claude_status(&via_a).await, 200);
    assert_eq!(claude_status(&via_b).await, 200);
    // A grant is refused, not acknowledged and lost.
    let (status, body) = grant(b.admin_addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was granted"),
        "{body}"
    );
    until_up(&b, false).await;
    let ready = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/readyz", b.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "a replica stays in service");
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .contains("PostgreSQL unreachable")
    );

    // The database comes back: both reconnect on their own, and grants work again.
    pg.start_again();
    until_up(&env.gateway, true).await;
    until_up(&b, true).await;
    let (status, _) = grant(b.admin_addr).await;
    assert_eq!(status, 201);
    let db = pg.client().await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM aigate_exemptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 2,
        "the refused grant was never stored; the others were"
    );

    // Expiry is the clock's business: with the database down again, the exemptions still end
    // (replica a runs on the test's clock).
    until_status(&via_a, 200, Duration::from_secs(1)).await;
    pg.stop();
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(claude_status(&via_a).await, 403);
}

#[test]
fn migrations_run_twice_without_harm() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("backend = \"postgres\"\nurl = \"{}\"", pg.url());
    let migrate = || migrate_with(dir.path(), &storage);
    let first = migrate();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8]")
    );
    let second = migrate();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("schema up to date"));

    // A file-backed config is a usage error that says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["db", "migrate"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.backend = \"postgres\""));
}

/// The connection to PostgreSQL is TLS with a verified certificate when the URL asks for it: a
/// server that accepts TLS only is reached with `storage.ca_file`, refused without it (its
/// certificate is not trusted), and refused with TLS turned off.
#[test]
fn the_database_connection_is_verified_tls() {
    let ca = crate::common::TestCa::new("aigate test database CA");
    let pg = Postgres::start_tls(&ca);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db-ca.pem"), &ca.cert_pem).unwrap();
    let url = format!("postgres://aigate@127.0.0.1:{}/postgres", pg.port);
    let migrate = |storage: &str| migrate_with(dir.path(), storage);
    let verified = migrate(&format!(
        "backend = \"postgres\"\nurl = \"{url}?sslmode=require\"\nca_file = \"db-ca.pem\""
    ));
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let untrusted = migrate(&format!(
        "backend = \"postgres\"\nurl = \"{url}?sslmode=require\""
    ));
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let plain = migrate(&format!(
        "backend = \"postgres\"\nurl = \"{url}?sslmode=disable\"\nca_file = \"db-ca.pem\""
    ));
    assert!(
        !plain.status.success(),
        "a TLS-only server refuses plain TCP"
    );
}

/// The message of a blocked Claude Code call.
async fn claude_message(client: &reqwest::Client) -> String {
    let resp = client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "claude-cli/2.1.12 (external, cli)")
        .body("{\"model\":\"claude-sonnet-4-5\"}")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Issue 16: the request loop across replicas. The link is made on A, opens on B (drafts are
/// written to the shared table off the data path), the request is submitted on A and approved
/// on B, and the next call through either replica is exempt within a second.
#[tokio::test]
async fn a_request_made_on_one_replica_is_approved_on_the_other() {
    let pg = Postgres::start();
    let env = replica_a(&pg, None).await;
    let b = replica_b(&env).await;
    let via_a = client_for(&env.gateway, "", true);
    let via_b = client_for(&b, "", true);
    let message = claude_message(&via_a).await;
    let base = format!("http://{}/r/", env.gateway.admin_addr);
    let at = message.find(&base).unwrap_or_else(|| panic!("{message}")) + base.len();
    let draft = &message[at..at + 16];

    // The draft made on A opens on B.
    let started = Instant::now();
    let (mut status, mut seen) = (0, Value::Null);
    while started.elapsed() < Duration::from_secs(2) {
        (status, seen) = admin_call(
            b.admin_addr,
            reqwest::Method::GET,
            &format!("/v1/drafts/{draft}"),
            None,
        )
        .await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["draft"]["user"], "alice");

    let (status, r) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"draft": draft, "justification": "bake-off", "duration": "1h"})),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let rq = r["id"].as_str().unwrap().to_string();
    // One open request across replicas: B refuses a second one and shows A's.
    let (status, again) = admin_call(
        b.admin_addr,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"draft": draft, "justification": "again", "duration": "1h"})),
    )
    .await;
    assert_eq!(
        (status, again["id"].as_str()),
        (200, Some(rq.as_str())),
        "{again}"
    );

    // B hears of it, and says so in its own deny message.
    let started = Instant::now();
    loop {
        let m = claude_message(&via_b).await;
        if m.contains(&format!("Your request {rq} is waiting for root since ")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "B never heard of {rq}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, ok) = admin_call(
        b.admin_addr,
        reqwest::Method::POST,
        &format!("/v1/requests/{rq}/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let ex = ok["exemption"].as_str().unwrap().to_string();
    let seen_a = until_status(&via_a, 200, Duration::from_secs(1)).await;
    let seen_b = until_status(&via_b, 200, Duration::from_secs(1)).await;
    eprintln!("approval on B: exempt via A after {seen_a:?}, via B after {seen_b:?}");
    // A knows the request is decided, and approving it again anywhere is refused.
    let (status, _) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::POST,
        &format!("/v1/requests/{rq}/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 409);
    let db = pg.client().await;
    let row = db
        .query_one("SELECT body FROM aigate_exemptions WHERE id = $1", &[&ex])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Value>(0)["request"], rq.as_str());
}

/// Issue 16 in a real browser, across replicas: alice's link, made by replica A, is opened and
/// submitted on A's page; root signs in on A's console and approves in B's console (one session
/// for both: it lives in PostgreSQL); alice's next call through A passes within a second.
#[tokio::test]
async fn in_the_browser_a_request_on_one_replicas_page_is_approved_in_the_others_console() {
    const ENTER: &str = "\u{e007}";
    let pg = Postgres::start();
    let env = replica_a(&pg, None).await;
    let b = replica_b(&env).await;
    let via_a = client_for(&env.gateway, "", true);
    let message = claude_message(&via_a).await;
    let a_base = format!("http://{}", env.gateway.admin_addr);
    let b_base = format!("http://{}", b.admin_addr);
    let at = message
        .find(&format!("{a_base}/r/"))
        .unwrap_or_else(|| panic!("{message}"))
        + a_base.len()
        + 3;
    let draft = message[at..at + 16].to_string();

    let browser = crate::common::Browser::start().await;
    browser.goto(&format!("{a_base}/r/{draft}")).await;
    browser
        .find("#justification")
        .await
        .send_keys("bake-off across replicas")
        .await
        .unwrap();
    browser
        .find("#duration")
        .await
        .select_by_value("1h")
        .await
        .unwrap();
    browser
        .find("#ask ~ form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let card = browser.text("section[aria-labelledby=status]").await;
    let rq = card
        .split_whitespace()
        .find(|w| w.starts_with("rq-"))
        .unwrap_or_else(|| panic!("{card}"))
        .to_string();

    // root signs in on A; B's console knows the session and shows A's request.
    browser.goto(&format!("{a_base}/signin")).await;
    browser
        .find("#token")
        .await
        .send_keys(&format!("{ROOT}{ENTER}"))
        .await
        .unwrap();
    browser.find(".who .user").await;
    let started = Instant::now();
    loop {
        browser.goto(&format!("{b_base}/requests")).await;
        assert_eq!(browser.path().await, "/requests", "B knows A's session");
        if browser
            .client
            .find(fantoccini::Locator::Css(&format!("article[id='{rq}']")))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "B's queue never showed {rq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(claude_status(&via_a).await, 403);
    browser.check("replicas-approve-on-b").await;
    browser
        .find(&format!(
            "form[action='/requests/{rq}/approve'] button[type=submit]"
        ))
        .await
        .click()
        .await
        .unwrap();
    let approved = Instant::now();
    let history = browser.text("section[aria-labelledby=history]").await;
    assert!(
        history.contains(&rq) && history.contains("approved") && history.contains("root"),
        "{history}"
    );
    let seen = until_status(&via_a, 200, Duration::from_secs(1)).await;
    eprintln!(
        "approved in B's console: alice's call through A passed {seen:?} after polling began, {:?} after the click",
        approved.elapsed()
    );
    browser.close().await;
}

/// Issue 17 with several replicas: the provenance review queue is one queue in PostgreSQL. A
/// finding recorded through A is counted (not added) when B records it again, listed by B,
/// confirmed through B; A sees it confirmed and refuses a second decision; the decision is an
/// audit record of the replica that took it.
#[tokio::test]
async fn a_finding_recorded_on_one_replica_is_decided_on_the_other() {
    let pg = Postgres::start();
    let env = replica_a(&pg, None).await;
    let b = replica_b(&env).await;
    let scan = json!({"findings": [{
        "source": "file", "path": "src/limiter.rs", "tier": "strong", "matched_chars": 612,
        "total_chars": 900, "share": 0.68, "lines": [[3, 20]],
        "responses": [{"record_id": "0193a8c2-7f00-7000-8000-000000000001", "tool": "claude-code"}],
    }]});
    let (status, r) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::POST,
        "/v1/provenance/findings",
        Some(scan.clone()),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["added"], 1, "{r}");
    let fid = r["findings"][0]["id"].as_str().unwrap().to_string();
    // The same finding from a scan recorded through B: one open finding, seen twice.
    let (status, r) = admin_call(
        b.admin_addr,
        reqwest::Method::POST,
        "/v1/provenance/findings",
        Some(scan),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["added"], &r["seen_again"]),
        (&json!(0), &json!(1)),
        "{r}"
    );
    assert_eq!(r["findings"][0]["id"], fid.as_str());
    assert_eq!(r["findings"][0]["seen"], 2);
    let (_, open) = admin_call(
        b.admin_addr,
        reqwest::Method::GET,
        "/v1/provenance/findings?status=open",
        None,
    )
    .await;
    assert_eq!(open["findings"].as_array().unwrap().len(), 1, "{open}");

    let (status, done) = admin_call(
        b.admin_addr,
        reqwest::Method::POST,
        &format!("/v1/provenance/findings/{fid}/confirm"),
        Some(json!({"note": "removed in PR 7"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "confirmed");
    let (status, seen) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::GET,
        &format!("/v1/provenance/findings/{fid}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["status"], "confirmed");
    assert_eq!(seen["decided_by"], "root");
    // Decided once, whichever replica is asked.
    let (status, again) = admin_call(
        env.gateway.admin_addr,
        reqwest::Method::POST,
        &format!("/v1/provenance/findings/{fid}/clear"),
        Some(json!({"reason": "a second opinion"})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let decisions = |records: Vec<Value>| -> Vec<String> {
        records
            .iter()
            .filter(|r| {
                r["reason"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("provenance_finding_c"))
            })
            .map(|r| r["admin"]["finding"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        decisions(crate::common::raw_records_of(&b).await),
        vec![fid.clone()]
    );
    assert!(decisions(crate::common::raw_records_of(&env.gateway).await).is_empty());
    let db = pg.client().await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM aigate_findings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    b.shutdown().await;
}

/// Issue 16 with the audit table in PostgreSQL: each replica's Overview counts every
/// replica's calls (from the table, not its own file), and a call's permalink on one replica
/// lists the records another replica wrote for it.
#[tokio::test]
async fn with_the_audit_table_every_replicas_overview_counts_all_replicas() {
    let pg = Postgres::start();
    let env = replica_a_builder(&pg)
        .replace("# audit = true", "audit = true")
        .start()
        .await;
    let b = replica_b(&env).await;
    let via_a = client_for(&env.gateway, "", true);
    let via_b = client_for(&b, "", true);
    assert_eq!(claude_status(&via_a).await, 403);
    assert_eq!(claude_status(&via_a).await, 403);
    assert_eq!(claude_status(&via_b).await, 403);
    // A forwarded call through B: a decision record and an outcome record.
    let (resp, forwarded) =
        crate::common::anthropic_sdk_call(&via_b, "{\"model\":\"claude-sonnet-4-5\"}").await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    let mut on_a = crate::common::ConsoleClient::new(env.gateway.admin_addr);
    on_a.sign_in(ROOT).await;
    let mut on_b = crate::common::ConsoleClient::new(b.admin_addr);
    on_b.sign_in(ROOT).await;
    // The table has what was shipped; both replicas' Overviews say 3 blocked calls.
    let started = Instant::now();
    let mut blocked = (0, 0);
    while started.elapsed() < Duration::from_secs(15) {
        let a = on_a.get("/").await;
        let b_page = on_b.get("/").await;
        assert_eq!(a.status, 200, "{}", a.body);
        blocked = (
            crate::overview::number(&a.body, "n-blocked"),
            crate::overview::number(&b_page.body, "n-blocked"),
        );
        if blocked == (3, 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(blocked, (3, 3), "A's and B's Overviews count both replicas");

    // B's forwarded call, on A's permalink: the joined row and both records as written.
    let mut page = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        let p = on_a.get(&format!("/audit/{forwarded}")).await;
        page = p.body;
        if p.status == 200 && page.matches("<details class=\"raw\">").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(page.matches("<details class=\"raw\">").count(), 2, "{page}");
    assert!(page.contains(" · outcome · "), "{page}");
    assert!(page.contains(" · request · "), "{page}");
    b.shutdown().await;
}
