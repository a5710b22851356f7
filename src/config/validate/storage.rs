//! `[storage]`: the journal in the state directory, or PostgreSQL shared by replicas.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Problems, duration, q, readable_file, resolve_path};
use crate::config::raw::RawStorage;
use crate::config::{PasswordSource, PostgresConfig, Storage};

pub(super) fn storage(p: &mut Problems, raw: &RawStorage, base: &Path) -> Storage {
    let backend = raw.backend.as_deref().unwrap_or("file");
    let pg_keys = [
        ("url", raw.url.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("replica_id", raw.replica_id.is_some()),
        ("resync_interval", raw.resync_interval.is_some()),
        ("audit", raw.audit.is_some()),
        ("pool_size", raw.pool_size.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    match backend {
        "file" => {
            for (key, set) in pg_keys {
                if set {
                    p.push(
                        format!("storage.{key}"),
                        None,
                        "only used with backend = \"postgres\"; remove it or set storage.backend = \"postgres\"",
                    );
                }
            }
            return Storage::File;
        }
        "postgres" => {}
        other => {
            p.push(
                "storage.backend",
                q(other),
                "unknown backend; use \"file\" (one replica, the state directory) or \"postgres\" (shared by replicas)",
            );
            return Storage::File;
        }
    }
    let url = raw.url.clone().unwrap_or_default();
    match url.parse::<tokio_postgres::Config>() {
        _ if url.is_empty() => p.push(
            "storage.url",
            None,
            "missing; write e.g. \"postgres://aigate@db.example.com:5432/aigate\"",
        ),
        Ok(c) if c.get_password().is_some() => p.push(
            "storage.url",
            Some("(hidden: it holds a password)".into()),
            "the password must not be in the config; remove it from the URL and set storage.password_env or storage.password_file",
        ),
        Ok(_) => {}
        Err(e) => p.push(
            "storage.url",
            q(&url),
            format!("not a PostgreSQL URL ({e}); write e.g. \"postgres://aigate@db.example.com:5432/aigate\""),
        ),
    }
    let password = match (&raw.password_env, &raw.password_file) {
        (Some(_), Some(_)) => {
            p.push(
                "storage.password_file",
                None,
                "set storage.password_env or storage.password_file, not both",
            );
            PasswordSource::None
        }
        (Some(var), None) => PasswordSource::Env(var.clone()),
        (None, Some(file)) => PasswordSource::File(resolve_path(base, file)),
        (None, None) => PasswordSource::None,
    };
    let replica_id = raw.replica_id.clone().unwrap_or_else(default_replica_id);
    if replica_id.is_empty()
        || replica_id.len() > 64
        || !replica_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        p.push(
            "storage.replica_id",
            q(&replica_id),
            "use 1 to 64 letters, digits, '-', '_' or '.'; each replica needs its own",
        );
    }
    let resync_interval = duration(
        p,
        "storage.resync_interval",
        raw.resync_interval.as_deref(),
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    let pool_size = raw.pool_size.unwrap_or(4);
    if !(1..=64).contains(&pool_size) {
        p.push(
            "storage.pool_size",
            Some(pool_size.to_string()),
            "use between 1 and 64 connections",
        );
    }
    Storage::Postgres(PostgresConfig {
        url,
        password,
        replica_id: Arc::from(replica_id),
        resync_interval,
        audit: raw.audit.unwrap_or(true),
        pool_size: pool_size.clamp(1, 64) as usize,
        ca_file: raw
            .ca_file
            .as_deref()
            .map(|f| readable_file(p, "storage.ca_file", base, f)),
    })
}

/// The host name: distinct per replica (a pod name, a VM name) without configuration.
fn default_replica_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into())
}
