//! The exemption journal: append-only JSON Lines in the state directory, fsynced before a grant
//! or revocation is acknowledged, so an acknowledged exemption survives `kill -9`.
//!
//! Replay rebuilds the exemptions from the entries in order. A last line without its newline is a
//! write the crash interrupted: it was never acknowledged, so it is reported and cut off. Any other
//! unreadable line stops the start with its line number, because skipping it could silently drop
//! an earlier grant. Compaction rewrites the live entries to a new file and renames it over the
//! old one, so a crash during compaction leaves one complete journal or the other.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Exemption, rfc3339};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one entry at a time, made for a write that costs an fsync"
)]
pub enum Entry {
    Grant {
        exemption: Exemption,
    },
    Revoke {
        id: String,
        #[serde(with = "rfc3339")]
        at: SystemTime,
        by: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open exemption journal {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "exemption journal {path}, line {line}: {message}; the journal is kept as it is — fix or remove that line by hand (it is evidence)"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What replay found besides the exemptions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    pub entries: usize,
    /// A torn last line (1-based) that was cut off.
    pub torn_line: Option<usize>,
}

pub struct Journal {
    file: File,
    path: PathBuf,
    entries: usize,
}

impl Journal {
    /// Open (or create) the journal and replay it.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Exemption>, Replay), JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let mut reader = BufReader::new(&file);
        let mut exemptions: Vec<Exemption> = Vec::new();
        let mut replay = Replay::default();
        let mut good_len: u64 = 0;
        let mut line_no = 0;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(open_err)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if !buf.ends_with(b"\n") {
                replay.torn_line = Some(line_no);
                break;
            }
            match serde_json::from_slice::<Entry>(&buf) {
                Ok(entry) => {
                    apply(&mut exemptions, entry);
                    replay.entries += 1;
                    good_len += n as u64;
                }
                Err(e) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: line_no,
                        message: e.to_string(),
                    });
                }
            }
        }
        drop(reader);
        if replay.torn_line.is_some() {
            file.set_len(good_len).map_err(open_err)?;
            file.sync_all().map_err(open_err)?;
        }
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
                entries: replay.entries,
            },
            exemptions,
            replay,
        ))
    }

    /// Append and fsync. Only after this returns may the caller acknowledge.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.entries += 1;
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Rewrite the journal as one grant per exemption still worth keeping.
    pub fn compact(&mut self, keep: &[Exemption]) -> io::Result<()> {
        let tmp = self.path.with_extension("compact");
        {
            let mut f = File::create(&tmp)?;
            for e in keep {
                let mut line = serde_json::to_vec(&Entry::Grant {
                    exemption: e.clone(),
                })
                .map_err(io::Error::other)?;
                line.push(b'\n');
                f.write_all(&line)?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)?;
        self.entries = keep.len();
        Ok(())
    }
}

fn apply(exemptions: &mut Vec<Exemption>, entry: Entry) {
    match entry {
        Entry::Grant { exemption } => {
            exemptions.retain(|e| e.id != exemption.id);
            exemptions.push(exemption);
        }
        Entry::Revoke { id, at, by } => {
            if let Some(e) = exemptions.iter_mut().find(|e| *e.id == *id) {
                e.revoked_at = Some(at);
                e.revoked_by = Some(by);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::exemptions::Subject;

    fn ex(id: &str) -> Exemption {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Exemption {
            id: Arc::from(id),
            subject: Subject::User("alice".into()),
            tools: vec!["claude-code".into()],
            workflows: None,
            starts_at: t0,
            expires_at: t0 + Duration::from_secs(3600),
            revoked_at: None,
            reason: "evaluate for the Q3 bake-off".into(),
            ticket: Some("IT-42".into()),
            granted_by: "bob".into(),
            created_at: Some(t0),
            revoked_by: None,
            request: None,
        }
    }

    #[test]
    fn grants_and_revocations_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exemptions.jsonl");
        let (mut j, list, _) = Journal::open(&path).unwrap();
        assert!(list.is_empty());
        j.append(&Entry::Grant { exemption: ex("a") }).unwrap();
        j.append(&Entry::Grant { exemption: ex("b") }).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        j.append(&Entry::Revoke {
            id: "a".into(),
            at,
            by: "bob".into(),
        })
        .unwrap();
        drop(j);
        let (_, list, replay) = Journal::open(&path).unwrap();
        assert_eq!(
            replay,
            Replay {
                entries: 3,
                torn_line: None
            }
        );
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].revoked_at, Some(at));
        assert_eq!(list[1], ex("b"));
    }

    #[test]
    fn a_torn_last_line_is_reported_and_cut_without_losing_earlier_grants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exemptions.jsonl");
        let (mut j, _, _) = Journal::open(&path).unwrap();
        j.append(&Entry::Grant { exemption: ex("a") }).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"grant\",\"exemption\":{\"id\":\"b\"")
            .unwrap();
        drop(f);
        let (mut j, list, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.torn_line, Some(2));
        assert_eq!(list, vec![ex("a")]);
        j.append(&Entry::Grant { exemption: ex("c") }).unwrap();
        drop(j);
        let (_, list, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.torn_line, None);
        assert_eq!(
            list.iter().map(|e| &*e.id).collect::<Vec<_>>(),
            vec!["a", "c"]
        );
    }

    #[test]
    fn a_bad_line_in_the_middle_stops_the_start_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exemptions.jsonl");
        let (mut j, _, _) = Journal::open(&path).unwrap();
        j.append(&Entry::Grant { exemption: ex("a") }).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n").unwrap();
        drop(f);
        match Journal::open(&path) {
            Ok(_) => panic!("a corrupt journal must not open"),
            Err(e) => assert!(e.to_string().contains("line 2"), "{e}"),
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            2,
            "nothing is cut from a corrupt journal"
        );
    }

    #[test]
    fn compaction_keeps_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exemptions.jsonl");
        let (mut j, _, _) = Journal::open(&path).unwrap();
        for id in ["a", "b", "c"] {
            j.append(&Entry::Grant { exemption: ex(id) }).unwrap();
        }
        j.compact(&[ex("b")]).unwrap();
        j.append(&Entry::Grant { exemption: ex("d") }).unwrap();
        drop(j);
        let (_, list, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.entries, 2);
        assert_eq!(
            list.iter().map(|e| &*e.id).collect::<Vec<_>>(),
            vec!["b", "d"]
        );
    }
}
