//! Reading a log from its end, the newest line first, in chunks: a page of the newest records,
//! or the calls left open at the last stop, never needs a large log loaded whole.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::Path;

/// Calls `visit` with each line of the file at `path`, the last line first, until it breaks.
/// Reads `chunk` bytes at a time; a line split across two chunks is put back together before it
/// is visited. The empty piece after a final newline is visited too (it parses as nothing).
pub fn lines_backwards(
    path: &Path,
    chunk: u64,
    visit: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    lines_backwards_in(&mut f, 0..len, chunk, visit).map(|_| ())
}

/// As [`lines_backwards`], over the bytes `range` of an open file (`range.start` the first
/// byte of a line). Says whether `visit` broke.
pub fn lines_backwards_in(
    f: &mut std::fs::File,
    range: std::ops::Range<u64>,
    chunk: u64,
    mut visit: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<ControlFlow<()>> {
    let floor = range.start;
    let mut pos = range.end;
    let mut carry: Vec<u8> = Vec::new();
    while pos > floor {
        let start = pos.saturating_sub(chunk).max(floor);
        let mut buf = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        // The first piece may be the tail of a line that starts in the previous chunk.
        carry = if start > floor {
            lines.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for line in lines.iter().rev() {
            if visit(line).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        pos = start;
    }
    Ok(ControlFlow::Continue(()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every chunk size, from one byte up, gives the same lines in reverse order, and a break
    /// stops the reading.
    #[test]
    fn lines_come_newest_first_whatever_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\ntwo two\n\nthree é\n").unwrap();
        for chunk in 1..=24 {
            let mut seen = Vec::new();
            lines_backwards(&path, chunk, |l| {
                seen.push(String::from_utf8(l.to_vec()).unwrap());
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(seen, ["", "three é", "", "two two", "one"], "chunk {chunk}");
            let mut first = Vec::new();
            lines_backwards(&path, chunk, |l| {
                first.push(l.to_vec());
                if first.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
            assert_eq!(first, [b"".to_vec(), "three é".as_bytes().to_vec()]);
        }
    }
}
