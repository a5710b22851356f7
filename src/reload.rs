//! Live reloads: the policy file on SIGHUP or when it changes, the users file when IT
//! regenerates it. No restart, no dropped connection.
//!
//! A new file is validated exactly as `aigate check` does; if it is invalid the error is logged
//! with the same messages and the running config stays in force. Settings that belong to the
//! process (listen addresses, state directory, CA, audit file) keep their running values and a
//! warning says they need a restart. Every request reads the config once at its start, so a
//! reload applies from the next request, also on open keep-alive connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{self, Config, ConfigError};
use crate::identify::Directory;

pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reload the config file. Returns the version now in force.
pub fn reload_config(live: &ArcSwap<Config>) -> Result<Arc<str>, ConfigError> {
    let current = live.load_full();
    let Some(file) = current.file.clone() else {
        tracing::info!("running on the embedded default policy: nothing to reload");
        return Ok(current.version.clone());
    };
    let mut next = config::load(Some(&file))?;
    let mut kept = Vec::new();
    if next.listen != current.listen {
        kept.push("gateway.listen");
        next.listen = current.listen;
    }
    if next.state_dir != current.state_dir {
        kept.push("gateway.state_dir");
        next.state_dir = current.state_dir.clone();
    }
    if next.ca.files != current.ca.files {
        kept.push("ca");
        next.ca = current.ca.clone();
    }
    if next.audit.path != current.audit.path || next.audit.fsync != current.audit.fsync {
        kept.push("audit.path/audit.fsync");
        next.audit.path = current.audit.path.clone();
        next.audit.fsync = current.audit.fsync;
    }
    if next.admin.listen != current.admin.listen {
        kept.push("admin.listen");
        next.admin.listen = current.admin.listen;
    }
    // Compared by their Debug text: the settings, never a password (only where it comes from).
    if format!("{:?}", next.storage) != format!("{:?}", current.storage) {
        kept.push("storage");
        next.storage = current.storage.clone();
    }
    if !kept.is_empty() {
        tracing::warn!(settings = ?kept, "changed settings take effect on restart; the running values stay");
    }
    let version = next.version.clone();
    live.store(Arc::new(next));
    tracing::info!(version = %version, file = %file.display(), "policy reloaded");
    Ok(version)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Poll the config file and the users file until the gateway is gone.
pub async fn watch(live: Arc<ArcSwap<Config>>) {
    let users = |c: &Config| c.identity.users_file.clone();
    let config_file = live.load().file.clone();
    let mut config_stamp = config_file.as_deref().and_then(stamp);
    let mut users_file: Option<PathBuf> = users(&live.load());
    let mut users_stamp = users_file.as_deref().and_then(stamp);
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        if Arc::strong_count(&live) == 1 {
            return;
        }
        if let Some(file) = &config_file {
            let now = stamp(file);
            if now != config_stamp {
                config_stamp = now;
                if let Err(e) = reload_config(&live) {
                    tracing::error!(
                        "the changed policy file is invalid; the running policy stays in force\n{e}"
                    );
                }
                // The new config may name another users file, and has read it already.
                users_file = users(&live.load());
                users_stamp = users_file.as_deref().and_then(stamp);
                continue;
            }
        }
        if let Some(file) = &users_file {
            let now = stamp(file);
            if now == users_stamp {
                continue;
            }
            users_stamp = now;
            let loaded = Directory::load(file)
                .map_err(|e| e.to_string())
                .and_then(|mut dir| {
                    let cfg = live.load();
                    dir.include_identified(
                        cfg.identity
                            .source_addresses
                            .iter()
                            .map(|(_, u)| u.as_str()),
                    );
                    let bad = dir.uncatalogued_defaults(&cfg.policy.workflows);
                    if bad.is_empty() {
                        Ok(dir)
                    } else {
                        Err(bad.join("; "))
                    }
                });
            match loaded {
                Ok(dir) => {
                    let count = dir.len();
                    live.rcu(|c| {
                        let mut next = Config::clone(c);
                        next.identity.directory = dir.clone();
                        next
                    });
                    tracing::info!(users = count, file = %file.display(), "users file reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "users file changed but is invalid; keeping the previous directory")
                }
            }
        }
    }
}
