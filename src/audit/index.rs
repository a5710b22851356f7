//! A derived index beside each audit file, so that a selective query (a rare user, a request
//! id, a time far back) on a log of millions of records reads a few blocks instead of the file.
//!
//! The file is cut into blocks of [`BLOCK_RECORDS`] lines. For each block the index keeps its
//! byte range, the range of its `time` and `seq` values, and a Bloom filter of the values its
//! records hold in the fields a filter matches ([`INDEXED`]). A query skips a block whose
//! summary says no record in it can match, and reads the others. The index answers only "maybe
//! here" or "certainly not here": a false "maybe" costs a read, and a record is never taken
//! from the index, so the answer is the one a full scan gives.
//!
//! It is derived data, never evidence. It lives beside the log (`audit.jsonl.index`), is built
//! by the first query that needs it and extended as the live file grows, and is rebuilt when it
//! does not fit the file (another file at that path after rotation, a cut log, a damaged index).
//! `audit verify` never reads it. Someone who edits it can make a query miss records, as they
//! could by editing the log; `verify` reads the log itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::query::NONE;

/// Lines per block: about 700 KiB of log, read in a millisecond when a block may match.
pub const BLOCK_RECORDS: usize = 1024;
/// 16,384 bits for the ~1,000 distinct values of a block (ids, users, rules, …): with 5 probes,
/// about one false "maybe" in 700 for a value the block does not hold.
const BLOOM_BYTES: usize = 2048;
const BLOOM_MASK: u64 = (BLOOM_BYTES as u64 * 8) - 1;
const PROBES: u64 = 5;
/// The last bytes of a block, kept to check that the file still is the one indexed.
const TAIL: usize = 64;
const MAGIC: &[u8; 16] = b"aigate-index-v1\n";
const HEADER: usize = MAGIC.len() + 16;
const BLOCK_BYTES: usize = 8 * 8 + TAIL + BLOOM_BYTES;

/// The fields a block's Bloom filter holds: the exact-match filters whose value a call's
/// decision, progress and outcome records share (not `kind`, which differs between them and
/// the joined row).
pub const INDEXED: &[&str] = &[
    "id",
    "action",
    "tool",
    "user",
    "workflow",
    "rule",
    "reason",
    "vendor",
    "exemption",
    "ai_host",
    "would_block",
];

/// One block's summary.
#[derive(Clone)]
pub struct Block {
    /// Byte range of its lines: `start` is the first byte of a line, `end` one past a newline.
    pub start: u64,
    pub end: u64,
    /// Milliseconds since the epoch; `i64::MAX`/`i64::MIN` when no line has a time.
    min_time: i64,
    max_time: i64,
    pub min_seq: u64,
    pub max_seq: u64,
    /// Holds an outcome whose identification was revised after the decision
    /// (`late_body_signal`), so its fields are not a copy of the decision's: never skipped,
    /// since the join of that call needs both records whatever they say.
    revised: bool,
    tail: Vec<u8>,
    bloom: Vec<u8>,
}

/// What a query asks of a block, computed once per query.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    /// Each term's bit positions: every term must be present.
    all: Vec<[u64; PROBES as usize]>,
    /// At least one of these must be present (a manager's reports); `None`: no such condition.
    any: Option<Vec<[u64; PROBES as usize]>>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

impl Probe {
    /// `terms`: `(field, value)` pairs that must all hold (fields outside [`INDEXED`] are left
    /// to the scan); `users`: one of them must be the record's user.
    pub fn new<'a>(
        terms: impl IntoIterator<Item = (&'a str, &'a str)>,
        users: Option<&std::collections::HashSet<String>>,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    ) -> Probe {
        Probe {
            all: terms
                .into_iter()
                .filter(|(f, _)| INDEXED.contains(f))
                .map(|(f, v)| bits(f, v))
                .collect(),
            // A long list of reports would say "maybe" for nearly every block anyway.
            any: users
                .filter(|u| u.len() <= 256)
                .map(|u| u.iter().map(|v| bits("user", v)).collect()),
            since_ms: since.map(millis),
            // Records carry milliseconds; a bound inside a millisecond rounds up.
            until_ms: until.map(|t| millis(t) + 1),
        }
    }

    /// Whether the probe can skip anything: a query without conditions reads every block.
    pub fn selective(&self) -> bool {
        !self.all.is_empty()
            || self.any.is_some()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
    }
}

