//! Submitted requests, durable like grants: a journal in the state directory (JSON Lines, each
//! line the whole request after a change, fsynced before the change is acknowledged), or
//! PostgreSQL shared by the replicas (`shared.rs`). In memory: every request, and an index by
//! user, tool and workflow that deny messages read ("your request is waiting since …").
//!
//! "One open request per user, tool and workflow" is checked and the new request written as
//! one step: under the list's lock here, under an advisory lock on the key in PostgreSQL.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::{ExemptionRequest, State};
use crate::storage::Db;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no exemption request with id {0:?}")]
    NotFound(String),
    #[error("request {0} is already {1}; only an open request can be decided")]
    NotOpen(String, &'static str),
    #[error("cannot write the request journal: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Db(String),
    #[error(
        "request journal {path}, line {line}: {message}; fix or remove that line by hand (it is evidence)"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What a submit did.
#[derive(Debug, Clone)]
pub enum Submitted {
    New(ExemptionRequest),
    /// An open request for the same user, tool and workflow was there already.
    Existing(ExemptionRequest),
}

type Key = (String, String, String);

struct Inner {
    file: Option<File>,
    list: HashMap<Arc<str>, ExemptionRequest>,
}

pub struct RequestStore {
    inner: Mutex<Inner>,
    /// The latest request per user, tool and workflow, for deny messages (read on the data
    /// path without the lock).
    latest: ArcSwap<HashMap<Key, Arc<ExemptionRequest>>>,
    db: Option<Arc<Db>>,
}

impl RequestStore {
    /// Open (or create) the journal and replay it. A last line without its newline is a write a
    /// crash interrupted (never acknowledged): cut off. Any other bad line stops the start.
    pub fn open(path: &Path) -> Result<RequestStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut list = HashMap::new();
        let mut reader = BufReader::new(&file);
        let mut buf = Vec::new();
        let (mut line, mut good_len, mut torn) = (0, 0u64, false);
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            line += 1;
            if !buf.ends_with(b"\n") {
                torn = true;
                break;
            }
            match serde_json::from_slice::<ExemptionRequest>(&buf) {
                Ok(r) => {
                    list.insert(r.id.clone(), r);
                    good_len += n as u64;
                }
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        line,
                        message: e.to_string(),
                    });
                }
            }
        }
        drop(reader);
        if torn {
            tracing::warn!(
                line,
                "request journal: the last line was a torn write (never acknowledged); cut off"
            );
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        let store = RequestStore {
            inner: Mutex::new(Inner {
                file: Some(file),
                list,
            }),
            latest: ArcSwap::from_pointee(HashMap::new()),
            db: None,
        };
        store.publish(&store.lock());
        Ok(store)
    }

    /// Requests kept in PostgreSQL; the list is filled by `storage::mirror::follow`.
    pub fn shared(db: Arc<Db>) -> RequestStore {
        RequestStore {
            inner: Mutex::new(Inner {
                file: None,
                list: HashMap::new(),
            }),
            latest: ArcSwap::from_pointee(HashMap::new()),
            db: Some(db),
        }
    }

    pub fn db(&self) -> Option<&Arc<Db>> {
        self.db.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Inserts and replacements only: a panic cannot leave the map half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        let mut latest: HashMap<Key, Arc<ExemptionRequest>> = HashMap::new();
        for r in inner.list.values() {
            let slot = latest.entry(r.key()).or_insert_with(|| Arc::new(r.clone()));
            // The open one wins; else the newest.
            let better = (r.is_open() && !slot.is_open())
                || (r.is_open() == slot.is_open() && r.created_at > slot.created_at);
            if better {
                *slot = Arc::new(r.clone());
            }
        }
        self.latest.store(Arc::new(latest));
    }

    fn write(file: &mut Option<File>, r: &ExemptionRequest) -> io::Result<()> {
        if let Some(f) = file.as_mut() {
            let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
            f.sync_data()?;
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<ExemptionRequest> {
        let mut all: Vec<ExemptionRequest> = self.lock().list.values().cloned().collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all
    }

    pub fn get(&self, id: &str) -> Option<ExemptionRequest> {
        self.lock().list.get(id).cloned()
    }

    /// The request a deny message reports for this user, tool and workflow: the open one, else
    /// the newest.
    pub fn latest_for(
        &self,
        user: &str,
        tool: &str,
        workflow: &str,
    ) -> Option<Arc<ExemptionRequest>> {
        let latest = self.latest.load();
        if latest.is_empty() {
            return None;
        }
        latest
            .get(&(user.to_string(), tool.to_string(), workflow.to_string()))
            .cloned()
    }

    /// The database's view of one request (a notification, or our own change).
    pub fn upsert(&self, r: ExemptionRequest) {
        let mut inner = self.lock();
        inner.list.insert(r.id.clone(), r);
        self.publish(&inner);
    }

    pub fn replace_all(&self, list: Vec<ExemptionRequest>) {
        let mut inner = self.lock();
        inner.list = list.into_iter().map(|r| (r.id.clone(), r)).collect();
        self.publish(&inner);
    }

    /// Store a new request unless an open one for the same user, tool and workflow exists;
    /// returns once it is durable.
    pub async fn submit(&self, r: ExemptionRequest) -> Result<Submitted, StoreError> {
        if let Some(db) = &self.db {
            let done = super::shared::submit(db, &r).await?;
            let (Submitted::New(r) | Submitted::Existing(r)) = &done;
            self.upsert(r.clone());
            return Ok(done);
        }
        let mut inner = self.lock();
        let key = r.key();
        if let Some(open) = inner.list.values().find(|x| x.is_open() && x.key() == key) {
            return Ok(Submitted::Existing(open.clone()));
        }
        Self::write(&mut inner.file, &r)?;
        inner.list.insert(r.id.clone(), r.clone());
        self.publish(&inner);
        Ok(Submitted::New(r))
    }

    /// Decide an open request: `change` sets its new state; written durably, then published.
    /// Refused when it is no longer open (another approver, or the expiry sweep, was first).
    pub async fn decide(
        &self,
        id: &str,
        change: impl FnOnce(&mut ExemptionRequest),
    ) -> Result<ExemptionRequest, StoreError> {
        if let Some(db) = &self.db {
            let r = super::shared::decide(db, id, change).await?;
            self.upsert(r.clone());
            return Ok(r);
        }
        let mut inner = self.lock();
        let Some(mut r) = inner.list.get(id).cloned() else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if !r.is_open() {
            return Err(StoreError::NotOpen(id.to_string(), r.state.as_str()));
        }
        change(&mut r);
        Self::write(&mut inner.file, &r)?;
        inner.list.insert(r.id.clone(), r.clone());
        self.publish(&inner);
        Ok(r)
    }

    /// Expire the open requests past their time; returns those this call expired (each once,
    /// across replicas too).
    pub async fn expire_due(&self, now: SystemTime) -> Vec<ExemptionRequest> {
        let due: Vec<Arc<str>> = if self.db.is_some() {
            match self.db.as_ref() {
                Some(db) => match super::shared::due(db, now).await {
                    Ok(ids) => ids.into_iter().map(|s| Arc::from(s.as_str())).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "request expiry: cannot read due requests");
                        return Vec::new();
                    }
                },
                None => Vec::new(),
            }
        } else {
            self.lock()
                .list
                .values()
                .filter(|r| r.is_open() && super::rules::expired(r.expires_at, now))
                .map(|r| r.id.clone())
                .collect()
        };
        let mut expired = Vec::new();
        for id in due {
            match self
                .decide(&id, |r| {
                    r.state = State::Expired;
                    r.decided_at = Some(now);
                })
                .await
            {
                Ok(r) => expired.push(r),
                Err(StoreError::NotOpen(..) | StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(error = %e, request = %id, "request expiry: cannot store"),
            }
        }
        expired
    }
}
