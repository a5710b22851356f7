//! `aigate provenance scan`: the scan pipeline (`provenance::scan`) on the real ledger.
//!
//! Which ledger, in order (`--ledger auto`):
//! 1. `storage.backend = "postgres"`: with an admin token, a replica's admin API (its
//!    membership filter spares PostgreSQL the fingerprints no entry holds); without one, the
//!    shared tables directly, every fingerprint asked of every month's partition (slow).
//! 2. the embedded ledger `<state_dir>/provenance/ledger/`, opened without creating it, when
//!    no gateway holds it;
//! 3. the running gateway's admin API (`/v1/provenance/lookup`, one batch per document) when it
//!    holds the file, or when there is no file here (a CI runner with the key but no ledger).
//!
//! The scan always needs the fingerprint key (`<state_dir>/provenance/key`): the ledger holds
//! keyed hashes, and the text scanned must be hashed the same way. It never creates one.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use serde_json::json;

use super::{
    AdminArgs, CliError, LedgerAccess, OutputFormat, ScanArgs, ScanFormat, load, out, token_from,
};
use crate::admin_client::AdminClient;
use crate::config::{Config, Storage, plural};
use crate::provenance::fingerprint::{Fingerprinter, Key, StopList};
use crate::provenance::ledger::embedded::{self, EmbeddedLedger, OpenExisting};
use crate::provenance::ledger::postgres::PostgresLedger;
use crate::provenance::ledger::{Ledger, Matches};
use crate::provenance::scan::access::LedgerLookup;
use crate::provenance::scan::matcher::{Matcher, ResponseFilter, Thresholds, Tier};
use crate::provenance::scan::report;
use crate::provenance::scan::run::{self, Request};

