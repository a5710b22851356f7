//! What a scan reads: files under directories (through `ignore`: `.gitignore` honoured,
//! binaries skipped), the added lines of a git revision range, every blob in a repository's
//! history, and the records of a JSON Lines dataset.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Where a document came from; shown in reports and used as its SARIF location.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Origin {
    File {
        path: String,
    },
    /// One record of a JSON Lines file: its 1-based line, and its `id` field if it has one.
    Record {
        path: String,
        line: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The lines a revision range adds to a file.
    GitDiff {
        path: String,
        range: String,
    },
    /// A blob somewhere in a repository's history.
    GitBlob {
        path: String,
        blob: String,
    },
}

impl Origin {
    pub fn path(&self) -> &str {
        match self {
            Origin::File { path }
            | Origin::Record { path, .. }
            | Origin::GitDiff { path, .. }
            | Origin::GitBlob { path, .. } => path,
        }
    }

    /// One line for a table.
    pub fn label(&self) -> String {
        match self {
            Origin::File { path } => path.clone(),
            Origin::Record { path, line, id } => match id {
                Some(id) => format!("{path}:{line} (id {id})"),
                None => format!("{path}:{line}"),
            },
            Origin::GitDiff { path, range } => format!("{path} ({range})"),
            Origin::GitBlob { path, blob } => {
                format!("{path} (blob {})", &blob[..blob.len().min(12)])
            }
        }
    }
}

#[derive(Clone)]
pub struct Document {
    pub origin: Origin,
    pub text: String,
    /// For a diff: the file's line number of each line of `text` (they need not be adjacent).
    pub line_map: Option<Vec<usize>>,
}

/// Files larger than this are skipped (and counted): generated bundles and data dumps, not code.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// How much was read, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tally {
    pub documents: u64,
    pub bytes: u64,
    /// Binary, oversized or unreadable files.
    pub skipped: u64,
    /// Documents identical to one read earlier in the scan: each gets that one's finding
    /// without being matched again (`repeats.rs`).
    pub copies: u64,
}

/// A text file's contents, or `None` for one a scan should not read as text (a NUL byte in its
/// first 8 KiB, as git decides).
fn as_text(bytes: Vec<u8>) -> Option<String> {
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return None;
    }
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Every text file under `paths`, in a stable order. Each file is read into one buffer kept
/// for the whole walk (handed to `each` as the document's text and taken back after), not a
/// fresh allocation a file: for a large file that was an `mmap`, page faults on every page and
/// an `munmap`.
pub fn files(
    paths: &[PathBuf],
    tally: &mut Tally,
    mut each: impl FnMut(&Document) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for root in paths {
        if !root.exists() {
            bail!("{}: no such file or directory", root.display());
        }
        let walk = ignore::WalkBuilder::new(root)
            .require_git(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .build();
        for entry in walk {
            let entry = entry.with_context(|| format!("walking {}", root.display()))?;
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let too_big = entry
                .metadata()
                .map(|m| m.len() > MAX_FILE_BYTES)
                .unwrap_or(true);
            let text = if too_big {
                None
            } else {
                buf.clear();
                let read = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf));
                read.ok().and_then(|_| as_text(std::mem::take(&mut buf)))
            };
            let Some(text) = text else {
                tally.skipped += 1;
                continue;
            };
            tally.documents += 1;
            tally.bytes += text.len() as u64;
            let doc = Document {
                origin: Origin::File {
                    path: path.display().to_string(),
                },
                text,
                line_map: None,
            };
            each(&doc)?;
            // The buffer back (a lossy copy of a file that was not UTF-8 is a new one).
            let bytes = doc.text.into_bytes();
            if bytes.capacity() >= buf.capacity() {
                buf = bytes;
            }
        }
    }
    Ok(())
}

