//! The embedded ledger: a fjall keyspace in the state directory (`provenance/ledger/`), with
//! an in-memory membership filter in front of its fingerprint index.
//!
//! Why an LSM tree: the capture worker writes about a hundred fingerprints per answer, every
//! one a blind insert of a key nobody reads back soon. redb, the first store, rewrote B-tree
//! pages for each of them (copy-on-write, ~124k instructions a fingerprint under callgrind);
//! fjall appends the batch to its journal and a sorted in-memory table, and sorts it into files
//! in the background. A batch (the worker's group commit) is one journal record, fsynced before
//! [`Ledger::record_many`] returns; the capture worker's [`Ledger::record_many_buffered`] only
//! writes it to the operating system, and the sync thread's [`Ledger::sync`] fsyncs before the
//! outcome records are written (`provenance::durable`). Either way an outcome record that names
//! an entry still always has it after a `kill -9` or a power cut: recovery replays the journal,
//! and a batch cut short by a crash is dropped whole.
//!
//! Partitions:
//! - `entries`: entry number (BE u64) → the entry (JSON); numbers rise in the order written.
//! - `ids`: audit record id → entry number.
//! - `prints`: fingerprint (BE u64) ‖ entry number (BE u64) → nothing. The key is the index: a
//!   lookup is a prefix scan, a fingerprint costs 16 bytes before fjall's prefix truncation.
//! - `entry_prints`: entry number → its fingerprints (packed LE u64), for the retention sweep,
//!   to build the filter, and to fill `prints` later.
//! - `meta`: the next entry number (kept when the sweep empties `entries`), the ledger's id (a
//!   saved filter names the ledger it belongs to), and `indexed`: the entries numbered below it
//!   have their fingerprints in `prints`.
//!
//! A write puts an entry's fingerprints in `entry_prints` only, and in memory (`pending::Pending`,
//! which lookups read too). Once [`PENDING_MAX`] fingerprints are held, a thread of its own
//! writes them to `prints` in one ascending run, then the new `indexed` (`Inner::index_pending`):
//! each key's place in the memtable is then next to the last one's, where a commit's few
//! hundred keys each searched a skip list of hundreds of thousands through cold memory, half of
//! what the ledger's writes cost (docs/provenance.md, "Capture cost"). Open reads the entries
//! from `indexed` on back from `entry_prints`, so a crash loses nothing; closing writes what is
//! held.
//!
//! The filter (`filter::Filter`): a blocked Bloom filter of every fingerprint, kept current by
//! every write, so a scan's lookups of absent fingerprints (nearly all of them) never reach the
//! store. It is saved beside the index (`filter`) after a build, every [`SAVE_EVERY`] entries
//! and when the ledger closes, and loaded on open: a restart or a scan of a stopped gateway's
//! ledger reads the file and the entries written after it was saved, not every fingerprint
//! (building it reads 205 million at a million responses). Open waits for neither: the
//! ledger opens with a pending filter that answers "maybe" for every fingerprint (lookups go
//! to the store: correct, only slower), and a thread of its own loads or builds the real one
//! and swaps it in, adding under the writers' lock the entries written meanwhile
//! (`Inner::rebuild_filter`). A gateway restart serves at once (issue 17).
//!
//! fjall has no lock of its own: `lock` in the directory is held (flock) while a process has
//! the ledger open, as redb's was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::filter::{Filter, Saved};
use super::pending::Pending;
use super::{ByPrint, Entry, Ledger, LedgerError, Matches, pack, unpack, unpack_into};

const NEXT: &[u8] = b"next_entry";
/// The entries numbered below it have their fingerprints in `prints`; the others are held in
/// memory (`Inner::pending`). A ledger of an earlier version has none: all of its are in `prints`.
const INDEXED: &[u8] = b"indexed";
/// Fingerprints held in memory before a thread of its own writes them to `prints`: about two
/// seconds of a busy gateway's captures (5,000 answers of 58 a second), 25 MB of memory, and a
/// run dense enough that its keys' places in the memtable are neighbours.
const PENDING_MAX: usize = if cfg!(test) { 200 } else { 1 << 19 };
/// Held past this, the writer itself writes them (the thread has not kept up).
const PENDING_HARD: usize = 4 * PENDING_MAX;
/// Keys of a run written in one batch: a batch holds the journal's lock while it is applied,
/// and the capture worker's commits wait for it (runs of a million in one batch made a full
/// queue drop a tenth of the captures).
const RUN_BATCH: usize = if cfg!(test) { 64 } else { 1 << 14 };
/// The ledger's id (16 random bytes, made when it is created): a saved filter names it.
const ID: &[u8] = b"ledger_id";
/// Data and index block size of the `prints` partition (fjall's default is 4 KiB). A scan's
/// lookup of a fingerprint the ledger holds reads one data block and decodes every key in it
/// (a prefix scan; docs/provenance.md, "Scan speed"), so a smaller block is less to decode
/// for the one or two keys wanted. Applies to ledgers created since: fjall keeps an existing
/// partition's settings.
const PRINTS_BLOCK: u32 = 1024;
/// Entries written since the filter was last saved before it is saved again (off the capture
/// worker): what an open after a crash reads from the store on top of the saved filter.
const SAVE_EVERY: u64 = if cfg!(test) { 50 } else { 100_000 };

/// Fingerprints left to ask in a lookup for an entry it finds to be expanded (`find`): an
/// expansion reads the entry's fingerprints and tests their markers, about as much as three
/// lookups, and a batch that holds an answer has hundreds of its fingerprints left.
const EXPAND_OVER: usize = 64;

/// Where the ledger lives in the state directory (a directory).
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("provenance").join("ledger")
}

/// The first ledger format, one redb file; converted on the gateway's first open.
pub fn old_path(state_dir_ledger: &Path) -> PathBuf {
    state_dir_ledger.with_extension("redb")
}

struct Inner {
    keyspace: Keyspace,
    entries: PartitionHandle,
    ids: PartitionHandle,
    prints: PartitionHandle,
    entry_prints: PartitionHandle,
    meta: PartitionHandle,
    /// The next entry number; held across a batch's commit, so writers take turns and a batch's
    /// numbers are known to be committed once it is released.
    next: Mutex<u64>,
    filter: RwLock<Filter>,
    /// Fingerprints of committed entries numbered `indexed` and on, not in `prints` yet; added
    /// under `next`, after the entry's commit.
    pending: RwLock<Pending>,
    /// What `index_pending` is writing to `prints`: lookups read it until it is there. Set
    /// under `pending`'s lock, so a fingerprint is always in one of the three.
    frozen: RwLock<Option<Arc<Frozen>>>,
    /// Held while `pending` is written to `prints` (one run at a time), and by the sweep, so
    /// its removals always come after the keys they remove.
    indexing: Mutex<()>,
    /// A thread is writing `pending` to `prints`.
    index_running: AtomicBool,
    /// A filter build is under way (one at a time).
    rebuilding: AtomicBool,
    /// Entries were removed since the running build started reading: it builds again when done
    /// (the sweep's removals are dropped from the filter even when a build was running).
    stale: AtomicBool,
    /// The ledger is being dropped: a running build stops at its next entry, so closing (the
    /// gateway's shutdown, a scan's end) never waits out a build.
    closing: AtomicBool,
    /// The build threads started, joined on drop (after `closing`), so the lock file and the
    /// keyspace are released when the ledger is.
    builds: Mutex<Vec<JoinHandle<()>>>,
    /// The ledger's id, which a saved filter must name.
    id: [u8; 16],
    /// Where the filter is saved (`filter` beside `index/`).
    filter_path: PathBuf,
    /// The `upto` of the filter last loaded, or of the last save tried (it holds every entry
    /// numbered below; a failed save counts, so a full disk is not retried at every write; the
    /// file's own header says what it holds):
    /// a filter saved again only when entries were written since.
    saved_upto: Mutex<Option<u64>>,
    /// A save is under way (one at a time).
    saving: AtomicBool,
    /// Tests only: the build waits here after reading the store, before it takes the writers'
    /// lock to add what they wrote meanwhile.
    #[cfg(test)]
    pause: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Tests only: the next write says so on the sender and waits on the receiver once its
    /// fingerprints are in the filter, before it commits them to the store.
    #[cfg(test)]
    write_pause: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
    /// Tests only: the store's prefix scans made by `find`.
    #[cfg(test)]
    prefix_scans: std::sync::atomic::AtomicU64,
    /// How the filter in place came about (for a scan's report).
    origin: Mutex<Option<FilterOrigin>>,
    path: String,
    /// Held (flock) while this process has the ledger open; released when dropped.
    _lock: std::fs::File,
}

pub struct EmbeddedLedger {
    inner: Arc<Inner>,
}

/// Pending fingerprints taken out to be written to `prints`, and the entries they cover.
struct Frozen {
    prints: Pending,
    /// Every entry numbered below it is in `prints` once these are.
    upto: u64,
}

