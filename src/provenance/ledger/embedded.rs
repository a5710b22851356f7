//! The embedded ledger: a fjall keyspace in the state directory (`provenance/ledger/`), with
//! an in-memory membership filter in front of its fingerprint index.
//!
//! Why an LSM tree: the capture worker writes about a hundred fingerprints per answer, every
//! one a blind insert of a key nobody reads back soon. redb, the first store, rewrote B-tree
//! pages for each of them (copy-on-write, ~124k instructions a fingerprint under callgrind);
//! fjall appends the batch to its journal and a sorted in-memory table, and sorts it into files
//! in the background. A batch (the worker's group commit) is one journal record, written and
//! fsynced before [`Ledger::record_many`] returns, so an outcome record that names an entry
//! still always has it after a `kill -9` or a power cut: recovery replays the journal, and a
//! batch cut short by a crash is dropped whole.
//!
//! Partitions:
//! - `entries`: entry number (BE u64) → the entry (JSON); numbers rise in the order written.
//! - `ids`: audit record id → entry number.
//! - `prints`: fingerprint (BE u64) ‖ entry number (BE u64) → nothing. The key is the index: a
//!   lookup is a prefix scan, a fingerprint costs 16 bytes before fjall's prefix truncation.
//! - `entry_prints`: entry number → its fingerprints (packed LE u64), for the retention sweep
//!   and to build the filter.
//! - `meta`: the next entry number (kept when the sweep empties `entries`).
//!
//! The filter (`Filter`): a Bloom filter of every fingerprint, built from `entry_prints` and
//! kept current by every write, so a scan's lookups of absent fingerprints (nearly all of them)
//! never reach the store. Building it reads every fingerprint (25 s at a million responses), so
//! open does not wait for it: the ledger opens with a pending filter that answers "maybe" for
//! every fingerprint (lookups go to the store: correct, only slower), and a thread of its own
//! builds the real one and swaps it in, adding under the writers' lock the entries written
//! while it read (`Inner::rebuild_filter`). A gateway restart serves at once (issue 17).
//!
//! fjall has no lock of its own: `lock` in the directory is held (flock) while a process has
//! the ledger open, as redb's was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::{Entry, Ledger, LedgerError, Matches};

const NEXT: &[u8] = b"next_entry";

/// Where the ledger lives in the state directory (a directory).
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("provenance").join("ledger")
}

/// The first ledger format, one redb file; converted on the gateway's first open.
pub fn old_path(state_dir_ledger: &Path) -> PathBuf {
    state_dir_ledger.with_extension("redb")
}

/// Bits of filter per fingerprint: 10 with the optimal 7 hashes is about 1 % false positives
/// (one absent fingerprint in a hundred goes on to the store).
const BITS_PER_PRINT: u64 = 10;
const HASHES: u32 = 7;
/// The smallest filter, in fingerprints (1.25 MB): an empty ledger grows into it without a
/// rebuild for its first ten thousand or so answers.
const MIN_CAPACITY: u64 = if cfg!(test) { 1 << 10 } else { 1 << 20 };

/// The membership filter: "not in the ledger" for a fingerprint that was never recorded, in
/// one or two memory reads, or "maybe" (then the store answers).
struct Filter {
    /// `None` while the first filter after open is being built: "maybe" for everything.
    bloom: Option<fastbloom::BloomFilter>,
    /// Fingerprints it was sized for: past this its false-positive rate rises, and the next
    /// write rebuilds it twice as large (from the store, off the capture worker).
    capacity: u64,
    items: u64,
}

impl Filter {
    fn with_capacity(prints: u64) -> Filter {
        let capacity = (prints.saturating_mul(2)).max(MIN_CAPACITY);
        let bits = usize::try_from(capacity.saturating_mul(BITS_PER_PRINT)).unwrap_or(usize::MAX);
        Filter {
            bloom: Some(fastbloom::BloomFilter::with_num_bits(bits).hashes(HASHES)),
            capacity,
            items: 0,
        }
    }

    /// The stand-in until the build after open swaps the real filter in. Its capacity is
    /// unbounded so no write asks for a second build meanwhile; what is written to it is in
    /// the store, and the build adds it.
    fn pending() -> Filter {
        Filter {
            bloom: None,
            capacity: u64::MAX,
            items: 0,
        }
    }

    fn insert(&mut self, prints: &[u64]) {
        if let Some(bloom) = &mut self.bloom {
            for h in prints {
                bloom.insert_hash(*h);
            }
        }
        self.items += prints.len() as u64;
    }

    /// One fingerprint; lookups use [`Filter::may_hold_many`], which tests hold to this.
    #[cfg(test)]
    fn may_hold(&self, print: u64) -> bool {
        self.bloom.as_ref().is_none_or(|b| b.contains_hash(print))
    }