/// The records of JSON Lines files: `field` is a top-level key or a JSON pointer (`/a/b`).
/// Each record is passed with its raw line, so `--write-clean` can copy the ones kept byte for
/// byte.
pub fn jsonl(
    path: &Path,
    field: &str,
    tally: &mut Tally,
    mut each: impl FnMut(Document, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut n = 0usize;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        let raw = line.trim_end_matches(['\n', '\r']);
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(raw).with_context(|| {
            format!(
                "{}:{n}: not a JSON object; each line of a JSON Lines file must be one",
                path.display()
            )
        })?;
        let text = if field.starts_with('/') {
            value.pointer(field)
        } else {
            value.get(field)
        };
        let text = match text {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let id = value.get("id").and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        tally.documents += 1;
        tally.bytes += text.len() as u64;
        each(
            Document {
                origin: Origin::Record {
                    path: path.display().to_string(),
                    line: n,
                    id,
                },
                text,
                line_map: None,
            },
            raw,
        )?;
    }
    Ok(())
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(repo).stdin(Stdio::null());
    c
}

fn git_output(mut cmd: Command, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running git for {what} (is git installed?)"))?;
    if !out.status.success() {
        bail!(
            "git {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The lines `range` (`A..B`) adds, one document per file, each line mapped to its line in the
/// new file. Scanning only what a pull request adds keeps old findings out of its check.
pub fn git_diff(
    repo: &Path,
    range: &str,
    tally: &mut Tally,
    mut each: impl FnMut(Document) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if range.starts_with('-') {
        bail!("--git-rev-range {range:?}: write it as A..B");
    }
    let mut cmd = git(repo);
    cmd.args([
        "diff",
        "--unified=0",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--diff-filter=AM",
        range,
        "--",
    ]);
    let out = git_output(cmd, &format!("diff {range}"))?;
    let text = String::from_utf8_lossy(&out);
    let mut current: Option<(String, String, Vec<usize>)> = None;
    let mut next_line = 0usize;
    let mut flush =
        |cur: Option<(String, String, Vec<usize>)>, tally: &mut Tally| -> anyhow::Result<()> {
            if let Some((path, body, map)) = cur
                && !map.is_empty()
            {
                tally.documents += 1;
                tally.bytes += body.len() as u64;
                each(Document {
                    origin: Origin::GitDiff {
                        path,
                        range: range.to_string(),
                    },
                    text: body,
                    line_map: Some(map),
                })?;
            }
            Ok(())
        };
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            flush(current.take(), tally)?;
            let path = path.strip_prefix("b/").unwrap_or(path);
            current = (path != "/dev/null").then(|| (path.to_string(), String::new(), Vec::new()));
        } else if line.starts_with("diff --git ") {
            flush(current.take(), tally)?;
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            // @@ -a,b +c,d @@
            next_line = hunk
                .split_whitespace()
                .find_map(|t| t.strip_prefix('+'))
                .and_then(|t| t.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(added) = line.strip_prefix('+')
            && let Some((_, body, map)) = current.as_mut()
        {
            body.push_str(added);
            body.push('\n');
            map.push(next_line);
            next_line += 1;
        } else if line.starts_with("Binary files ") {
            tally.skipped += 1;
        }
    }
    flush(current.take(), tally)
}

/// Every text blob reachable from any ref, each once, named by a path it had.
pub fn git_history(
    repo: &Path,
    tally: &mut Tally,
    mut each: impl FnMut(Document) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cmd = git(repo);
    cmd.args(["rev-list", "--all", "--objects"]);
    let listing = git_output(cmd, "rev-list --all --objects")?;
    let mut blobs: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&listing).lines() {
        // Commits and the root tree have no path; trees and blobs do.
        if let Some((sha, path)) = line.split_once(' ')
            && seen.insert(sha.to_string())
        {
            blobs.push((sha.to_string(), path.to_string()));
        }
    }
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running git cat-file (is git installed?)")?;
    let mut stdin = child.stdin.take().context("git cat-file stdin")?;
    let stdout = child.stdout.take().context("git cat-file stdout")?;
    let names: Vec<String> = blobs.iter().map(|(sha, _)| sha.clone()).collect();
    // Feed the names from another thread: git's output would fill its pipe while we write.
    let feeder = std::thread::spawn(move || {
        for sha in names {
            if writeln!(stdin, "{sha}").is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(stdout);
    let mut header = String::new();
    for (sha, path) in &blobs {
        header.clear();
        reader
            .read_line(&mut header)
            .context("reading git cat-file")?;
        let mut parts = header.split_whitespace();
        let (_, kind, size) = (parts.next(), parts.next(), parts.next());
        let Some(size) = size.and_then(|s| s.parse::<u64>().ok()) else {
            continue; // "missing"
        };
        let mut content = Vec::with_capacity(size as usize);
        (&mut reader)
            .take(size + 1) // and the newline after it
            .read_to_end(&mut content)
            .context("reading git cat-file")?;
        content.truncate(size as usize);
        if kind != Some("blob") {
            continue;
        }
        let text = if size > MAX_FILE_BYTES {
            None
        } else {
            as_text(content)
        };
        let Some(text) = text else {
            tally.skipped += 1;
            continue;
        };
        tally.documents += 1;
        tally.bytes += text.len() as u64;
        each(Document {
            origin: Origin::GitBlob {
                path: path.clone(),
                blob: sha.clone(),
            },
            text,
            line_map: None,
        })?;
    }
    let _ = feeder.join();
    let _ = child.wait();
    Ok(())
}

/// Line ranges of a diff document (1-based lines of its text) as lines of the file.
pub fn remap(ranges: &[(usize, usize)], map: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(a, b) in ranges {
        for l in a..=b {
            let Some(&file_line) = map.get(l.wrapping_sub(1)) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if file_line == last.1 + 1 => last.1 = file_line,
                _ => out.push((file_line, file_line)),
            }
        }
    }
    out
}
