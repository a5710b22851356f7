//! The files of a rotated log: `audit.jsonl` and, beside it, `audit.000000001001.jsonl`, … named
//! by the `seq` of their first record (writer/evidence.rs `rotated_name`), so the names sort in
//! chain order. Readers that follow the chain past a rotation (the PostgreSQL shipper, the
//! start-up `outcome_lost` scan) find the older files here.

use std::path::{Path, PathBuf};

/// The rotated files of the log at `active`, with the first seq their names give, oldest
/// first. Files that only look similar (another stem, not 12 digits) are not among them.
pub fn rotated_files(active: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(stem)) = (active.parent(), active.file_stem()) else {
        return Vec::new();
    };
    let stem = stem.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let middle = name.strip_prefix(&*stem)?.strip_prefix('.')?;
            let (digits, _ext) = middle.split_once('.')?;
            let first = digits.parse::<u64>().ok().filter(|_| digits.len() == 12)?;
            Some((first, e.path()))
        })
        .collect();
    files.sort();
    files
}
