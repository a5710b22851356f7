//! The command line. Raw arguments become validated values here; `main` maps errors to exit
//! codes: 0 ok, 1 runtime failure, 3 `provenance scan` found something, 64 bad usage, 65 audit log
//! does not verify, 78 bad config.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::audit::query::{self, Filter, Format, Output};
use crate::config::{self, Config, ConfigError, plural};
use crate::exemptions::Snapshot;
use crate::explain::{ExplainRequest, explain};
use crate::identify::user::hash_token;
use crate::proxy::deny::percent_encode;

mod provenance;
pub use provenance::{provenance_decide, provenance_findings, provenance_scan};

pub const EXIT_RUNTIME: i32 = 1;
/// `provenance scan` found captured output: not a failure of the command, a result for CI.
pub const EXIT_FINDINGS: i32 = 3;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_UNVERIFIED: i32 = 65;
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "aigate",
    version,
    about = "Outbound API-call enforcement proxy for AI vendor traffic",
    long_about = "aigate is the egress gateway every call to an AI vendor passes through. It identifies the tool, \
the person and the workflow, decides by policy, forwards or blocks, and writes a hash-chained audit record.",
    after_help = "Exit codes: 0 ok, 1 runtime failure, 3 provenance scan found captured output, 64 bad usage, 65 audit log does not verify, 78 invalid config.\n\
Start here: `aigate run` (embedded default policy), then point clients at it with HTTPS_PROXY and the CA it prints."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Policy file (TOML). Without it, the shipped default policy compiled into the binary.
    #[arg(long, short = 'c', value_name = "FILE", env = "AIGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    Run(ConfigArg),
    /// Validate a config file and list every problem (exit 78 if there are any).
    Check(ConfigArg),
    /// Show the decision for a described request: every rule considered and the one that decided.
    Explain(ExplainArgs),
    /// The gateway's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Verify and query audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Grant, list, show and revoke time-boxed exemptions (through the admin API).
    Exemption {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ExemptionCommand,
    },
    /// Check this machine's set-up against a running gateway: CA trust, proxy variables, vendor
    /// resolution, interception. Exit 1 if a check fails.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// The gateway (host:port); default: gateway.listen.
        #[arg(long, value_name = "HOST:PORT")]
        proxy: Option<String>,
        /// The gateway's CA certificate (`aigate ca export` on the gateway); default: the one in
        /// the config's state directory, for a doctor run on the gateway host.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Print a proxy auto-config (PAC) file that sends the vendor hosts through the gateway.
    Pac {
        #[command(flatten)]
        config: ConfigArg,
        /// The gateway as clients reach it (host:port); default: gateway.listen.
        #[arg(long, value_name = "HOST:PORT")]
        proxy: Option<String>,
    },
    /// Print a shell completion script: `aigate completions bash > /etc/bash_completion.d/aigate`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// People and their proxy tokens.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The shared PostgreSQL database (storage.backend = "postgres").
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Find model output captured by the gateway in code and datasets (docs/provenance.md).
    Provenance {
        #[command(subcommand)]
        command: ProvenanceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvenanceCommand {
    /// Add known-clean code (the company's pre-ban code, vendored dependencies) to the
    /// stop-list, so matches on it are never findings.
    Baseline {
        #[command(flatten)]
        config: ConfigArg,
        /// Files or directories (.gitignore honoured, binaries skipped).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Find captured model output in files, git history and JSON Lines datasets. Exit 0 when
    /// nothing is found, 3 when something is (for CI gates).
    Scan(Box<ScanArgs>),
    /// The review queue (through the admin API; roles auditor, admin): list findings.
    Findings {
        #[command(flatten)]
        admin: AdminArgs,
        /// open, confirmed or cleared.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Confirm a finding: quarantine. The file or record must be removed or rewritten.
    Confirm {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
        /// How it is quarantined (optional), kept with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Clear a finding as a false positive; the reason is kept with the decision.
    Clear {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// `aigate provenance scan` (docs/provenance.md, "Scan").
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 nothing found, 3 findings at or over --min-chars, 1 runtime failure, \
64 bad usage, 78 invalid config.\n\
A pull-request check: aigate provenance scan --git-rev-range origin/main..HEAD --format sarif"
)]
pub struct ScanArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Files or directories (.gitignore honoured, binaries skipped), JSON Lines datasets, or
    /// with --git-rev-range / --git-history the repository; default: the current directory.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
    pub format: ScanFormat,
    /// Characters of a file or record that must match one response for a finding.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub min_chars: usize,
    /// Only responses to this tool (e.g. claude-code).
    #[arg(long, value_name = "TOOL")]
    pub tool: Option<String>,
    /// Only responses captured at or after this: a date (UTC midnight), an RFC 3339 time, or a
    /// duration back from now (30d).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only the lines this range adds (A..B), in the repository at PATH.
    #[arg(long, value_name = "A..B", conflicts_with = "git_history")]
    pub git_rev_range: Option<String>,
    /// Every blob in the history of the repository at PATH.
    #[arg(long)]
    pub git_history: bool,
    /// Read the files as JSON Lines, this field of each record (a key or a JSON pointer);
    /// *.jsonl and *.ndjson are read so anyway, field `text`. For *.parquet files: the column
    /// holding the text (default `text`).
    #[arg(long, value_name = "FIELD")]
    pub jsonl_field: Option<String>,
    /// Write the one JSON Lines dataset scanned without its flagged records to OUT, and
    /// OUT.manifest.json naming what was removed.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["git_rev_range", "git_history"])]
    pub write_clean: Option<PathBuf>,
    /// Queue the findings for review (through the admin API, with an auditor or admin token);
    /// an open finding found again is counted, not added twice.
    #[arg(long)]
    pub record: bool,
    /// Which ledger to read: auto (PostgreSQL with storage.backend = "postgres"; else the
    /// embedded file, or the running gateway's admin API while it holds the file).
    #[arg(long, value_enum, default_value_t = LedgerAccess::Auto)]
    pub ledger: LedgerAccess,
    /// The admin API, asked while the gateway runs.
    #[arg(long, env = "AIGATE_ADMIN", default_value = "http://127.0.0.1:9180")]
    pub admin: String,
    /// A file holding an auditor or admin token for the admin API (otherwise AIGATE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanFormat {
    Table,
    /// The stable JSON document of docs/provenance.md.
    Json,
    /// SARIF 2.1.0, for code-scanning UIs.
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LedgerAccess {
    Auto,
    /// The running gateway's admin API (--admin, AIGATE_TOKEN).
    Api,
    /// The embedded ledger file in the state directory (the gateway stopped).
    File,
    /// The PostgreSQL ledger (storage.backend = "postgres").
    Postgres,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations that are missing (replicas also do this on start).
    Migrate(ConfigArg),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Vendor host, e.g. api.anthropic.com.
    #[arg(long)]
    pub host: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A request header, 'name: value'; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// User id (default: anonymous).
    #[arg(long)]
    pub user: Option<String>,
    /// Workflow tag (default: from the workflow header, the user's default, else untagged).
    #[arg(long)]
    pub workflow: Option<String>,
    /// Request body (JSON), for the model and body signals.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file, as sent: with `-H 'content-encoding: gzip'` (br, zstd,
    /// deflate) the file holds the encoded bytes, decoded as the gateway decodes them.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) for distribution to laptops and CI runners.
    /// Reads the CA the gateway created in its state directory (or ca.cert_file); never creates
    /// one: run it with the gateway's --config.
    Export(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; report the first edited, deleted or reordered record (exit 65).
    /// With --postgres, check every replica's chain in the shared table instead.
    Verify {
        /// Audit log file (JSON Lines), or a directory holding a rotated series; default: the
        /// log the config names (audit.path).
        file: Option<PathBuf>,
        /// Verify the audit table of the config's PostgreSQL storage.
        #[arg(long, conflicts_with = "file")]
        postgres: bool,
        #[command(flatten)]
        proof: ProofArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The key that signs audit checkpoints.
    Key {
        #[command(subcommand)]
        command: AuditKeyCommand,
    },
    /// Filter records for review.
    Query(Box<QueryArgs>),
}

#[derive(Debug, Subcommand)]
pub enum AuditKeyCommand {
    /// Print the public half of the checkpoint signing key (PEM), for `audit verify --key`.
    /// Reads the key `aigate run` created (or audit.signing_key names); never creates one.
    Export(ConfigArg),
}

/// What `audit verify` checks beyond the hash chain.
#[derive(Debug, Args)]
pub struct ProofArgs {
    /// The checkpoint key's public half (PEM, from `aigate audit key export`), pinned: every
    /// checkpoint must be signed by it and the log must end on one.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// The checkpoint kept outside the log (default: <stem>.checkpoint.json beside the log).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The log is being written: records after the last checkpoint are noted, not failed.
    #[arg(long)]
    pub live: bool,
    #[arg(long, value_enum, default_value_t = VerifyFormat::Text)]
    pub format: VerifyFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VerifyFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Who was blocked, by which rule, in the last day:\n  \
aigate audit query --action block --since 24h --group-by user,rule\n\
A filter value of - matches records without that field (--rule - : no rule decided).")]
pub struct QueryArgs {
    /// Audit log file (JSON Lines); default: the log the config names (audit.path).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the newest N records (printed oldest first); with --group-by, the N largest groups.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The next page: records older than this cursor (the seq a previous page printed as its
    /// next cursor, or /v1/audit's next_cursor).
    #[arg(long, value_name = "SEQ", requires = "limit", conflicts_with_all = ["summary", "group_by"])]
    pub cursor: Option<u64>,
    /// Counts instead of records, by action and reason (--group-by for other fields).
    #[arg(long)]
    pub summary: bool,
    /// Counts by these record fields, e.g. tool,user (implies --summary).
    #[arg(long, value_name = "FIELD,…")]
    pub group_by: Option<String>,
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
}

/// The filters of `audit query`, named as the admin API's `/v1/audit` parameters (with `-` for
/// `_`) and parsed by the same `audit::query::Filter::parse`.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// A request id (from a deny message or x-aigate-request-id).
    #[arg(long)]
    pub id: Option<String>,
    /// allow, monitor or block.
    #[arg(long)]
    pub action: Option<String>,
    /// request, tunnel or admin.
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    /// The rule that decided (- for none: the default action or a refusal).
    #[arg(long)]
    pub rule: Option<String>,
    /// A reason code: rule_matched, default_action, exempted, … (docs/audit-schema.md).
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub vendor: Option<String>,
    /// An exemption id.
    #[arg(long)]
    pub exemption: Option<String>,
    /// The AI host catalog group a record names (AI traffic that went through uninspected).
    #[arg(long, value_name = "GROUP")]
    pub ai_host: Option<String>,
    /// true: a rule monitored (it would have blocked); false: anything else.
    #[arg(long, value_name = "true|false")]
    pub would_block: Option<String>,
    /// Only records at or after this: a duration back from now (30m, 24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only records before this: a duration back from now or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only records whose path contains this text (as written, case included).
    #[arg(long, value_name = "TEXT")]
    pub path: Option<String>,
}

impl FilterArgs {
    /// The given filters as `(API parameter, value)`.
    pub fn params(&self) -> Vec<(&'static str, &str)> {
        [
            ("id", &self.id),
            ("action", &self.action),
            ("kind", &self.kind),
            ("tool", &self.tool),
            ("user", &self.user),
            ("workflow", &self.workflow),
            ("rule", &self.rule),
            ("reason", &self.reason),
            ("vendor", &self.vendor),
            ("exemption", &self.exemption),
            ("ai_host", &self.ai_host),
            ("would_block", &self.would_block),
            ("since", &self.since),
            ("until", &self.until),
            ("path", &self.path),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_deref().map(|v| (name, v)))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryFormat {
    Table,
    /// JSON Lines: one record (or group) per line.
    #[value(alias = "jsonl")]
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin API.
    #[arg(
        long,
        env = "AIGATE_ADMIN",
        default_value = "http://127.0.0.1:9180",
        global = true
    )]
    pub admin: String,
    /// A file holding your admin token (otherwise AIGATE_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum ExemptionCommand {
    /// Exempt a person (or, as admin, a group) from an exemptable rule for a while.
    Grant {
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// Tool id (repeat for more), e.g. claude-code.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        /// Workflow tag (repeat for more); default: every workflow.
        #[arg(long = "workflow")]
        workflows: Vec<String>,
        /// How long, e.g. 3d, 12h (at most the policy's admin.max_exemption).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why: shown to reviewers and kept in the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
    },
    /// List exemptions you may see.
    List {
        /// A user id, or group:NAME.
        #[arg(long)]
        subject: Option<String>,
        /// Only those in force now.
        #[arg(long)]
        active: bool,
    },
    /// Show one exemption.
    Show { id: String },
    /// Revoke an exemption; it stops applying on the next request.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Print the hash of a proxy token for the users file. Reads the token from stdin.
    HashToken,
}

/// Write a command's result to stdout. A reader that went away (`aigate audit query | head`) is
/// not a failure of the command: the error carries the `BrokenPipe` and `main` exits quietly.
pub fn out(text: impl AsRef<[u8]>) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_ref())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Runtime(anyhow::Error::from(e).context("writing to stdout")))
}

/// `println!` for command results, through [`out`]: `outln!("{x}")?`.
macro_rules! outln {
    ($($t:tt)*) => {
        out(format!("{}\n", format_args!($($t)*)))
    };
}

/// A line on stderr for the person at the terminal; a closed stderr is not worth failing for.
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Failures, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unverified(String),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
    /// `provenance scan` found something (exit 3); the message says how much.
    #[error("{0}")]
    Findings(String),
}

impl CliError {
    /// Whether the failure is only that stdout's reader is gone (`| head`, `| less` quit early).
    pub fn is_closed_pipe(&self) -> bool {
        match self {
            CliError::Runtime(e) => e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }),
            _ => false,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unverified(_) => EXIT_UNVERIFIED,
            CliError::Runtime(_) => EXIT_RUNTIME,
            CliError::Findings(_) => EXIT_FINDINGS,
        }
    }
}

