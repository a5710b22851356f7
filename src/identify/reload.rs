//! Reload the users file when IT regenerates it, without a restart or a dropped connection.
//!
//! A cheap poll of the file's modification time and length; on a change the file is parsed and,
//! if valid, swapped into the live config. A broken file is reported and the old directory stays
//! in force. Identity is resolved per CONNECT (and per plain-HTTP request), so a change applies to
//! every new tunnel while open ones finish undisturbed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::Directory;
use crate::config::Config;

pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watch `path` until the config swap is dropped.
pub async fn watch_directory(config: Arc<ArcSwap<Config>>, path: PathBuf) {
    let mut last = stamp(&path);
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        if Arc::strong_count(&config) == 1 {
            return;
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match Directory::load(&path) {
            Ok(dir) => {
                let users = dir.len();
                config.rcu(|c| {
                    let mut next = Config::clone(c);
                    next.identity.directory = dir.clone();
                    next
                });
                tracing::info!(users, file = %path.display(), "users file reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "users file changed but is invalid; keeping the previous directory")
            }
        }
    }
}
