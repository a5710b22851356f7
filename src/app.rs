//! Wiring: from a validated `Config` to a running gateway, and a handle to stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::audit::refusals::{Leg, RefusalLog};
use crate::audit::{AuditLog, AuditWriterError};
use crate::config::{Config, Storage};
use crate::console::oidc::OidcSignIn;
use crate::exemptions::Snapshot;
use crate::exemptions::journal::JournalError;
use crate::exemptions::store::ExemptionStore;

/// The exemption journal, in the state directory.
pub const EXEMPTION_JOURNAL: &str = "exemptions.jsonl";
/// The exemption request journal, in the state directory.
pub const REQUEST_JOURNAL: &str = "requests.jsonl";
use crate::proxy::dial::Dialer;
use crate::proxy::{Clock, Shared, SystemClock, accept};
use crate::resolve::Resolver;
use crate::tls::{CertificateAuthority, TlsSetupError, upstream};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Audit(#[from] AuditWriterError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Storage(#[from] crate::storage::DbError),
    #[error(transparent)]
    Requests(#[from] crate::requests::StoreError),
    #[error(
        "cannot listen on {addr}: {source}; is another proxy running there? change gateway.listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the provenance capture workers: {0}; lower provenance.workers")]
    Capture(std::io::Error),
    #[error(transparent)]
    Ledger(#[from] crate::provenance::ledger::LedgerError),
    #[error(transparent)]
    ProvenanceKey(#[from] crate::provenance::fingerprint::KeyError),
    #[error("{0}; it is in the state directory (gateway.state_dir)")]
    Findings(String),
}

pub struct App;

/// A running gateway.
pub struct AppHandle {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Following PostgreSQL (exemption sync, audit shipper): stopped with the gateway.
    background: Vec<JoinHandle<()>>,
    store: Arc<ExemptionStore>,
    /// Folded refusals of the admin listener: their summaries are written at shutdown too (the
    /// proxy's are in `shared`).
    refusals: Arc<RefusalLog>,
    /// With the audit log shipped to PostgreSQL: how far the table holds it.
    shipped: Option<Arc<crate::storage::audit::Shipped>>,
    /// The admin listener's state: the console's one-time sign-in links are made here.
    admin: AdminState,
}

impl App {
    pub async fn start(config: Config) -> Result<AppHandle, StartError> {
        App::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As `start`, with an injected clock (tests move time past an exemption's expiry).
    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<AppHandle, StartError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| StartError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let ca = CertificateAuthority::load_or_create(&config.ca, &config.state_dir)?;
        let resolver = Resolver::new(&config.upstream.resolve);
        let upstream_tls = upstream::client_config(&config.upstream)?;
        let mut ws_tls = upstream::client_config(&config.upstream)?;
        ws_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let replica = match &config.storage {
            Storage::Postgres(pg) => Some(pg.replica_id.clone()),
            Storage::File => None,
        };
        let db = match &config.storage {
            Storage::Postgres(pg) => Some(crate::storage::Db::new(pg)?),
            Storage::File => None,
        };
        let outside = match (&config.storage, &db) {
            (Storage::Postgres(pg), Some(db)) if pg.audit => checkpoint_in_postgres(db).await,
            _ => None,
        };
        let audit = AuditLog::open_checked(
            &config.audit.path,
            config.audit.fsync,
            metrics.clone(),
            replica,
            Some(&config.audit.integrity),
            outside,
        )?;
        account_for_lost_outcomes(&audit, config.audit.progress_interval);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let proxy_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let mut background = Vec::new();
        let mut shipped = None;
        let mut shared_db = None;
        let store = match &config.storage {
            Storage::File => {
                let (store, replay) = ExemptionStore::open(
                    &config.state_dir.join(EXEMPTION_JOURNAL),
                    snapshot.clone(),
                )?;
                if let Some(line) = replay.torn_line {
                    tracing::warn!(
                        line,
                        "exemption journal: the last line was a torn write (never acknowledged); cut off"
                    );
                }
                Arc::new(store)
            }
            Storage::Postgres(pg) => {
                // The database may be down at start: the replica starts with no exemptions (the
                // policy applies in full) and follows the database once it is reachable.
                let db = match db {
                    Some(db) => db,
                    None => crate::storage::Db::new(pg)?,
                };
                shared_db = Some(db.clone());
                let store = Arc::new(ExemptionStore::shared(db.clone(), snapshot.clone()));
                background.push(tokio::spawn(crate::storage::mirror::follow(
                    db.clone(),
                    store.clone(),
                )));
                if pg.audit {
                    let (tx, _) = tokio::sync::watch::channel(0);
                    let tx = Arc::new(tx);
                    shipped = Some(tx.clone());
                    background.push(tokio::spawn(crate::storage::audit::ship(
                        db,
                        config.audit.path.clone(),
                        tx,
                    )));
                }
                store
            }
        };
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                source,
            })?;
        let console_tls = match &config.console.tls {
            Some(tls) => Some(crate::console::tls::server_config(
                tls,
                &ca,
                &crate::console::tls::names(&config, admin_addr),
            )?),
            None => None,
        };
        // OIDC sign-in: an https provider is trusted as the vendors are (system, webpki and
        // `upstream.extra_roots`, where a company's internal CA goes).
        let oidc = match &config.console.oidc {
            Some(cfg) => {
                let roots = crate::tls::upstream::root_store(
                    "upstream.extra_roots",
                    &config.upstream.extra_roots,
                )?;
                let mut url = config.console_url(admin_addr);
                if console_tls.is_some() && config.console.public_url.is_none() {
                    url = url.replacen("http://", "https://", 1);
                }
                // Behind a load balancer the provider's redirect back may reach another
                // replica: with PostgreSQL, started sign-ins are kept there.
                let pending: Arc<dyn crate::console::oidc_pending::PendingStore> = match &shared_db
                {
                    Some(db) => Arc::new(crate::console::oidc_pending::PgPending::new(db.clone())),
                    None => Arc::new(crate::console::oidc_pending::MemoryPending::default()),
                };
                Some(Arc::new(OidcSignIn::new(cfg.clone(), &url, roots, pending)))
            }
            None => None,
        };
        let limits = crate::proxy::limits::Limits::new(
            config.max_connections,
            config.max_connections_per_client,
        );
        let nofile = crate::fdlimit::raise_nofile();
        let admin_cap = crate::fdlimit::admin_cap(config.admin.max_connections, nofile);
        if admin_cap < config.admin.max_connections {
            tracing::warn!(
                nofile,
                admin_cap,
                "admin.max_connections is over the admin share of file descriptors; capped"
            );
        }
        let admin_limits = crate::proxy::limits::Limits::new(
            admin_cap,
            config.admin.max_connections_per_client.min(admin_cap),
        );
        let requests = start_requests(
            &config,
            shared_db.clone(),
            admin_addr,
            upstream::client_config(&config.upstream)?,
            &mut background,
        )?;
        let live_config = Arc::new(ArcSwap::from_pointee(config));
        let dialer = Dialer::new(resolver, live_config.clone());
        let client = upstream::client(upstream_tls, dialer.clone());
        tokio::spawn(crate::reload::watch(live_config.clone()));
        let (provenance, ledger) = if live_config.load().provenance.enabled {
            let (capturer, ledger) =
                start_provenance(&live_config.load(), shared_db.clone(), &audit, &metrics)?;
            background.push(tokio::spawn(sweep_ledger(
                ledger.clone(),
                live_config.clone(),
            )));
            (Some(capturer), Some(ledger))
        } else {
            (None, None)
        };
        let findings = if live_config.load().provenance.enabled {
            Some(open_findings(&live_config.load(), shared_db)?)
        } else {
            None
        };
        let (shutdown, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config: live_config,
            ca,
            upstream: client,
            ws_tls: tokio_rustls::TlsConnector::from(Arc::new(ws_tls)),
            dialer,
            audit,
            exemptions: snapshot,
            clock,
            metrics,
            draining: rx.clone(),
            limits,
            recent_tools: Default::default(),
            refusals: Arc::new(RefusalLog::new(Leg::Proxy)),
            requests: requests.clone(),
            provenance,
            ledger,
        });
        let task = tokio::spawn(accept::serve(shared.clone(), listener, rx.clone()));
        let refusals = Arc::new(RefusalLog::new(Leg::Admin));
        let console = match store.db() {
            Some(db) => crate::console::Console::postgres(db.clone(), console_tls.is_some()),
            None => crate::console::Console::in_memory(console_tls.is_some()),
        };
        if let Some(oidc) = &oidc {
            background.push(tokio::spawn(oidc.clone().keep_discovered()));
        }
        let console = Arc::new(console.with_oidc(oidc));
        let admin_state = AdminState {
            shared: shared.clone(),
            store: store.clone(),
            refusals: refusals.clone(),
            requests: requests.clone(),
            guessing: Default::default(),
            console,
            findings,
        };
        let router = admin::router(admin_state.clone());
        tokio::spawn(admin::listener::serve(
            admin_state.clone(),
            router,
            admin_listener,
            admin_limits,
            rx,
            console_tls,
        ));
        background.push(tokio::spawn(summarise_refusals(
            shared.clone(),
            refusals.clone(),
        )));
        background.push(tokio::spawn(sweep_requests(
            shared.clone(),
            store.clone(),
            requests,
        )));
        Ok(AppHandle {
            proxy_addr,
            admin_addr,
            shared,
            shutdown,
            task,
            background,
            store,
            refusals,
            shipped,
            admin: admin_state,
        })
    }
}