fn load(arg: &ConfigArg) -> Result<Config, CliError> {
    Ok(config::load(arg.config.as_deref())?)
}

pub fn check(arg: &ConfigArg) -> Result<(), CliError> {
    let cfg = load(arg)?;
    outln!(
        "{}: ok ({}, {}, {}, default action {})",
        cfg.source,
        plural(cfg.vendors.len(), "vendor", "vendors"),
        plural(cfg.tools.len(), "tool signature", "tool signatures"),
        plural(cfg.policy.rules.len(), "rule", "rules"),
        cfg.policy.default_action
    )?;
    if cfg.file.is_some() {
        let catalogs = config::CATALOGS.join(" and ");
        if cfg.include_defaults {
            outln!("{catalogs}: this file's, then the shipped ones (include_defaults = true)")?;
        } else {
            outln!(
                "{catalogs}: this file's only; a config file replaces the shipped ones (include_defaults = true extends them instead)"
            )?;
        }
    }
    for w in cfg.warnings() {
        note!("warning: {w}");
    }
    Ok(())
}

pub fn explain_cmd(args: &ExplainArgs) -> Result<(), CliError> {
    let cfg = load(&args.config)?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--header {h:?}: write it as 'name: value'")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let req = ExplainRequest {
        host: args.host.clone(),
        path: args.path.clone(),
        headers,
        user: args.user.clone(),
        workflow: args.workflow.clone(),
        body: match (&args.body, &args.body_file) {
            (Some(b), _) => Some(b.clone().into_bytes()),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| CliError::Usage(format!("--body-file {}: {e}", path.display())))?,
            ),
            (None, None) => None,
        },
    };
    let report =
        explain(&cfg, &req, &Snapshot::default(), SystemTime::now()).map_err(CliError::Usage)?;
    match args.format {
        OutputFormat::Table => outln!("{}", report.to_text()),
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        ),
    }
}

