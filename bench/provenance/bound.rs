//! A lower bound on the clean-file rate, whatever the matcher.
//!
//! The issue defines a strong finding as a match of 400+ characters (or most of a file). A clean
//! file that holds a passage of 400+ characters whose letters and digits are one response's,
//! verbatim, with no piece of it known clean, looks to any matcher exactly like that response
//! pasted in: a matcher that finds the paste must call the file strong too, or miss the paste. So
//! these files bound the clean strong rate from below (`AIGATE_PROV_SHOW=all` names the strong findings outside it). "Known clean" is what a stop-list can
//! know: a piece of `G` letters and digits (the text channel's k) found in the baseline or in the
//! licence headers every scan stop-lists. A span is checked against the responses that hold all
//! of its pieces, and a span whose pieces are in the right response but not in its order is not
//! counted, so the count errs low.

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
fn letters(s: &str) -> (Vec<char>, Vec<usize>) {
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

pub struct Bound {
    /// Per clean file: does it hold such a passage?
    pub files: Vec<bool>,
    /// The same without a baseline: clean files sharing such a passage with a response at all.
    pub without_baseline: usize,
}

/// `responses`, `baseline` and `clean` are the texts of the split; `licences` what every scan
/// stop-lists.
pub fn bound(responses: &[&str], baseline: &[&str], licences: &[&str], clean: &[&str]) -> Bound {
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
    let known: HashSet<u64> = baseline
        .iter()
        .chain(licences)
        .flat_map(|t| windows(&letters(t).0))
        .collect();
    let mut files = Vec::with_capacity(clean.len());
    let mut without_baseline = 0;
    for t in clean {
        let (chars, at) = letters(t);
        let hs = windows(&chars);
        // The longest verbatim span from one response, in characters of the clean file.
        let longest = |skip_known: bool| {
            let mut best = 0;
            let mut i = 0;
            let owners_at = |j: usize| {
                if skip_known && known.contains(&hs[j]) {
                    Vec::new()
                } else {
                    owners.of(hs[j])
                }
            };
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
                    .any(|&r| response_letters[r as usize].contains(&piece))
                {
                    best = best.max(at[j + G - 1] - at[i] + 1);
                }
                i = j + 1;
            }
            best
        };
        files.push(longest(true) >= STRONG_CHARS);
        if longest(false) >= STRONG_CHARS {
            without_baseline += 1;
        }
    }
    Bound {
        files,
        without_baseline,
    }
}