/// How the membership filter in place came about: a scan says which, since a build at a
/// million responses takes many seconds and a load a fraction of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterOrigin {
    /// Loaded from the file saved beside the ledger (else built from the store).
    pub loaded: bool,
    /// Entries written after the saved (or the build's) state, added from the store.
    pub entries_added: u64,
}

/// Why [`EmbeddedLedger::open_existing`] could not open the ledger.
#[derive(Debug)]
pub enum OpenExisting {
    /// No ledger: nothing captured yet here, or another state directory.
    Missing,
    /// Another process (the running gateway) holds it.
    Held,
    Failed(LedgerError),
}

fn fail(path: &str, message: impl std::fmt::Display) -> LedgerError {
    LedgerError::Embedded {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Take the ledger's lock file without waiting: `Ok(None)` when another process has it.
fn lock(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    #[cfg(unix)]
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(file))
}

const HELD: &str =
    "already open in another process (a running gateway); ask it through the admin API, or stop it";

impl EmbeddedLedger {
    /// Open (or create) the ledger, recovering it after a crash, and converting a ledger of
    /// the first format (`ledger.redb` beside it) into it.
    pub fn open(dir: &Path) -> Result<EmbeddedLedger, LedgerError> {
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| fail(&shown, format!("cannot create it: {e}")))?;
        let held = lock(dir)
            .map_err(|e| fail(&shown, format!("cannot take its lock file: {e}")))?
            .ok_or_else(|| fail(&shown, HELD))?;
        let ledger = Self::open_locked(dir, held)?;
        let old = old_path(dir);
        if old.exists() {
            ledger.convert(&old)?;
        }
        Ok(ledger)
    }

    /// For `aigate provenance scan` while the gateway is stopped: an existing ledger, never
    /// created. It holds the lock while the scan runs (a gateway started meanwhile is told the
    /// ledger is open); a journal left by a crash is recovered on open, as the gateway would.
    pub fn open_existing(dir: &Path) -> Result<EmbeddedLedger, OpenExisting> {
        let shown = dir.display().to_string();
        if !dir.join("index").exists() {
            let old = old_path(dir);
            if old.exists() {
                return Err(OpenExisting::Failed(fail(
                    &old.display().to_string(),
                    format!(
                        "a ledger in the first format (redb); start the gateway once with this state directory (it converts it to {shown}), then scan again"
                    ),
                )));
            }
            return Err(OpenExisting::Missing);
        }
        let held = match lock(dir) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(OpenExisting::Held),
            Err(e) => {
                return Err(OpenExisting::Failed(fail(
                    &shown,
                    format!("cannot take its lock file: {e}"),
                )));
            }
        };
        Self::open_locked(dir, held).map_err(OpenExisting::Failed)
    }

    /// Open the keyspace under the lock taken, and start the filter's build: the ledger
    /// answers (through the store) before the filter is ready.
    fn open_locked(dir: &Path, lock: std::fs::File) -> Result<EmbeddedLedger, LedgerError> {
        let ledger = EmbeddedLedger {
            inner: Arc::new(Self::load(dir, lock)?),
        };
        ledger.inner.spawn_rebuild();
        Ok(ledger)
    }

    fn load(dir: &Path, lock: std::fs::File) -> Result<Inner, LedgerError> {
        let shown = dir.display().to_string();
        let e = |e: fjall::Error| fail(&shown, e);
        let keyspace = fjall::Config::new(dir.join("index"))
            // Batches are persisted (fsynced) by record_many itself, not by a timer.
            .fsync_ms(None)
            .open()
            .map_err(e)?;
        let part = |name: &str| keyspace.open_partition(name, PartitionCreateOptions::default());
        let entries = part("entries").map_err(e)?;
        let ids = part("ids").map_err(e)?;
        // Only prefix scans read the index, and a segment's Bloom filter (of whole keys) cannot
        // answer those: building one at every flush and compaction would be work for nothing.
        // (Applies when the partition is created; fjall keeps an existing partition's settings.)
        let prints = keyspace
            .open_partition(
                "prints",
                PartitionCreateOptions::default()
                    .bloom_filter_bits(None)
                    .block_size(PRINTS_BLOCK),
            )
            .map_err(e)?;
        let entry_prints = part("entry_prints").map_err(e)?;
        let meta = part("meta").map_err(e)?;
        let next = match meta.get(NEXT).map_err(e)? {
            Some(v) => be(&v),
            None => 0,
        };
        let indexed = match meta.get(INDEXED).map_err(e)? {
            Some(v) => be(&v),
            // New, or of a version that wrote every fingerprint to `prints` with its entry.
            None => {
                meta.insert(INDEXED, next.to_be_bytes()).map_err(e)?;
                keyspace.persist(PersistMode::SyncAll).map_err(e)?;
                next
            }
        };
        // The entries whose fingerprints were held in memory when the ledger was last closed
        // (by a crash: closing writes them).
        let mut pending = Pending::default();
        walk_prints(&entry_prints, indexed..next, |n, held| {
            pending.add(n, held);
            true
        })
        .map_err(e)?;
        let id = match meta.get(ID).map_err(e)? {
            Some(v) if v.len() == 16 => {
                let mut id = [0u8; 16];
                id.copy_from_slice(&v);
                id
            }
            // Created now, or by a version that kept no id (it saved no filter either).
            _ => {
                let mut id = [0u8; 16];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                    .map_err(|_| fail(&shown, "cannot draw a random ledger id"))?;
                meta.insert(ID, id).map_err(e)?;
                keyspace.persist(PersistMode::SyncAll).map_err(e)?;
                id
            }
        };
        Ok(Inner {
            keyspace,
            entries,
            ids,
            prints,
            entry_prints,
            meta,
            next: Mutex::new(next),
            filter: RwLock::new(Filter::pending()),
            pending: RwLock::new(pending),
            frozen: RwLock::new(None),
            indexing: Mutex::new(()),
            index_running: AtomicBool::new(false),
            rebuilding: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            builds: Mutex::new(Vec::new()),
            id,
            filter_path: dir.join("filter"),
            saved_upto: Mutex::new(None),
            saving: AtomicBool::new(false),
            #[cfg(test)]
            pause: Mutex::new(None),
            #[cfg(test)]
            write_pause: Mutex::new(None),
            #[cfg(test)]
            prefix_scans: std::sync::atomic::AtomicU64::new(0),
            origin: Mutex::new(None),
            path: shown,
            _lock: lock,
        })
    }

    /// Wait until no filter build is running: the filter is the real one (unless a build
    /// failed, which was logged). For benchmarks and tests; nothing on the request path waits.
    pub fn wait_for_filter(&self) {
        let running = std::mem::take(&mut *self.inner.lock_builds());
        for build in running {
            let _ = build.join();
        }
    }

    /// Appends to `out` the fingerprints of `prints` the membership filter may hold (never
    /// drops one the ledger holds). A scan asks this first, so the rest of its per-document work
    /// (sorting, the fingerprints it already found, the store) sees only the few that may be
    /// in the ledger; `find` asks the filter again for those, which costs little.
    pub fn may_hold_many(&self, prints: &[u64], out: &mut Vec<u64>) {
        self.inner.filter().may_hold_many(prints, out);
    }

    /// Appends to `out` the fingerprints of the entry `id` that no other entry holds, as the
    /// membership filter's markers tell (docs/provenance.md, "Membership filter"): a scan
    /// that found the entry answers those without a lookup each. Leaves out any the filter
    /// cannot vouch for, and all of them while it is pending. Exact for every entry committed
    /// before the call: a write sets its markers before it commits. `false` when there is no
    /// such entry.
    pub fn sole_prints(&self, id: &str, out: &mut Vec<u64>) -> Result<bool, LedgerError> {
        let i = &self.inner;
        let Some(n) = i.ids.get(id.as_bytes()).map_err(|e| i.err(e))? else {
            return Ok(false);
        };
        i.sole_of(be(&n), &mut Vec::new(), out)
    }

    /// The filter after open is built: lookups of absent fingerprints no longer reach the store.
    pub fn filter_ready(&self) -> bool {
        self.inner.filter().is_ready()
    }

    /// How the filter in place came about; `None` until the first one after open is ready.
    pub fn filter_origin(&self) -> Option<FilterOrigin> {
        *self.inner.origin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries in the ledger.
    pub fn len(&self) -> Result<u64, LedgerError> {
        Ok(self.inner.ids.len().map_err(|e| self.inner.err(e))? as u64)
    }

    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        Ok(self.len()? == 0)
    }

    /// Bytes of memory held by the membership filter, and the fingerprints in it (0 bytes
    /// while the filter after open is being built).
    pub fn filter_size(&self) -> (u64, u64) {
        let f = self.inner.filter();
        (f.bytes(), f.items)
    }

    /// Bytes of the ledger's files on disk.
    pub fn disk_space(&self) -> u64 {
        self.inner.keyspace.disk_space()
    }

    /// Read a ledger of the first format (one redb file) into this one, then remove it: it is
    /// generated state, and everything in it is here now. Entries already here are skipped, so
    /// a conversion cut short by a crash is finished by the next open.
    fn convert(&self, old: &Path) -> Result<(), LedgerError> {
        use redb::{ReadableTable, TableDefinition};
        const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
        const ENTRY_PRINTS: TableDefinition<u64, &[u8]> =
            TableDefinition::new("entry_fingerprints");
        let shown = old.display().to_string();
        let e = |e: redb::Error| {
            fail(
                &shown,
                format!(
                    "{e}: cannot convert this ledger of the first format; it is generated state: move it away to start with an empty ledger"
                ),
            )
        };
        let db = redb::Database::open(old).map_err(|x| e(x.into()))?;
        let tx = db.begin_read().map_err(|x| e(x.into()))?;
        let entries = tx.open_table(ENTRIES).map_err(|x| e(x.into()))?;
        let prints = tx.open_table(ENTRY_PRINTS).map_err(|x| e(x.into()))?;
        let mut batch = Vec::new();
        for row in entries.iter().map_err(|x| e(x.into()))? {
            let (n, raw) = row.map_err(|x| e(x.into()))?;
            let entry = parse(raw.value())?;
            let fps = match prints.get(n.value()).map_err(|x| e(x.into()))? {
                Some(p) => unpack(p.value()),
                None => Vec::new(),
            };
            batch.push((entry, fps));
            if batch.len() == 1000 {
                self.record_many(&batch)?;
                batch.clear();
            }
        }
        self.record_many(&batch)?;
        drop((entries, prints, tx, db));
        std::fs::remove_file(old).map_err(|x| fail(&shown, format!("converted, but {x}")))?;
        tracing::info!(from = %shown, to = %self.inner.path, "provenance ledger converted from the first format");
        Ok(())
    }

    /// Benchmarks only: fill an empty ledger with entries numbered from 0 in the order given,
    /// then their index from `index`, `(fingerprint, entry number)` in ascending order, which
    /// must be exactly the entries' fingerprints. Bypasses the journal's per-batch fsync and
    /// sorts nothing, so a ledger of a million answers takes minutes, not hours.
    #[doc(hidden)]
    pub fn bulk_load(
        &self,
        entries: impl Iterator<Item = (Entry, Vec<u64>)>,
        index: impl Iterator<Item = (u64, u64)>,
    ) -> Result<(), LedgerError> {
        let i = &self.inner;
        {
            let mut next = i.lock_next();
            let mut batch = i.keyspace.batch();
            for (entry, fps) in entries {
                let json = serde_json::to_vec(&entry).map_err(|e| i.err(e))?;
                batch.insert(&i.ids, entry.id.as_bytes(), next.to_be_bytes());
                batch.insert(&i.entries, next.to_be_bytes(), json);
                batch.insert(&i.entry_prints, next.to_be_bytes(), pack(&fps));
                *next += 1;
                if batch.len() >= 30_000 {
                    std::mem::replace(&mut batch, i.keyspace.batch())
                        .commit()
                        .map_err(|e| i.err(e))?;
                }
            }
            batch.insert(&i.meta, NEXT, next.to_be_bytes());
            batch.insert(&i.meta, INDEXED, next.to_be_bytes());
            batch.commit().map_err(|e| i.err(e))?;
            i.prints
                .ingest(index.map(|(h, n)| (key(h, n), [0u8; 0])))
                .map_err(|e| i.err(e))?;
            i.keyspace
                .persist(PersistMode::SyncAll)
                .map_err(|e| i.err(e))?;
        }
        // The build started by open may have read an emptier store; build it again, now.
        self.wait_for_filter();
        i.rebuild_filter()
    }
}