pub fn ca_export(arg: &ConfigArg) -> Result<(), CliError> {
    let cfg = load(arg)?;
    out(ca_cert_of(&cfg)?)
}

/// The gateway's CA certificate (PEM), read and never created: only `aigate run` creates a CA.
/// The private key is not needed to hand out the certificate, and is not read.
fn ca_cert_of(cfg: &Config) -> Result<String, CliError> {
    let path = match &cfg.ca.files {
        Some((cert, _)) => cert.clone(),
        None => cfg.state_dir.join(crate::tls::authority::CA_CERT_FILE),
    };
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_in_state(
                "CA certificate",
                &path,
                cfg,
                "; `aigate run` creates the CA on its first start",
            ));
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display()).into()),
    };
    {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
    }
    Ok(pem)
}

/// A state file the gateway writes and this command only reads, missing: say where this command
/// looked, which config put it there, and how to point at the gateway's own. Creating it here
/// would hand out something unrelated to the running gateway (a second CA, an empty log).
fn not_in_state(what: &str, path: &Path, cfg: &Config, alternative: &str) -> CliError {
    CliError::Runtime(anyhow::anyhow!(
        "no {what} at {} (state directory {}, from {}); this command reads the gateway's state \
         and never creates it: run it with the gateway's config (--config FILE or AIGATE_CONFIG){alternative}",
        path.display(),
        cfg.state_dir.display(),
        cfg.source,
    ))
}

