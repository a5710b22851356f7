//! The hash chain that makes the audit log tamper-evident.
//!
//! A stored line is `{"v":1,"seq":N,"prev":"<hex>",…record…,"hash":"<hex>"}` where `hash` is the
//! SHA-256 of the exact bytes of the line without its `,"hash":"…"` suffix (closed with `}`), and
//! `prev` is the `hash` of the line before. `seq` counts from 1. So an edited line fails its own
//! hash, a deleted line leaves a gap in `seq`, and swapped lines run `seq` backwards; each is
//! reported with its line number.

use std::fmt;
use std::io::BufRead;

use sha2::{Digest, Sha256};

use super::record::{AuditRecord, SCHEMA_VERSION, StoredRecord};

/// The `prev` of the first record in a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_SUFFIX_START: &str = ",\"hash\":\"";

/// A SHA-256 in hex.
const HASH_HEX: usize = 64;

/// Serialize `record` as line number `seq` after `prev`, append it (with `\n`) to `out`, and
/// return its hash.
pub fn seal(
    record: &AuditRecord,
    seq: u64,
    prev: &str,
    out: &mut Vec<u8>,
) -> Result<String, serde_json::Error> {
    let mut body = Vec::new();
    serialize(record, &mut body)?;
    let mut hash = prev.to_string();
    seal_body(&body, seq, &mut hash, out);
    Ok(hash)
}

/// The record's part of its line: a JSON object that does not depend on its place in the
/// chain, so it can be built before the chain is locked.
pub fn serialize(record: &AuditRecord, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.clear();
    record.write_json(out)
}

/// Append the line for `body` (from `serialize`) as number `seq`. `hash` holds the previous
/// line's hash on entry and this line's on return.
pub fn seal_body(body: &[u8], seq: u64, hash: &mut String, out: &mut Vec<u8>) {
    let start = out.len();
    // `{"v":1,"seq":N,"prev":"<hash>"`, put together by hand: `write!` went through the
    // formatting machinery, about 0.8k instructions a record (docs/performance.md, 2026-12-05).
    out.reserve(body.len() + 2 * HASH_HEX + 48);
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(itoa::Buffer::new().format(SCHEMA_VERSION).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.push(b'"');
    // `body` is a JSON object: its opening brace becomes the comma after `prev`.
    out.push(b',');
    out.extend_from_slice(body.get(1..).unwrap_or_default());
    let digest = Sha256::digest(&out[start..]);
    let mut hex = [0u8; HASH_HEX];
    // 32 bytes always fit 64 hex digits, which are ASCII.
    let _ = hex::encode_to_slice(digest, &mut hex);
    hash.clear();
    hash.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    out.truncate(out.len() - 1);
    out.extend_from_slice(HASH_SUFFIX_START.as_bytes());
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}\n");
}

/// The hash a line claims, and the one its content has.
fn hashes(line: &str) -> Option<(&str, String)> {
    let without_close = line.strip_suffix("\"}")?;
    let at = without_close.rfind(HASH_SUFFIX_START)?;
    let claimed = &without_close[at + HASH_SUFFIX_START.len()..];
    if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(&line.as_bytes()[..at]);
    hasher.update(b"}");
    Some((claimed, hex::encode(hasher.finalize())))
}

/// What is wrong with a log, at which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    pub line: usize,
    pub problem: ChainProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Not a record at all (a torn write if it is the last line).
    Unreadable { last_line: bool },
    /// The content does not match the record's own hash.
    Edited,
    /// `seq` skips: records between were deleted.
    Deleted { expected: u64, found: u64 },
    /// `seq` goes backwards or repeats: records were reordered or duplicated.
    Reordered { expected: u64, found: u64 },
    /// `prev` does not match the line before, though `seq` follows on.
    BrokenLink,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.line;
        match &self.problem {
            ChainProblem::Unreadable { last_line: true } => write!(
                f,
                "line {n}: the last line is not a complete record: a torn write (the gateway stopped while writing); every record before it verifies"
            ),
            ChainProblem::Unreadable { last_line: false } => write!(
                f,
                "line {n}: not an audit record: the line was edited or inserted"
            ),
            ChainProblem::Edited => write!(
                f,
                "line {n}: record was edited: its content does not match its hash"
            ),
            ChainProblem::Deleted { expected, found } => write!(
                f,
                "line {n}: record seq {expected} is missing (found {found}): records were deleted"
            ),
            ChainProblem::Reordered { expected, found } => write!(
                f,
                "line {n}: record seq {found} where {expected} was expected: records were reordered or duplicated"
            ),
            ChainProblem::BrokenLink => write!(
                f,
                "line {n}: prev does not match the hash of line {}: a record was replaced",
                n.saturating_sub(1)
            ),
        }
    }
}

/// The tail of a valid log: how to continue the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub records: u64,
    pub last_seq: u64,
    pub last_hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            records: 0,
            last_seq: 0,
            last_hash: GENESIS.to_string(),
        }
    }
}