impl Drop for EmbeddedLedger {
    /// Stops a running build, writes the fingerprints held in memory to `prints`, then saves
    /// the filter if entries were written since its last save: the next open (a restart, a
    /// scan) reads neither from `entry_prints`.
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.wait_for_filter();
        if let Err(e) = self.inner.index_pending() {
            tracing::warn!(error = %e, "provenance ledger: cannot write the fingerprints held in memory to the index at close; the next open reads them again from the entries");
        }
        self.inner.save_filter();
    }
}

/// Calls `each` with the number and fingerprints of every entry numbered in `numbers`, in
/// order, until it returns `false`: what the open (the held fingerprints), a filter's build and
/// its catch-up read. One buffer serves every entry.
fn walk_prints(
    entry_prints: &PartitionHandle,
    numbers: std::ops::Range<u64>,
    mut each: impl FnMut(u64, &[u64]) -> bool,
) -> Result<(), fjall::Error> {
    let mut prints = Vec::new();
    for row in entry_prints.range(numbers.start.to_be_bytes()..numbers.end.to_be_bytes()) {
        let (n, v) = row?;
        unpack_into(&v, &mut prints);
        if !each(be(&n), &prints) {
            break;
        }
    }
    Ok(())
}

fn be(raw: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = raw.len().min(8);
    b[..n].copy_from_slice(&raw[..n]);
    u64::from_be_bytes(b)
}