    /// Appends to `out` the fingerprints of `prints` the filter may hold: the same answer as
    /// [`Filter::may_hold`] for each, but one probe for all of them before the next probe.
    /// A scan asks about a thousand fingerprints a document, nearly all absent, and each probe
    /// is a cache miss somewhere in hundreds of megabytes; one at a time, the branch on each
    /// answer keeps the misses from overlapping. Here a round has no branch on the bits it
    /// reads, so the processor has many misses in flight, and about 70 % of the fingerprints
    /// leave after the first round.
    ///
    /// The probes are fastbloom 0.17's (`contains_hash`: the hash itself, then `hashes - 1`
    /// double-hashing steps, each reduced by multiply-shift); the test
    /// `the_batched_filter_answers_as_the_filter_does` holds this to it.
    fn may_hold_many(&self, prints: &[u64], out: &mut Vec<u64>) {
        let Some(bloom) = &self.bloom else {
            // The pending filter: "maybe" for everything.
            out.extend_from_slice(prints);
            return;
        };
        let bits = bloom.as_slice();
        let n = bloom.num_bits() as u128;
        let probe = |h: u64| -> usize {
            let i = ((u128::from(h) * n) >> 64) as usize;
            // Always in range (i < num_bits); a missing word would be a bug, said "maybe".
            bits.get(i >> 6)
                .map_or(1, |w| ((w >> (i & 63)) & 1) as usize)
        };
        // (fingerprint, h1) of the candidates still in; h2 is derived from the fingerprint.
        let mut cand: Vec<(u64, u64)> = prints.iter().map(|&h| (h, h)).collect();
        let mut len = cand.len();
        for round in 0..bloom.num_hashes() {
            let mut kept = 0;
            // In place: the kept ones move down over the dropped ones, in order.
            let mut i = 0;
            while i < len {
                let (print, mut h1) = cand[i];
                if round > 0 {
                    h1 = h1
                        .rotate_left(5)
                        .wrapping_add(print.wrapping_mul(0x51_7c_c1_b7_27_22_0a_95));
                }
                cand[kept] = (print, h1);
                kept += probe(h1);
                i += 1;
            }
            len = kept;
            if len == 0 {
                break;
            }
        }
        out.extend(cand[..len].iter().map(|&(print, _)| print));
    }

    fn bytes(&self) -> u64 {
        self.bloom.as_ref().map_or(0, |b| b.num_bits() as u64 / 8)
    }
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
    /// Tests only: the build waits here after reading the store, before it takes the writers'
    /// lock to add what they wrote meanwhile.
    #[cfg(test)]
    pause: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    path: String,
    /// Held (flock) while this process has the ledger open; released when dropped.
    _lock: std::fs::File,
}

pub struct EmbeddedLedger {
    inner: Arc<Inner>,
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
                PartitionCreateOptions::default().bloom_filter_bits(None),
            )
            .map_err(e)?;
        let entry_prints = part("entry_prints").map_err(e)?;
        let meta = part("meta").map_err(e)?;
        let next = match meta.get(NEXT).map_err(e)? {
            Some(v) => be(&v),
            None => 0,
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
            rebuilding: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            builds: Mutex::new(Vec::new()),
            #[cfg(test)]
            pause: Mutex::new(None),
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

    /// The filter after open is built: lookups of absent fingerprints no longer reach the store.
    pub fn filter_ready(&self) -> bool {
        self.inner.filter().bloom.is_some()
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
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.wait_for_filter();
    }
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

fn pack(prints: &[u64]) -> Vec<u8> {
    prints.iter().flat_map(|h| h.to_le_bytes()).collect()
}

fn unpack(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect()
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
        let Some(bloom) = &mut filter.bloom else {
            return Ok(None);
        };
        let mut prints = 0u64;
        for row in self.entry_prints.range(..upto.to_be_bytes()) {
            if self.closing.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let (_, v) = row.map_err(|e| self.err(e))?;
            for c in v.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                bloom.insert_hash(u64::from_le_bytes(b));
            }
            prints += v.len() as u64 / 8;
        }
        filter.items = prints;
        Ok(Some(filter))
    }

    /// Build a filter sized for today's ledger on a thread of its own and swap it in, unless
    /// one is being built already (it will hold everything written before its swap). The
    /// writers and lookups go on meanwhile with the filter in place.
    fn spawn_rebuild(self: &Arc<Self>) {
        if self.rebuilding.load(Ordering::SeqCst) || self.closing.load(Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ledger-filter".into())
            .spawn(move || {
                if let Err(e) = inner.rebuild_filter() {
                    tracing::warn!(error = %e, "provenance ledger: the filter build failed; lookups stay correct, only slower");
                }
            });
        match spawned {
            Ok(handle) => {
                let mut builds = self.lock_builds();
                builds.retain(|b| !b.is_finished());
                builds.push(handle);
            }
            Err(e) => {
                tracing::warn!(error = %e, "provenance ledger: cannot start the filter build; lookups stay correct, only slower");
            }
        }
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
        let upto = *self.lock_next();
        let Some(mut filter) = self.build_filter(upto)? else {
            return Ok(());
        };
        #[cfg(test)]
        if let Some(pause) = self.pause.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = pause.recv();
        }
        let next = self.lock_next();
        for row in self.entry_prints.range(upto.to_be_bytes()..) {
            let (_, v) = row.map_err(|e| self.err(e))?;
            filter.insert(&unpack(&v));
        }
        let items = filter.items;
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) = filter;
        drop(next);
        tracing::info!(
            fingerprints = items,
            seconds = started.elapsed().as_secs_f64(),
            "provenance ledger: membership filter built"
        );
        Ok(())
    }

    /// Entries and their fingerprints as one journal batch, fsynced before it returns.
    fn write_entries(&self, rows: &[(&Entry, &[u64])]) -> Result<(), LedgerError> {
        let mut next = self.lock_next();
        let first = *next;
        let mut n = first;
        // Sized once: three rows an entry, one a fingerprint, and `next`; the batch is a Vec
        // of items that would otherwise grow (and copy) six or seven times for one answer.
        let items = rows.iter().map(|(_, f)| f.len() + 3).sum::<usize>() + 1;
        let mut batch = fjall::Batch::with_capacity(self.keyspace.clone(), items)
            .durability(Some(PersistMode::SyncAll));
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
            for h in *fingerprints {
                batch.insert(&self.prints, key(*h, n), [0u8; 0]);
            }
            added.push(fingerprints);
            n += 1;
        }
        if n == first {
            return Ok(());
        }
        batch.insert(&self.meta, NEXT, n.to_be_bytes());
        batch.commit().map_err(|e| self.err(e))?;
        *next = n;
        let mut filter = self.filter.write().unwrap_or_else(|p| p.into_inner());
        for fps in added {
            filter.insert(fps);
        }
        Ok(())
    }

    /// The filter holds more fingerprints than it was sized for.
    fn filter_full(&self) -> bool {
        let f = self.filter();
        f.items > f.capacity
    }
}