/// The audit log a command reads: the file given, else the one the config names.
fn audit_log_of(file: Option<&Path>, arg: &ConfigArg) -> Result<PathBuf, CliError> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    let cfg = load(arg)?;
    if cfg.audit.path.exists() {
        Ok(cfg.audit.path)
    } else {
        Err(not_in_state(
            "audit log",
            &cfg.audit.path,
            &cfg,
            ", or name the log file",
        ))
    }
}

/// A log file or a rotated series: the chain, checkpoints and their signatures, and the
/// checkpoint kept outside the log. Exit 65 naming the first problem.
pub fn audit_verify(
    file: Option<&Path>,
    proof: &ProofArgs,
    arg: &ConfigArg,
) -> Result<(), CliError> {
    use crate::audit::verify;
    let file = &audit_log_of(file, arg)?;
    let key = pinned_key(proof)?;
    let opts = verify::Options {
        key,
        checkpoint_file: proof.checkpoint.clone(),
        live: proof.live,
        elsewhere: checkpoint_in_postgres(arg)?,
    };
    let report = verify::verify(file, &opts).map_err(|e| anyhow::anyhow!(e))?;
    // Decisions joined with their outcomes across the files (audit/calls.rs).
    let calls = if report.ok {
        let files: Vec<&Path> = report.files.iter().map(|f| Path::new(&f.file)).collect();
        Some(
            crate::audit::calls::summarize_files(&files)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?,
        )
    } else {
        None
    };
    match proof.format {
        VerifyFormat::Json => {
            let mut json = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
            if let (Some(c), Some(obj)) = (&calls, json.as_object_mut()) {
                obj.insert(
                    "calls".into(),
                    serde_json::to_value(c).map_err(anyhow::Error::from)?,
                );
            }
            outln!(
                "{}",
                serde_json::to_string_pretty(&json).map_err(anyhow::Error::from)?
            )?
        }
        VerifyFormat::Text => {
            print_verify(file, &report)?;
            if let Some(c) = calls.filter(|c| c.forwarded > 0 || !c.orphans.is_empty()) {
                outln!("{c}")?;
            }
        }
    }
    match report.problems.first() {
        None => Ok(()),
        Some(first) if report.problems.len() == 1 => Err(CliError::Unverified(first.clone())),
        Some(first) => Err(CliError::Unverified(format!(
            "{first} (and {} more)",
            plural(report.problems.len() - 1, "problem", "problems")
        ))),
    }
}

