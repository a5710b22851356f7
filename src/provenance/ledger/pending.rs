//! Fingerprints of committed entries that are not in the embedded ledger's index yet.
//!
//! Why: inserting each answer's fingerprints into fjall's memtable as it was written put them
//! at random places in a skip list of hundreds of thousands of keys, and the search for each
//! place (a walk through cold memory) was half of what the ledger's writes cost
//! (docs/provenance.md, "Capture cost"). The entry's fingerprints are durable in
//! `entry_prints` with the entry itself, so the index can wait: they are held here until
//! enough have gathered, then written in one ascending run, each key's place next to the last
//! one's (`Inner::index_pending` in `embedded.rs`). Lookups read this as well as the store
//! meanwhile.

use super::ByPrint;

/// No next link.
const END: u32 = u32::MAX;

/// `(fingerprint, entry number)` pairs, with a chain per fingerprint for lookups: an arena
/// and a map from fingerprint to its last pair, so an insert is one map update and a push
/// whatever the number of entries that share a fingerprint (the same boilerplate in many
/// answers).
#[derive(Default)]
pub(super) struct Pending {
    pairs: Vec<(u64, u64)>,
    /// For each pair, the pair before it with the same fingerprint.
    earlier: Vec<u32>,
    last: ByPrint<u32>,
}

impl Pending {
    /// Adds entry `n`'s fingerprints (distinct, as the capture worker makes them).
    pub(super) fn add(&mut self, n: u64, prints: &[u64]) {
        for &h in prints {
            let at = self.pairs.len() as u32;
            let before = self.last.insert(h, at).unwrap_or(END);
            self.pairs.push((h, n));
            self.earlier.push(before);
        }
    }

    /// Appends to `out` the entries holding fingerprint `h`.
    pub(super) fn holders(&self, h: u64, out: &mut Vec<u64>) {
        let mut at = self.last.get(&h).copied().unwrap_or(END);
        while at != END {
            out.push(self.pairs[at as usize].1);
            at = self.earlier[at as usize];
        }
    }

    /// Pairs held.
    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs in ascending order, the order of the index's keys.
    pub(super) fn sorted(&self) -> Vec<(u64, u64)> {
        let mut pairs = self.pairs.clone();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_holder_of_a_fingerprint_is_found_and_the_pairs_come_out_sorted() {
        let mut p = Pending::default();
        p.add(7, &[30, 10, 20]);
        p.add(8, &[20, 40]);
        p.add(9, &[20]);
        let mut out = Vec::new();
        p.holders(20, &mut out);
        out.sort_unstable();
        assert_eq!(out, [7, 8, 9]);
        out.clear();
        p.holders(10, &mut out);
        assert_eq!(out, [7]);
        out.clear();
        p.holders(99, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.len(), 6);
        assert_eq!(
            p.sorted(),
            [(10, 7), (20, 7), (20, 8), (20, 9), (30, 7), (40, 8)]
        );
    }
}
