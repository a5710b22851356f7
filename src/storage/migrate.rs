//! Versioned schema migrations, shipped in `migrations/` and compiled in.
//!
//! Every replica runs them on start (and `aigate db migrate` runs them alone). They apply in one
//! transaction under an advisory lock, so replicas starting together do not race, and a version
//! already recorded in `aigate_schema_migrations` is never applied again.

use tokio_postgres::Client;

/// (version, name, SQL), in order. Never edit a shipped one: add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "shared_state",
        include_str!("../../migrations/0001_shared_state.sql"),
    ),
    (
        2,
        "console_sessions",
        include_str!("../../migrations/0002_console_sessions.sql"),
    ),
    (
        3,
        "requests",
        include_str!("../../migrations/0003_requests.sql"),
    ),
    (
        4,
        "provenance_ledger",
        include_str!("../../migrations/0004_provenance_ledger.sql"),
    ),
    (
        5,
        "console_oidc_and_findings",
        include_str!("../../migrations/0005_console_oidc_and_findings.sql"),
    ),
    (
        6,
        "provenance_followed",
        include_str!("../../migrations/0006_provenance_followed.sql"),
    ),
    (
        7,
        "provenance_prints_by_month",
        include_str!("../../migrations/0007_provenance_prints_by_month.sql"),
    ),
    (
        8,
        "day_partitions_in_utc",
        include_str!("../../migrations/0008_day_partitions_in_utc.sql"),
    ),
];

/// An arbitrary constant: the advisory lock that serialises migrations across replicas.
const LOCK_KEY: i64 = 0x6169_6761_7465; // "aigate"

/// Apply what is missing. Returns the versions applied now (empty: already up to date).
pub async fn run(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS aigate_schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM aigate_schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO aigate_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