impl Block {
    /// Whether a record in this block may match: false only when none can.
    pub fn may_hold(&self, p: &Probe) -> bool {
        if self.revised {
            return true;
        }
        let has = |b: &[u64; PROBES as usize]| {
            b.iter()
                .all(|bit| self.bloom[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
        };
        p.all.iter().all(has)
            && p.any.as_ref().is_none_or(|any| any.iter().any(has))
            && p.since_ms.is_none_or(|s| self.max_time >= s)
            && p.until_ms.is_none_or(|u| self.min_time <= u)
    }

    fn insert(&mut self, field: &str, value: &str) {
        for bit in bits(field, value) {
            self.bloom[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }

    fn new(start: u64) -> Block {
        Block {
            start,
            end: start,
            min_time: i64::MAX,
            max_time: i64::MIN,
            min_seq: u64::MAX,
            max_seq: 0,
            revised: false,
            tail: Vec::new(),
            bloom: vec![0; BLOOM_BYTES],
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for n in [
            self.start,
            self.end,
            self.min_time as u64,
            self.max_time as u64,
            self.min_seq,
            self.max_seq,
            u64::from(self.revised),
            self.tail.len() as u64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let mut tail = [0u8; TAIL];
        tail[..self.tail.len()].copy_from_slice(&self.tail);
        out.extend_from_slice(&tail);
        out.extend_from_slice(&self.bloom);
    }

    fn decode(b: &[u8]) -> Option<Block> {
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let tail_len = usize::try_from(n(7)?).ok().filter(|l| *l <= TAIL)?;
        let block = Block {
            start: n(0)?,
            end: n(1)?,
            min_time: n(2)? as i64,
            max_time: n(3)? as i64,
            min_seq: n(4)?,
            max_seq: n(5)?,
            revised: n(6)? != 0,
            tail: b.get(64..64 + tail_len)?.to_vec(),
            bloom: b.get(64 + TAIL..BLOCK_BYTES)?.to_vec(),
        };
        (block.end > block.start && block.tail.len() as u64 <= block.end - block.start)
            .then_some(block)
    }
}

/// An audit file's blocks, in file order. Bytes past the last block are not indexed yet (the
/// live file's newest records, fewer than a block): a query reads them as they are.
#[derive(Clone, Default)]
pub struct Index {
    pub blocks: Vec<Block>,
}

impl Index {
    /// Bytes of the file the blocks cover.
    pub fn covered(&self) -> u64 {
        self.blocks.last().map_or(0, |b| b.end)
    }
}

/// Where a file's index lives: beside it, `audit.jsonl.index`.
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".index");
    log.with_file_name(name)
}

/// Indexes read or built in this process, so the admin API does not read an index file on
/// every page.
static CACHE: LazyLock<Mutex<HashMap<PathBuf, Arc<Index>>>> = LazyLock::new(Mutex::default);

/// The index of `log`, brought up to the file's current length: loaded (from this process's
/// cache or the index file), checked against the file, extended by the blocks written since,
/// and saved when it changed. An index that does not fit the file is rebuilt. When the index
/// file cannot be written (a reader without write access to the log directory) the index is
/// still built, in memory.
pub fn open(log: &Path) -> io::Result<Arc<Index>> {
    let mut file = File::open(log)?;
    let len = file.metadata()?.len();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let known = match cache.get(log) {
        Some(i) => Some(i.clone()),
        None => load(&index_path(log)).map(Arc::new),
    };
    let fits = known
        .as_ref()
        .is_some_and(|i| fits(&mut file, len, i).unwrap_or(false));
    let (mut index, saved_blocks) = match known {
        Some(i) if fits => {
            let n = i.blocks.len();
            (i, n)
        }
        _ => (Arc::new(Index::default()), 0),
    };
    if len > index.covered() {
        let more = build(&mut file, index.covered(), len)?;
        if !more.is_empty() {
            Arc::make_mut(&mut index).blocks.extend(more);
        }
    }
    if !fits || index.blocks.len() != saved_blocks {
        if let Err(e) = save(&index_path(log), &index, saved_blocks) {
            tracing::debug!(error = %e, log = %log.display(), "audit index not saved; kept in memory");
        }
    }
    cache.insert(log.to_path_buf(), index.clone());
    Ok(index)
}

/// Forget this process's copy of a file's index, so the next query reads its file (the
/// benchmark's "a fresh `aigate audit query`").
pub fn forget(log: &Path) {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).remove(log);
}

/// Whether the index describes this file: not longer than it, and the bytes at the end of its
/// first and last blocks are still there (each ends in the record's own hash).
fn fits(file: &mut File, len: u64, index: &Index) -> io::Result<bool> {
    if index.covered() > len {
        return Ok(false);
    }
    for b in [index.blocks.first(), index.blocks.last()]
        .into_iter()
        .flatten()
    {
        let mut buf = vec![0u8; b.tail.len()];
        file.seek(SeekFrom::Start(b.end - b.tail.len() as u64))?;
        file.read_exact(&mut buf)?;
        if buf != b.tail {
            return Ok(false);
        }
    }
    Ok(true)
}

fn load(path: &Path) -> Option<Index> {
    let bytes = std::fs::read(path).ok()?;
    let header = bytes.get(..HEADER)?;
    let sizes_fit = header.get(..MAGIC.len())? == MAGIC
        && header.get(MAGIC.len()..MAGIC.len() + 8)? == (BLOCK_RECORDS as u64).to_le_bytes()
        && header.get(MAGIC.len() + 8..HEADER)? == (BLOOM_BYTES as u64).to_le_bytes();
    if !sizes_fit {
        return None;
    }
    let mut blocks: Vec<Block> = Vec::new();
    // A block cut short (a save interrupted) is left out; the next query rebuilds it.
    for chunk in bytes[HEADER..].chunks_exact(BLOCK_BYTES) {
        let b = Block::decode(chunk)?;
        if blocks.last().map_or(0, |l| l.end) != b.start {
            return None;
        }
        blocks.push(b);
    }
    Some(Index { blocks })
}

/// Append the blocks past `saved` to the index file, or write it anew (beside it, then
/// renamed, so a reader never sees half a header).
fn save(path: &Path, index: &Index, saved: usize) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER + BLOCK_BYTES * (index.blocks.len() - saved));
    if saved > 0 {
        for b in &index.blocks[saved..] {
            b.encode(&mut bytes);
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        // The file must end where the saved blocks end, or the append would misplace them.
        if f.metadata()?.len() != (HEADER + BLOCK_BYTES * saved) as u64 {
            return save(path, index, 0);
        }
        return f.write_all(&bytes);
    }
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(BLOCK_RECORDS as u64).to_le_bytes());
    bytes.extend_from_slice(&(BLOOM_BYTES as u64).to_le_bytes());
    for b in &index.blocks {
        b.encode(&mut bytes);
    }
    let tmp = path.with_extension(format!("index.tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The fields one line contributes, borrowed from it: only what the index keeps is decoded.
#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow, default)]
    time: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    #[serde(borrow, default)]
    workflow: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rule: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    vendor: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exemption: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ai_host: Option<&'a RawValue>,
    #[serde(borrow, default)]
    would_block: Option<&'a RawValue>,
}

/// A field's text as `query::Entry::text` gives it: a string as it is, `true`/a number as JSON
/// writes it, null or absent as [`NONE`].
fn text(raw: Option<&RawValue>) -> std::borrow::Cow<'_, str> {
    match raw.map(RawValue::get) {
        None | Some("null") => NONE.into(),
        Some(s) if s.starts_with('"') => serde_json::from_str::<std::borrow::Cow<'_, str>>(s)
            .unwrap_or(std::borrow::Cow::Borrowed(NONE)),
        Some(s) => s.into(),
    }
}

/// Build the whole blocks of `[from, to)`; lines past the last whole block are left out.
fn build(file: &mut File, from: u64, to: u64) -> io::Result<Vec<Block>> {
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(to - from));
    let mut blocks = Vec::new();
    let mut block = Block::new(from);
    let mut lines = 0;
    let mut line = Vec::new();
    let mut pos = from;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        // A line not yet ended by its newline is being written: not indexed.
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        if let Ok(k) = serde_json::from_slice::<Keys<'_>>(&line) {
            add(&mut block, &k);
        }
        lines += 1;
        if lines == BLOCK_RECORDS {
            block.end = pos;
            let t = line.len().min(TAIL);
            block.tail = line[line.len() - t..].to_vec();
            blocks.push(std::mem::replace(&mut block, Block::new(pos)));
            lines = 0;
        }
    }
    Ok(blocks)
}

