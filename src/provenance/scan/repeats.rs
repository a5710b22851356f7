//! Documents a scan has matched already, by content. A tree often holds the same file many
//! times (versions of one crate in a registry, vendored copies, generated files) and a dataset
//! the same record, and a copy's finding is the first one's: the matcher's answer depends on
//! the text alone. Identical files were 17 % of the bytes of the cargo registry the speed
//! benchmark scans (docs/provenance.md, "Scan speed").
//!
//! A document is known by a 128-bit SipHash-1-3 of its text under a key drawn for each scan,
//! so nobody can write a file that passes for another one's copy.

use std::collections::HashMap;

use siphasher::sip128::{Hasher128, SipHasher13};

use super::Finding;

/// Documents remembered at most (about 40 bytes each, and a finding's copy for those with one).
pub const REMEMBERED: usize = 2_000_000;

pub struct Repeats {
    hasher: SipHasher13,
    seen: HashMap<u128, Option<Box<Finding>>>,
    copies: u64,
    /// [`REMEMBERED`], less in tests of what happens once it is reached.
    room: usize,
}

impl Repeats {
    pub fn new() -> anyhow::Result<Repeats> {
        Repeats::with_room(REMEMBERED)
    }

    /// Remembering at most `room` documents.
    pub fn with_room(room: usize) -> anyhow::Result<Repeats> {
        let mut key = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| anyhow::anyhow!("no system randomness for the scan's document key"))?;
        Ok(Repeats {
            hasher: SipHasher13::new_with_key(&key),
            seen: HashMap::new(),
            copies: 0,
            room,
        })
    }

    /// Documents that were copies of one matched earlier.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// The finding of `text`: the one remembered for an identical document, or `match_it`'s.
    pub fn finding(
        &mut self,
        text: &str,
        match_it: impl FnOnce() -> anyhow::Result<Option<Finding>>,
    ) -> anyhow::Result<Option<Finding>> {
        let digest = self.digest(text);
        self.finding_of(digest, match_it)
    }

    /// What identifies `text` here: [`Repeats::finding_of`] takes it, for a caller that
    /// matches a group of documents at once and asks first which of them are copies.
    pub fn digest(&self, text: &str) -> u128 {
        let mut h = self.hasher;
        std::hash::Hasher::write(&mut h, text.as_bytes());
        h.finish128().as_u128()
    }

    /// A document with this digest was matched and is remembered.
    pub fn knows(&self, digest: u128) -> bool {
        self.seen.contains_key(&digest)
    }

    /// [`Repeats::finding`] of the document with this [`Repeats::digest`].
    pub fn finding_of(
        &mut self,
        digest: u128,
        match_it: impl FnOnce() -> anyhow::Result<Option<Finding>>,
    ) -> anyhow::Result<Option<Finding>> {
        if let Some(known) = self.seen.get(&digest) {
            self.copies += 1;
            return Ok(known.as_deref().cloned());
        }
        let found = match_it()?;
        if self.seen.len() < self.room {
            self.seen.insert(digest, found.clone().map(Box::new));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::scan::Tier;

    fn finding(chars: usize) -> Finding {
        Finding {
            tier: Tier::Strong,
            matched_chars: chars,
            total_chars: chars,
            share: 1.0,
            lines: vec![(1, 2)],
            responses: Vec::new(),
        }
    }

    #[test]
    fn an_identical_document_gets_the_first_ones_finding_without_matching() {
        let mut r = Repeats::new().unwrap();
        let mut calls = 0;
        for _ in 0..3 {
            let f = r
                .finding("fn copied() {}", || {
                    calls += 1;
                    Ok(Some(finding(14)))
                })
                .unwrap();
            assert_eq!(f, Some(finding(14)));
        }
        assert_eq!(calls, 1);
        assert_eq!(r.copies(), 2);
        // Clean documents are remembered too, and a different text is matched.
        assert_eq!(r.finding("clean", || Ok(None)).unwrap(), None);
        assert_eq!(
            r.finding("clean", || panic!("matched twice")).unwrap(),
            None
        );
        assert_eq!(
            r.finding("fn copied() {} ", || Ok(Some(finding(15))))
                .unwrap(),
            Some(finding(15))
        );
    }

    #[test]
    fn a_failed_match_is_not_remembered() {
        let mut r = Repeats::new().unwrap();
        assert!(r.finding("x", || anyhow::bail!("store down")).is_err());
        assert_eq!(r.finding("x", || Ok(None)).unwrap(), None);
    }
}
