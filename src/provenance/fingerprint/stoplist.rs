//! Fingerprints too common to mean anything: every fingerprint of known-clean code (licence
//! headers, `fn main() {`, the company's own pre-ban code, vendored dependencies). Built and
//! extended by `aigate provenance baseline PATH…`; the scan drops matches on them.
//!
//! On disk (`<state_dir>/provenance/stoplist`): the 8-byte magic `AIGSTOP2`, the fingerprint
//! parameters every hash in it was made with (seven little-endian `u32`: text k, w, code k, w,
//! refs, the two distinct-symbol floors; all zero when unknown), then the keyed hashes as
//! little-endian `u64`, sorted and unique. Keyed, like the ledger, so the file says nothing about
//! the code it came from without the key. `AIGSTOP1` files (no parameters) still load.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Params;

const MAGIC: &[u8; 8] = b"AIGSTOP2";
/// Before the parameters were recorded (the code channel's window was 8 and its floor 7).
const MAGIC_V1: &[u8; 8] = b"AIGSTOP1";
const PARAMS_LEN: usize = 7 * 4;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StopList {
    sorted: Vec<u64>,
    /// `index[b]..index[b + 1]` is where hashes whose top `bits` bits are `b` sit in `sorted`:
    /// keyed hashes are uniform, so a bucket holds about one, and a scan's lookup (one per
    /// fingerprint of every file) is one short search instead of twenty steps over megabytes.
    index: Vec<u32>,
    bits: u32,
    /// What every hash in it was fingerprinted with; `None` for an older file or a mix. A
    /// release that fingerprints differently computes hashes the list lacks, so baselined code
    /// can be found again until the list is rebuilt.
    built_with: Option<Params>,
}

#[derive(Debug, thiserror::Error)]
pub enum StopListError {
    #[error("cannot read the stop-list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not an aigate stop-list (bad header or length); remove it and rebuild it with `aigate provenance baseline PATH…`"
    )]
    Invalid { path: PathBuf },
    #[error("cannot write the stop-list {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StopList {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("provenance").join("stoplist")
    }

    pub fn from_hashes(hashes: impl IntoIterator<Item = u64>) -> StopList {
        let mut sorted: Vec<u64> = hashes.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self::indexed(sorted)
    }

    fn indexed(sorted: Vec<u64>) -> StopList {
        let bits = (usize::BITS - sorted.len().leading_zeros()).clamp(1, 24);
        let buckets = 1usize << bits;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut at = 0usize;
        for b in 0..buckets {
            while at < sorted.len() && ((sorted[at] >> (64 - bits)) as usize) < b {
                at += 1;
            }
            index.push(at as u32);
        }
        index.push(sorted.len() as u32);
        StopList {
            sorted,
            index,
            bits,
            built_with: None,
        }
    }

    /// Marks what is added next as fingerprinted with `params`. A list that already holds
    /// hashes of other parameters (an earlier release's) stays marked as a mix: only a rebuild
    /// from nothing makes it whole again.
    pub fn adding_with(&mut self, params: Params) {
        if self.sorted.is_empty() {
            self.built_with = Some(params);
        } else if self.built_with != Some(params) {
            self.built_with = None;
        }
    }

    /// Whether every hash in the list was made with `params` (an empty list is).
    pub fn is_of(&self, params: Params) -> bool {
        self.sorted.is_empty() || self.built_with == Some(params)
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn contains(&self, hash: u64) -> bool {
        if self.sorted.is_empty() {
            return false;
        }
        let b = (hash >> (64 - self.bits)) as usize;
        let (Some(&lo), Some(&hi)) = (self.index.get(b), self.index.get(b + 1)) else {
            return false;
        };
        self.sorted
            .get(lo as usize..hi as usize)
            .is_some_and(|s| s.binary_search(&hash).is_ok())
    }

    /// Adds hashes; returns how many were new.
    pub fn extend(&mut self, hashes: impl IntoIterator<Item = u64>) -> usize {
        let before = self.sorted.len();
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.extend(hashes);
        sorted.sort_unstable();
        sorted.dedup();
        let built_with = self.built_with;
        *self = Self::indexed(sorted);
        self.built_with = built_with;
        self.sorted.len() - before
    }

    /// This list plus the shipped licence headers ([`super::boilerplate`]): what a scan drops.
    pub fn with_boilerplate(mut self, fp: &super::Fingerprinter) -> StopList {
        self.extend(super::boilerplate::hashes(fp));
        self
    }

    /// A missing file is an empty stop-list (nothing baselined yet).
    pub fn load(path: &Path) -> Result<StopList, StopListError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StopList::default()),
            Err(source) => {
                return Err(StopListError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let invalid = || StopListError::Invalid {
            path: path.to_path_buf(),
        };
        let (built_with, body) = if let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) {
            let (head, body) = rest.split_at_checked(PARAMS_LEN).ok_or_else(invalid)?;
            let v: Vec<u32> = head
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let params = (v.iter().any(|&x| x != 0)).then(|| Params {
                text_k: v[0] as usize,
                text_w: v[1] as usize,
                code_k: v[2] as usize,
                code_w: v[3] as usize,
                code_refs: v[4] == 1,
                text_min_distinct: v[5],
                code_min_distinct: v[6],
            });
            (params, body)
        } else {
            (
                None,
                bytes
                    .strip_prefix(MAGIC_V1.as_slice())
                    .ok_or_else(invalid)?,
            )
        };
        if body.len() % 8 != 0 {
            return Err(invalid());
        }
        let sorted: Vec<u64> = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if sorted.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid());
        }
        let mut list = Self::indexed(sorted);
        list.built_with = built_with;
        Ok(list)
    }

    /// Written to a temporary file and renamed, so a crash leaves the old list or the new one.
    pub fn save(&self, path: &Path) -> Result<(), StopListError> {
        let write_err = |source| StopListError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let tmp = path.with_extension("tmp");
        let mut buf = Vec::with_capacity(8 + PARAMS_LEN + self.sorted.len() * 8);
        buf.extend_from_slice(MAGIC);
        let head = self.built_with.map_or([0; 7], |p| {
            [
                p.text_k as u32,
                p.text_w as u32,
                p.code_k as u32,
                p.code_w as u32,
                u32::from(p.code_refs),
                p.text_min_distinct,
                p.code_min_distinct,
            ]
        });
        for v in head {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        for h in &self.sorted {
            buf.extend_from_slice(&h.to_le_bytes());
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(write_err)?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}