/// The request loop's stores: the journal in the state directory, or PostgreSQL (followed, and
/// drafts written to it off the data path); and the webhook worker.
fn start_requests(
    config: &Config,
    db: Option<Arc<crate::storage::Db>>,
    admin_addr: SocketAddr,
    tls: rustls::ClientConfig,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Arc<crate::requests::Requests>, StartError> {
    use crate::requests::{Drafts, RequestStore, Requests, notify::Notifier, shared};
    let (drafts, store) = match db {
        None => (
            Drafts::default(),
            Arc::new(RequestStore::open(
                &config.state_dir.join(REQUEST_JOURNAL),
                config.console.request_retention,
                std::time::SystemTime::now(),
            )?),
        ),
        Some(db) => {
            let (tx, rx) = Drafts::persist_channel();
            background.push(tokio::spawn(shared::persist_drafts(db.clone(), rx)));
            let store = Arc::new(RequestStore::shared(db.clone()));
            background.push(tokio::spawn(crate::storage::mirror::follow(
                db,
                store.clone(),
            )));
            (Drafts::default().with_persist(tx), store)
        }
    };
    let (notifier, worker) = Notifier::new(tls);
    background.push(tokio::spawn(worker));
    Ok(Arc::new(Requests::new(
        drafts,
        store,
        Some(notifier),
        admin_addr,
    )))
}

/// Expire unanswered requests (each with its record and notification), every second; forget
/// long-expired drafts every minute.
async fn sweep_requests(
    shared: Arc<Shared>,
    store: Arc<ExemptionStore>,
    requests: Arc<crate::requests::Requests>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let cfg = shared.config.load_full();
        let now = shared.clock.now();
        let deps = crate::requests::flow::Deps {
            config: &cfg,
            audit: &shared.audit,
            exemptions: &store,
            requests: &requests,
            client: "aigate".to_string(),
            now,
        };
        crate::requests::flow::expire(&deps).await;
        if n % 60 == 0 {
            requests.drafts.sweep(now);
        }
    }
}