fn key(print: u64, n: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&print.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

fn parse(raw: &[u8]) -> Result<Entry, LedgerError> {
    serde_json::from_slice(raw).map_err(|e| LedgerError::Damaged("?".into(), e.to_string()))
}

impl Inner {
    fn err(&self, e: impl std::fmt::Display) -> LedgerError {
        fail(&self.path, e)
    }

    fn lock_next(&self) -> std::sync::MutexGuard<'_, u64> {
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn filter(&self) -> std::sync::RwLockReadGuard<'_, Filter> {
        self.filter.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_builds(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.builds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A filter of the fingerprints of entries numbered below `upto`, sized for twice as many;
    /// `None` when the ledger is closing. Reads the store, not the writers' state: call it
    /// without holding `next`.
    fn build_filter(&self, upto: u64) -> Result<Option<Filter>, LedgerError> {
        // Sized from the index's count, which is cheap (from its files' metadata) and errs
        // high (removed keys until compaction): a filter sized high only costs memory.
        let mut filter = Filter::with_capacity(self.prints.approximate_len() as u64);
        let mut closed = false;
        walk_prints(&self.entry_prints, 0..upto, |_, prints| {
            closed = self.closing.load(Ordering::Relaxed);
            if !closed {
                filter.insert(prints);
            }
            !closed
        })
        .map_err(|e| self.err(e))?;
        Ok((!closed).then_some(filter))
    }

    /// Build a filter sized for today's ledger on a thread of its own and swap it in, unless
    /// one is being built already (it will hold everything written before its swap). The
    /// writers and lookups go on meanwhile with the filter in place.
    fn spawn_rebuild(self: &Arc<Self>) {
        if self.rebuilding.load(Ordering::SeqCst) || self.closing.load(Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        let spawned = self.spawn_joined("ledger-filter", move || {
            if let Err(e) = inner.rebuild_filter() {
                tracing::warn!(error = %e, "provenance ledger: the filter build failed; lookups stay correct, only slower");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "provenance ledger: cannot start the filter build; lookups stay correct, only slower");
        }
    }

    /// Run `work` on a thread of its own, joined when the ledger is dropped (`builds`).
    fn spawn_joined(
        &self,
        name: &str,
        work: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(work)?;
        let mut builds = self.lock_builds();
        builds.retain(|b| !b.is_finished());
        builds.push(handle);
        Ok(())
    }

    /// Replace the filter with one sized for today's ledger, without stopping the writers but
    /// at the end: the entries they wrote while the store was read (numbered `upto` and on) are
    /// added under their lock, so none is missing when the new filter is swapped in. One build
    /// at a time: a second caller returns at once (the running build covers its entries too,
    /// and builds again if it was marked `stale` meanwhile).
    fn rebuild_filter(&self) -> Result<(), LedgerError> {
        loop {
            if self.rebuilding.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            self.stale.store(false, Ordering::SeqCst);
            let result = self.build_and_swap();
            self.rebuilding.store(false, Ordering::SeqCst);
            result?;
            // A sweep that marked it stale after the check in its `spawn_rebuild` saw this
            // build running and left the next one to it.
            if !self.stale.load(Ordering::SeqCst) || self.closing.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    }

    fn build_and_swap(&self) -> Result<(), LedgerError> {
        let started = std::time::Instant::now();
        if self.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The first filter after open is the saved one when there is a usable one; a rebuild
        // (full, or after a sweep) reads the store.
        let saved = if self.filter().is_ready() {
            None
        } else {
            self.load_saved()
        };
        let mut added = 0u64;
        let (mut filter, saved_upto, upto) = match saved {
            Some(Saved { mut filter, upto }) => {
                // The entries written after the save (up to SAVE_EVERY after a crash), read
                // before the writers' lock is taken, so they are not held up meanwhile.
                let now = *self.lock_next();
                added += self.add_entries(&mut filter, upto, now)?;
                (filter, Some(upto), now)
            }
            None => {
                let upto = *self.lock_next();
                let Some(filter) = self.build_filter(upto)? else {
                    return Ok(());
                };
                (filter, None, upto)
            }
        };
        let loaded = saved_upto.is_some();
        #[cfg(test)]
        if let Some(pause) = self.pause.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = pause.recv();
        }
        let next = self.lock_next();
        added += self.add_entries(&mut filter, upto, u64::MAX)?;
        let items = filter.items;
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) = filter;
        drop(next);
        tracing::info!(
            fingerprints = items,
            loaded,
            entries_added = added,
            seconds = started.elapsed().as_secs_f64(),
            "provenance ledger: membership filter ready"
        );
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = Some(FilterOrigin {
            loaded,
            entries_added: added,
        });
        if let Some(upto) = saved_upto {
            *self.lock_saved() = Some(upto);
        }
        if !loaded || added >= SAVE_EVERY {
            self.save_filter();
        }
        Ok(())
    }

    /// Add to `filter` the fingerprints of the entries numbered `from` to `to` (exclusive);
    /// how many entries there were.
    fn add_entries(&self, filter: &mut Filter, from: u64, to: u64) -> Result<u64, LedgerError> {
        let mut added = 0;
        walk_prints(&self.entry_prints, from..to, |_, prints| {
            filter.insert(prints);
            added += 1;
            true
        })
        .map_err(|e| self.err(e))?;
        Ok(added)
    }

    /// The filter saved beside the ledger, if it is this ledger's and holds no entry the
    /// store does not (a state directory restored from an older backup keeps a newer filter:
    /// entries numbered again would be missing from it). Logged and skipped otherwise.
    fn load_saved(&self) -> Option<Saved> {
        let next = *self.lock_next();
        let why = match Filter::load(&self.filter_path, &self.id) {
            Ok(None) => return None,
            Ok(Some(saved)) if saved.upto <= next => return Some(saved),
            Ok(Some(saved)) => format!(
                "it holds entries up to {} and the ledger only {next}",
                saved.upto
            ),
            Err(why) => why,
        };
        tracing::warn!(
            path = %self.filter_path.display(),
            reason = %why,
            "provenance ledger: the saved membership filter is not used; building it from the store"
        );
        None
    }

    fn lock_saved(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.saved_upto.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Save the filter when entries were written since its last save (or load). It writes a
    /// copy taken under the filter's read lock (a memory copy: the writers wait for that, not
    /// for the disk; it costs the filter's size again while it is written), as holding every
    /// entry numbered below the `upto` read under the writers' lock just before: the entries
    /// committed after it are numbered at or above it.
    fn save_filter(&self) {
        if self.saving.swap(true, Ordering::SeqCst) {
            return;
        }
        let next = self.lock_next();
        let upto = *next;
        let live = self.filter();
        drop(next);
        let filter = (live.is_ready() && *self.lock_saved() != Some(upto)).then(|| live.clone());
        drop(live);
        if let Some(filter) = filter {
            let started = std::time::Instant::now();
            match filter.save(&self.filter_path, &self.id, upto) {
                Ok(()) => {
                    *self.lock_saved() = Some(upto);
                    tracing::info!(
                        path = %self.filter_path.display(),
                        bytes = filter.bytes(),
                        seconds = started.elapsed().as_secs_f64(),
                        "provenance ledger: membership filter saved"
                    );
                }
                Err(e) => {
                    *self.lock_saved() = Some(upto);
                    tracing::warn!(
                        path = %self.filter_path.display(),
                        error = %e,
                        "provenance ledger: cannot save the membership filter; the next open reads what the last saved one lacks from the store (or builds it), and the next save is tried after more entries"
                    );
                }
            }
        }
        self.saving.store(false, Ordering::SeqCst);
    }

    /// Entries written since the filter was last saved reach [`SAVE_EVERY`]: save it on a
    /// thread of its own (the capture worker goes on).
    fn save_due(&self) -> bool {
        let saved = *self.lock_saved();
        let next = *self.lock_next();
        saved.is_some_and(|s| next.saturating_sub(s) >= SAVE_EVERY)
            && !self.saving.load(Ordering::SeqCst)
            && !self.rebuilding.load(Ordering::SeqCst)
    }

    fn spawn_save(self: &Arc<Self>) {
        let inner = self.clone();
        if let Err(e) = self.spawn_joined("ledger-filter-save", move || inner.save_filter()) {
            tracing::warn!(error = %e, "provenance ledger: cannot start saving the filter");
        }
    }

    /// Entries and their fingerprints as one journal batch, persisted as `mode` says before it
    /// returns (fsynced, or written to the operating system for [`Ledger::sync`] to fsync).
    fn write_entries(
        &self,
        rows: &[(&Entry, &[u64])],
        mode: PersistMode,
    ) -> Result<(), LedgerError> {
        let mut next = self.lock_next();
        let first = *next;
        let mut n = first;
        // Three rows an entry, and `next`.
        let mut batch = fjall::Batch::with_capacity(self.keyspace.clone(), 3 * rows.len() + 1)
            .durability(Some(mode));
        let mut seen = std::collections::HashSet::new();
        let mut added: Vec<&[u64]> = Vec::new();
        for (entry, fingerprints) in rows {
            if !seen.insert(entry.id.as_str())
                || self
                    .ids
                    .contains_key(entry.id.as_bytes())
                    .map_err(|e| self.err(e))?
            {
                continue;
            }
            let json = serde_json::to_vec(entry).map_err(|e| self.err(e))?;
            batch.insert(&self.ids, entry.id.as_bytes(), n.to_be_bytes());
            batch.insert(&self.entries, n.to_be_bytes(), json);
            batch.insert(&self.entry_prints, n.to_be_bytes(), pack(fingerprints));
            added.push(fingerprints);
            n += 1;
        }
        if n == first {
            return Ok(());
        }
        batch.insert(&self.meta, NEXT, n.to_be_bytes());
        // Into the filter before the store: a lookup that finds an entry in the store then
        // finds its fingerprints' markers set, so an unmarked one is that entry's alone
        // (`find`'s expansion). Should the commit fail, the filter keeps fingerprints nobody
        // holds, which costs lookups, never answers.
        {
            let mut filter = self.filter.write().unwrap_or_else(|p| p.into_inner());
            for fps in &added {
                filter.insert(fps);
            }
        }
        #[cfg(test)]
        if let Some((paused, resume)) = self
            .write_pause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = paused.send(());
            let _ = resume.recv();
        }
        batch.commit().map_err(|e| self.err(e))?;
        // Committed, under the writers' lock still: a lookup made once this returns finds them.
        let mut pending = self.lock_pending();
        for (k, fps) in added.into_iter().enumerate() {
            pending.add(first + k as u64, fps);
        }
        drop(pending);
        *next = n;
        Ok(())
    }

    /// Fingerprints held in memory for `prints`: pending, and a run being written.
    fn held(&self) -> usize {
        let frozen = self
            .frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |f| f.prints.len());
        self.pending.read().unwrap_or_else(|p| p.into_inner()).len() + frozen
    }

    fn lock_pending(&self) -> std::sync::RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends to `out` the entries holding `h` whose fingerprints are not in `prints` yet.
    /// Reads `pending`, then `frozen`: a fingerprint leaves the first for the second under the
    /// first's lock, and the second for the store once it is there, so it is never missed.
    fn pending_holders(&self, h: u64, out: &mut Vec<u64>) {
        self.pending
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .holders(h, out);
        if let Some(f) = self
            .frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            f.prints.holders(h, out);
        }
    }

    /// Write the fingerprints held in memory to `prints`, then `indexed` past them, after any
    /// run under way. Then lookups find them in the store alone.
    fn index_pending(&self) -> Result<(), LedgerError> {
        let _one = self.indexing.lock().unwrap_or_else(|p| p.into_inner());
        self.index_locked()
    }

    /// [`Inner::index_pending`] under `indexing`. A run that failed is left in `frozen`
    /// (lookups still read it) and written first next time.
    fn index_locked(&self) -> Result<(), LedgerError> {
        let left = self
            .frozen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let frozen = match left {
            Some(f) => f,
            None => {
                let next = self.lock_next();
                let mut pending = self.lock_pending();
                if pending.is_empty() {
                    return Ok(());
                }
                let f = Arc::new(Frozen {
                    prints: std::mem::take(&mut *pending),
                    upto: *next,
                });
                *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
                f
            }
        };
        // In ascending order: each key's place in the memtable (a skip list) is next to the
        // last one's, so its search walks nodes still in the cache.
        let pairs = frozen.prints.sorted();
        for chunk in pairs.chunks(RUN_BATCH) {
            let mut batch = fjall::Batch::with_capacity(self.keyspace.clone(), chunk.len());
            for &(h, n) in chunk {
                batch.insert(&self.prints, key(h, n), [0u8; 0]);
            }
            batch.commit().map_err(|e| self.err(e))?;
        }
        // Last, and fsynced with the journal records before it: a crash before this reads the
        // run again from `entry_prints` on open (a key written twice is one key).
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, INDEXED, frozen.upto.to_be_bytes());
        batch.commit().map_err(|e| self.err(e))?;
        *self.frozen.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// After a write: the fingerprints held reach [`PENDING_MAX`], so a thread writes them to
    /// `prints`; past [`PENDING_HARD`] (it has not kept up) the writer does.
    fn index_if_due(self: &Arc<Self>) {
        let held = self.pending.read().unwrap_or_else(|p| p.into_inner()).len();
        if held >= PENDING_HARD {
            if let Err(e) = self.index_pending() {
                tracing::warn!(error = %e, "provenance ledger: cannot write the fingerprints held in memory to the index; lookups read them from memory meanwhile, and the next write tries again");
            }
            return;
        }
        if held < PENDING_MAX || self.index_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        let spawned = self.spawn_joined("ledger-index", move || {
            if let Err(e) = inner.index_pending() {
                tracing::warn!(error = %e, "provenance ledger: cannot write the fingerprints held in memory to the index; lookups read them from memory meanwhile, and a later write tries again");
            }
            inner.index_running.store(false, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            self.index_running.store(false, Ordering::SeqCst);
            tracing::warn!(error = %e, "provenance ledger: cannot start the thread that writes the fingerprints held in memory to the index; the writer does it once more are held");
        }
    }

    /// Appends to `out` the fingerprints of entry number `n` without a marker in the filter
    /// (`EmbeddedLedger::sole_prints`); `prints` is a buffer. `false` when there is no entry.
    fn sole_of(
        &self,
        n: u64,
        prints: &mut Vec<u64>,
        out: &mut Vec<u64>,
    ) -> Result<bool, LedgerError> {
        let Some(raw) = self
            .entry_prints
            .get(n.to_be_bytes())
            .map_err(|e| self.err(e))?
        else {
            return Ok(false);
        };
        unpack_into(&raw, prints);
        self.filter().sole(prints, out);
        Ok(true)
    }

    /// The filter holds more fingerprints than it was sized for.
    fn filter_full(&self) -> bool {
        let f = self.filter();
        f.items > f.capacity
    }
}

impl EmbeddedLedger {
    /// A group of entries written as `mode` says, then the work their number makes due: a run
    /// of the index, a larger filter, or the filter saved.
    fn record_with(
        &self,
        batch: &[(Entry, Vec<u64>)],
        mode: PersistMode,
    ) -> Result<(), LedgerError> {
        let rows: Vec<(&Entry, &[u64])> = batch.iter().map(|(e, f)| (e, f.as_slice())).collect();
        self.inner.write_entries(&rows, mode)?;
        self.inner.index_if_due();
        if self.inner.filter_full() {
            // Twice as large, built from the store on a thread of its own: the capture worker
            // goes on (the full filter still answers, with more false positives) meanwhile.
            self.inner.spawn_rebuild();
        } else if self.inner.save_due() {
            self.inner.spawn_save();
        }
        Ok(())
    }
}

impl Ledger for EmbeddedLedger {
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError> {
        self.record_many(&[(entry.clone(), fingerprints.to_vec())])
    }

    fn record_many(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        self.record_with(batch, PersistMode::SyncAll)
    }

    fn record_many_buffered(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        self.record_with(batch, PersistMode::Buffer)
    }

    fn sync(&self) -> Result<(), LedgerError> {
        let i = &self.inner;
        i.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(|e| i.err(e))
    }

    fn buffers(&self) -> bool {
        true
    }

    /// A document or a batch that holds a captured answer holds hundreds of its fingerprints,
    /// each a prefix scan of the store (about 15 µs). So when a lookup finds an entry with
    /// [`EXPAND_OVER`] or more fingerprints still to ask, the entry's fingerprints no other
    /// entry holds (the filter's markers: `sole_prints`) answer the rest of the batch for it.
    /// Exact for every entry committed before the call (writes set the markers before they
    /// commit); one written during it is found or not, as without the expansion.
    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError> {
        let i = &self.inner;
        // Only fingerprints the filter may hold reach the store, sorted and distinct so
        // neighbouring keys share blocks.
        let mut wanted = Vec::new();
        i.filter().passing(fingerprints, &mut wanted);
        let mut by_number: HashMap<u64, Entry> = HashMap::new();
        let mut hits = Vec::new();
        // Fingerprint → the one entry that holds it, from the expanded entries.
        let mut sole: ByPrint<u64> = ByPrint::default();
        let (mut prints, mut own, mut holders) = (Vec::new(), Vec::new(), Vec::new());
        for (at, &h) in wanted.iter().enumerate() {
            if let Some(e) = sole.get(&h).and_then(|n| by_number.get(n)) {
                hits.push((h, e.id.clone()));
                continue;
            }
            holders.clear();
            // Memory first: a run moves from there to the store, never the other way.
            i.pending_holders(h, &mut holders);
            let held = holders.len();
            #[cfg(test)]
            i.prefix_scans.fetch_add(1, Ordering::Relaxed);
            for row in i.prints.prefix(h.to_be_bytes()) {
                let k = row.map_err(|e| i.err(e))?.0;
                holders.push(be(&k[8..]));
            }
            if held > 0 {
                // A run written meanwhile is in both.
                holders.sort_unstable();
                holders.dedup();
            }
            for &n in &holders {
                let e = match by_number.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let Some(raw) = i.entries.get(n.to_be_bytes()).map_err(|e| i.err(e))?
                        else {
                            continue;
                        };
                        if wanted.len() - at > EXPAND_OVER {
                            own.clear();
                            i.sole_of(n, &mut prints, &mut own)?;
                            sole.extend(own.iter().map(|&p| (p, n)));
                        }
                        v.insert(parse(&raw)?)
                    }
                };
                hits.push((h, e.id.clone()));
            }
        }
        hits.sort();
        Ok(Matches {
            hits,
            entries: by_number.into_values().map(|e| (e.id.clone(), e)).collect(),
        })
    }

    fn held(&self) -> u64 {
        self.inner.held() as u64
    }

    /// The filter alone: it is set before a write commits, so it holds every committed entry.
    fn may_hold(&self, fingerprints: &[u64], out: &mut Vec<u64>) -> Result<(), LedgerError> {
        self.inner.filter().passing(fingerprints, out);
        Ok(())
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let i = &self.inner;
        let Some(n) = i.ids.get(id.as_bytes()).map_err(|e| i.err(e))? else {
            return Ok(None);
        };
        match i.entries.get(&n).map_err(|e| i.err(e))? {
            Some(raw) => parse(&raw).map(Some),
            None => Ok(None),
        }
    }

    fn sweep(&self, before_ms: i64) -> Result<u64, LedgerError> {
        let i = &self.inner;
        // Entry numbers follow the order of writing, which is close to time order: the sweep
        // stops at the first entry young enough (a long call written late waits a little).
        let mut old: Vec<(u64, Entry)> = Vec::new();
        for row in i.entries.iter() {
            let (k, raw) = row.map_err(|e| i.err(e))?;
            let e = parse(&raw)?;
            if e.time_ms >= before_ms {
                break;
            }
            old.push((be(&k), e));
            if old.len() >= 10_000 {
                break;
            }
        }
        if old.is_empty() {
            return Ok(0);
        }
        {
            // The fingerprints still held in memory go to `prints` first, so every key removed
            // here is there before its removal, never written after it.
            let _one = i.indexing.lock().unwrap_or_else(|p| p.into_inner());
            i.index_locked()?;
            let _writers = i.lock_next();
            let mut batch = i.keyspace.batch().durability(Some(PersistMode::SyncAll));
            for (n, e) in &old {
                if let Some(packed) = i.entry_prints.get(n.to_be_bytes()).map_err(|e| i.err(e))? {
                    for h in unpack(&packed) {
                        batch.remove(&i.prints, key(h, *n));
                    }
                }
                batch.remove(&i.entry_prints, n.to_be_bytes());
                batch.remove(&i.entries, n.to_be_bytes());
                batch.remove(&i.ids, e.id.as_bytes());
            }
            batch.commit().map_err(|e| i.err(e))?;
        }
        // The filter still says "maybe" for what was removed (correct, only slower); a fresh
        // one, built in the background, says no again.
        i.stale.store(true, Ordering::SeqCst);
        i.spawn_rebuild();
        Ok(old.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::filter::tests::splitmix;
    use super::*;

    fn entry(id: &str, time_ms: i64) -> Entry {
        Entry {
            id: id.into(),
            time: "2026-12-04T17:00:00.000Z".into(),
            time_ms,
            user: "alice".into(),
            tool: "claude-code".into(),
            vendor: "anthropic".into(),
            model: Some("claude-sonnet-4-5".into()),
            workflow: Some("vendor-evaluation".into()),
            exemption: Some("ex-1".into()),
            fingerprints: 3,
            chars: 1200,
            truncated: false,
        }
    }

    #[test]
    fn entries_are_found_by_their_fingerprints_and_by_id_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2, 3]).unwrap();
            l.record(&entry("b", 2000), &[3, 4]).unwrap();
            // The same id again is not a second entry.
            l.record(&entry("b", 2000), &[9]).unwrap();
            assert_eq!(l.len().unwrap(), 2);
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        let m = l.find(&[3, 4, 3, 7]).unwrap();
        assert_eq!(
            m.hits,
            [
                (3, "a".to_string()),
                (3, "b".to_string()),
                (4, "b".to_string())
            ]
        );
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries["a"], entry("a", 1000));
        assert!(l.find(&[9, 100]).unwrap().hits.is_empty());
        assert_eq!(l.entry("b").unwrap(), Some(entry("b", 2000)));
        assert_eq!(l.entry("zzz").unwrap(), None);
        // The filter was rebuilt on open from what is on disk.
        assert_eq!(l.filter_size().1, 5);
    }

    #[test]
    fn a_batch_is_one_transaction_and_reads_back_like_single_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2]).unwrap();
            l.record_many(&[
                (entry("b", 2000), vec![2, 3]),
                // Already there, and twice in one batch: recorded once.
                (entry("a", 1000), vec![9]),
                (entry("c", 3000), vec![3, 4]),
                (entry("c", 3000), vec![8]),
            ])
            .unwrap();
            assert_eq!(l.len().unwrap(), 3);
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        let m = l.find(&[1, 2, 3, 4, 8, 9]).unwrap();
        let hits: Vec<(u64, &str)> = m.hits.iter().map(|(h, id)| (*h, id.as_str())).collect();
        assert_eq!(
            hits,
            [(1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "c"), (4, "c")]
        );
        // Numbers went on from the batch: a later entry gets its own.
        l.record(&entry("d", 4000), &[5]).unwrap();
        assert_eq!(l.find(&[5]).unwrap().hits, [(5, "d".to_string())]);
        assert_eq!(l.len().unwrap(), 4);
    }

    #[test]
    fn the_sweep_removes_old_entries_and_their_fingerprints_only() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.record(&entry("old", 1000), &[1, 2]).unwrap();
        l.record(&entry("new", 5000), &[2, 3]).unwrap();
        assert_eq!(l.sweep(3000).unwrap(), 1);
        l.wait_for_filter();
        assert_eq!(l.sweep(3000).unwrap(), 0);
        assert_eq!(l.entry("old").unwrap(), None);
        let m = l.find(&[1, 2, 3]).unwrap();
        assert_eq!(m.hits, [(2, "new".to_string()), (3, "new".to_string())]);
        // The filter was rebuilt without the removed entry's fingerprints.
        assert_eq!(l.filter_size().1, 2);
        // Numbers go on after a sweep that emptied the ledger, also across a reopen.
        assert_eq!(l.sweep(9000).unwrap(), 1);
        drop(l);
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.record(&entry("later", 9500), &[7]).unwrap();
        assert_eq!(*l.inner.lock_next(), 3);
        assert_eq!(
            l.find(&[1, 2, 3, 7]).unwrap().hits,
            [(7, "later".to_string())]
        );
    }

    /// The fingerprints a scan takes as one entry's alone never include one another entry
    /// holds: not when the filter is built from the store, loaded from its file, nor with
    /// entries written after the load.
    #[test]
    fn an_entry_s_sole_fingerprints_leave_out_those_another_holds() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let sole = |l: &EmbeddedLedger, id: &str| {
            let mut out = Vec::new();
            let found = l.sole_prints(id, &mut out).unwrap();
            out.sort_unstable();
            (found, out)
        };
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.wait_for_filter();
            l.record(&entry("a", 1000), &[1, 2, 3, 4]).unwrap();
            l.record_many(&[
                (entry("b", 2000), vec![3, 5]),
                (entry("c", 2500), vec![5, 6]),
            ])
            .unwrap();
            assert_eq!(sole(&l, "a"), (true, vec![1, 2, 4]));
            assert_eq!(sole(&l, "b"), (true, vec![]));
            assert_eq!(sole(&l, "c"), (true, vec![6]));
            assert_eq!(sole(&l, "nobody"), (false, vec![]));
        }
        // Loaded from the file saved on close, then a later entry shares one of a's.
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        assert_eq!(ready_from(&l), (true, 0));
        l.record(&entry("d", 3000), &[2, 7]).unwrap();
        assert_eq!(sole(&l, "a"), (true, vec![1, 4]));
        assert_eq!(sole(&l, "d"), (true, vec![7]));
        drop(l);
        // Built from the store (no file), the entries read in their order.
        std::fs::remove_file(p.join("filter")).unwrap();
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        assert_eq!(ready_from(&l), (false, 0));
        assert_eq!(sole(&l, "a"), (true, vec![1, 4]));
        assert_eq!(sole(&l, "b"), (true, vec![]));
        assert_eq!(sole(&l, "c"), (true, vec![6]));
        assert_eq!(sole(&l, "d"), (true, vec![7]));
    }

    /// The hits of a lookup per fingerprint, where no lookup is large enough to expand an
    /// entry: what an expanding lookup must answer.
    fn one_by_one(l: &EmbeddedLedger, prints: &[u64]) -> Vec<(u64, String)> {
        let mut wanted = prints.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut hits: Vec<(u64, String)> = wanted
            .iter()
            .flat_map(|p| l.find(&[*p]).unwrap().hits)
            .collect();
        hits.sort();
        hits
    }

    /// A lookup of a batch that holds an entry's output asks the store about a few of its
    /// fingerprints, and answers the rest from the entry's own ones; a fingerprint another
    /// entry also holds is still asked, and every answer is the one a lookup each gives.
    #[test]
    fn a_lookup_that_finds_an_entry_answers_its_own_fingerprints_without_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.wait_for_filter();
        let mut next = splitmix(17);
        let a: Vec<u64> = (0..500).map(|_| next()).collect();
        let mut b: Vec<u64> = (0..300).map(|_| next()).collect();
        b.extend(&a[..20]);
        let mut c: Vec<u64> = (0..50).map(|_| next()).collect();
        c.extend(&a[100..105]);
        l.record(&entry("a", 1000), &a).unwrap();
        l.record_many(&[(entry("b", 2000), b.clone()), (entry("c", 3000), c)])
            .unwrap();
        let mut batch: Vec<u64> = a.iter().chain(&b).copied().collect();
        batch.extend((0..100).map(|_| next()));
        let before = l.inner.prefix_scans.load(Ordering::Relaxed);
        let m = l.find(&batch).unwrap();
        let asked = l.inner.prefix_scans.load(Ordering::Relaxed) - before;
        assert_eq!(m.hits, one_by_one(&l, &batch));
        let mut ids: Vec<&String> = m.entries.keys().collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c"]);
        let shared = m.hits.iter().filter(|(p, _)| a[..20].contains(p)).count();
        assert_eq!(shared, 40, "each shared fingerprint names both entries");
        // 800 held: the 25 shared ones, those before each entry's first hit, and the filter's
        // false positives among the 100 absent ones.
        assert!(asked < 100, "{asked} of 800 asked");
    }

    /// A lookup while a write is under way (its fingerprints in the filter, not yet in the
    /// store) answers as the store does at that moment: the write's markers are in the filter
    /// before its fingerprints are in the store, so no entry found is taken as the sole holder
    /// of a fingerprint a committed entry shares.
    #[test]
    fn a_lookup_during_a_write_answers_as_the_store_does() {
        let dir = tempfile::tempdir().unwrap();
        let l = Arc::new(EmbeddedLedger::open(&path(dir.path())).unwrap());
        l.wait_for_filter();
        let mut next = splitmix(29);
        let a: Vec<u64> = (0..300).map(|_| next()).collect();
        l.record(&entry("a", 1000), &a).unwrap();
        let (paused_tx, paused) = std::sync::mpsc::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel();
        *l.inner.write_pause.lock().unwrap() = Some((paused_tx, resume_rx));
        let mut b: Vec<u64> = (0..50).map(|_| next()).collect();
        b.push(a[150]);
        let writer = {
            let l = l.clone();
            std::thread::spawn(move || l.record(&entry("b", 2000), &b).unwrap())
        };
        paused.recv().unwrap();
        let during = l.find(&a).unwrap();
        assert_eq!(during.hits, one_by_one(&l, &a));
        resume.send(()).unwrap();
        writer.join().unwrap();
        let after = l.find(&a).unwrap();
        assert_eq!(after.hits, one_by_one(&l, &a));
        let shared: Vec<&str> = after
            .hits
            .iter()
            .filter(|(p, _)| *p == a[150])
            .map(|(_, id)| id.as_str())
            .collect();
        assert_eq!(shared, ["a", "b"]);
    }

    #[test]
    fn a_second_opener_is_told_who_holds_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let held = EmbeddedLedger::open(&p).unwrap();
        let e = EmbeddedLedger::open(&p).err().unwrap().to_string();
        assert!(e.contains("already open in another process"), "{e}");
        assert!(matches!(
            EmbeddedLedger::open_existing(&p),
            Err(OpenExisting::Held)
        ));
        drop(held);
        assert!(EmbeddedLedger::open_existing(&p).is_ok());
    }

    #[test]
    fn the_filter_says_absent_for_nearly_every_fingerprint_never_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.wait_for_filter();
        let mut next = splitmix(0x9e37_79b9_7f4a_7c15);
        let held: Vec<u64> = (0..500).map(|_| next()).collect();
        l.record(&entry("a", 1000), &held).unwrap();
        let absent: Vec<u64> = (0..100_000).map(|_| next()).collect();
        let f = l.inner.filter();
        assert!(held.iter().all(|h| f.may_hold(*h)));
        let passed = absent.iter().filter(|h| f.may_hold(**h)).count();
        assert!(
            passed < 1_000,
            "{passed} of 100,000 absent fingerprints passed"
        );
        drop(f);
        assert!(l.find(&absent).unwrap().hits.is_empty());
    }

    #[test]
    fn a_full_filter_is_rebuilt_larger_and_still_finds_everything() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.wait_for_filter();
        let (bytes, _) = l.filter_size();
        // Past the smallest filter's capacity (1,024 in tests).
        for i in 0..30u64 {
            let prints: Vec<u64> = (i * 100..i * 100 + 100).collect();
            l.record(&entry(&format!("e{i}"), 1000), &prints).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while l.filter_size().0 == bytes && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (grown, items) = l.filter_size();
        assert!(grown > bytes, "{grown} bytes, was {bytes}");
        assert_eq!(items, 3000);
        let m = l.find(&[0, 1_550, 2_999, 3_000]).unwrap();
        let ids: Vec<&str> = m.hits.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["e0", "e15", "e29"]);
    }

    /// Issue 17: a restart with a large ledger does not wait for the filter. Open answers
    /// through the store while the filter is built, and what is written during the build is in
    /// the filter swapped in.
    #[test]
    fn lookups_are_served_while_the_filter_builds_and_writes_meanwhile_are_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("before", 1000), &[1, 2, 3]).unwrap();
        }
        // Open with the build held after it has read the store, before it adds what the
        // writers wrote meanwhile: the window where a write could be missed.
        let (release, pause) = std::sync::mpsc::channel();
        let inner = EmbeddedLedger::load(&p, lock(&p).unwrap().unwrap()).unwrap();
        *inner.pause.lock().unwrap() = Some(pause);
        let l = EmbeddedLedger {
            inner: Arc::new(inner),
        };
        l.inner.spawn_rebuild();

        assert!(!l.filter_ready());
        assert_eq!(l.find(&[2, 99]).unwrap().hits, [(2, "before".to_string())]);
        assert_eq!(l.entry("before").unwrap(), Some(entry("before", 1000)));
        l.record(&entry("during", 2000), &[7, 8]).unwrap();
        assert_eq!(l.find(&[8]).unwrap().hits, [(8, "during".to_string())]);
        assert!(!l.filter_ready());

        release.send(()).unwrap();
        l.wait_for_filter();
        assert!(l.filter_ready());
        assert_eq!(l.filter_size().1, 5);
        let f = l.inner.filter();
        assert!([1, 2, 3, 7, 8].iter().all(|h| f.may_hold(*h)));
        drop(f);
        let m = l.find(&[1, 7, 8, 99]).unwrap();
        let hits: Vec<(u64, &str)> = m.hits.iter().map(|(h, id)| (*h, id.as_str())).collect();
        assert_eq!(hits, [(1, "before"), (7, "during"), (8, "during")]);
        // A write after the swap goes into the built filter.
        l.record(&entry("after", 3000), &[9]).unwrap();
        assert_eq!(l.filter_size().1, 6);
        assert_eq!(l.find(&[9]).unwrap().hits, [(9, "after".to_string())]);
    }

    /// Closing the ledger stops a running build at its next entry: the gateway's shutdown does
    /// not wait out a 25-second build, and the lock is free when the ledger is dropped.
    #[test]
    fn a_build_stops_when_the_ledger_closes() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            for i in 0..20u64 {
                l.record(&entry(&format!("e{i}"), 1000), &[i]).unwrap();
            }
        }
        let l = EmbeddedLedger {
            inner: Arc::new(EmbeddedLedger::load(&p, lock(&p).unwrap().unwrap()).unwrap()),
        };
        l.inner.closing.store(true, Ordering::Release);
        l.inner.rebuild_filter().unwrap();
        assert!(!l.filter_ready(), "the build went on after close");
        // Still correct meanwhile.
        assert_eq!(l.find(&[5]).unwrap().hits, [(5, "e5".to_string())]);
        drop(l);
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        assert_eq!(l.filter_size().1, 20);
    }

    fn ready_from(l: &EmbeddedLedger) -> (bool, u64) {
        l.wait_for_filter();
        let o = l.filter_origin().unwrap();
        (o.loaded, o.entries_added)
    }

    fn hits(l: &EmbeddedLedger, prints: &[u64]) -> Vec<(u64, String)> {
        l.find(prints).unwrap().hits
    }

    /// Issue 17: a restart or a scan loads the filter saved when the ledger closed, and after
    /// a crash, the one saved before it plus the entries written since (read from the store).
    #[test]
    fn the_saved_filter_is_loaded_on_open_with_what_was_written_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let saved = p.join("filter");
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            // Nothing saved yet: built (from an empty store), and saved.
            assert_eq!(ready_from(&l), (false, 0));
            l.record(&entry("a", 1000), &[1, 2, 3]).unwrap();
        }
        assert!(saved.exists(), "closing saved the filter");
        let crashed = std::fs::read(&saved).unwrap();
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            assert_eq!(ready_from(&l), (true, 0));
            assert_eq!(l.filter_size().1, 3);
            l.record(&entry("b", 2000), &[4, 5]).unwrap();
            l.record(&entry("c", 3000), &[6]).unwrap();
        }
        // A crash after the first save: the file on disk holds "a" only.
        std::fs::write(&saved, &crashed).unwrap();
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(
            ready_from(&l),
            (true, 2),
            "loaded, with b and c from the store"
        );
        assert_eq!(l.filter_size().1, 6);
        let f = l.inner.filter();
        assert!((1..=6).all(|h| f.may_hold(h)));
        drop(f);
        let found: Vec<String> = hits(&l, &[1, 4, 6]).into_iter().map(|h| h.1).collect();
        assert_eq!(found, ["a", "b", "c"]);
    }

    /// A saved filter that does not hold what the store does is never used: a damaged file,
    /// a file of another ledger (the index removed and started again), a file newer than the
    /// store (a state directory restored from an older backup). Each is built from the store,
    /// finds everything, and is saved again.
    #[test]
    fn a_saved_filter_that_does_not_match_the_store_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let saved = p.join("filter");
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            // Closing saves a filter that is ready (one whose build closing stopped is not).
            l.wait_for_filter();
            l.record(&entry("a", 1000), &[1, 2]).unwrap();
        }
        let good = std::fs::read(&saved).unwrap();

        let mut damaged = good.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 1;
        std::fs::write(&saved, &damaged).unwrap();
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            assert_eq!(ready_from(&l), (false, 0));
            assert_eq!(hits(&l, &[2]), [(2, "a".to_string())]);
        }
        assert_eq!(std::fs::read(&saved).unwrap(), good, "saved again");

        // Restored from a backup taken before "b": the filter is newer than the store.
        let backup = dir.path().join("backup");
        copy_dir(&p.join("index"), &backup);
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.wait_for_filter();
            l.record(&entry("b", 2000), &[3]).unwrap();
        }
        std::fs::remove_dir_all(p.join("index")).unwrap();
        copy_dir(&backup, &p.join("index"));
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            assert_eq!(ready_from(&l), (false, 0), "a filter ahead of the store");
            // Numbered again after the restore: it must be in the filter.
            l.record(&entry("b2", 2500), &[9]).unwrap();
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(ready_from(&l), (true, 0));
        assert_eq!(hits(&l, &[9, 3]), [(9, "b2".to_string())]);
        drop(l);

        // Another ledger: the index removed, the filter left behind.
        std::fs::remove_dir_all(p.join("index")).unwrap();
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(ready_from(&l), (false, 0));
        assert_eq!(l.filter_size().1, 0);
    }

    /// Saved every `SAVE_EVERY` entries while the ledger is open, not only when it closes: a
    /// crash leaves at most that many entries to read on the next open.
    #[test]
    fn the_filter_is_saved_while_entries_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        for i in 0..SAVE_EVERY + 5 {
            l.record(&entry(&format!("e{i}"), 1000), &[i]).unwrap();
        }
        l.wait_for_filter();
        let upto = *l.inner.lock_saved();
        assert!(upto.is_some_and(|u| u >= SAVE_EVERY), "{upto:?}");
        let on_disk = Filter::load(&p.join("filter"), &l.inner.id)
            .unwrap()
            .unwrap();
        assert_eq!(Some(on_disk.upto), upto);
    }

    /// A save that fails (here: its path is a directory; in life, a full disk) leaves the
    /// writes and the filter in memory as they were, and is tried again only after another
    /// `SAVE_EVERY` entries, not at every write.
    #[test]
    fn a_failed_save_is_not_retried_at_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        std::fs::create_dir_all(p.join("filter")).unwrap();
        let l = EmbeddedLedger::open(&p).unwrap();
        l.wait_for_filter();
        // The build's save failed: it counts as tried at 0.
        assert_eq!(*l.inner.lock_saved(), Some(0));
        for i in 0..SAVE_EVERY + 5 {
            l.record(&entry(&format!("e{i}"), 1000), &[i]).unwrap();
        }
        l.wait_for_filter();
        let tried = l.inner.lock_saved().unwrap();
        assert!((SAVE_EVERY..=SAVE_EVERY + 5).contains(&tried), "{tried}");
        assert_eq!(hits(&l, &[SAVE_EVERY + 4]).len(), 1);
        assert!(p.join("filter").is_dir());
    }

    /// Keys in the store's index (`prints`), and fingerprints held in memory for it.
    fn indexed_and_held(l: &EmbeddedLedger) -> (usize, usize) {
        (l.inner.prints.len().unwrap(), l.inner.held())
    }

    /// Fingerprints wait in memory for the index, and are found there; a crash loses none of
    /// them (the next open reads them back from the entries), and closing writes them.
    #[test]
    fn fingerprints_held_for_the_index_are_found_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let crashed = path(&dir.path().join("crashed"));
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2, 3]).unwrap();
            l.record_many(&[(entry("b", 2000), vec![3, 4])]).unwrap();
            assert_eq!(indexed_and_held(&l), (0, 5));
            assert_eq!(
                hits(&l, &[3, 4, 1]),
                [
                    (1, "a".to_string()),
                    (3, "a".to_string()),
                    (3, "b".to_string()),
                    (4, "b".to_string())
                ]
            );
            // What a power cut leaves: the files as they are, the ledger still open.
            copy_dir(&p.join("index"), &crashed.join("index"));
        }
        let l = EmbeddedLedger::open(&crashed).unwrap();
        assert_eq!(indexed_and_held(&l), (0, 5));
        assert_eq!(
            hits(&l, &[4, 2]),
            [(2, "a".to_string()), (4, "b".to_string())]
        );
        drop(l);
        // Closed: written to the index, nothing held on the next open.
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(indexed_and_held(&l), (5, 0));
        assert_eq!(
            hits(&l, &[4, 2]),
            [(2, "a".to_string()), (4, "b".to_string())]
        );
    }

    /// A group written without its fsync is in the files when `record_many_buffered` returns, as
    /// a `kill -9` leaves them (the operating system has it), and found on the next open.
    #[test]
    fn buffered_entries_survive_a_kill_before_their_sync() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let killed = path(&dir.path().join("killed"));
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record_many_buffered(&[(entry("a", 1000), vec![7, 8]), (entry("b", 2000), vec![8])])
                .unwrap();
            assert_eq!(hits(&l, &[8]), [(8, "a".to_string()), (8, "b".to_string())]);
            // No sync yet: the files as the kill leaves them, the ledger still open.
            copy_dir(&p.join("index"), &killed.join("index"));
            l.sync().unwrap();
        }
        let l = EmbeddedLedger::open(&killed).unwrap();
        assert_eq!(
            hits(&l, &[7, 8]),
            [
                (7, "a".to_string()),
                (8, "a".to_string()),
                (8, "b".to_string())
            ]
        );
        assert!(l.entry("b").unwrap().is_some());
    }

    /// Past `PENDING_MAX` a thread writes what is held to the index in one run; lookups find
    /// every entry before, during and after, once each.
    #[test]
    fn held_fingerprints_are_written_to_the_index_once_enough_gather() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        // 30 entries of 10: the 20th write holds 200, the threshold.
        let mut random = splitmix(17);
        let all: Vec<Vec<u64>> = (0..30)
            .map(|_| (0..10).map(|_| random()).collect())
            .collect();
        for (n, prints) in all.iter().enumerate() {
            l.record(&entry(&format!("e{n}"), 1000 + n as i64), prints)
                .unwrap();
            assert_eq!(
                hits(&l, &prints[..1]),
                [(prints[0], format!("e{n}"))],
                "entry {n} is found as soon as it is written"
            );
        }
        l.wait_for_filter();
        let (indexed, held) = indexed_and_held(&l);
        assert_eq!(indexed + held, 300);
        assert!(indexed >= PENDING_MAX, "{indexed} keys in the index");
        assert!(held < PENDING_MAX, "{held} still held");
        let indexed_upto = be(&l.inner.meta.get(INDEXED).unwrap().unwrap());
        assert_eq!(indexed_upto as usize * 10, indexed);
        for (n, prints) in all.iter().enumerate() {
            assert_eq!(hits(&l, &prints[9..]), [(prints[9], format!("e{n}"))]);
        }
    }

    /// A run left half done (its commit failed: a full disk) stays readable in memory and is
    /// written first by the next one, which also takes what was held meanwhile.
    #[test]
    fn a_run_that_was_not_written_is_found_and_written_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let l = EmbeddedLedger::open(&path(dir.path())).unwrap();
        l.record(&entry("a", 1000), &[1, 2]).unwrap();
        // Taken out of `pending` as a run does, and not written.
        {
            let mut pending = l.inner.lock_pending();
            let taken = std::mem::take(&mut *pending);
            *l.inner.frozen.write().unwrap() = Some(Arc::new(Frozen {
                prints: taken,
                upto: 1,
            }));
        }
        l.record(&entry("b", 2000), &[2, 3]).unwrap();
        assert_eq!(indexed_and_held(&l), (0, 4));
        let found = || hits(&l, &[1, 2, 3]);
        let all = [
            (1, "a".to_string()),
            (2, "a".to_string()),
            (2, "b".to_string()),
            (3, "b".to_string()),
        ];
        assert_eq!(found(), all);
        l.inner.index_pending().unwrap();
        assert_eq!(indexed_and_held(&l), (2, 2));
        assert_eq!(found(), all);
        l.inner.index_pending().unwrap();
        assert_eq!(indexed_and_held(&l), (4, 0));
        assert_eq!(found(), all);
    }

    /// The sweep writes what is held to the index before it removes: an entry swept while its
    /// fingerprints were in memory leaves no key behind, and is never found again.
    #[test]
    fn sweeping_an_entry_still_held_leaves_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let l = EmbeddedLedger::open(&p).unwrap();
        l.record(&entry("old", 1000), &[1, 2]).unwrap();
        l.record(&entry("new", 5000), &[2, 3]).unwrap();
        assert_eq!(l.sweep(3000).unwrap(), 1);
        assert_eq!(indexed_and_held(&l), (2, 0));
        assert_eq!(
            hits(&l, &[1, 2, 3]),
            [(2, "new".to_string()), (3, "new".to_string())]
        );
        drop(l);
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(indexed_and_held(&l), (2, 0));
    }

    /// A ledger of the version before: no `indexed` in `meta`, every fingerprint in `prints`.
    #[test]
    fn a_ledger_written_before_fingerprints_were_held_reads_as_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.record(&entry("a", 1000), &[1, 2]).unwrap();
        }
        {
            let l = EmbeddedLedger::open(&p).unwrap();
            l.inner.meta.remove(INDEXED).unwrap();
            l.inner.keyspace.persist(PersistMode::SyncAll).unwrap();
        }
        let l = EmbeddedLedger::open(&p).unwrap();
        assert_eq!(be(&l.inner.meta.get(INDEXED).unwrap().unwrap()), 1);
        assert_eq!(indexed_and_held(&l), (2, 0));
        l.record(&entry("b", 2000), &[2]).unwrap();
        assert_eq!(
            hits(&l, &[1, 2]),
            [
                (1, "a".to_string()),
                (2, "a".to_string()),
                (2, "b".to_string())
            ]
        );
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }

    #[test]
    fn a_ledger_of_the_first_format_is_converted_on_open() {
        use redb::TableDefinition;
        const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
        const ENTRY_PRINTS: TableDefinition<u64, &[u8]> =
            TableDefinition::new("entry_fingerprints");
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let old = old_path(&p);
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        {
            let db = redb::Database::create(&old).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut entries = tx.open_table(ENTRIES).unwrap();
                let mut prints = tx.open_table(ENTRY_PRINTS).unwrap();
                for (n, (id, fps)) in [("a", vec![1u64, 2]), ("b", vec![2, 3])].iter().enumerate() {
                    let json = serde_json::to_vec(&entry(id, 1000)).unwrap();
                    entries.insert(n as u64, json.as_slice()).unwrap();
                    prints.insert(n as u64, pack(fps).as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        // A scan while the gateway is stopped does not convert: it says how.
        let Err(OpenExisting::Failed(e)) = EmbeddedLedger::open_existing(&p) else {
            panic!("an old ledger opened for a scan");
        };
        assert!(e.to_string().contains("start the gateway once"), "{e}");
        let l = EmbeddedLedger::open(&p).unwrap();
        assert!(!old.exists());
        let m = l.find(&[1, 2, 3]).unwrap();
        let hits: Vec<(u64, &str)> = m.hits.iter().map(|(h, id)| (*h, id.as_str())).collect();
        assert_eq!(hits, [(1, "a"), (2, "a"), (2, "b"), (3, "b")]);
        assert_eq!(l.entry("b").unwrap(), Some(entry("b", 1000)));
    }
}
