//! `aigate audit verify`: a log file, or a directory holding a rotated series, checked for
//! edits (the hash chain), for completeness (the chain across files, `chain_gap` and moved-file
//! records, the checkpoint kept outside the log) and for forgery (checkpoint signatures,
//! against a pinned key).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::chain::{self, ChainError, ChainHead, ChainProblem, GENESIS};
use super::checkpoint::{self, PublicKey, Saved, Signature};
use super::record::StoredRecord;
use crate::policy::Reason;

#[derive(Debug, Default)]
pub struct Options {
    /// The pinned public key: every checkpoint must be signed by it, and the log must end on a
    /// checkpoint (or `live`).
    pub key: Option<PublicKey>,
    /// The checkpoint kept outside the log; default: the state file beside the log.
    pub checkpoint_file: Option<PathBuf>,
    /// The log is being written: records after the last checkpoint are a note, not a problem.
    pub live: bool,
    /// Another copy of the newest checkpoint, and where it came from (the PostgreSQL table):
    /// the newer of it and the state file is what the log must reach.
    pub elsewhere: Option<(String, Saved)>,
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub file: String,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub files: Vec<FileReport>,
    pub records: u64,
    pub checkpoints: u64,
    pub signatures_valid: u64,
    /// The key signatures were checked against, and whether it was pinned.
    pub key_id: Option<String>,
    pub key_pinned: bool,
    pub last_seq: u64,
    /// The last seq a signed checkpoint covers.
    pub last_checkpoint: Option<u64>,
    pub state_file: Option<String>,
    /// Every problem found, the first one first.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Just enough of a line to place a file in the series.
#[derive(serde::Deserialize)]
struct Head {
    seq: u64,
}

/// Verify `path`: a file, or every audit file in a directory (ordered by their first `seq`).
pub fn verify(path: &Path, opts: &Options) -> Result<Report, String> {
    let dir_mode = path.is_dir();
    let files = if dir_mode {
        series(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let state_path = opts.checkpoint_file.clone().or_else(|| {
        let candidate = if dir_mode {
            // `audit.000000001001.jsonl` belongs to `audit.jsonl`, whose state file is
            // `audit.checkpoint.json`: the series' checkpoint, even when the active file is gone.
            files.last().map(|f| {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
                let stem = match stem.rsplit_once('.') {
                    Some((base, digits))
                        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        base
                    }
                    _ => stem,
                };
                f.with_file_name(format!("{stem}.checkpoint.json"))
            })
        } else {
            Some(checkpoint::state_path(path))
        };
        candidate.filter(|p| p.exists())
    });
    let saved = match &state_path {
        Some(p) => checkpoint::load_saved(p)?,
        None => None,
    };
    let mut state_label = state_path.as_ref().map(|p| p.display().to_string());
    let saved = match (saved, &opts.elsewhere) {
        (Some(s), Some((_, e))) if s.record_seq >= e.record_seq => Some(s),
        (_, Some((label, e))) => {
            state_label = Some(label.clone());
            Some(e.clone())
        }
        (s, None) => s,
    };
    let mut w = Walk {
        opts,
        dir_mode,
        report: Report {
            ok: false,
            files: Vec::new(),
            records: 0,
            checkpoints: 0,
            signatures_valid: 0,
            key_id: opts.key.map(|k| k.id()),
            key_pinned: opts.key.is_some(),
            last_seq: 0,
            last_checkpoint: None,
            state_file: state_label,
            problems: Vec::new(),
            notes: Vec::new(),
        },
        head: None,
        last_checkpoint_record: 0,
        saved: saved.as_ref(),
        saved_seen: false,
    };
    for file in &files {
        if !w.file(file)? {
            break;
        }
    }
    if w.report.problems.is_empty() {
        w.finish();
    }
    w.report.ok = w.report.problems.is_empty();
    Ok(w.report)
}

/// The audit files in a directory: every `*.jsonl` whose first line is a chained record (so
/// the exemption journal beside them is left out), in chain order.
fn series(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        let mut line = Vec::new();
        let _ = BufReader::new(f).read_until(b'\n', &mut line);
        if let Ok(stored) = serde_json::from_slice::<StoredRecord>(&line) {
            files.push((stored.seq, p));
        } else if let Ok(h) = serde_json::from_slice::<Head>(&line) {
            files.push((h.seq, p));
        }
    }
    if files.is_empty() {
        return Err(format!(
            "{}: no audit log files (*.jsonl with chained records) in this directory",
            dir.display()
        ));
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

struct Walk<'a> {
    opts: &'a Options,
    dir_mode: bool,
    report: Report,
    /// The chain so far; `None` before the first record.
    head: Option<ChainHead>,
    last_checkpoint_record: u64,
    saved: Option<&'a Saved>,
    saved_seen: bool,
}

impl Walk<'_> {
    /// Check one file; false when a problem stops the walk.
    fn file(&mut self, path: &Path) -> Result<bool, String> {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let name = path.display().to_string();
        let mut fr = FileReport {
            file: name.clone(),
            records: 0,
            first_seq: None,
            last_seq: None,
        };
        let mut lines = BufReader::new(f).split(b'\n').enumerate().peekable();
        let mut go_on = true;
        while let Some((i, line)) = lines.next() {
            let n = i + 1;
            let last_line = lines.peek().is_none();
            let line = line.map_err(|e| format!("cannot read {name}: {e}"))?;
            if line.is_empty() && last_line {
                break;
            }
            let unreadable = ChainError {
                line: n,
                problem: ChainProblem::Unreadable { last_line },
            };
            let Ok(text) = std::str::from_utf8(&line) else {
                self.problem(&name, &unreadable.to_string());
                go_on = false;
                break;
            };
            let stored: Option<StoredRecord> = serde_json::from_str(text).ok();
            let head = match (&self.head, &stored) {
                (Some(h), _) => h.clone(),
                (None, Some(s)) => self.start(&name, s),
                (None, None) => ChainHead::default(),
            };
            let checked = chain::check_line(&head, text);
            let Some(stored) = stored.filter(|_| {
                !matches!(
                    checked,
                    Err(ChainProblem::Unreadable { .. }) | Err(ChainProblem::Edited)
                )
            }) else {
                let problem = match checked {
                    Err(p @ ChainProblem::Edited) => p,
                    _ => ChainProblem::Unreadable { last_line },
                };
                self.problem(&name, &ChainError { line: n, problem }.to_string());
                go_on = false;
                break;
            };
            let hash = stored.hash.clone();
            match (checked, stored.record.reason) {
                (_, Reason::ChainGap) => {
                    // aigate found records missing at start and said so: a problem, but the
                    // chain goes on from the checkpoint it names, so keep checking.
                    let gap = stored.record.admin.as_ref().and_then(|a| a.get("gap"));
                    let field = |k: &str| gap.and_then(|g| g.get(k)).cloned().unwrap_or_default();
                    self.problem(
                        &name,
                        &format!(
                            "line {n}: chain_gap: aigate found at start that records {}..{} were missing ({})",
                            field("from"),
                            field("to"),
                            field("cause").as_str().unwrap_or("?").replace('_', " ")
                        ),
                    );
                }
                (Err(ChainProblem::Deleted { expected, found }), _)
                    if fr.records == 0 && self.dir_mode =>
                {
                    // The first record of a file does not follow the previous file's last.
                    let previous = file_start(&stored).and_then(|f| {
                        f.get("previous")
                            .and_then(|p| p.as_str().map(str::to_string))
                    });
                    let missing = match previous {
                        Some(p) => format!("the file {p} is missing"),
                        None => format!(
                            "a file is missing (it would be named {})",
                            super::writer::rotated_name(path, expected)
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ),
                    };
                    self.problem(
                        &name,
                        &format!(
                            "line {n}: records {expected}..{} are not in this directory: {missing}",
                            found - 1
                        ),
                    );
                    go_on = false;
                    break;
                }
                (Err(ChainProblem::Deleted { expected, found }), _) => {
                    let next = lines
                        .peek()
                        .and_then(|(_, l)| l.as_ref().ok())
                        .and_then(|l| serde_json::from_slice::<Head>(l).ok())
                        .map(|h| h.seq);
                    let problem = if next == Some(expected) {
                        ChainProblem::Reordered { expected, found }
                    } else {
                        ChainProblem::Deleted { expected, found }
                    };
                    self.problem(&name, &ChainError { line: n, problem }.to_string());
                    go_on = false;
                    break;
                }
                (Err(problem), _) => {
                    self.problem(&name, &ChainError { line: n, problem }.to_string());
                    go_on = false;
                    break;
                }
                (Ok(_), Reason::AuditCheckpoint) => {
                    if !self.checkpoint(&name, n, &stored, &head) {
                        go_on = false;
                        break;
                    }
                }
                (Ok(_), _) => {}
            }
            if let Some(saved) = self.saved.filter(|s| s.record_seq == stored.seq) {
                self.saved_seen = true;
                if hash != saved.record_hash {
                    self.problem(
                        &name,
                        &format!(
                            "line {n}: record seq {} is not the checkpoint kept in {}: the log was replaced",
                            stored.seq,
                            self.report.state_file.as_deref().unwrap_or("the state file")
                        ),
                    );
                    go_on = false;
                    break;
                }
            }
            fr.records += 1;
            fr.first_seq.get_or_insert(stored.seq);
            fr.last_seq = Some(stored.seq);
            self.report.records += 1;
            self.report.last_seq = stored.seq;
            self.head = Some(ChainHead {
                records: head.records + 1,
                last_seq: stored.seq,
                last_hash: hash,
            });
        }
        self.report.files.push(fr);
        Ok(go_on)
    }

    /// Where the chain starts: seq 1 after the genesis hash, or, for a file that continues an
    /// earlier one (rotation), from what its first record links to.
    fn start(&mut self, name: &str, first: &StoredRecord) -> ChainHead {
        if first.seq == 1 && first.prev == GENESIS {
            return ChainHead::default();
        }
        let continues = ChainHead {
            records: 0,
            last_seq: first.seq - 1,
            last_hash: first.prev.clone(),
        };
        match (file_start(first), first.record.reason) {
            (_, Reason::ChainGap) => ChainHead::default(),
            (Some(f), _) => {
                let previous = f
                    .get("previous")
                    .and_then(|p| p.as_str())
                    .unwrap_or("a file moved or deleted while aigate ran");
                let moved = f.get("cause").and_then(|c| c.as_str()) == Some("moved_or_deleted");
                if moved {
                    self.problem(
                        name,
                        &format!(
                            "line 1: records {}..{} were in a file moved or deleted while aigate was writing it (aigate noticed and started this file)",
                            f.get("previous_first_seq").cloned().unwrap_or_default(),
                            first.seq - 1
                        ),
                    );
                } else if self.dir_mode {
                    self.problem(
                        name,
                        &format!(
                            "line 1: records 1..{} are not in this directory: the series starts after {previous}",
                            first.seq - 1
                        ),
                    );
                } else {
                    self.report.notes.push(format!(
                        "{name} continues {previous} (records up to seq {}), not checked here: verify the directory to check the series",
                        first.seq - 1
                    ));
                }
                continues
            }
            _ => ChainHead::default(),
        }
    }

    /// Check a checkpoint record against the chain before it and its signature.
    fn checkpoint(
        &mut self,
        name: &str,
        n: usize,
        stored: &StoredRecord,
        before: &ChainHead,
    ) -> bool {
        let Some(cp) = checkpoint::of_record(&stored.record) else {
            self.problem(
                name,
                &format!("line {n}: checkpoint record without a readable checkpoint"),
            );
            return false;
        };
        if cp.seq != before.last_seq || cp.hash != before.last_hash {
            self.problem(
                name,
                &format!(
                    "line {n}: checkpoint claims seq {} but follows seq {} with another hash: forged",
                    cp.seq, before.last_seq
                ),
            );
            return false;
        }
        self.report.checkpoints += 1;
        match cp.check(self.opts.key.as_ref(), stored.record.replica.as_deref()) {
            Signature::Valid => {
                self.report.signatures_valid += 1;
                if self.report.key_id.is_none() {
                    self.report.key_id = Some(cp.key_id.clone());
                } else if !self.report.key_pinned
                    && self.report.key_id.as_deref() != Some(&cp.key_id)
                {
                    self.report.notes.push(format!(
                        "{name} line {n}: checkpoints are signed by key {} from here on (was {}); pin the key with --key",
                        cp.key_id,
                        self.report.key_id.as_deref().unwrap_or_default()
                    ));
                    self.report.key_id = Some(cp.key_id.clone());
                }
            }
            Signature::OtherKey => {
                self.problem(
                    name,
                    &format!(
                        "line {n}: checkpoint is signed by key {}, not by the pinned key {}: forged",
                        cp.key_id,
                        self.report.key_id.as_deref().unwrap_or_default()
                    ),
                );
                return false;
            }
            Signature::Invalid => {
                self.problem(
                    name,
                    &format!("line {n}: checkpoint signature does not verify: forged or edited"),
                );
                return false;
            }
        }
        self.report.last_checkpoint = Some(cp.seq);
        self.last_checkpoint_record = stored.seq;
        true
    }

    /// What only the end of the series can tell: a tail past the last checkpoint, and a
    /// checkpoint kept outside the log that the log does not reach.
    fn finish(&mut self) {
        let last = self.report.last_seq;
        if let Some(saved) = self.saved {
            let sig = saved
                .checkpoint
                .check(self.opts.key.as_ref(), saved.replica.as_deref());
            let state = self.report.state_file.clone().unwrap_or_default();
            if sig != Signature::Valid {
                self.report.problems.push(format!(
                    "{state}: the checkpoint kept outside the log does not verify{}",
                    if sig == Signature::OtherKey {
                        " with the pinned key"
                    } else {
                        ""
                    }
                ));
            } else if saved.record_seq > last {
                self.report.problems.push(format!(
                    "the log ends at seq {last} but checkpoint {} exists ({state}, signed {}): records {}..{} are missing (the log was cut or a file removed)",
                    saved.checkpoint.seq,
                    saved.checkpoint.time,
                    last + 1,
                    saved.record_seq
                ));
            } else if !self.saved_seen {
                self.report.notes.push(format!(
                    "the checkpoint in {state} (seq {}) is before the files checked",
                    saved.checkpoint.seq
                ));
            }
        }
        if last > self.last_checkpoint_record {
            let what = if self.last_checkpoint_record == 0 {
                format!("no record of the {last} is covered by a signed checkpoint")
            } else {
                format!(
                    "records {}..{last} after the last checkpoint (seq {}) are not covered by a signature",
                    self.last_checkpoint_record + 1,
                    self.last_checkpoint_record
                )
            };
            let why = "appended after aigate's last checkpoint (forged?), or written by a running aigate since its last one (verify again after audit.checkpoint_interval, or pass --live)";
            if self.opts.key.is_some() && !self.opts.live {
                self.report.problems.push(format!("{what}: {why}"));
            } else {
                self.report.notes.push(format!("{what}: {why}"));
            }
        }
    }

    fn problem(&mut self, file: &str, what: &str) {
        self.report.problems.push(format!("{file}: {what}"));
    }
}

/// The `admin.file` of an `audit_file_start` record.
fn file_start(r: &StoredRecord) -> Option<&serde_json::Value> {
    if r.record.reason != Reason::AuditFileStart {
        return None;
    }
    r.record.admin.as_ref()?.get("file")
}
