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

/// As [`lines_backwards_in`], visiting only the lines that hold at least one of `needles`
/// (newest first). A chunk is searched whole for each needle (SIMD `memmem`), and only the
/// lines around the hits are cut out: a selective query over a large log no longer splits and
/// tests every line. A needle never holds a newline, so a hit always lies inside one line.
pub fn lines_with_backwards_in(
    f: &mut std::fs::File,
    range: std::ops::Range<u64>,
    chunk: u64,
    needles: &[memchr::memmem::Finder<'_>],
    mut visit: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<ControlFlow<()>> {
    let floor = range.start;
    let mut pos = range.end;
    let mut carry: Vec<u8> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    while pos > floor {
        let start = pos.saturating_sub(chunk).max(floor);
        let mut buf = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        // The first piece may be the tail of a line that starts in the previous chunk.
        let from = if start > floor {
            match memchr::memchr(b'\n', &buf) {
                Some(nl) => nl + 1,
                None => {
                    carry = buf;
                    pos = start;
                    continue;
                }
            }
        } else {
            0
        };
        let region = &buf[from..];
        starts.clear();
        for needle in needles {
            for hit in needle.find_iter(region) {
                starts.push(memchr::memrchr(b'\n', &region[..hit]).map_or(0, |nl| nl + 1));
            }
        }
        starts.sort_unstable();
        starts.dedup();
        for &s in starts.iter().rev() {
            let end = memchr::memchr(b'\n', &region[s..]).map_or(region.len(), |e| s + e);
            if visit(&region[s..end]).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        carry = buf[..from.saturating_sub(1)].to_vec();
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

    /// The lines holding a needle, newest first, whatever the chunk: the lines a full read
    /// gives with the same test, in the same order, each once.
    #[test]
    fn only_the_lines_with_a_needle_come_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a x\nbb\nc xy x\n\ndd y\nx\nzz").unwrap();
        let needles = [
            memchr::memmem::Finder::new("x"),
            memchr::memmem::Finder::new("y"),
        ];
        let len = std::fs::metadata(&path).unwrap().len();
        for chunk in 1..=30 {
            let mut f = std::fs::File::open(&path).unwrap();
            let mut seen = Vec::new();
            let flow = lines_with_backwards_in(&mut f, 0..len, chunk, &needles, |l| {
                seen.push(String::from_utf8(l.to_vec()).unwrap());
                ControlFlow::Continue(())
            })
            .unwrap();
            assert!(flow.is_continue());
            assert_eq!(seen, ["x", "dd y", "c xy x", "a x"], "chunk {chunk}");
            // From the middle of the file (a block's range), and a break.
            let mut f = std::fs::File::open(&path).unwrap();
            let mut seen = Vec::new();
            let flow = lines_with_backwards_in(&mut f, 4..20, chunk, &needles, |l| {
                seen.push(String::from_utf8(l.to_vec()).unwrap());
                ControlFlow::Break(())
            })
            .unwrap();
            assert!(flow.is_break());
            assert_eq!(seen, ["dd y"], "chunk {chunk}");
        }
    }
}
