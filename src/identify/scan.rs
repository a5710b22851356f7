//! Body signals past the peek, found while the body streams on.
//!
//! Identification decides on the first `gateway.body_peek_bytes` of a body; a client that puts
//! its marker after them would otherwise escape. The rest of the body is never buffered: each
//! chunk is searched where it lies, and only the seam between chunks is copied, into a buffer
//! of at most twice the longest match a body signal can have. A match that is no longer than
//! that window is found wherever it lies, even split over many small chunks.
//!
//! Pure: bytes in, "a new signal was found" out. It runs over whatever bytes it is given, so a
//! decoding step (Content-Encoding, JSON escapes) can sit in front of it.

use regex::bytes::Regex;

/// The window for a signal whose matches have no upper length (`.*`, `+`): such a match is
/// still found inside one chunk, and across a seam when it is no longer than this.
pub const UNBOUNDED_WINDOW: usize = 4096;

/// The longest match `re` can have, capped at `UNBOUNDED_WINDOW`.
fn longest_match(re: &Regex) -> usize {
    regex_syntax::parse(re.as_str())
        .ok()
        .and_then(|hir| hir.properties().maximum_len())
        .map_or(UNBOUNDED_WINDOW, |n| n.min(UNBOUNDED_WINDOW))
}

/// Searches a body chunk by chunk for signals that were not in its peeked start.
#[derive(Debug)]
pub struct BodyScanner {
    patterns: Vec<Regex>,
    found: Vec<bool>,
    /// The longest possible match minus one: the bytes a match may have before a seam.
    keep: usize,
    /// The last `keep` bytes seen so far.
    tail: Vec<u8>,
    /// `tail` followed by the start of the current chunk; reused, never grown past its capacity.
    seam: Vec<u8>,
}

impl BodyScanner {
    /// `patterns` are the body signals still to look for; `prefix` is what has already been
    /// searched (the peek), whose end a later match may start in.
    pub fn new(patterns: Vec<Regex>, prefix: &[u8]) -> BodyScanner {
        let keep = patterns
            .iter()
            .map(longest_match)
            .max()
            .unwrap_or(0)
            .saturating_sub(1);
        let mut tail = Vec::with_capacity(keep);
        tail.extend_from_slice(&prefix[prefix.len().saturating_sub(keep)..]);
        BodyScanner {
            found: vec![false; patterns.len()],
            patterns,
            keep,
            tail,
            seam: Vec::with_capacity(2 * keep),
        }
    }

    /// Every signal has been found: nothing left to search for.
    pub fn done(&self) -> bool {
        self.found.iter().all(|f| *f)
    }

    /// The signals found so far, as their patterns are spelled.
    pub fn found(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .zip(&self.found)
            .filter(|(_, f)| **f)
            .map(|(p, _)| p.as_str())
    }

    /// Search the next chunk; true if it revealed a signal not found before.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.done() || chunk.is_empty() {
            return false;
        }
        let head = &chunk[..chunk.len().min(self.keep)];
        self.seam.clear();
        self.seam.extend_from_slice(&self.tail);
        self.seam.extend_from_slice(head);
        let mut new = false;
        for (re, found) in self.patterns.iter().zip(self.found.iter_mut()) {
            if !*found && (re.is_match(chunk) || re.is_match(&self.seam)) {
                *found = true;
                new = true;
            }
        }
        if chunk.len() >= self.keep {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - self.keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(self.keep);
            self.tail.drain(..excess);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "x-anthropic-billing-header: cc_version=";

    fn scanner(prefix: &[u8]) -> BodyScanner {
        BodyScanner::new(vec![Regex::new(MARK).unwrap()], prefix)
    }

    /// The body cut into chunks of `size`, fed in order; the index of the chunk that found it.
    fn found_at(body: &[u8], prefix_len: usize, size: usize) -> Option<usize> {
        let mut s = scanner(&body[..prefix_len]);
        body[prefix_len..].chunks(size).position(|c| s.feed(c))
    }

    #[test]
    fn a_marker_is_found_wherever_the_chunks_cut_it() {
        let mut body = vec![b'a'; 20_000];
        body.extend_from_slice(MARK.as_bytes());
        body.extend_from_slice(b"2.1.197\"}");
        for size in [1, 2, 7, 38, 39, 40, 41, 100, 4096, 100_000] {
            assert!(found_at(&body, 16_384, size).is_some(), "chunks of {size}");
        }
        // Split between the peek and the first chunk: the peek's end is kept.
        let at = 20_000 + 10;
        assert_eq!(found_at(&body, at, 100), Some(0));
        assert_eq!(
            found_at(&body, at, 5),
            Some(5),
            "29 more bytes, in chunks of 5"
        );
    }

    #[test]
    fn a_body_without_the_marker_finds_nothing() {
        let mut body = vec![b'a'; 50_000];
        // Every prefix of the marker, but never the whole of it.
        body.extend_from_slice(&MARK.as_bytes()[..MARK.len() - 1]);
        body.extend_from_slice(b"x-anthropic-billing-header cc_version=");
        for size in [1, 13, 1000] {
            assert_eq!(found_at(&body, 0, size), None, "chunks of {size}");
        }
    }

    #[test]
    fn each_signal_counts_once_and_found_lists_it() {
        let mut s = BodyScanner::new(
            vec![
                Regex::new(MARK).unwrap(),
                Regex::new("codex_[a-z]+").unwrap(),
            ],
            b"",
        );
        assert!(s.feed(MARK.as_bytes()));
        assert!(!s.feed(MARK.as_bytes()), "already found");
        assert_eq!(s.found().collect::<Vec<_>>(), [MARK]);
        assert!(!s.done());
        assert!(s.feed(b"..codex_exec.."));
        assert!(s.done());
        assert!(!s.feed(b"anything"), "nothing left to search");
    }

    #[test]
    fn the_window_is_the_longest_match() {
        assert_eq!(longest_match(&Regex::new(MARK).unwrap()), MARK.len());
        assert_eq!(longest_match(&Regex::new("ab{2,5}").unwrap()), 6);
        assert_eq!(
            longest_match(&Regex::new("a.*b").unwrap()),
            UNBOUNDED_WINDOW
        );
        let s = scanner(b"");
        assert_eq!(s.keep, MARK.len() - 1);
        assert!(s.seam.capacity() >= 2 * s.keep);
    }
}
