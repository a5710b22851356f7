//! The embedded ledger's membership filter: "not in the ledger" for a fingerprint never
//! recorded, in one memory read, or "maybe" (then the store answers). A scan asks about a
//! thousand fingerprints a document, nearly all absent, so this is what keeps its lookups off
//! the store.
//!
//! Why a blocked Bloom filter of our own (the split-block layout of Parquet's and Impala's
//! filters, with 64-bit words): a fingerprint's bits all sit in one 64-byte block, one cache
//! line, so an insert or a probe is one cache miss where a classic Bloom filter (fastbloom,
//! the first) took seven spread over hundreds of megabytes. Building the filter of a
//! million-response ledger (205 million fingerprints) took about 30 CPU seconds that way.
//! For the same bits a blocked filter answers "maybe" a little more often (about 1.2 % at the
//! capacity it was sized for, against 0.8 %); it is sized for twice the fingerprints it holds
//! when built, where both are far below that.
//!
//! Why it is saved beside the ledger (`filter`): so that neither a gateway restart nor an
//! `aigate provenance scan` of a stopped gateway's ledger reads every fingerprint to build
//! it. The file says which ledger it belongs to (an id kept in the ledger) and which entries
//! it holds (every entry numbered below `upto`); the opener adds the entries written after
//! `upto` from the store. It is written whole to a temporary file, fsynced and renamed, and
//! carries a CRC-32 of everything before it: a file that is torn, damaged, of another ledger
//! or of another version is not used, and the filter is built from the store as before. The
//! layout is ours (not a crate's), so a dependency update cannot silently change which bit a
//! fingerprint sets in a file written by the last version; a change to it is a new version.
//!
//! Why it also marks fingerprints recorded twice (version 2): a scan of a tree that holds a
//! captured answer finds nearly every fingerprint of that answer, and each one was a lookup in
//! the store, a quarter of the scan's time. When an insert finds a fingerprint already there,
//! the filter also takes the fingerprint's [`marker`], so "no marker" means "held by at most one
//! entry". A scan that has found an entry reads its fingerprints once and takes those without
//! a marker as the entry's alone, without asking the store about each ([`Filter::sole`]). A
//! marker is never missing for a fingerprint two entries hold, because every filter is built by
//! inserting each entry once, in any order; a false "maybe" only adds a marker, which costs a
//! lookup, never an answer. A version 1 file has no markers, so it is not loaded but rebuilt.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bits of filter per fingerprint it is sized for.
const BITS_PER_PRINT: u64 = 10;
/// The smallest filter, in fingerprints (1.25 MB): an empty ledger grows into it without a
/// rebuild for its first ten thousand or so answers.
const MIN_CAPACITY: u64 = if cfg!(test) { 1 << 10 } else { 1 << 20 };
/// The saved filter's first bytes: the format and its version.
const MAGIC: &[u8; 8] = b"AGLBF002";
/// Magic, ledger id, then `upto`, capacity, items and blocks as u64.
const HEADER: usize = 8 + 16 + 4 * 8;
/// Odd multipliers that pick a fingerprint's bit in each of a block's eight words from its
/// low 32 bits (Parquet's split-block Bloom filter salts); the block itself comes from the
/// high bits.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// One cache line of filter: a fingerprint sets one bit in each word. Its bytes are the saved
/// file's on a little-endian machine (`IntoBytes`, `FromBytes`: no padding, any bits valid).
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(64))]
struct Block([u64; 8]);

/// The filter's memory: pages mapped for it alone, zeroed by the system, with the huge-page
/// hint (`madvise(MADV_HUGEPAGE)`). A probe is a random read anywhere in hundreds of megabytes:
/// on 4 KiB pages each is also a TLB miss and a page walk, and a load or a build faults in every
/// page. With 2 MiB pages the same scan of Python's standard library took a seventh less CPU
/// time and the load of a million responses' filter 0.53 → 0.30 CPU-s (transparent huge pages
/// on and off, same binary; docs/provenance.md, "Scan speed"). The hint is best effort: where
/// the kernel has no transparent huge pages it is plain memory.
struct Blocks {
    map: memmap2::MmapMut,
}