/// The provenance capture and its ledger: the embedded file in the state directory, or the
/// shared tables with PostgreSQL storage. The fingerprint key lives in the state directory
/// (with PostgreSQL every replica needs the same key file, or their fingerprints differ).
fn start_provenance(
    config: &crate::config::Config,
    db: Option<Arc<crate::storage::Db>>,
    audit: &AuditLog,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<
    (
        Arc<crate::provenance::capture::Capturer>,
        Arc<dyn crate::provenance::ledger::Ledger>,
    ),
    StartError,
> {
    use crate::provenance::fingerprint::{Fingerprinter, Key};
    use crate::provenance::ledger::{Ledger, LedgerRecorder, embedded, postgres};
    let ledger: Arc<dyn Ledger> = match db {
        Some(db) => Arc::new(postgres::PostgresLedger::filtered(
            db,
            tokio::runtime::Handle::current(),
        )),
        None => {
            let path = embedded::path(&config.state_dir);
            let open = || embedded::EmbeddedLedger::open(&path);
            let ledger = if config.provenance.worker_priority == crate::config::WorkerPriority::Low
            {
                // The store's flush, compaction and monitor threads (and the filter's rebuild)
                // inherit the opening thread's policy: at "low" they yield to the data path as
                // the capture workers do (docs/provenance.md, "Capture cost").
                let (ledger, lowered) = crate::background::at_idle_priority(open);
                if let Err(e) = lowered {
                    tracing::warn!(error = %e, "provenance.worker_priority = \"low\": cannot put the ledger's background threads at idle priority");
                }
                ledger
            } else {
                open()
            };
            Arc::new(ledger?)
        }
    };
    let key = Key::load_or_create(&config.state_dir)?;
    let recorder = LedgerRecorder {
        ledger: ledger.clone(),
        fingerprints: Arc::new(Fingerprinter::new(&key)),
        metrics: metrics.clone(),
    };
    let capturer = crate::provenance::capture::Capturer::start(
        &config.provenance,
        audit.clone(),
        metrics.clone(),
        Some(Arc::new(recorder)),
    )
    .map_err(StartError::Capture)?;
    Ok((capturer, ledger))
}

/// The provenance review queue: a redb file next to the embedded ledger, or with PostgreSQL
/// storage one table every replica shares (docs/provenance.md, "Review").
fn open_findings(
    cfg: &crate::config::Config,
    db: Option<Arc<crate::storage::Db>>,
) -> Result<Arc<dyn crate::provenance::review::FindingStore>, StartError> {
    use crate::provenance::review::{embedded, postgres};
    if let Some(db) = db {
        return Ok(Arc::new(postgres::PostgresFindings::new(
            db,
            tokio::runtime::Handle::current(),
        )));
    }
    let store = embedded::EmbeddedFindings::open(&embedded::path(&cfg.state_dir))
        .map_err(|e| StartError::Findings(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Remove ledger entries past `provenance.retention`: at start, then hourly.
async fn sweep_ledger(
    ledger: Arc<dyn crate::provenance::ledger::Ledger>,
    config: Arc<ArcSwap<crate::config::Config>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let retention = config.load().provenance.retention;
        let before = crate::provenance::ledger::now_ms()
            - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let l = ledger.clone();
        match tokio::task::spawn_blocking(move || l.sweep(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                removed = n,
                "provenance ledger: entries past retention removed"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "provenance ledger sweep failed"),
            Err(_) => {}
        }
    }
}

/// Write the folded refusals of both listeners out, one summary per client and leg, at the end
/// of every window.
async fn summarise_refusals(shared: Arc<Shared>, admin: Arc<RefusalLog>) {
    let mut tick = tokio::time::interval(crate::audit::refusals::WINDOW);
    tick.tick().await;
    loop {
        tick.tick().await;
        for record in admin
            .summaries()
            .into_iter()
            .chain(shared.refusals.summaries())
        {
            shared.audit.submit(record);
        }
    }
}

impl AppHandle {
    /// Where a browser on this machine opens the console: the admin listener, with loopback
    /// for an unspecified address.
    pub fn console_url(&self) -> String {
        let addr = self.admin_addr;
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        let scheme = if self.admin.console.tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
    }

    /// A new one-time sign-in link for the first admin (`aigate run` prints one): single use,
    /// valid for 15 minutes. It is a credential: print it to the person starting aigate, log
    /// it nowhere.
    pub async fn signin_link(&self) -> Result<String, crate::console::session::SessionError> {
        let path = crate::console::mint_link(&self.admin).await?;
        Ok(format!("{}{path}", self.console_url()))
    }

    pub fn ca_cert_pem(&self) -> &str {
        self.shared.ca.cert_pem()
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.shared.ca.cert_path().to_path_buf()
    }

    pub fn audit(&self) -> &AuditLog {
        &self.shared.audit
    }

    /// Reload the policy file (what SIGHUP does). The running policy stays if the new one is
    /// invalid; the error carries the same messages as `aigate check`.
    pub fn reload(&self) -> Result<Arc<str>, crate::config::ConfigError> {
        crate::reload::reload_config(&self.shared.config)
    }

    /// The version of the policy in force.
    pub fn policy_version(&self) -> Arc<str> {
        self.shared.config.load().version.clone()
    }

    /// Replace the exemptions the policy sees; takes effect on the next request.
    pub fn set_exemptions(&self, snapshot: Snapshot) {
        self.shared.exemptions.store(Arc::new(snapshot));
    }

    /// Stop accepting, let requests and streams in flight finish (up to `gateway.drain_timeout`),
    /// then flush the audit log. Returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + self.shared.config.load().drain_timeout;
        let open = || {
            self.shared
                .metrics
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let drained = open() == 0;
        if !drained {
            tracing::warn!(
                open = open(),
                "drain timeout: closing the remaining connections"
            );
        }
        for record in self
            .refusals
            .summaries()
            .into_iter()
            .chain(self.shared.refusals.summaries())
        {
            self.shared.audit.submit(record);
        }
        // The capture workers hold outcome records until their captures are recorded.
        if let Some(capturer) = self.shared.provenance.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                capturer.stop(std::time::Duration::from_secs(10))
            })
            .await;
        }
        self.shared.audit.checkpoint_on_shutdown();
        self.shared.audit.flush().await;
        if let Some(shipped) = &self.shipped {
            // The shutdown checkpoint is the table's proof of where this replica's chain ended:
            // without it, a log cut after the stop is named only against an older checkpoint.
            let last = self.shared.audit.last_seq();
            let mut rx = shipped.subscribe();
            let reached = tokio::time::timeout(SHIP_AT_SHUTDOWN, rx.wait_for(|s| *s >= last)).await;
            if !matches!(reached, Ok(Ok(_))) {
                tracing::warn!(
                    last_seq = last,
                    shipped = *shipped.borrow(),
                    timeout = ?SHIP_AT_SHUTDOWN,
                    "the audit log's end (its shutdown checkpoint) did not reach PostgreSQL before exit; it is shipped at the next start"
                );
            }
        }
        for task in &self.background {
            task.abort();
        }
        drained
    }

    /// Test hook: hold the provenance capture workers (a slow worker, made certain).
    #[doc(hidden)]
    pub fn hold_capture(&self, held: bool) {
        if let Some(c) = &self.shared.provenance {
            c.hold_workers(held);
        }
    }

    /// Test hook: hold the provenance ledger's sync thread (outcome records wait for it).
    #[doc(hidden)]
    pub fn hold_capture_sync(&self, held: bool) {
        if let Some(c) = &self.shared.provenance {
            c.hold_sync(held);
        }
    }

    /// Test hook: outcome records handed to a capture worker and not yet written.
    #[doc(hidden)]
    pub fn captures_in_transit(&self) -> usize {
        self.shared
            .provenance
            .as_ref()
            .map_or(0, |c| c.outcomes_in_transit())
    }

    /// Wait (up to `limit`) until no outcome record is on its way through a capture worker:
    /// after it, everything the gateway has finished is in the audit writer's hands.
    pub async fn settle_capture(&self, limit: std::time::Duration) {
        let Some(c) = &self.shared.provenance else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while c.outcomes_in_transit() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Whether the shared database is reachable (`None`: file storage).
    pub fn storage_up(&self) -> Option<bool> {
        self.store.db().map(|db| db.is_up())
    }
}

/// How long a stopping gateway waits for the shipper to put the end of its audit log (the
/// shutdown checkpoint) in PostgreSQL.
const SHIP_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the start-up gap check waits for PostgreSQL's newest checkpoint. A database that is
/// down at start does not hold the gateway up: the check then uses the state file alone.
const CHECKPOINT_LOOKUP: std::time::Duration = std::time::Duration::from_secs(5);

/// This replica's newest checkpoint in the PostgreSQL table, named as `audit verify` names it:
/// a copy of the chain's position that deleting the state file with the log does not remove.
async fn checkpoint_in_postgres(
    db: &crate::storage::Db,
) -> Option<(String, crate::audit::checkpoint::Saved)> {
    let replica = db.replica().to_string();
    let lookup = async {
        // A first start on a new database: the table is created here, not by the shipper later.
        db.migrate().await?;
        crate::storage::audit::newest_checkpoint(db, &replica).await
    };
    match tokio::time::timeout(CHECKPOINT_LOOKUP, lookup).await {
        Ok(Ok(found)) => found.map(|s| {
            (
                format!("the PostgreSQL table aigate_audit, replica {replica}"),
                s,
            )
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the newest audit checkpoint from PostgreSQL; the start-up gap check uses the state file only");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?CHECKPOINT_LOOKUP, "PostgreSQL did not answer for the newest audit checkpoint; the start-up gap check uses the state file only");
            None
        }
    }
}

/// Give every call left open by the last run (killed, or ended mid-call) its `outcome_lost`
/// record, before this run writes anything. A log that cannot be read back is reported and
/// left as it is: `audit verify` lists those calls as without an outcome.
fn account_for_lost_outcomes(audit: &AuditLog, progress_interval: std::time::Duration) {
    let window = progress_interval * 2 + std::time::Duration::from_secs(10);
    match crate::audit::recover::lost_outcomes(audit.path(), window, audit.resumed_after()) {
        Ok(lost) => {
            if !lost.is_empty() {
                tracing::warn!(
                    calls = lost.len(),
                    "calls of the last run have no outcome record (the gateway ended first); recorded as outcome_lost"
                );
            }
            for r in lost {
                audit.submit(r);
            }
        }
        Err(e) => tracing::error!(
            path = %audit.path().display(),
            error = %e,
            "cannot read the audit log back to find calls left without an outcome"
        ),
    }
}
