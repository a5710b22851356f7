//! The PostgreSQL connection pool, and whether the database is reachable right now.
//!
//! Nothing on the data path waits for it: requests are decided from the in-memory snapshot.
//! Grants, revocations, the audit shipper and the admin API's reads use the pool; a failure
//! marks the database down (readyz, `aigate_storage_up`) until a call succeeds again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::{PasswordSource, PostgresConfig};

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
    #[error("PostgreSQL is unreachable: {0}")]
    Unavailable(String),
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
}

pub struct Db {
    pool: Pool,
    pg: tokio_postgres::Config,
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
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
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
                Err(DbError::Unavailable(e.to_string()))
            }
        }
    }

    /// A connection of its own, outside the pool (LISTEN needs one that stays put).
    pub async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        DbError,
    > {
        self.pg.connect(NoTls).await.map_err(|e| {
            self.set_up(false);
            DbError::Unavailable(e.to_string())
        })
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
                Err(DbError::Unavailable(e.to_string()))
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