/// Check one line against the chain so far.
pub fn check_line(head: &ChainHead, line: &str) -> Result<(u64, String), ChainProblem> {
    let Some((claimed, actual)) = hashes(line) else {
        return Err(ChainProblem::Unreadable { last_line: false });
    };
    let stored: StoredRecord = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(_) => return Err(ChainProblem::Unreadable { last_line: false }),
    };
    if claimed != actual || stored.hash != claimed {
        return Err(ChainProblem::Edited);
    }
    let expected = head.last_seq + 1;
    if stored.seq > expected {
        return Err(ChainProblem::Deleted {
            expected,
            found: stored.seq,
        });
    }
    if stored.seq < expected {
        return Err(ChainProblem::Reordered {
            expected,
            found: stored.seq,
        });
    }
    if stored.prev != head.last_hash {
        return Err(ChainProblem::BrokenLink);
    }
    Ok((stored.seq, actual))
}

/// Verify a whole log. `Ok` carries the head, to continue writing.
pub fn verify(reader: impl BufRead) -> Result<ChainHead, ChainError> {
    let mut head = ChainHead::default();
    let mut lines = reader.split(b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line_no = i + 1;
        let line = line.map_err(|_| ChainError {
            line: line_no,
            problem: ChainProblem::Unreadable { last_line: false },
        })?;
        let last = lines.peek().is_none();
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t,
            Err(_) => {
                return Err(ChainError {
                    line: line_no,
                    problem: ChainProblem::Unreadable { last_line: last },
                });
            }
        };
        if text.is_empty() && last {
            break;
        }
        match check_line(&head, text) {
            Ok((seq, hash)) => {
                head.records += 1;
                head.last_seq = seq;
                head.last_hash = hash;
            }
            Err(ChainProblem::Unreadable { .. }) => {
                return Err(ChainError {
                    line: line_no,
                    problem: ChainProblem::Unreadable { last_line: last },
                });
            }
            Err(ChainProblem::Deleted { expected, found }) => {
                // A later record that comes back to the expected seq means a swap, not a gap.
                let next_seq = lines
                    .peek()
                    .and_then(|(_, l)| l.as_ref().ok())
                    .and_then(|l| seq_of(l));
                let problem = if next_seq == Some(expected) {
                    ChainProblem::Reordered { expected, found }
                } else {
                    ChainProblem::Deleted { expected, found }
                };
                return Err(ChainError {
                    line: line_no,
                    problem,
                });
            }
            Err(problem) => {
                return Err(ChainError {
                    line: line_no,
                    problem,
                });
            }
        }
    }
    Ok(head)
}

fn seq_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::record::Kind;

    fn log(n: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let rec = AuditRecord::new(
                format!("r{seq}"),
                Kind::Request,
                "127.0.0.1:1".into(),
                Arc::from("alice"),
                "api.anthropic.com".into(),
                443,
            );
            prev = seal(&rec, seq, &prev, &mut out).unwrap();
        }
        for l in String::from_utf8(out).unwrap().lines() {
            lines.push(l.to_string());
        }
        lines
    }

    fn check(lines: &[String]) -> Result<ChainHead, ChainError> {
        verify(format!("{}\n", lines.join("\n")).as_bytes())
    }

    #[test]
    fn intact_log_verifies() {
        let head = check(&log(5)).unwrap();
        assert_eq!((head.records, head.last_seq), (5, 5));
    }

    #[test]
    fn edit_delete_swap_are_named() {
        let mut edited = log(5);
        edited[2] = edited[2].replace("alice", "mallory");
        assert_eq!(
            check(&edited).unwrap_err(),
            ChainError {
                line: 3,
                problem: ChainProblem::Edited
            }
        );

        let mut deleted = log(5);
        deleted.remove(1);
        assert_eq!(
            check(&deleted).unwrap_err(),
            ChainError {
                line: 2,
                problem: ChainProblem::Deleted {
                    expected: 2,
                    found: 3
                }
            }
        );

        let mut swapped = log(5);
        swapped.swap(1, 2);
        assert_eq!(
            check(&swapped).unwrap_err(),
            ChainError {
                line: 2,
                problem: ChainProblem::Reordered {
                    expected: 2,
                    found: 3
                }
            }
        );
        let mut swapped_back = log(5);
        swapped_back.swap(3, 4);
        assert_eq!(check(&swapped_back).unwrap_err().line, 4);
    }

    /// The line's head, put together by hand, is what `format!` wrote before.
    #[test]
    fn a_line_starts_as_it_always_did() {
        for seq in [1, 9, 10, 12_345, u64::MAX] {
            let mut hash = GENESIS.to_string();
            let mut out = b"earlier lines\n".to_vec();
            seal_body(br#"{"id":"x"}"#, seq, &mut hash, &mut out);
            let line = std::str::from_utf8(&out[14..]).unwrap();
            let head = format!(
                "{{\"v\":{SCHEMA_VERSION},\"seq\":{seq},\"prev\":\"{GENESIS}\",\"id\":\"x\""
            );
            assert_eq!(line, format!("{head},\"hash\":\"{hash}\"}}\n"));
            let digest = hex::encode(Sha256::digest(format!("{head}}}")));
            assert_eq!(hash, digest);
        }
    }

    #[test]
    fn torn_last_line_is_reported_as_torn() {
        let lines = log(3);
        let mut text = format!("{}\n", lines.join("\n"));
        text.push_str(&lines[0][..20]);
        let err = verify(text.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            ChainError {
                line: 4,
                problem: ChainProblem::Unreadable { last_line: true }
            }
        );
        assert!(err.to_string().contains("torn write"));
    }
}