macro_rules! note {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// The ledger a scan reads, and how it was reached (printed, and in the JSON document).
pub(crate) enum Access {
    File {
        ledger: EmbeddedLedger,
        path: PathBuf,
    },
    Api {
        client: Box<AdminClient>,
        /// Why the API: the file is held by the gateway, or there is none here.
        why: String,
        /// The fingerprints go as JSON numbers: a gateway older than the binary body refused it.
        json: bool,
        /// The gateway screens fingerprints with its membership filter (`may-hold`); a gateway
        /// older than that is asked everything.
        screen: bool,
    },
    Postgres {
        ledger: PostgresLedger,
        // Drives the ledger's queries; dropped after it.
        _runtime: tokio::runtime::Runtime,
    },
}

impl Access {
    fn kind(&self) -> &'static str {
        match self {
            Access::File { .. } => "file",
            Access::Api { .. } => "api",
            Access::Postgres { .. } => "postgres",
        }
    }

    fn location(&self) -> String {
        match self {
            Access::File { path, .. } => path.display().to_string(),
            Access::Api { client, .. } => client.base().to_string(),
            Access::Postgres { .. } => "storage.postgres".to_string(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Access::File { path, ledger } => {
                let filter = match ledger.filter_origin() {
                    Some(o) if o.loaded => format!(
                        "membership filter loaded from {}/filter, {} later entries added",
                        path.display(),
                        o.entries_added
                    ),
                    Some(_) => "membership filter built from the store".to_string(),
                    None => "no membership filter: every lookup reads the store".to_string(),
                };
                format!(
                    "the embedded ledger {} (read directly: no gateway holds it; {filter})",
                    path.display()
                )
            }
            Access::Api {
                client,
                why,
                json,
                screen,
            } => {
                let older = if *json {
                    "; the fingerprints go as JSON, which is slower: the gateway predates the binary lookup"
                } else if !*screen {
                    "; every fingerprint is looked up, which is slower: the gateway predates its screening (may-hold)"
                } else {
                    ""
                };
                format!(
                    "the running gateway's admin API at {} ({why}{older})",
                    client.base()
                )
            }
            Access::Postgres { .. } => {
                "the PostgreSQL ledger (storage.backend = \"postgres\"), read directly: every fingerprint is asked of every month's partition, about a minute for 40 MB of source with a year of captures; with an auditor token (AIGATE_TOKEN or --token-file) the scan asks a replica's admin API, whose membership filter answers most of them".to_string()
            }
        }
    }

    fn find(&self, fingerprints: &[u64]) -> anyhow::Result<Matches> {
        match self {
            Access::File { ledger, .. } => Ok(ledger.find(fingerprints)?),
            Access::Postgres { ledger, .. } => Ok(ledger.find(fingerprints).map_err(|e| {
                anyhow::anyhow!("{e} (are the tables there? run `aigate db migrate`)")
            })?),
            Access::Api { client, json, .. } => api_find(client, fingerprints, *json),
        }
    }
}

const LOOKUP: &str = "/v1/provenance/lookup";
const MAY_HOLD: &str = "/v1/provenance/may-hold";

/// The fingerprints the gateway's membership filter may hold, into `out` (sorted, distinct).
fn api_may_hold(
    client: &AdminClient,
    fingerprints: &[u64],
    out: &mut Vec<u64>,
) -> anyhow::Result<()> {
    use crate::provenance::ledger::{pack, unpack_into};
    let (status, body) = client
        .post_bytes_raw(MAY_HOLD, crate::admin::BINARY_PRINTS, pack(fingerprints))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !status.is_success() {
        // Always an error here, carrying the gateway's message.
        crate::admin_client::refused_unless_success(status, crate::admin_client::value_of(&body))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if body.len() % 8 != 0 {
        anyhow::bail!(
            "the admin API's may-hold answer is {} bytes, not fingerprints of 8 bytes each",
            body.len()
        );
    }
    unpack_into(&body, out);
    Ok(())
}

/// One lookup on the admin API: the fingerprints as little-endian u64s (as JSON numbers, their
/// writing and parsing were most of this path's work on both sides), or as JSON for a gateway
/// that predates that.
fn api_find(client: &AdminClient, fingerprints: &[u64], json: bool) -> anyhow::Result<Matches> {
    #[derive(serde::Deserialize)]
    struct Answer {
        hits: Vec<(u64, String)>,
        entries: std::collections::HashMap<String, crate::provenance::ledger::Entry>,
    }
    let answer = if json {
        client.call(
            http::Method::POST,
            LOOKUP,
            Some(json!({ "fingerprints": fingerprints })),
        )
    } else {
        let body = crate::provenance::ledger::pack(fingerprints);
        client.post_bytes(LOOKUP, crate::admin::BINARY_PRINTS, body)
    };
    let v = answer.map_err(|e| anyhow::anyhow!("{e}"))?;
    let a: Answer = serde_json::from_value(v)
        .context("the admin API's lookup answer is not the documented shape")?;
    Ok(Matches {
        hits: a.hits,
        entries: a.entries,
    })
}

/// The admin API, checked with an empty lookup so a wrong token or address is said before
/// anything is scanned. `shared`: the ledger is PostgreSQL's, which the scan can also read
/// itself (the fix the error offers).
fn api(args: &ScanArgs, why: String, shared: bool) -> Result<Access, CliError> {
    let token = token_from(args.token_file.as_deref()).map_err(|e| {
        CliError::Usage(format!(
            "{why}, so the scan asks the gateway's admin API at {}; {e} (a token with the auditor or admin role)",
            args.admin
        ))
    })?;
    let client = AdminClient::new(&args.admin, token)?;
    let otherwise = if shared {
        "read the shared tables directly with --ledger postgres (slow with months of captures)"
    } else {
        "stop the gateway to read the ledger file directly"
    };
    let unusable = |e: &dyn std::fmt::Display| {
        CliError::Runtime(anyhow::anyhow!(
            "{why}, and the admin API at {} cannot be used: {e:#}. Fix: point --admin (AIGATE_ADMIN) at the running gateway's admin listener with an auditor or admin token (AIGATE_TOKEN or --token-file), or {otherwise}",
            args.admin
        ))
    };
    // An empty lookup, binary: a gateway that cannot read that body predates it (releases
    // before it answer 400, "Expected request with `Content-Type: application/json`"; 415
    // for any type one does not take) and is asked in JSON. Only then, so a wrong token is
    // one refusal in the gateway's audit, not two.
    let probe = client
        .post_bytes_answer(LOOKUP, crate::admin::BINARY_PRINTS, Vec::new())
        .map_err(|e| unusable(&e))?;
    let json = match probe {
        (http::StatusCode::BAD_REQUEST | http::StatusCode::UNSUPPORTED_MEDIA_TYPE, _) => {
            api_find(&client, &[], true).map_err(|e| unusable(&format!("{e:#}")))?;
            true
        }
        (status, answer) => {
            crate::admin_client::refused_unless_success(status, answer)
                .map_err(|e| unusable(&e))?;
            false
        }
    };
    // The screen, asked empty: a gateway that predates it answers 404, and is asked every
    // fingerprint as before.
    let screen = !json && {
        let (status, body) = client
            .post_bytes_raw(MAY_HOLD, crate::admin::BINARY_PRINTS, Vec::new())
            .map_err(|e| unusable(&e))?;
        match status {
            http::StatusCode::NOT_FOUND | http::StatusCode::METHOD_NOT_ALLOWED => false,
            status => {
                crate::admin_client::refused_unless_success(
                    status,
                    crate::admin_client::value_of(&body),
                )
                .map_err(|e| unusable(&e))?;
                true
            }
        }
    };
    Ok(Access::Api {
        client: Box::new(client),
        why,
        json,
        screen,
    })
}

fn open(cfg: &Config, args: &ScanArgs) -> Result<Access, CliError> {
    let path = embedded::path(&cfg.state_dir);
    let postgres = |pg: &crate::config::PostgresConfig| -> Result<Access, CliError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
        let db = crate::storage::Db::new(pg).map_err(anyhow::Error::from)?;
        Ok(Access::Postgres {
            ledger: PostgresLedger::new(db, runtime.handle().clone()),
            _runtime: runtime,
        })
    };
    let shared = matches!(cfg.storage, Storage::Postgres(_));
    match (args.ledger, &cfg.storage) {
        (LedgerAccess::Api, _) => api(args, "--ledger api".into(), shared),
        (LedgerAccess::Auto, Storage::Postgres(_))
            if token_from(args.token_file.as_deref()).is_ok() =>
        {
            api(
                args,
                "storage.backend = \"postgres\" and an admin token is given".into(),
                true,
            )
        }
        (LedgerAccess::Postgres | LedgerAccess::Auto, Storage::Postgres(pg)) => postgres(pg),
        (LedgerAccess::Postgres, Storage::File) => Err(CliError::Usage(format!(
            "--ledger postgres: {} uses storage.backend = \"file\"; give the config with storage.backend = \"postgres\" (--config), or use --ledger auto",
            cfg.source
        ))),
        (LedgerAccess::File, Storage::Postgres(_)) => Err(CliError::Usage(format!(
            "--ledger file: {} uses storage.backend = \"postgres\", whose ledger is in PostgreSQL; use --ledger auto",
            cfg.source
        ))),
        (LedgerAccess::File | LedgerAccess::Auto, Storage::File) => {
            match EmbeddedLedger::open_existing(&path) {
                Ok(ledger) => {
                    // Open no longer waits for the membership filter (the gateway serves
                    // meanwhile), but a scan asks about every fingerprint it reads: without the
                    // filter each one is a prefix scan of the store (microseconds, against about
                    // a hundred nanoseconds through the filter): a scan of more than a few MB
                    // finishes sooner after the wait (25 s at a million responses;
                    // docs/provenance.md, "Scan speed").
                    ledger.wait_for_filter();
                    Ok(Access::File { ledger, path })
                }
                Err(OpenExisting::Held) if args.ledger == LedgerAccess::Auto => api(
                    args,
                    format!("{} is held by the running gateway", path.display()),
                    false,
                ),
                Err(OpenExisting::Held) => Err(CliError::Runtime(anyhow::anyhow!(
                    "--ledger file: {} is held by the running gateway; ask it with --ledger api (AIGATE_ADMIN, AIGATE_TOKEN), or stop it",
                    path.display()
                ))),
                Err(OpenExisting::Missing) if args.ledger == LedgerAccess::Auto => api(
                    args,
                    format!("there is no ledger file {} here", path.display()),
                    false,
                ),
                Err(OpenExisting::Missing) => Err(CliError::Runtime(anyhow::anyhow!(
                    "--ledger file: there is no ledger {}: nothing was captured with this state directory; run the scan with the gateway's --config, or use --ledger api",
                    path.display()
                ))),
                Err(OpenExisting::Failed(e)) => Err(CliError::Runtime(e.into())),
            }
        }
    }
}

/// `--since`: a date is its UTC midnight; else a time or a duration as `audit query` takes them.
/// As the ledger writes times (RFC 3339, milliseconds, UTC), so they compare as strings.
fn since(value: &str) -> Result<String, CliError> {
    let full = if value.len() == 10 && value.as_bytes().get(4) == Some(&b'-') {
        format!("{value}T00:00:00Z")
    } else {
        value.to_string()
    };
    let t = crate::audit::query::time_arg(&full, SystemTime::now())
        .map_err(|e| CliError::Usage(format!("--since {value:?}: {e}, or a date (2026-11-20)")))?;
    Ok(humantime::format_rfc3339_millis(t).to_string())
}

/// The smallest `--min-chars`: below two text k-grams a match says nothing.
const MIN_CHARS: usize = 80;

pub fn provenance_scan(args: &ScanArgs) -> Result<(), CliError> {
    if args.min_chars < MIN_CHARS {
        return Err(CliError::Usage(format!(
            "--min-chars {}: at least {MIN_CHARS}; shorter matches are coincidence as often as copies",
            args.min_chars
        )));
    }
    let since = args.since.as_deref().map(since).transpose()?;
    let cfg = load(&args.config)?;
    let key_path = Key::path(&cfg.state_dir);
    let key = Key::load(&key_path).map_err(|e| {
        CliError::Runtime(anyhow::anyhow!(
            "{e}. The scan hashes text with the gateway's fingerprint key: run it with the gateway's --config, or install the key from your secret store at {}",
            key_path.display()
        ))
    })?;
    let fingerprinter = Fingerprinter::new(&key);
    let stop_path = StopList::path(&cfg.state_dir);
    let stop = StopList::load(&stop_path).map_err(anyhow::Error::from)?;
    if !stop.is_of(fingerprinter.params()) {
        note!(
            "warning: {} holds fingerprints of an earlier release, which fingerprinted code with fewer grams: baselined code may be found. Rebuild it: remove it, then run `aigate provenance baseline PATH…` over all your known-clean code again",
            stop_path.display()
        );
    }
    let stop = stop.with_boilerplate(&fingerprinter);
    let access = open(&cfg, args)?;
    note!("ledger: {}", access.describe());
    let find = |fps: &[u64]| access.find(fps);
    // The embedded ledger's membership filter is in this process: ask it first.
    let may_hold = |fps: &[u64], out: &mut Vec<u64>| match &access {
        Access::File { ledger, .. } => ledger.may_hold_many(fps, out),
        _ => out.extend_from_slice(fps),
    };
    // Only a ledger this process holds: nothing is written to it while the scan runs.
    let sole = |id: &str, out: &mut Vec<u64>| -> anyhow::Result<()> {
        if let Access::File { ledger, .. } = &access {
            ledger.sole_prints(id, out)?;
        }
        Ok(())
    };
    // The running gateway's filter, asked a group of documents at a time.
    let screen = |fps: &[u64], out: &mut Vec<u64>| match &access {
        Access::Api { client, .. } => api_may_hold(client, fps, out),
        _ => anyhow::bail!("no gateway to screen fingerprints"),
    };
    let lookup = match &access {
        Access::File { .. } => LedgerLookup::with_filter(&find, &may_hold)
            .with_sole(&sole)
            .skipping(&stop),
        Access::Api { screen: true, .. } => {
            LedgerLookup::with_screen(&find, &screen).skipping(&stop)
        }
        _ => LedgerLookup::new(&find),
    };
    let defaults = Thresholds::default();
    let thresholds = Thresholds {
        min_chars: args.min_chars,
        strong_chars: defaults.strong_chars.max(args.min_chars),
        ..defaults
    };
    let matcher = Matcher {
        fingerprinter: &fingerprinter,
        stop: &stop,
        ledger: &lookup,
        thresholds,
        filter: ResponseFilter {
            tool: args.tool.clone(),
            since,
        },
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let request = Request {
        paths,
        git_rev_range: args.git_rev_range.clone(),
        git_history: args.git_history,
        jsonl_field: args.jsonl_field.clone(),
        write_clean: args.write_clean.clone(),
    };
    let outcome = run::scan(&request, &matcher)?;
    match args.format {
        ScanFormat::Table => {
            let mut text = Vec::new();
            report::table(&mut text, &outcome.findings, &outcome.tally)
                .context("writing the table")?;
            out(text)?;
        }
        ScanFormat::Json => {
            let ledger = report::LedgerUse {
                access: access.kind(),
                location: access.location(),
                lookups: lookup.calls(),
                screens: lookup.screens(),
            };
            let doc = report::Document::new(&outcome.findings, &outcome.tally, &thresholds, ledger);
            out(doc.to_bytes().context("writing the JSON document")?)?;
        }
        ScanFormat::Sarif => out(format!("{:#}\n", report::sarif(&outcome.findings)))?,
    }
    if args.record && !outcome.findings.is_empty() {
        record(args, &access, &outcome.findings)?;
    }
    if let Some(clean) = &args.write_clean {
        note!(
            "wrote {} and {}",
            clean.display(),
            run::manifest_path(clean).display()
        );
    }
    if outcome.findings.is_empty() {
        return Ok(());
    }
    let strong = outcome
        .findings
        .iter()
        .filter(|l| l.finding.tier == Tier::Strong)
        .count();
    Err(CliError::Findings(format!(
        "{} ({strong} strong) at or over --min-chars {}: captured model output found",
        plural(outcome.findings.len(), "finding", "findings"),
        args.min_chars
    )))
}

/// Findings a `--record` call sends at once.
const RECORD_BATCH: usize = 1_000;

/// `--record`: the findings, as the JSON document has them, into the review queue. The queue
/// is the gateway's, so this goes through its admin API whichever ledger was read.
fn record(args: &ScanArgs, access: &Access, findings: &[report::Located]) -> Result<(), CliError> {
    let own;
    let client = match access {
        Access::Api { client, .. } => client.as_ref(),
        _ => {
            let token = token_from(args.token_file.as_deref()).map_err(|e| {
                CliError::Usage(format!(
                    "--record queues the findings through the gateway's admin API at {}; {e} (a token with the auditor or admin role)",
                    args.admin
                ))
            })?;
            own = AdminClient::new(&args.admin, token)?;
            &own
        }
    };
    let (mut added, mut seen) = (0u64, 0u64);
    for batch in findings.chunks(RECORD_BATCH) {
        let v = client
            .call(
                http::Method::POST,
                "/v1/provenance/findings",
                Some(json!({ "findings": batch })),
            )
            .map_err(|e| {
                CliError::Runtime(anyhow::anyhow!(
                    "recording the findings at {}: {e}",
                    client.base()
                ))
            })?;
        added += v["added"].as_u64().unwrap_or(0);
        seen += v["seen_again"].as_u64().unwrap_or(0);
    }
    note!(
        "recorded for review: {added} new, {seen} already open (aigate provenance findings --status open)"
    );
    Ok(())
}

/// `aigate provenance findings [--status S]`.
pub fn provenance_findings(args: &AdminArgs, status: Option<&str>) -> Result<(), CliError> {
    if let Some(s) = status
        && crate::provenance::review::Status::parse(s).is_none()
    {
        return Err(CliError::Usage(format!(
            "--status {s:?}: use open, confirmed or cleared"
        )));
    }
    let client = AdminClient::new(&args.admin, super::admin_token(args)?)?;
    let path = match status {
        Some(s) => format!("/v1/provenance/findings?status={s}"),
        None => "/v1/provenance/findings".to_string(),
    };
    let v = client.call(http::Method::GET, &path, None)?;
    match args.format {
        OutputFormat::Json => out(format!("{v:#}\n")),
        OutputFormat::Table => out(findings_table(
            v["findings"].as_array().map_or(&[][..], Vec::as_slice),
        )),
    }
}

/// `aigate provenance confirm ID [--note]` and `clear ID --reason`.
pub fn provenance_decide(
    args: &AdminArgs,
    id: &str,
    verb: &str,
    text: Option<&str>,
) -> Result<(), CliError> {
    let client = AdminClient::new(&args.admin, super::admin_token(args)?)?;
    let body = match (verb, text) {
        ("clear", Some(reason)) => json!({ "reason": reason }),
        (_, Some(note)) => json!({ "note": note }),
        (_, None) => json!({}),
    };
    let v = client.call(
        http::Method::POST,
        &format!(
            "/v1/provenance/findings/{}/{verb}",
            crate::proxy::deny::percent_encode(id)
        ),
        Some(body),
    )?;
    match args.format {
        OutputFormat::Json => out(format!("{v:#}\n")),
        OutputFormat::Table => out(findings_table(std::slice::from_ref(&v))),
    }
}

/// Findings as a table; every cell escaped by `crate::table` (a reason is text a person typed).
fn findings_table(items: &[serde_json::Value]) -> String {
    let header: Vec<String> = [
        "ID",
        "STATUS",
        "TIER",
        "WHERE",
        "RECORDS",
        "SEEN",
        "RECORDED",
        "DECIDED_BY",
        "REASON",
    ]
    .map(String::from)
    .to_vec();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            let records = f["records"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                s(&f["id"]),
                s(&f["status"]),
                s(&f["tier"]),
                s(&f["location"]),
                records,
                f["seen"].as_u64().unwrap_or(0).to_string(),
                s(&f["recorded_at"]),
                s(&f["decided_by"]),
                s(&f["reason"]),
            ]
        })
        .collect();
    let mut text = Vec::new();
    // Writing into memory cannot fail.
    let _ = crate::table::write(&mut text, &header, &rows);
    let mut text = String::from_utf8_lossy(&text).into_owned();
    text.push_str(&format!("{}\n", plural(items.len(), "finding", "findings")));
    text
}
