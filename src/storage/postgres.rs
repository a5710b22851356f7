//! The PostgreSQL connection pool, and whether the database is reachable right now.
//!
//! TLS follows the URL's `sslmode` (`disable`, `prefer` — tokio-postgres's default — or
//! `require`); whenever TLS is used the server's certificate is verified against the system and
//! webpki roots plus `storage.ca_file`, with rustls as everywhere else in aigate.
//!
//! Nothing on the data path waits for it: requests are decided from the in-memory snapshot.
//! Grants, revocations, the audit shipper and the admin API's reads use the pool; a failure
//! marks the database down (readyz, `aigate_storage_up`) until a call succeeds again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PasswordSource, PostgresConfig};
use crate::tls::TlsSetupError;

/// How long a call may wait for a pooled connection (or to open one) before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "storage.password_env names {0}, which is not set; export it with the database password"
    )]
    PasswordEnv(String),
    #[error("cannot read the database password from {path}: {source}; check storage.password_file")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage.url: {0}")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("PostgreSQL is unreachable: {0}")]
    Unavailable(String),
    /// Shown with PostgreSQL's own message (`db error` alone names nothing).
    #[error("PostgreSQL: {}", chain(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// A connection of its own, outside the pool, LISTENing on one channel: the payloads of its
/// notifications arrive on `notes`, while `client` runs the follower's queries. Dropping it stops
/// the task that drives the connection.
pub struct Listener {
    pub client: tokio_postgres::Client,
    pub notes: mpsc::UnboundedReceiver<String>,
    _driver: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Db {
    pool: Pool,
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pub cfg: PostgresConfig,
    up: AtomicBool,
}

impl Db {
    /// Build the pool (no connection is made yet).
    pub fn new(cfg: &PostgresConfig) -> Result<Arc<Db>, DbError> {
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Url(e.to_string()))?;
        match &cfg.password {
            PasswordSource::None => {}
            PasswordSource::Env(var) => {
                let pw = std::env::var(var).map_err(|_| DbError::PasswordEnv(var.clone()))?;
                pg.password(pw.trim_end_matches(['\r', '\n']));
            }
            PasswordSource::File(path) => {
                let pw = std::fs::read_to_string(path).map_err(|source| DbError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
                pg.password(pw.trim_end_matches(['\r', '\n']));
            }
        }
        pg.application_name(format!("aigate {}", cfg.replica_id));
        pg.connect_timeout(CONNECT_TIMEOUT);
        let roots = crate::tls::upstream::root_store("storage.ca_file", cfg.ca_file.as_slice())?;
        let tls_config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Invalid {
                what: "TLS provider",
                path: Default::default(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = MakeRustlsConnect::new(tls_config);
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| DbError::Url(e.to_string()))?;
        Ok(Arc::new(Db {
            pool,
            pg,
            tls,
            cfg: cfg.clone(),
            up: AtomicBool::new(false),
        }))
    }

    pub fn replica(&self) -> &Arc<str> {
        &self.cfg.replica_id
    }

    /// A pooled connection, or `Unavailable` (and the database marked down).
    pub async fn client(&self) -> Result<Object, DbError> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.set_up(false);
                Err(DbError::Unavailable(chain(&e)))
            }
        }
    }

    /// A connection of its own, outside the pool (LISTEN needs one that stays put), listening
    /// on `channel`. The shared stores (exemptions, requests) follow the database through it.
    pub async fn listen(&self, channel: &str) -> Result<Listener, DbError> {
        let (client, mut connection) = self.pg.connect(self.tls.clone()).await.map_err(|e| {
            self.set_up(false);
            DbError::Unavailable(chain(&e))
        })?;
        let (tx, notes) = mpsc::unbounded_channel();
        let name = channel.to_string();
        // The connection must be polled for queries to complete; it hands notifications over.
        let driver = tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, channel = %name, "LISTEN connection ended");
                        break;
                    }
                }
            }
        });
        let listener = Listener {
            client,
            notes,
            _driver: AbortOnDrop(driver),
        };
        let listen = listener
            .client
            .batch_execute(&format!("LISTEN {channel}"))
            .await;
        self.note(listen)?;
        Ok(listener)
    }

    /// Record the outcome of a call: a query error on a closed connection means down.
    pub fn note<T>(&self, result: Result<T, tokio_postgres::Error>) -> Result<T, DbError> {
        match result {
            Ok(v) => {
                self.set_up(true);
                Ok(v)
            }
            Err(e) if e.is_closed() || e.as_db_error().is_none() => {
                self.set_up(false);
                Err(DbError::Unavailable(chain(&e)))
            }
            Err(e) => Err(DbError::Query(e)),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("PostgreSQL reachable");
            } else {
                tracing::warn!(
                    "PostgreSQL unreachable; enforcing with the last exemption snapshot, grants refused"
                );
            }
        }
    }

    /// Apply the shipped migrations that are missing.
    pub async fn migrate(&self) -> Result<Vec<i32>, DbError> {
        let mut client = self.client().await?;
        let result = super::migrate::run(&mut client).await;
        self.note(result)
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate: …"):
/// the outermost message alone rarely says what to fix.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