/// The public key given with --key, if any.
fn pinned_key(proof: &ProofArgs) -> Result<Option<crate::audit::checkpoint::PublicKey>, CliError> {
    let Some(p) = &proof.key else { return Ok(None) };
    let pem = std::fs::read(p)
        .map_err(|e| CliError::Usage(format!("cannot read --key {}: {e}", p.display())))?;
    crate::audit::checkpoint::PublicKey::from_pem(&pem, &p.display().to_string())
        .map(Some)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// With a config (given, or in the environment) whose PostgreSQL storage ships the audit log,
/// the replica's newest checkpoint in the table: a copy the gateway's disk does not hold.
fn checkpoint_in_postgres(
    arg: &ConfigArg,
) -> Result<Option<(String, crate::audit::checkpoint::Saved)>, CliError> {
    if arg.config.is_none() {
        return Ok(None);
    }
    let cfg = load(arg)?;
    let crate::config::Storage::Postgres(pg) = &cfg.storage else {
        return Ok(None);
    };
    if !pg.audit {
        return Ok(None);
    }
    let db = crate::storage::Db::new(pg).map_err(anyhow::Error::from)?;
    let replica = pg.replica_id.to_string();
    match block_on(crate::storage::audit::newest_checkpoint(&db, &replica))? {
        Ok(found) => Ok(found.map(|s| {
            (
                format!("the PostgreSQL table aigate_audit, replica {replica}"),
                s,
            )
        })),
        Err(e) => {
            note!(
                "aigate: cannot read the newest checkpoint from PostgreSQL ({e}); checking against the state file only"
            );
            Ok(None)
        }
    }
}

fn print_verify(path: &Path, r: &crate::audit::verify::Report) -> Result<(), CliError> {
    // The verdict first; the details after it.
    if r.ok {
        let covered = r
            .last_checkpoint
            .map(|c| format!(", signed up to seq {c}"))
            .unwrap_or_default();
        outln!(
            "{}: ok, {}, chain intact (last seq {}){covered}",
            path.display(),
            plural(r.records as usize, "record", "records"),
            r.last_seq
        )?;
    }
    if r.files.len() > 1 {
        for f in &r.files {
            match (f.first_seq, f.last_seq) {
                (Some(a), Some(b)) => outln!(
                    "{}: {}, seq {a}..{b}",
                    f.file,
                    plural(f.records as usize, "record", "records")
                )?,
                _ => outln!("{}: no records", f.file)?,
            }
        }
    }
    let key = match (&r.key_id, r.key_pinned) {
        (Some(id), true) => format!(" (key {id}, pinned)"),
        (Some(id), false) => format!(" (key {id}, named in the log: pin it with --key)"),
        (None, _) => String::new(),
    };
    outln!(
        "checked {}, {}, {}, {} valid{key}",
        plural(r.files.len(), "file", "files"),
        plural(r.records as usize, "record", "records"),
        plural(r.checkpoints as usize, "checkpoint", "checkpoints"),
        plural(r.signatures_valid as usize, "signature", "signatures")
    )?;
    if let Some(state) = &r.state_file {
        outln!("checkpoint kept outside the log: {state}")?;
    }
    for note in &r.notes {
        outln!("note: {note}")?;
    }
    Ok(())
}

/// The public half of the checkpoint key, read and never created: `aigate run` creates the
/// default key on its first start, and a configured key comes from the secret store.
pub fn audit_key_export(arg: &ConfigArg) -> Result<(), CliError> {
    let cfg = load(arg)?;
    let path = &cfg.audit.integrity.signing_key;
    if !path.exists() {
        return Err(not_in_state(
            "audit signing key",
            path,
            &cfg,
            "; `aigate run` creates it on its first start (or set audit.signing_key)",
        ));
    }
    let signer = crate::audit::checkpoint::Signer::load_or_create(path, false)
        .map_err(anyhow::Error::from)?;
    out(signer.public().to_pem())
}

/// The PostgreSQL storage a config names, or a usage error saying how to set it.
fn postgres_of(arg: &ConfigArg) -> Result<std::sync::Arc<crate::storage::Db>, CliError> {
    let cfg = load(arg)?;
    match &cfg.storage {
        crate::config::Storage::Postgres(pg) => {
            Ok(crate::storage::Db::new(pg).map_err(anyhow::Error::from)?)
        }
        crate::config::Storage::File => Err(CliError::Usage(format!(
            "{} uses storage.backend = \"file\"; give a config with storage.backend = \"postgres\" (--config)",
            cfg.source
        ))),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(f))
}

pub fn db_migrate(arg: &ConfigArg) -> Result<(), CliError> {
    let db = postgres_of(arg)?;
    let applied = block_on(db.migrate())?.map_err(anyhow::Error::from)?;
    if applied.is_empty() {
        outln!(
            "schema up to date (version {})",
            crate::storage::migrate::MIGRATIONS.len()
        )?;
    } else {
        outln!("applied migrations {applied:?}")?;
    }
    Ok(())
}

/// Every replica's chain in the shared table.
/// Every replica's chain in the shared table, and its checkpoints' signatures (by the pinned
/// key with --key).
pub fn audit_verify_postgres(arg: &ConfigArg, proof: &ProofArgs) -> Result<(), CliError> {
    let key = pinned_key(proof)?;
    let db = postgres_of(arg)?;
    let chains = block_on(crate::storage::audit::verify(&db))?.map_err(anyhow::Error::from)?;
    if chains.is_empty() {
        outln!("the audit table is empty")?;
    }
    let mut broken = Vec::new();
    for (replica, result) in &chains {
        match result {
            Ok(head) => {
                let cps = block_on(crate::storage::audit::checkpoints(
                    &db,
                    replica,
                    key.as_ref(),
                ))?
                .map_err(anyhow::Error::from)?;
                let signer = match (&cps.key_id, key.is_some()) {
                    (Some(id), true) => format!(" (key {id}, pinned)"),
                    (Some(id), false) => {
                        format!(" (key {id}, named in the table: pin it with --key)")
                    }
                    (None, _) => String::new(),
                };
                outln!(
                    "replica {replica}: ok, {}, chain intact (last seq {}), {} checkpoints, {} signatures valid{signer}",
                    plural(head.records as usize, "record", "records"),
                    head.last_seq,
                    cps.count,
                    cps.valid
                )?;
                if let Some(problem) = cps.problem {
                    broken.push(format!("replica {replica}: {problem}"));
                } else if key.is_some() && cps.valid == 0 && head.records > 0 {
                    broken.push(format!(
                        "replica {replica}: no record is covered by a checkpoint signed by the pinned key"
                    ));
                }
            }
            Err(e) => broken.push(crate::storage::audit::describe(replica, e)),
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::Unverified(broken.join("\n")))
    }
}

pub fn audit_query(args: &QueryArgs) -> Result<(), CliError> {
    let filter = Filter::parse(args.filter.params(), SystemTime::now())
        .map_err(|e| CliError::Usage(e.for_cli()))?;
    let output = match (&args.group_by, args.summary) {
        (Some(list), _) => Output::Summary {
            group_by: Output::parse_group_by(list)
                .map_err(|e| CliError::Usage(format!("--group-by: {e}")))?,
            limit: args.limit,
        },
        (None, true) => Output::Summary {
            group_by: vec!["action", "reason"],
            limit: args.limit,
        },
        (None, false) => Output::Records { limit: args.limit },
    };
    let file = audit_log_of(args.file.as_deref(), &args.config)?;
    // Say which file when it cannot be read, before any output.
    std::fs::File::open(&file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let format = match args.format {
        QueryFormat::Table => Format::Table,
        QueryFormat::Json => Format::Json,
        QueryFormat::Csv => Format::Csv,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (tally, next) = query::run_page(&file, &filter, &output, args.cursor, format, &mut out)
        .map_err(anyhow::Error::from)?;
    if let Some(next) = next.filter(|_| format != Format::Table) {
        // On stderr, so the records on stdout stay JSON Lines or CSV.
        note!("next page: --cursor {next}");
    }
    if format == Format::Table {
        let groups = match output {
            Output::Summary { .. } => format!(" in {}", plural(tally.groups, "group", "groups")),
            Output::Records { .. } => String::new(),
        };
        let shown = if let Some(next) = next {
            format!(
                "the newest {}, older ones left out by --limit (next page: --cursor {next})",
                plural(tally.matched, "record", "records")
            )
        } else if tally.cut {
            format!(
                "the newest {}, older ones left out by --limit",
                plural(tally.matched, "record", "records")
            )
        } else {
            plural(tally.matched, "record", "records")
        };
        note!(
            "{shown}{groups}{}",
            if tally.skipped > 0 {
                format!(
                    "; {} skipped (run `aigate audit verify`)",
                    plural(tally.skipped, "unreadable line", "unreadable lines")
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

pub fn hash_token_cmd() -> Result<(), CliError> {
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .map_err(anyhow::Error::from)?;
    let token = token.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(CliError::Usage(
            "no token on stdin; run: printf %s \"$TOKEN\" | aigate user hash-token".into(),
        ));
    }
    outln!("{}", hash_token(token))
}

pub(crate) fn admin_token(args: &AdminArgs) -> Result<String, CliError> {
    token_from(args.token_file.as_deref())
}

/// The admin token from `--token-file` or `AIGATE_TOKEN`.
pub(crate) fn token_from(file: Option<&Path>) -> Result<String, CliError> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CliError::Usage(format!("--token-file {}: {e}", f.display())))?,
        None => std::env::var("AIGATE_TOKEN").map_err(|_| {
            CliError::Usage("no admin token: set AIGATE_TOKEN or pass --token-file FILE".into())
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(CliError::Usage("the admin token is empty".into()));
    }
    Ok(token)
}

pub fn exemption_cmd(args: &AdminArgs, command: &ExemptionCommand) -> Result<(), CliError> {
    use crate::admin_client::{AdminClient, table};
    let client = AdminClient::new(&args.admin, admin_token(args)?)?;
    let print_one = |v: &serde_json::Value| match args.format {
        OutputFormat::Json => outln!("{v:#}"),
        OutputFormat::Table => out(table(std::slice::from_ref(v))),
    };
    match command {
        ExemptionCommand::Grant {
            user,
            group,
            tools,
            workflows,
            duration,
            reason,
            ticket,
        } => {
            let body = serde_json::json!({
                "user": user,
                "group": group,
                "tools": tools,
                "workflows": if workflows.is_empty() { None } else { Some(workflows) },
                "for": duration,
                "reason": reason,
                "ticket": ticket,
            });
            let body = strip_nulls(body);
            print_one(&client.call(http::Method::POST, "/v1/exemptions", Some(body))?)?;
        }
        ExemptionCommand::List { subject, active } => {
            let mut q = Vec::new();
            if let Some(s) = subject {
                q.push(format!("subject={}", percent_encode(s)));
            }
            if *active {
                q.push("active=true".to_string());
            }
            let path = if q.is_empty() {
                "/v1/exemptions".to_string()
            } else {
                format!("/v1/exemptions?{}", q.join("&"))
            };
            let v = client.call(http::Method::GET, &path, None)?;
            match args.format {
                // The API's own shape, `{"exemptions": [...]}`: one shape for scripts, whichever
                // they call.
                OutputFormat::Json => outln!("{v:#}")?,
                OutputFormat::Table => out(table(
                    v["exemptions"].as_array().map_or(&[][..], Vec::as_slice),
                ))?,
            }
        }
        ExemptionCommand::Show { id } => print_one(&client.call(
            http::Method::GET,
            &format!("/v1/exemptions/{}", percent_encode(id)),
            None,
        )?)?,
        ExemptionCommand::Revoke { id } => print_one(&client.call(
            http::Method::DELETE,
            &format!("/v1/exemptions/{}", percent_encode(id)),
            None,
        )?)?,
    }
    Ok(())
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Into memory first: `generate` panics when its writer fails, as a closed pipe makes it.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "aigate", &mut script);
    out(script)
}

pub fn pac(arg: &ConfigArg, proxy: Option<&str>) -> Result<(), CliError> {
    let cfg = load(arg)?;
    let proxy = match proxy {
        Some(p) => p.to_string(),
        None if cfg.listen.ip().is_unspecified() => {
            return Err(CliError::Usage(format!(
                "gateway.listen is {}: say how clients reach the gateway with --proxy HOST:PORT",
                cfg.listen
            )));
        }
        None => cfg.listen.to_string(),
    };
    if proxy.is_empty() || proxy.contains(['"', '\\', '\n', ' ', ';']) {
        return Err(CliError::Usage(format!(
            "--proxy {proxy:?}: write host:port, e.g. aigate.corp.example:3128"
        )));
    }
    out(crate::pac::generate(&cfg, &proxy))
}

pub fn doctor(arg: &ConfigArg, proxy: Option<&str>, ca: Option<&Path>) -> Result<(), CliError> {
    let cfg = load(arg)?;
    let proxy = proxy
        .map(str::to_string)
        .unwrap_or_else(|| cfg.listen.to_string());
    let ca_pem = match ca {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::Usage(format!("--ca {}: {e}", file.display())))?,
        None => ca_cert_of(&cfg).map_err(|e| {
            CliError::Runtime(anyhow::anyhow!(
                "{e}; on a client machine, pass the gateway's CA: aigate doctor --ca aigate-ca.pem"
            ))
        })?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    let checks = runtime.block_on(crate::doctor::run(&cfg, &proxy, &ca_pem, &|v| {
        std::env::var(v).ok()
    }));
    for c in &checks {
        outln!("{c}")?;
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "{failed} of {} checks failed",
            checks.len()
        )));
    }
    Ok(())
}

pub fn provenance_baseline(arg: &ConfigArg, paths: &[PathBuf]) -> Result<(), CliError> {
    use crate::provenance::fingerprint::{Fingerprinter, Key, StopList};
    let cfg = load(arg)?;
    let key = Key::load_or_create(&cfg.state_dir).map_err(anyhow::Error::from)?;
    let path = StopList::path(&cfg.state_dir);
    let mut stop = StopList::load(&path).map_err(anyhow::Error::from)?;
    let fingerprinter = Fingerprinter::new(&key);
    stop.adding_with(fingerprinter.params());
    let (tally, added) = crate::provenance::scan::run::baseline(paths, &fingerprinter, &mut stop)?;
    stop.save(&path).map_err(anyhow::Error::from)?;
    outln!(
        "{}: {} new fingerprints from {} ({} bytes, {} skipped); {} in the stop-list",
        path.display(),
        added,
        plural(tally.documents as usize, "file", "files"),
        tally.bytes,
        tally.skipped,
        stop.len()
    )?;
    if !stop.is_of(fingerprinter.params()) {
        note!(
            "note: {} also holds fingerprints of an earlier release; to rebuild it whole, remove it and run `aigate provenance baseline` over all your known-clean code again",
            path.display()
        );
    }
    Ok(())
}
