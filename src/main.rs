//! The `aigate` binary: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use aigate::cli::{
    self, AuditCommand, AuditKeyCommand, CaCommand, Cli, CliError, Command, DbCommand,
    ProvenanceCommand, UserCommand,
};
use aigate::config::{self, LogFormat};
use clap::Parser;

/// The running gateway's own messages. A closed stdout or stderr (whoever started it stopped
/// reading) must not take the gateway down with it, as `println!` would.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { cli::EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    if !matches!(cli.command, Command::Run(_)) {
        init_tracing(LogFormat::Pretty, "info");
    }
    let result = match &cli.command {
        Command::Run(arg) => run(arg),
        Command::Check(arg) => cli::check(arg),
        Command::Explain(args) => cli::explain_cmd(args),
        Command::Ca {
            command: CaCommand::Export(arg),
        } => cli::ca_export(arg),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    postgres: true,
                    config,
                    proof,
                    ..
                },
        } => cli::audit_verify_postgres(config, proof),
        Command::Audit {
            command:
                AuditCommand::Key {
                    command: AuditKeyCommand::Export(arg),
                },
        } => cli::audit_key_export(arg),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    file,
                    proof,
                    config,
                    ..
                },
        } => cli::audit_verify(file.as_deref(), proof, config),
        Command::Db {
            command: DbCommand::Migrate(arg),
        } => cli::db_migrate(arg),
        Command::Audit {
            command: AuditCommand::Query(args),
        } => cli::audit_query(args),
        Command::User {
            command: UserCommand::HashToken,
        } => cli::hash_token_cmd(),
        Command::Exemption { admin, command } => cli::exemption_cmd(admin, command),
        Command::Completions { shell } => cli::completions(*shell),
        Command::Pac { config, proxy } => cli::pac(config, proxy.as_deref()),
        Command::Provenance {
            command: ProvenanceCommand::Baseline { config, paths },
        } => cli::provenance_baseline(config, paths),
        Command::Provenance {
            command: ProvenanceCommand::Scan(args),
        } => cli::provenance_scan(args),
        Command::Provenance {
            command: ProvenanceCommand::Findings { admin, status },
        } => cli::provenance_findings(admin, status.as_deref()),
        Command::Provenance {
            command: ProvenanceCommand::Confirm { admin, id, note },
        } => cli::provenance_decide(admin, id, "confirm", note.as_deref()),
        Command::Provenance {
            command: ProvenanceCommand::Clear { admin, id, reason },
        } => cli::provenance_decide(admin, id, "clear", Some(reason)),
        Command::Doctor { config, proxy, ca } => {
            cli::doctor(config, proxy.as_deref(), ca.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `aigate audit query … | head`: the reader has what it wanted; nothing went wrong.
        Err(e) if e.is_closed_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            note!("aigate: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Logs to stderr: `RUST_LOG` wins over the configured level.
fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Colour only for a person at a terminal: escape codes in a redirected file or a log shipper are
/// noise. `NO_COLOR` set to anything but the empty string turns it off (no-color.org).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn run(arg: &cli::ConfigArg) -> Result<(), CliError> {
    // Validate before binding any port.
    let cfg = config::load(arg.config.as_deref())?;
    init_tracing(cfg.log.format, &cfg.log.level);
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        // Before anything is printed: a SIGHUP right after the banner must not kill the process,
        // and a SIGTERM right after it must still shut down cleanly (flushing the audit log).
        #[cfg(unix)]
        let hup = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::hangup()).ok(),
                signal(SignalKind::terminate()).ok(),
            )
        };
        #[cfg(not(unix))]
        let hup = None::<()>;
        let source = cfg.source.clone();
        let audit_path = cfg.audit.path.clone();
        let signin_link = cfg.console.signin_link;
        let handle = aigate::App::start(cfg).await.map_err(anyhow::Error::from)?;
        let ca = std::path::absolute(handle.ca_cert_path()).unwrap_or_else(|_| handle.ca_cert_path());
        say!("aigate listening on {} (policy: {source})", handle.proxy_addr);
        say!("CA certificate: {}   (print it with `aigate ca export`)", ca.display());
        say!("audit log:      {}", audit_path.display());
        say!("admin API:      {}", handle.console_url());
        // The link is a credential: printed to the person at the terminal, never to a log
        // (`console.signin_link`); under systemd or in a container, stdout is a log.
        let print_link = match signin_link {
            config::SigninLink::Always => true,
            config::SigninLink::Terminal => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            config::SigninLink::Never => false,
        };
        if print_link {
            match handle.signin_link().await {
                Ok(link) => say!("console:        {link}   (one-time sign-in, 15 minutes)"),
                Err(e) => note!("aigate: no one-time console link: {e}"),
            }
        } else {
            say!("console:        {}/signin", handle.console_url());
        }
        say!("point a client at it:");
        say!("  export HTTPS_PROXY=http://{}", handle.proxy_addr);
        say!("  export NODE_EXTRA_CA_CERTS={}   # Python: SSL_CERT_FILE, Codex: CODEX_CA_CERTIFICATE", ca.display());
        reload_on_sighup(&handle, hup).await;
        note!("aigate: shutting down");
        handle.shutdown().await;
        Ok::<(), CliError>(())
    })
}

#[cfg(unix)]
/// Serve until SIGTERM or Ctrl-C; reload the policy on each SIGHUP meanwhile.
async fn reload_on_sighup(
    handle: &aigate::AppHandle,
    (hup, term): (
        Option<tokio::signal::unix::Signal>,
        Option<tokio::signal::unix::Signal>,
    ),
) {
    let Some(mut hup) = hup else {
        return shutdown_signal(term).await;
    };
    let stop = shutdown_signal(term);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = hup.recv() => match handle.reload() {
                Ok(version) => note!("aigate: policy reloaded (version {version})"),
                Err(e) => note!("aigate: reload refused, the running policy stays in force: {e}"),
            },
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_handle: &aigate::AppHandle, _hup: Option<()>) {
    let _ = tokio::signal::ctrl_c().await;
}

/// SIGTERM (registered before the banner) or Ctrl-C.
#[cfg(unix)]
async fn shutdown_signal(term: Option<tokio::signal::unix::Signal>) {
    match term {
        Some(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
