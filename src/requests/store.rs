//! Submitted requests, durable like grants: a journal in the state directory (JSON Lines, each
//! line the whole request after a change, fsynced before the change is acknowledged), or
//! PostgreSQL shared by the replicas (`shared.rs`). In memory: every request, and an index by
//! user, tool and workflow that deny messages read ("your request is waiting since …").
//!
//! "One open request per user, tool and workflow" is checked and the new request written as
//! one step: under the list's lock here, under an advisory lock on the key in PostgreSQL.
//!
//! The journal only grows (each change appends the whole request again), so it is compacted at
//! start when most of its lines are dead: lines a later one superseded, and decided or expired
//! requests older than `console.request_retention`. The compacted journal (one line per request
//! kept, every open one among them) is written beside it, fsynced, and renamed over it, and the
//! directory fsynced: a crash at any point leaves either the old journal or the new one, whole.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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

/// A journal shorter than this is not worth rewriting.
const COMPACT_MIN_LINES: usize = 256;

/// Where a compaction writes before the rename (a leftover is a compaction a crash cut short).
fn compact_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".compact");
    path.with_file_name(name)
}

/// Kept by a compaction: every open request, and those decided (or expired) within `retention`
/// of `now`.
fn keep(r: &ExemptionRequest, retention: Duration, now: SystemTime) -> bool {
    r.is_open()
        || now
            .duration_since(r.decided_at.unwrap_or(r.created_at))
            .is_ok_and(|age| age < retention)
        // Decided "in the future" (a clock set back): kept.
        || r.decided_at.unwrap_or(r.created_at) > now
}

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
    /// When most lines are dead (superseded, or requests decided longer than `retention` before
    /// `now`), the journal is compacted first (see the module's doc).
    pub fn open(
        path: &Path,
        retention: Duration,
        now: SystemTime,
    ) -> Result<RequestStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A compaction that a crash cut short before its rename: the journal is the old one,
        // whole, and this is a partial copy.
        let _ = std::fs::remove_file(compact_path(path));
        let mut file = OpenOptions::new()
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
        let lines = line - usize::from(torn);
        let kept = list.values().filter(|r| keep(r, retention, now)).count();
        if lines >= COMPACT_MIN_LINES && (lines - kept) * 2 > lines {
            list.retain(|_, r| keep(r, retention, now));
            match Self::compact(path, &list) {
                Ok(f) => {
                    tracing::info!(
                        lines,
                        kept,
                        "request journal compacted: superseded lines and requests decided before the retention dropped"
                    );
                    file = f;
                }
                // The old journal is still whole and in use: nothing is lost.
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "request journal: compaction failed; kept as it was")
                }
            }
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

    /// Write `list` (one line per request, oldest first) beside the journal, fsync it, rename it
    /// over the journal and fsync the directory; the journal reopened for appending.
    fn compact(path: &Path, list: &HashMap<Arc<str>, ExemptionRequest>) -> io::Result<File> {
        let tmp = compact_path(path);
        let mut all: Vec<&ExemptionRequest> = list.values().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for r in all {
            serde_json::to_writer(&mut out, r).map_err(io::Error::other)?;
            out.write_all(
                b"
",
            )?;
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        OpenOptions::new().read(true).append(true).open(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn request(i: usize, created_at: SystemTime) -> ExemptionRequest {
        ExemptionRequest {
            id: Arc::from(format!("rq-{i:04}").as_str()),
            draft: format!("d{i}"),
            record_id: format!("rec-{i}"),
            user: format!("user{i}"),
            tool: "claude-code".into(),
            vendor: "anthropic".into(),
            workflow: "untagged".into(),
            rule: Some("no-rival-tools".into()),
            justification: "bake-off".into(),
            duration_secs: 3600,
            ticket: None,
            created_at,
            expires_at: created_at + DAY,
            state: State::Open,
            decided_by: None,
            decided_at: None,
            comment: None,
            approved_secs: None,
            exemption: None,
        }
    }

    /// A journal of a year: 300 requests submitted and decided (two lines each) four months
    /// ago, 10 decided last week, 5 still open, one of them submitted 200 days ago and never
    /// expired by a stopped gateway. Reopened, it is compacted to the 15 requests the retention
    /// keeps, one line each, and reopened again it is the same, appendable journal.
    #[tokio::test]
    async fn the_journal_is_compacted_at_start_keeping_open_and_recent_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let now = SystemTime::now();
        let retention = 90 * DAY;
        {
            let store = RequestStore::open(&path, retention, now).unwrap();
            for i in 1..=310 {
                let (when, state) = if i <= 300 {
                    (now - 120 * DAY, State::Denied)
                } else {
                    (now - 7 * DAY, State::Approved)
                };
                let r = store.submit(request(i, when)).await.unwrap();
                assert!(matches!(r, Submitted::New(_)));
                store
                    .decide(&format!("rq-{i:04}"), |r| {
                        r.state = state;
                        r.decided_at = Some(when + Duration::from_secs(60));
                    })
                    .await
                    .unwrap();
            }
            store.submit(request(900, now - 200 * DAY)).await.unwrap();
            for i in 901..905 {
                store.submit(request(i, now - DAY)).await.unwrap();
            }
        }
        let before = std::fs::metadata(&path).unwrap().len();
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(lines(&path), 625);

        let store = RequestStore::open(&path, retention, now).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 20 < before, "{before} bytes, then {after}");
        assert_eq!(lines(&path), 15);
        assert!(!compact_path(&path).exists());
        let all = store.list();
        assert_eq!(all.len(), 15);
        assert_eq!(all.iter().filter(|r| r.is_open()).count(), 5);
        assert!(store.get("rq-0900").is_some_and(|r| r.is_open()));
        for i in 301..=310 {
            let r = store.get(&format!("rq-{i:04}")).unwrap();
            assert_eq!(r.state, State::Approved);
        }
        assert!(store.get("rq-0001").is_none());
        // Still the journal: a change after compaction is appended and survives a restart.
        store
            .decide("rq-0901", |r| {
                r.state = State::Denied;
                r.decided_at = Some(now);
            })
            .await
            .unwrap();
        drop(store);
        let store = RequestStore::open(&path, retention, now).unwrap();
        assert_eq!(lines(&path), 16);
        assert_eq!(store.get("rq-0901").unwrap().state, State::Denied);
        assert_eq!(store.list().len(), 15);
        assert_eq!(
            store
                .latest_for("user902", "claude-code", "untagged")
                .map(|r| r.is_open()),
            Some(true)
        );
    }

    /// Mostly live lines: left as they are (a rewrite would buy nothing).
    #[tokio::test]
    async fn a_journal_of_live_requests_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let now = SystemTime::now();
        {
            let store = RequestStore::open(&path, 90 * DAY, now).unwrap();
            for i in 0..300 {
                store.submit(request(i, now - DAY)).await.unwrap();
            }
        }
        let before = std::fs::read(&path).unwrap();
        let store = RequestStore::open(&path, 90 * DAY, now).unwrap();
        assert_eq!(store.list().len(), 300);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
