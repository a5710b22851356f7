//! `aigate audit query`: filter a log for a reviewer, as a table or JSON lines.

use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime};

use super::record::{Kind, StoredRecord};
use crate::policy::Action;

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub action: Option<Action>,
    pub kind: Option<Kind>,
    pub tool: Option<String>,
    pub user: Option<String>,
    pub workflow: Option<String>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn since_ago(mut self, ago: Option<Duration>) -> Filter {
        self.since = ago.map(|d| SystemTime::now() - d);
        self
    }

    pub fn accepts(&self, s: &StoredRecord) -> bool {
        let r = &s.record;
        self.action.is_none_or(|a| a == r.action)
            && self.kind.is_none_or(|k| k == r.kind)
            && self
                .tool
                .as_deref()
                .is_none_or(|t| r.tool.as_deref() == Some(t))
            && self.user.as_deref().is_none_or(|u| &*r.user == u)
            && self
                .workflow
                .as_deref()
                .is_none_or(|w| r.workflow.as_deref() == Some(w))
            && self
                .since
                .is_none_or(|since| humantime::parse_rfc3339(&r.time).is_ok_and(|t| t >= since))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Stream matching records to `out`; returns how many matched and how many lines were skipped
/// because they are not records.
pub fn run(
    input: impl BufRead,
    filter: &Filter,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<(usize, usize)> {
    let mut matched = 0;
    let mut skipped = 0;
    if format == Format::Table {
        writeln!(
            out,
            "{:<24} {:<7} {:<8} {:<18} {:<14} {:<16} {:<14} {:<24} {:<20} {:>6}",
            "TIME",
            "KIND",
            "ACTION",
            "REASON",
            "USER",
            "TOOL",
            "WORKFLOW",
            "HOST",
            "RULE",
            "STATUS"
        )?;
    }
    for line in input.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let Ok(stored) = serde_json::from_str::<StoredRecord>(&line) else {
            skipped += 1;
            continue;
        };
        if !filter.accepts(&stored) {
            continue;
        }
        matched += 1;
        match format {
            Format::Json => writeln!(out, "{line}")?,
            Format::Table => {
                let r = &stored.record;
                let kind = match r.kind {
                    Kind::Request => "request",
                    Kind::Tunnel => "tunnel",
                    Kind::Admin => "admin",
                };
                writeln!(
                    out,
                    "{:<24} {:<7} {:<8} {:<18} {:<14} {:<16} {:<14} {:<24} {:<20} {:>6}",
                    r.time,
                    kind,
                    r.action.as_str(),
                    r.reason.as_str(),
                    &*r.user,
                    r.tool.as_deref().unwrap_or("-"),
                    r.workflow.as_deref().unwrap_or("-"),
                    r.host,
                    r.rule.as_deref().unwrap_or("-"),
                    r.status.map_or("-".to_string(), |s| s.to_string()),
                )?;
            }
        }
    }
    Ok((matched, skipped))
}

/// A page of records, newest first, read from the end of the file backwards so a large log is
/// never loaded whole. `before_seq` is the cursor: only records with a smaller `seq`.
pub fn newest_first(
    path: &std::path::Path,
    filter: &Filter,
    before_seq: Option<u64>,
    limit: usize,
) -> std::io::Result<(Vec<StoredRecord>, Option<u64>)> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path)?;
    let mut pos = f.metadata()?.len();
    let mut carry: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while pos > 0 && out.len() < limit {
        let start = pos.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        // The first piece may be the tail of a line that starts in the previous chunk.
        carry = if start > 0 {
            lines.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for line in lines.iter().rev() {
            if line.is_empty() {
                continue;
            }
            let Ok(stored) = serde_json::from_slice::<StoredRecord>(line) else {
                continue;
            };
            if before_seq.is_some_and(|c| stored.seq >= c) || !filter.accepts(&stored) {
                continue;
            }
            out.push(stored);
            if out.len() == limit {
                break;
            }
        }
        pos = start;
    }
    let next = if out.len() == limit {
        out.last().map(|r| r.seq)
    } else {
        None
    };
    Ok((out, next))
}