impl Ledger for EmbeddedLedger {
    fn record(&self, entry: &Entry, fingerprints: &[u64]) -> Result<(), LedgerError> {
        self.record_many(&[(entry.clone(), fingerprints.to_vec())])
    }

    fn record_many(&self, batch: &[(Entry, Vec<u64>)]) -> Result<(), LedgerError> {
        let rows: Vec<(&Entry, &[u64])> = batch.iter().map(|(e, f)| (e, f.as_slice())).collect();
        self.inner.write_entries(&rows)?;
        if self.inner.filter_full() {
            // Twice as large, built from the store on a thread of its own: the capture worker
            // goes on (the full filter still answers, with more false positives) meanwhile.
            self.inner.spawn_rebuild();
        }
        Ok(())
    }

    fn find(&self, fingerprints: &[u64]) -> Result<Matches, LedgerError> {
        let i = &self.inner;
        // Only fingerprints the filter may hold reach the store, sorted and distinct so
        // neighbouring keys share blocks.
        let mut wanted = Vec::new();
        i.filter().may_hold_many(fingerprints, &mut wanted);
        wanted.sort_unstable();
        wanted.dedup();
        let mut by_number: HashMap<u64, Entry> = HashMap::new();
        let mut hits = Vec::new();
        for h in wanted {
            for row in i.prints.prefix(h.to_be_bytes()) {
                let k = row.map_err(|e| i.err(e))?.0;
                let n = be(&k[8..]);
                let e = match by_number.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let Some(raw) = i.entries.get(n.to_be_bytes()).map_err(|e| i.err(e))?
                        else {
                            continue;
                        };
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

    use super::*;

    /// splitmix64 from `seed`: fingerprints are keyed hashes, uniform like these.
    fn splitmix(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

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
    fn the_batched_filter_answers_as_the_filter_does() {
        let mut next = splitmix(0x0123_4567_89ab_cdef);
        // Filled past its capacity, so that many absent fingerprints pass some probes.
        let mut f = Filter::with_capacity(0);
        let held: Vec<u64> = (0..3 * f.capacity).map(|_| next()).collect();
        f.insert(&held);
        let mut out = Vec::new();
        f.may_hold_many(&held, &mut out);
        assert_eq!(out, held, "a recorded fingerprint was said absent");
        let mut asked: Vec<u64> = (0..200_000).map(|_| next()).collect();
        asked.extend_from_slice(&held[..1000]);
        let one_by_one: Vec<u64> = asked.iter().copied().filter(|h| f.may_hold(*h)).collect();
        out.clear();
        f.may_hold_many(&asked, &mut out);
        assert_eq!(out, one_by_one);
        assert!(
            out.len() > 1000 + 1000,
            "{} passed: the test filter is too empty",
            out.len()
        );
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