impl Blocks {
    /// `count` zeroed blocks (at least one).
    fn zeroed(count: usize) -> std::io::Result<Blocks> {
        let bytes = count
            .checked_mul(64)
            .filter(|&b| b > 0)
            .ok_or_else(|| std::io::Error::other(format!("{count} blocks cannot be mapped")))?;
        let map = memmap2::MmapMut::map_anon(bytes)?;
        if <[Block]>::ref_from_bytes(&map[..]).is_err() {
            return Err(std::io::Error::other("the map is not aligned to a block"));
        }
        #[cfg(target_os = "linux")]
        {
            // Refused only where the kernel has no transparent huge pages: small pages then.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(Blocks { map })
    }
}

impl std::ops::Deref for Blocks {
    type Target = [Block];

    fn deref(&self) -> &[Block] {
        // `zeroed` checked that this holds. Were it not to, no blocks: every probe says "maybe"
        // and the store answers, the same answers, slower.
        <[Block]>::ref_from_bytes(&self.map[..]).unwrap_or(&[])
    }
}

impl std::ops::DerefMut for Blocks {
    fn deref_mut(&mut self) -> &mut [Block] {
        <[Block]>::mut_from_bytes(&mut self.map[..]).unwrap_or(&mut [])
    }
}

impl Clone for Blocks {
    /// A copy for the periodic save, in memory of its own.
    fn clone(&self) -> Blocks {
        let mut copy = Blocks::zeroed(self.len()).unwrap_or_else(|e| {
            panic!("no memory for a copy of the provenance ledger's filter: {e}")
        });
        copy.copy_from_slice(self);
        copy
    }
}

/// Blocks read or written at once (1 MiB), so the CRC runs over bytes still in the cache.
const CHUNK_BLOCKS: usize = (1 << 20) / 64;

/// The saved words are little-endian: on a big-endian machine each is swapped after reading
/// and in a copy before writing. Nothing to do on a little-endian one.
fn swap_to_native(blocks: &mut [Block]) {
    if cfg!(target_endian = "big") {
        for w in blocks.iter_mut().flat_map(|b| b.0.iter_mut()) {
            *w = u64::from_le(*w);
        }
    }
}

/// The block a fingerprint lives in, from its high bits (multiply-shift: no division).
#[inline]
fn block_of(print: u64, blocks: usize) -> usize {
    ((u128::from(print) * blocks as u128) >> 64) as usize
}

/// A fingerprint's bit in the word of a block that `salt` picks it for, from its low bits.
#[inline]
fn bit(print: u64, salt: u32) -> u64 {
    1u64 << ((print as u32).wrapping_mul(salt) >> 26)
}

/// Which block a fingerprint lives in, and its bit in each of the block's words.
#[inline]
fn locate(print: u64, blocks: usize) -> (usize, [u64; 8]) {
    let mut mask = [0u64; 8];
    for (m, salt) in mask.iter_mut().zip(SALT) {
        *m = bit(print, salt);
    }
    (block_of(print, blocks), mask)
}

/// The key a fingerprint recorded a second time also sets: the fingerprint through
/// splitmix64's finaliser, a bijection, so no two fingerprints share one, and every bit of it
/// depends on every bit of the fingerprint, so the marker's block and bits are not the
/// fingerprint's.
#[inline]
fn marker(print: u64) -> u64 {
    let mut z = print ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sets a fingerprint's bits; whether they were all set already. The test and the set in one
/// pass over the block's words, inlined: the capture worker runs it for every fingerprint
/// (callgrind: 154 instructions a fingerprint as a closure that tested, then set).
#[inline(always)]
fn set(blocks: &mut [Block], print: u64) -> bool {
    let (b, mask) = locate(print, blocks.len());
    let Some(block) = blocks.get_mut(b) else {
        return false;
    };
    let mut missing = 0u64;
    for (w, m) in block.0.iter_mut().zip(mask) {
        missing |= m & !*w;
        *w |= m;
    }
    missing == 0
}

/// Every bit of a fingerprint's `mask` is set in its block: the filter may hold it. Without a
/// branch per word, so the eight tests are one straight run of instructions.
#[inline]
fn holds(block: &Block, mask: [u64; 8]) -> bool {
    block
        .0
        .iter()
        .zip(mask)
        .fold(0u64, |missing, (w, m)| missing | (m & !w))
        == 0
}

#[derive(Clone)]
pub(super) struct Filter {
    /// `None` while the first filter after open is being loaded or built: "maybe" for
    /// everything.
    blocks: Option<Blocks>,
    /// Fingerprints it was sized for: past this its false-positive rate rises, and the next
    /// write rebuilds it twice as large (from the store, off the capture worker).
    pub(super) capacity: u64,
    pub(super) items: u64,
}

/// A saved filter and the entries it holds (every entry numbered below `upto`).
pub(super) struct Saved {
    pub(super) filter: Filter,
    pub(super) upto: u64,
}

impl Filter {
    /// An empty filter for twice `prints` fingerprints (room to grow before a rebuild).
    pub(super) fn with_capacity(prints: u64) -> Filter {
        let capacity = prints.saturating_mul(2).max(MIN_CAPACITY);
        let blocks = capacity.saturating_mul(BITS_PER_PRINT).div_ceil(512);
        let blocks = usize::try_from(blocks).unwrap_or(usize::MAX / 64);
        Filter {
            blocks: Some(Blocks::zeroed(blocks).unwrap_or_else(|e| {
                // As `vec!` does when memory runs out.
                panic!("no memory for the provenance ledger's filter ({blocks} blocks): {e}")
            })),
            capacity,
            items: 0,
        }
    }

    /// The stand-in until the filter after open is loaded or built. Its capacity is unbounded
    /// so no write asks for a second build meanwhile; what is written to it is in the store,
    /// and the build (or the load, from `upto` on) adds it.
    pub(super) fn pending() -> Filter {
        Filter {
            blocks: None,
            capacity: u64::MAX,
            items: 0,
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        self.blocks.is_some()
    }

    /// One entry's fingerprints (each entry once: a second insert of the same entry would mark
    /// its fingerprints as shared, which costs scans lookups, not answers). A fingerprint the
    /// filter may hold already also sets its [`marker`].
    pub(super) fn insert(&mut self, prints: &[u64]) {
        if let Some(blocks) = &mut self.blocks {
            // Not counted in `items`: a marker is set by a fingerprint inserted again, which
            // `items` counts and which sets no key of its own, so the keys set never outnumber
            // `items`, and the capacity holds as before.
            for &print in prints {
                if set(blocks, print) {
                    set(blocks, marker(print));
                }
            }
        }
        self.items += prints.len() as u64;
    }

    /// Appends to `out` the fingerprints of `prints` (one entry's) that no other entry holds:
    /// those without a [`marker`]. Nothing while the filter is pending, when any may be shared.
    pub(super) fn sole(&self, prints: &[u64], out: &mut Vec<u64>) {
        let Some(blocks) = &self.blocks else {
            return;
        };
        let n = blocks.len();
        out.extend(prints.iter().copied().filter(|&print| {
            let (b, mask) = locate(marker(print), n);
            blocks.get(b).is_some_and(|block| !holds(block, mask))
        }));
    }

    /// One fingerprint; lookups use [`Filter::may_hold_many`], which tests hold to this.
    #[cfg(test)]
    pub(super) fn may_hold(&self, print: u64) -> bool {
        let Some(blocks) = &self.blocks else {
            return true;
        };
        let (b, mask) = locate(print, blocks.len());
        blocks.get(b).is_none_or(|block| holds(block, mask))
    }

    /// Appends to `out` the fingerprints of `prints` the filter may hold, in order.
    ///
    /// A scan asks about tens of millions of fingerprints, each in a random line of hundreds
    /// of megabytes (a cache and a TLB miss), nearly all absent. Asked one by one, the
    /// processor overlaps only the few misses its reorder window reaches. So a group of
    /// fingerprints goes through twice: the first pass reads each one's block and tests its
    /// bit in the block's first word, with no branch and no store depending on what it read,
    /// so all the group's misses are in flight at once, and about two absent fingerprints in
    /// three leave there (a word of a filter built at half its capacity has a third of its
    /// bits set); the second pass tests the other seven words of the rest, now in the cache.
    pub(super) fn may_hold_many(&self, prints: &[u64], out: &mut Vec<u64>) {
        const GROUP: usize = 32;
        let Some(blocks) = &self.blocks else {
            out.extend_from_slice(prints);
            return;
        };
        let n = blocks.len();
        for group in prints.chunks(GROUP) {
            let mut first = [false; GROUP];
            for (pass, &print) in first.iter_mut().zip(group) {
                let b = block_of(print, n);
                // Always in range (b < n); a missing block would be a bug, said "maybe".
                *pass = blocks
                    .get(b)
                    .is_none_or(|block| block.0[0] & bit(print, SALT[0]) != 0);
            }
            for (&pass, &print) in first.iter().zip(group) {
                if !pass {
                    continue;
                }
                let (b, mask) = locate(print, n);
                if blocks.get(b).is_none_or(|block| holds(block, mask)) {
                    out.push(print);
                }
            }
        }
    }

    /// `out` (cleared first): the fingerprints of `prints` it may hold, sorted and distinct,
    /// as a store's lookup asks them (neighbouring keys share blocks) and the admin API's
    /// `may-hold` answers them.
    pub(super) fn passing(&self, prints: &[u64], out: &mut Vec<u64>) {
        out.clear();
        self.may_hold_many(prints, out);
        out.sort_unstable();
        out.dedup();
    }

    /// Bytes of memory it holds.
    pub(super) fn bytes(&self) -> u64 {
        self.blocks.as_ref().map_or(0, |b| b.len() as u64 * 64)
    }

    /// Write it to `path` for the ledger `id`, as holding every entry numbered below `upto`:
    /// a temporary file, fsynced, renamed over the last one. Nothing to write while pending.
    pub(super) fn save(&self, path: &Path, id: &[u8; 16], upto: u64) -> std::io::Result<()> {
        let Some(blocks) = &self.blocks else {
            return Ok(());
        };
        let tmp = temporary(path);
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut crc = crc32fast::Hasher::new();
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(id);
        for v in [upto, self.capacity, self.items, blocks.len() as u64] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        crc.update(&header);
        out.write_all(&header)?;
        for group in blocks.chunks(CHUNK_BLOCKS) {
            let bytes: Cow<'_, [u8]> = if cfg!(target_endian = "little") {
                Cow::Borrowed(group.as_bytes())
            } else {
                let words = group.iter().flat_map(|b| b.0);
                Cow::Owned(words.flat_map(u64::to_le_bytes).collect())
            };
            crc.update(&bytes);
            out.write_all(&bytes)?;
        }
        out.write_all(&crc.finalize().to_le_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The filter saved at `path` for the ledger `id`: `Ok(None)` when there is none, `Err`
    /// with the reason when there is one that cannot be used (then it is rebuilt and saved).
    pub(super) fn load(path: &Path, id: &[u8; 16]) -> Result<Option<Saved>, String> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read its size: {e}"))?
            .len();
        // Not buffered: the blocks are read straight into place, a mebibyte at a time.
        let mut input = file;
        let mut header = [0u8; HEADER];
        input
            .read_exact(&mut header)
            .map_err(|e| format!("cannot read its header: {e}"))?;
        if &header[..8] != MAGIC {
            return Err("not a filter of this version".into());
        }
        if &header[8..24] != id {
            return Err("it belongs to another ledger".into());
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[24 + 8 * i..32 + 8 * i]);
            u64::from_le_bytes(b)
        };
        let (upto, capacity, items, count) = (field(0), field(1), field(2), field(3));
        if count == 0 || len != HEADER as u64 + count.saturating_mul(64) + 4 {
            return Err(format!(
                "{len} bytes, not what its header says ({count} blocks)"
            ));
        }
        let count = usize::try_from(count).map_err(|_| "too large for this machine")?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        // Zeroed pages from the system, written once by the reads: no copy through a buffer
        // and no conversion word by word (they were two thirds of the load's time; perf).
        let mut blocks =
            Blocks::zeroed(count).map_err(|e| format!("no memory for its {count} blocks: {e}"))?;
        for group in blocks.chunks_mut(CHUNK_BLOCKS) {
            let bytes = group.as_mut_bytes();
            input
                .read_exact(bytes)
                .map_err(|e| format!("cannot read it: {e}"))?;
            crc.update(bytes);
        }
        swap_to_native(&mut blocks);
        let mut tail = [0u8; 4];
        input
            .read_exact(&mut tail)
            .map_err(|e| format!("cannot read its checksum: {e}"))?;
        if u32::from_le_bytes(tail) != crc.finalize() {
            return Err("its checksum does not match (damaged)".into());
        }
        Ok(Some(Saved {
            filter: Filter {
                blocks: Some(blocks),
                capacity,
                items,
            },
            upto,
        }))
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The kernel's flags of the mapping that holds address `at` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn vm_flags(at: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((a, b)) = range
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&at);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_string();
            }
        }
        panic!("no mapping holds {at:#x}")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn new_loaded_and_copied_blocks_ask_for_huge_pages() {
        if !Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            // A kernel without transparent huge pages refuses the hint: plain pages there.
            return;
        }
        let mut f = Filter::with_capacity(1 << 16);
        f.insert(&[1, 2, 3]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter");
        f.save(&path, &[7; 16], 3).unwrap();
        let loaded = Filter::load(&path, &[7; 16]).unwrap().unwrap().filter;
        let copy = loaded.clone();
        for (what, filter) in [("new", &f), ("loaded", &loaded), ("copied", &copy)] {
            let blocks = filter.blocks.as_ref().unwrap();
            let flags = vm_flags(blocks.map.as_ptr() as usize);
            assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "{what}: {flags}"
            );
            assert!(filter.may_hold(2) && blocks.len() == f.blocks.as_ref().unwrap().len());
        }
    }

    /// splitmix64 from `seed`: fingerprints are keyed hashes, uniform like these.
    pub(crate) fn splitmix(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn the_batched_filter_answers_as_the_filter_does() {
        let mut next = splitmix(0x0123_4567_89ab_cdef);
        // Filled past its capacity, so that many absent fingerprints pass.
        let mut f = Filter::with_capacity(0);
        let held: Vec<u64> = (0..3 * f.capacity).map(|_| next()).collect();
        f.insert(&held);
        let mut out = vec![42];
        f.may_hold_many(&held, &mut out);
        assert_eq!(out[0], 42, "what was in `out` is kept");
        assert_eq!(out[1..], held, "a recorded fingerprint was said absent");
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

    /// The rate the docs state: about 1.2 % at the capacity it was sized for, far less at the
    /// half of it a fresh build holds.
    #[test]
    fn false_positives_are_about_one_percent_at_capacity() {
        let mut next = splitmix(7);
        let mut f = Filter::with_capacity(1 << 16);
        let absent: Vec<u64> = (0..400_000).map(|_| next()).collect();
        let rate = |f: &Filter| {
            let mut out = Vec::new();
            f.may_hold_many(&absent, &mut out);
            out.len() as f64 / absent.len() as f64
        };
        let half: Vec<u64> = (0..f.capacity / 2).map(|_| next()).collect();
        f.insert(&half);
        let at_half = rate(&f);
        let rest: Vec<u64> = (0..f.capacity / 2).map(|_| next()).collect();
        f.insert(&rest);
        let at_capacity = rate(&f);
        assert!(at_half < 0.001, "{at_half} at half capacity");
        assert!(
            (0.005..0.02).contains(&at_capacity),
            "{at_capacity} at capacity"
        );
    }

    /// Entries with fingerprints in common, inserted in any order: every fingerprint two of them
    /// hold is marked, and few held once are.
    #[test]
    fn a_fingerprint_two_entries_hold_is_never_taken_as_one_entry_s_alone() {
        let mut next = splitmix(99);
        let common: Vec<u64> = (0..1_000).map(|_| next()).collect();
        let entries: Vec<Vec<u64>> = (0..200)
            .map(|e| {
                let mut prints: Vec<u64> = (0..500).map(|_| next()).collect();
                // Ten of `common` each: entry e and entry e + 100 take the same ten.
                prints.extend_from_slice(&common[(e % 100) * 10..(e % 100) * 10 + 10]);
                prints.sort_unstable();
                prints
            })
            .collect();
        let mut holders: std::collections::HashMap<u64, usize> = Default::default();
        for prints in &entries {
            for p in prints {
                *holders.entry(*p).or_default() += 1;
            }
        }
        for reversed in [false, true] {
            let mut f = Filter::with_capacity(entries.iter().map(|e| e.len() as u64).sum());
            let mut each: Vec<&Vec<u64>> = entries.iter().collect();
            if reversed {
                each.reverse();
            }
            for prints in each {
                f.insert(prints);
            }
            let (mut wrongly_shared, mut held_once) = (0, 0);
            for prints in &entries {
                let mut sole = Vec::new();
                f.sole(prints, &mut sole);
                for p in prints {
                    let alone = sole.contains(p);
                    if holders[p] > 1 {
                        assert!(!alone, "{p:#x} is held by {} entries", holders[p]);
                    } else {
                        held_once += 1;
                        wrongly_shared += usize::from(!alone);
                    }
                }
            }
            assert_eq!(held_once, 200 * 500);
            assert!(
                wrongly_shared * 200 < held_once,
                "{wrongly_shared} of {held_once} held once are marked"
            );
        }
        let mut out = Vec::new();
        Filter::pending().sole(&entries[0], &mut out);
        assert!(
            out.is_empty(),
            "a pending filter knows no fingerprint to be alone"
        );
    }

    #[test]
    fn a_saved_filter_loads_as_it_was_and_only_for_its_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter");
        let id = [7u8; 16];
        assert!(
            Filter::load(&path, &id).unwrap().is_none(),
            "none saved yet"
        );
        let mut next = splitmix(11);
        let mut f = Filter::with_capacity(5_000);
        let held: Vec<u64> = (0..5_000).map(|_| next()).collect();
        f.insert(&held);
        f.save(&path, &id, 123).unwrap();
        assert!(!temporary(&path).exists());

        let saved = Filter::load(&path, &id).unwrap().unwrap();
        assert_eq!(saved.upto, 123);
        assert_eq!(
            (saved.filter.capacity, saved.filter.items),
            (f.capacity, 5_000)
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        f.sole(&held, &mut a);
        saved.filter.sole(&held, &mut b);
        assert_eq!(a, b, "the markers are saved with the rest");
        let asked: Vec<u64> = (0..50_000).map(|_| next()).chain(held).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        f.may_hold_many(&asked, &mut a);
        saved.filter.may_hold_many(&asked, &mut b);
        assert_eq!(a, b);

        let e = Filter::load(&path, &[8u8; 16]).err().unwrap();
        assert!(e.contains("another ledger"), "{e}");
    }

    #[test]
    fn a_damaged_or_torn_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter");
        let id = [1u8; 16];
        let mut f = Filter::with_capacity(100);
        f.insert(&[1, 2, 3]);
        f.save(&path, &id, 3).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        flipped[HEADER + 100] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let e = Filter::load(&path, &id).err().unwrap();
        assert!(e.contains("checksum"), "{e}");

        std::fs::write(&path, &good[..good.len() - 1000]).unwrap();
        let e = Filter::load(&path, &id).err().unwrap();
        assert!(e.contains("not what its header says"), "{e}");

        let mut other = good.clone();
        other[..8].copy_from_slice(b"AGLBF001");
        std::fs::write(&path, &other).unwrap();
        let e = Filter::load(&path, &id).err().unwrap();
        assert!(e.contains("version"), "{e}");

        std::fs::write(&path, &good[..10]).unwrap();
        let e = Filter::load(&path, &id).err().unwrap();
        assert!(e.contains("header"), "{e}");

        std::fs::write(&path, &good).unwrap();
        assert!(Filter::load(&path, &id).unwrap().is_some());
    }
}
