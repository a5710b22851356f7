//! A lower bound on the clean-file rate, whatever the matcher.
//!
//! The issue defines a strong finding as a match of 400+ characters (or most of a file). A clean
//! file that holds a passage of 400+ characters whose letters and digits are one response's,
//! verbatim, with no piece of it known clean, looks to any matcher exactly like that response
//! pasted in: a matcher that finds the paste must call the file strong too, or miss the paste. So
//! these files bound the clean strong rate from below (`AIGATE_PROV_SHOW=all` names the strong
//! findings outside it). "Known clean" is what a stop-list can know: a piece of `G` letters and
//! digits (the text channel's k) found in the baseline or in the licence headers every scan
//! stop-lists. A span is checked against the responses that hold all of its pieces, and a span
//! whose pieces are in the right response but not in its order is not counted, so the count errs
//! low (the benchmark prints how many true pastes it holds).

use std::collections::{HashMap, HashSet};

/// The text channel's k: the shortest piece the stop-list can know as clean.
const G: usize = 40;
/// What the issue calls strong.
const STRONG_CHARS: usize = 400;
/// A piece found in more than one response: its owners are in `Owners::shared`.
const SHARED: u32 = u32::MAX;

/// Which responses hold each piece.
struct Owners {
    first: HashMap<u64, u32>,
    shared: HashMap<u64, Vec<u32>>,
}

impl Owners {
    fn of(&self, h: u64) -> Vec<u32> {
        match self.first.get(&h) {
            None => Vec::new(),
            Some(&SHARED) => self.shared.get(&h).cloned().unwrap_or_default(),
            Some(&r) => vec![r],
        }
    }
}

/// Lower-cased letters and digits, and for each the index in `s` (in characters) it came from.
pub fn letters(s: &str) -> (Vec<char>, Vec<usize>) {
    let (mut out, mut at) = (Vec::new(), Vec::new());
    for (i, c) in s.chars().enumerate().filter(|(_, c)| c.is_alphanumeric()) {
        for l in c.to_lowercase() {
            out.push(l);
            at.push(i);
        }
    }
    (out, at)
}

/// A rolling hash of every window of `G` characters.
fn windows(s: &[char]) -> Vec<u64> {
    const B: u64 = 0x100_0000_01b3;
    if s.len() < G {
        return Vec::new();
    }
    let top = (1..G).fold(1u64, |p, _| p.wrapping_mul(B));
    let v = |c: char| u64::from(c) + 1;
    let mut h = s[..G]
        .iter()
        .fold(0u64, |h, &c| h.wrapping_mul(B).wrapping_add(v(c)));
    let mut out = Vec::with_capacity(s.len() - G + 1);
    out.push(h);
    for i in G..s.len() {
        h = h
            .wrapping_sub(v(s[i - G]).wrapping_mul(top))
            .wrapping_mul(B)
            .wrapping_add(v(s[i]));
        out.push(h);
    }
    out
}

/// What a clean text is measured against: the responses' pieces and the pieces known clean.
pub struct Bound {
    response_letters: Vec<String>,
    owners: Owners,
    known: HashSet<u64>,
}

impl Bound {
    /// `responses` and `baseline` are the texts of the split; `licences` what every scan
    /// stop-lists.
    pub fn new(responses: &[&str], baseline: &[&str], licences: &[&str]) -> Bound {
        let response_letters: Vec<String> = responses
            .iter()
            .map(|t| letters(t).0.into_iter().collect())
            .collect();
        let mut owners = Owners {
            first: HashMap::new(),
            shared: HashMap::new(),
        };
        for (r, t) in response_letters.iter().enumerate() {
            let r = r as u32;
            let chars: Vec<char> = t.chars().collect();
            for h in windows(&chars) {
                let o = owners.first.entry(h).or_insert(r);
                if *o == r {
                    continue;
                }
                let list = owners.shared.entry(h).or_insert_with(|| vec![*o]);
                *o = SHARED;
                if !list.contains(&r) {
                    list.push(r);
                }
            }
        }
        let known = baseline
            .iter()
            .chain(licences)
            .flat_map(|t| windows(&letters(t).0))
            .collect();
        Bound {
            response_letters,
            owners,
            known,
        }
    }

    /// Does `text` hold 400+ characters of one response verbatim, none of it known clean (or,
    /// with `baseline` false, whether known clean or not)?
    pub fn holds(&self, text: &str, baseline: bool) -> bool {
        self.longest(text, baseline) >= STRONG_CHARS
    }

    /// The longest span of `text` whose letters and digits are one response's verbatim, in
    /// characters of `text`.
    fn longest(&self, text: &str, skip_known: bool) -> usize {
        let (chars, at) = letters(text);
        let hs = windows(&chars);
        // A span from its first letter to its last, widened over what the letters leave out
        // (indentation, brackets, punctuation) to the ends of its lines, but never over a letter
        // it does not hold: a passage pasted as whole lines counts its whole lines.
        let all: Vec<char> = text.chars().collect();
        let lines = |a: usize, b: usize| {
            let skipped = |c: char| c != '\n' && !c.is_alphanumeric();
            let mut from = a;
            while from > 0 && skipped(all[from - 1]) {
                from -= 1;
            }
            let mut to = b + 1;
            while to < all.len() && skipped(all[to]) {
                to += 1;
            }
            to - from
        };
        let owners_at = |j: usize| {
            if skip_known && self.known.contains(&hs[j]) {
                Vec::new()
            } else {
                self.owners.of(hs[j])
            }
        };
        let mut best = 0;
        let mut i = 0;
        while i < hs.len() {
            // The responses holding every piece from i to j.
            let mut holders = owners_at(i);
            if holders.is_empty() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < hs.len() {
                let next = owners_at(j + 1);
                let both: Vec<u32> = holders
                    .iter()
                    .copied()
                    .filter(|r| next.contains(r))
                    .collect();
                if both.is_empty() {
                    break;
                }
                holders = both;
                j += 1;
            }
            let piece: String = chars[i..j + G].iter().collect();
            if holders
                .iter()
                .any(|&r| self.response_letters[r as usize].contains(&piece))
            {
                best = best.max(lines(at[i], at[j + G - 1]));
            }
            i = j + 1;
        }
        best
    }
}