fn add(block: &mut Block, k: &Keys<'_>) {
    let values = [
        ("id", k.id),
        ("action", k.action),
        ("tool", k.tool),
        ("user", k.user),
        ("workflow", k.workflow),
        ("rule", k.rule),
        ("reason", k.reason),
        ("vendor", k.vendor),
        ("exemption", k.exemption),
        ("ai_host", k.ai_host),
        ("would_block", k.would_block),
    ];
    for (field, raw) in values {
        let t = text(raw);
        if field == "reason" && t == "late_body_signal" {
            block.revised = true;
        }
        block.insert(field, &t);
    }
    if let Some(seq) = k.seq {
        block.min_seq = block.min_seq.min(seq);
        block.max_seq = block.max_seq.max(seq);
    }
    if let Some(t) = k
        .time
        .and_then(|t| serde_json::from_str::<&str>(t.get()).ok())
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    {
        let ms = millis(t);
        block.min_time = block.min_time.min(ms);
        block.max_time = block.max_time.max(ms);
    }
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The Bloom filter's bit positions of `field = value`: FNV-1a, split into two halves for the
/// double hashing of Kirsch and Mitzenmacher. A fixed function, so the index file means the
/// same to every build.
fn bits(field: &str, value: &str) -> [u64; PROBES as usize] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in field.bytes().chain([0xff]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix, so that the two halves are independent enough.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
    let mut out = [0u64; PROBES as usize];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h1.wrapping_add((i as u64).wrapping_mul(h2)) & BLOOM_MASK;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(seq: u64, user: &str, time: &str) -> String {
        format!(
            "{{\"v\":1,\"seq\":{seq},\"time\":\"{time}\",\"id\":\"r{seq}\",\"kind\":\"request\",\"user\":\"{user}\",\"action\":\"allow\",\"reason\":\"rule_matched\",\"rule\":null}}\n"
        )
    }

    fn log(dir: &Path, n: u64, user_of: impl Fn(u64) -> String) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let text: String = (1..=n)
            .map(|s| {
                line(
                    s,
                    &user_of(s),
                    &format!("2026-11-{:02}T10:00:00.000Z", 1 + s / 1024),
                )
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_block_without_the_value_is_skipped_and_one_with_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), 3 * 1024 + 10, |s| {
            if s == 1500 {
                "rare".into()
            } else {
                format!("u{}", s % 50)
            }
        });
        let index = open(&path).unwrap();
        assert_eq!(
            index.blocks.len(),
            3,
            "the 10 lines past the last block are not indexed"
        );
        let probe = |user: &str| Probe::new([("user", user)], None, None, None);
        let hits: Vec<bool> = index
            .blocks
            .iter()
            .map(|b| b.may_hold(&probe("rare")))
            .collect();
        assert_eq!(hits, [false, true, false]);
        assert!(index.blocks.iter().all(|b| b.may_hold(&probe("u7"))));
        let none = Probe::new([("rule", NONE)], None, None, None);
        assert!(
            index.blocks.iter().all(|b| b.may_hold(&none)),
            "- is indexed for absent fields"
        );
        // Times: block 0 holds 2026-11-01 and -02 (seq 1024 is the 2nd), block 2 the 3rd and 4th.
        let since = humantime::parse_rfc3339("2026-11-04T00:00:00Z").unwrap();
        let far = Probe::new([], None, Some(since), None);
        let hits: Vec<bool> = index.blocks.iter().map(|b| b.may_hold(&far)).collect();
        assert_eq!(hits, [false, false, true]);
    }

    #[test]
    fn the_index_is_saved_extended_as_the_log_grows_and_rebuilt_for_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), 1024, |_| "a".into());
        assert_eq!(open(&path).unwrap().blocks.len(), 1);
        let saved = std::fs::read(index_path(&path)).unwrap();
        assert_eq!(saved.len(), HEADER + BLOCK_BYTES);
        assert_eq!(load(&index_path(&path)).unwrap().blocks.len(), 1);

        // The live file grows by a block: appended to the index.
        let more: String = (1025..=2048)
            .map(|s| line(s, "b", "2026-11-05T00:00:00.000Z"))
            .collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(more.as_bytes())
            .unwrap();
        let index = open(&path).unwrap();
        assert_eq!(index.blocks.len(), 2);
        assert_eq!(
            std::fs::read(index_path(&path)).unwrap().len(),
            HEADER + 2 * BLOCK_BYTES
        );
        assert!(!index.blocks[0].may_hold(&Probe::new([("user", "b")], None, None, None)));

        // Another file at the same path (rotation): the index does not fit, and is rebuilt,
        // also when only the index file is there (another process).
        log(dir.path(), 1024, |_| "c".into());
        CACHE.lock().unwrap().remove(&path);
        let index = open(&path).unwrap();
        assert_eq!(index.blocks.len(), 1);
        assert!(index.blocks[0].may_hold(&Probe::new([("user", "c")], None, None, None)));
        assert!(!index.blocks[0].may_hold(&Probe::new([("user", "a")], None, None, None)));

        // A damaged index file is rebuilt, not trusted.
        std::fs::write(index_path(&path), b"aigate-index-v1\ngarbage").unwrap();
        CACHE.lock().unwrap().remove(&path);
        assert_eq!(open(&path).unwrap().blocks.len(), 1);
    }
}
