//! The fingerprinting that runs (capture and scan): exactly the fingerprints of the
//! straightforward implementation (`reference.rs`: `normalize` into a `Sym` per character or
//! token, then `winnow`), computed with less work per byte, because a scan fingerprints every
//! byte of a repository twice (issue 17: 50 MB/s of source on one core).
//!
//! What differs, and why the output cannot:
//! - Symbols go into buffers kept per thread and reused across documents (values, start and end
//!   offsets side by side), not a fresh `Vec<Sym>` of 12 bytes per input byte.
//! - The text channel classifies ASCII through a table and appends without a branch; other
//!   characters take the same `char` path as `normalize::text`.
//! - The code channel looks keywords up in a small hash table of the same words (`word()` did a
//!   binary search of strings), skips comments and string literals with `memchr` and runs of
//!   eight spaces at once, and otherwise takes `normalize::code`'s steps, byte for byte.
//! - Winnowing keeps the current minimum and rescans a window only when it slides out
//!   (Schleimer et al.'s own formulation) instead of a deque; both pick the rightmost minimum of
//!   every window, so the same grams are kept. The gram hash is the same rolling polynomial and
//!   finaliser as `winnow.rs` (shared constants), and the keyed hash of a kept gram the same
//!   SipHash (`super::keyed`).
//! - Distinct symbols (`super::diverse`) are counted only for the grams winnowing keeps (about
//!   `2 / (w + 1)` of them), over each symbol's bucket folded once as it is read, instead of
//!   kept up to date for every gram as the window slides: fewer operations per symbol, the
//!   same count (callgrind of capture, docs/provenance.md "Capture cost"); the first 16 symbols
//!   first, and the rest only when those fall short of the floor (`diverse_enough`: the count
//!   only grows, so the answer is the same).
//!
//! `tests.rs` compares the two on this crate's sources, the cargo cache and random text.

use std::cell::RefCell;

use siphasher::sip::SipHasher24;

use super::normalize::{self, IDENT, NUMBER, STRING};
use super::winnow::{BASE, mix};
use super::{Channel, Fp, keyed};

/// Buffers of one thread, grown to the largest document seen and reused.
#[derive(Default)]
struct Scratch {
    values: Vec<u32>,
    starts: Vec<u32>,
    ends: Vec<u32>,
    hashes: Vec<u64>,
    /// Each symbol's bucket in `super::diverse`'s 128-bit set (`fold`).
    folded: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// What one channel needs to turn symbols into fingerprints.
pub(super) struct Gram<'a> {
    pub hasher: &'a SipHasher24,
    pub channel: Channel,
    pub k: usize,
    pub w: usize,
    pub min_distinct: u32,
}

/// Text channel: letters and digits, lower-cased (`normalize::text`).
pub(super) fn text_into(g: &Gram<'_>, s: &str, out: &mut Vec<Fp>) {
    SCRATCH.with_borrow_mut(|sc| {
        let n = text_syms(s, &mut sc.values, &mut sc.starts, &mut sc.folded);
        let b = s.as_bytes();
        winnow(
            g,
            &sc.values[..n],
            &sc.folded[..n],
            &mut sc.hashes,
            |first, last| {
                let start = sc.starts[first];
                let at = sc.starts[last] as usize;
                // A symbol's end is its character's: one byte for ASCII.
                let end = if b[at] < 0x80 {
                    at + 1
                } else {
                    at + s[at..].chars().next().map_or(1, char::len_utf8)
                };
                (start, end as u32)
            },
            out,
        );
    });
}

/// Code channel: tokens with identifiers and literals abstracted (`normalize::code`).
pub(super) fn code_into(g: &Gram<'_>, s: &str, out: &mut Vec<Fp>) {
    SCRATCH.with_borrow_mut(|sc| {
        let n = code_syms(
            s,
            &mut sc.values,
            &mut sc.starts,
            &mut sc.ends,
            &mut sc.folded,
        );
        winnow(
            g,
            &sc.values[..n],
            &sc.folded[..n],
            &mut sc.hashes,
            |first, last| (sc.starts[first], sc.ends[last]),
            out,
        );
    });
}

/// `ASCII[b]`: the lower-cased byte for an ASCII letter or digit, else 0.
const ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

/// Makes sure the buffers hold `n` entries; they keep their largest size.
fn room<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// `normalize::text` into `values`, `starts` and `folded`; returns how many symbols.
fn text_syms(s: &str, values: &mut Vec<u32>, starts: &mut Vec<u32>, folded: &mut Vec<u8>) -> usize {
    let b = s.as_bytes();
    room(values, b.len());
    room(starts, b.len());
    room(folded, b.len());
    let (values, starts, folded) = (
        &mut values[..b.len()],
        &mut starts[..b.len()],
        &mut folded[..b.len()],
    );
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x80 {
            // Written always, kept only when a letter or digit: no branch to mispredict.
            let v = ASCII[usize::from(c)];
            values[n] = u32::from(v);
            // `fold` of a value below 128 is the value.
            folded[n] = v;
            starts[n] = i as u32;
            n += usize::from(v != 0);
            i += 1;
            continue;
        }
        let Some(ch) = s.get(i..).and_then(|t| t.chars().next()) else {
            break;
        };
        if ch.is_alphanumeric() {
            let v = u32::from(ch.to_lowercase().next().unwrap_or(ch));
            values[n] = v;
            folded[n] = fold(v);
            starts[n] = i as u32;
            n += 1;
        }
        i += ch.len_utf8();
    }
    n
}

const WS: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const DIGIT: u8 = 8;

/// Byte classes of `normalize::code`: `is_ascii_whitespace`, `is_ident_start`,
/// `is_ident_continue`, `is_ascii_digit`.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_whitespace() {
            k |= WS;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            k |= IDENT_START | IDENT_CONT;
        }
        if c.is_ascii_digit() {
            k |= DIGIT | IDENT_CONT;
        }
        t[b] = k;
        b += 1;
    }
    t
};

/// The keywords of `normalize::KEYWORDS` with their values (`normalize::word`), in an
/// open-addressed table keyed by the word's bytes packed into a `u128` (keywords are at most 10
/// ASCII bytes, identifiers have no NUL, so packing is one-to-one).
struct Keywords {
    slots: Vec<(u128, u32)>,
    mask: usize,
}

static KEYWORDS: std::sync::LazyLock<Keywords> = std::sync::LazyLock::new(|| {
    let size = (normalize::KEYWORDS.len() * 4).next_power_of_two();
    let mut slots = vec![(0u128, 0u32); size];
    let mask = size - 1;
    for w in normalize::KEYWORDS {
        let key = pack(w.as_bytes());
        let mut at = slot(key, mask);
        while slots[at].0 != 0 && slots[at].0 != key {
            at = (at + 1) & mask;
        }
        slots[at] = (key, normalize::word(w));
    }
    Keywords { slots, mask }
});

fn pack(w: &[u8]) -> u128 {
    w.iter()
        .rev()
        .fold(0u128, |acc, &c| (acc << 8) | u128::from(c))
}

fn slot(key: u128, mask: usize) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & mask
}

/// `normalize::word` for an identifier token `w`.
fn word(kw: &Keywords, w: &[u8]) -> u32 {
    // A keyword is at most 10 ASCII bytes; anything else (a longer word, one with bytes of a
    // multi-byte character) is an identifier.
    if w.len() > 10 || w.iter().any(|&c| c >= 0x80) {
        return IDENT;
    }
    let key = pack(w);
    let mut at = slot(key, kw.mask);
    loop {
        let (k, v) = kw.slots[at];
        if k == key {
            return v;
        }
        if k == 0 {
            return IDENT;
        }
        at = (at + 1) & kw.mask;
    }
}

/// `normalize::code` into `values`, `starts`, `ends` and `folded`; returns how many tokens.
/// Each branch is `normalize::code`'s; keep the two in step (the oracle test compares them).
fn code_syms(
    s: &str,
    values: &mut Vec<u32>,
    starts: &mut Vec<u32>,
    ends: &mut Vec<u32>,
    folded: &mut Vec<u8>,
) -> usize {
    let b = s.as_bytes();
    let len = b.len();
    // At most one token per byte.
    room(values, len);
    room(starts, len);
    room(ends, len);
    room(folded, len);
    let kw = &*KEYWORDS;
    let mut n = 0;
    let mut push = |value: u32, start: usize, end: usize| {
        values[n] = value;
        folded[n] = fold(value);
        starts[n] = start as u32;
        ends[n] = end as u32;
        n += 1;
    };
    let mut i = 0;
    let mut prev_sig = b' ';
    while i < len {
        let c = b[i];
        let class = CLASS[usize::from(c)];
        let start = i;
        if class & WS != 0 {
            i += 1;
            // Indentation: eight spaces at a time, then byte by byte.
            while b.get(i..i + 8) == Some(b"        ") {
                i += 8;
            }
            while i < len && CLASS[usize::from(b[i])] & WS != 0 {
                i += 1;
            }
            continue;
        }
        if class & IDENT_START != 0 {
            i += 1;
            while i < len && CLASS[usize::from(b[i])] & IDENT_CONT != 0 {
                i += 1;
            }
            push(word(kw, &b[start..i]), start, i);
        } else if class & DIGIT != 0 {
            while i < len && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                if b[i] == b'.' && i + 1 < len && b[i + 1] == b'.' {
                    break;
                }
                i += 1;
            }
            push(NUMBER, start, i);
        } else if c == b'/' && i + 1 < len && b[i + 1] == b'/' {
            i = memchr_or_end(b, i, b'\n');
            continue;
        } else if c == b'/' && i + 1 < len && b[i + 1] == b'*' {
            i += 2;
            i = memchr::memmem::find(&b[i..], b"*/").map_or(len, |p| i + p + 2);
            continue;
        } else if c == b'#' && (i + 1 >= len || matches!(b[i + 1], b' ' | b'\t' | b'#' | b'\n')) {
            i = memchr_or_end(b, i, b'\n');
            continue;
        } else if c == b'"' || c == b'`' || (c == b'\'' && !normalize::lifetime(b, i, prev_sig)) {
            i = string_end(b, i);
            push(STRING, start, i);
        } else {
            i += 1;
            if c != b',' && c != b';' {
                push(u32::from(c), start, i);
            }
        }
        prev_sig = c;
    }
    n
}

/// The first `needle` at or after `from`, or the end.
fn memchr_or_end(b: &[u8], from: usize, needle: u8) -> usize {
    memchr::memchr(needle, &b[from..]).map_or(b.len(), |p| from + p)
}

/// `normalize::string_end`: where the string literal opening at `i` ends. The same steps, but
/// the bytes that cannot end it or escape are skipped with `memchr` (docstrings and long
/// literals were read a byte at a time).
fn string_end(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let n = b.len();
    if i + 2 < n && b[i + 1] == q && b[i + 2] == q {
        // Triple-quoted: only a backslash or the quote can change anything before `n - 2`.
        let mut j = i + 3;
        while j + 2 < n {
            let Some(p) = memchr::memchr2(b'\\', q, &b[j..n - 2]) else {
                return n;
            };
            j += p;
            if b[j] == b'\\' {
                j += 2;
            } else if b[j + 1] == q && b[j + 2] == q {
                return j + 3;
            } else {
                j += 1;
            }
        }
        return n;
    }
    // One quote: a backslash, the quote, or a line end (but in a template literal).
    let mut j = i + 1;
    while j < n {
        let found = if q == b'`' {
            memchr::memchr2(b'\\', q, &b[j..])
        } else {
            memchr::memchr3(b'\\', q, b'\n', &b[j..])
        };
        let Some(p) = found else {
            return n;
        };
        j += p;
        match b[j] {
            b'\\' => j += 2,
            c if c == q => return j + 1,
            _ => return j,
        }
    }
    n
}

/// `winnow::select` and the emission of `Fingerprinter::winnow`: for each selected gram
/// (`values[at..at + k]`) with enough distinct symbols (`folded`: their buckets), its keyed hash
/// and byte range (`span(first symbol, last symbol)`).
fn winnow(
    g: &Gram<'_>,
    values: &[u32],
    folded: &[u8],
    hashes: &mut Vec<u64>,
    span: impl Fn(usize, usize) -> (u32, u32),
    out: &mut Vec<Fp>,
) {
    let k = g.k;
    if values.len() < k || k == 0 {
        return;
    }
    let grams = values.len() - k + 1;
    room(hashes, grams);
    let hashes = &mut hashes[..grams];
    // BASE^k: `(h - out * BASE^(k-1)) * BASE` of `winnow.rs` expanded (mod 2^64 alike), one
    // multiplication shorter on the chain from one gram's hash to the next.
    let mut top: u64 = 1;
    for _ in 0..k {
        top = top.wrapping_mul(BASE);
    }
    let mut rolling: u64 = 0;
    for &v in &values[..k] {
        rolling = rolling.wrapping_mul(BASE).wrapping_add(u64::from(v) + 1);
    }
    hashes[0] = mix(rolling);
    for (i, (&old, &new)) in values[..grams - 1].iter().zip(&values[k..]).enumerate() {
        // What enters and leaves, apart: it does not wait for the previous gram's hash, so the
        // chain from one gram to the next is one multiplication and one addition (mod 2^64, the
        // same sum).
        let step = (u64::from(new) + 1).wrapping_sub((u64::from(old) + 1).wrapping_mul(top));
        rolling = rolling.wrapping_mul(BASE).wrapping_add(step);
        hashes[i + 1] = mix(rolling);
    }
    let w = g.w.min(grams).max(1);
    // About `2 / (w + 1)` of the grams are kept: room for them at once, not by doubling.
    out.reserve(2 * grams / (w + 1) + 1);
    let mut emit = |at: usize| {
        if g.min_distinct == 0 || diverse_enough(&folded[at..at + k], g.min_distinct) {
            let (start, end) = span(at, at + k - 1);
            out.push(Fp {
                hash: keyed(g.hasher, hashes[at]),
                channel: g.channel,
                start,
                end,
            });
        }
    };
    // The rightmost minimum of the first window, then of each window as it slides: the current
    // one stays until a smaller-or-equal hash arrives or it leaves the window. Its value stays
    // in a register (`least`), not read again through `m` at every step.
    let mut m = rightmost_min(hashes, 0, w);
    let mut least = hashes[m];
    emit(m);
    for (i, &h) in hashes.iter().enumerate().skip(w) {
        if h <= least {
            m = i;
            least = h;
            emit(m);
        } else if m + w <= i {
            m = rightmost_min(hashes, i + 1 - w, i + 1);
            least = hashes[m];
            emit(m);
        }
    }
}

/// The index of the rightmost smallest of `hashes[from..to]` (not empty).
///
/// Rescanning a window is most of winnowing's time (perf: three in five of `winnow`'s samples
/// when each step compared against `hashes[m]`, a load that waits for the last step's `m`).
/// Now the window's two halves are scanned as two independent chains of compare-and-select,
/// each with its least value in a register, and the right half wins a tie.
fn rightmost_min(hashes: &[u64], from: usize, to: usize) -> usize {
    let (left, right) = hashes[from..to].split_at((to - from) / 2);
    let (r_at, r_least) = rightmost_least(right);
    if left.is_empty() {
        return from + r_at;
    }
    let (l_at, l_least) = rightmost_least(left);
    if r_least <= l_least {
        from + left.len() + r_at
    } else {
        from + l_at
    }
}

/// The index and value of the rightmost smallest of `s` (not empty).
fn rightmost_least(s: &[u64]) -> (usize, u64) {
    let (mut at, mut least) = (0, s[0]);
    for (j, &h) in s.iter().enumerate().skip(1) {
        let take = h <= least;
        at = if take { j } else { at };
        least = if take { h } else { least };
    }
    (at, least)
}

/// The bucket of a symbol value in `super::diverse`'s 128-bit set.
fn fold(v: u32) -> u8 {
    ((v ^ (v >> 7) ^ (v >> 14) ^ (v >> 21) ^ (v >> 28)) & 127) as u8
}

/// Whether a gram's symbols fall in at least `min` distinct buckets (`super::diverse`'s count).
///
/// The first [`HEAD`] symbols are counted without a branch, and nearly every gram of real text
/// or code already has `min` distinct among them; only the rest count the remainder. The count
/// only grows with more symbols, so the answer is the one counting the whole gram gives. An
/// earlier version counted one symbol at a time and left as soon as the count reached `min`:
/// the exit, after a varying eight to twelve symbols, was a mispredicted branch in nearly every
/// kept gram, and the closure that calls this was a tenth of a scan (perf; docs/provenance.md,
/// "Scan speed").
fn diverse_enough(folded: &[u8], min: u32) -> bool {
    if min == 0 {
        return true;
    }
    let (head, rest) = folded.split_at(folded.len().min(HEAD));
    let (lo, hi) = buckets(head);
    if lo.count_ones() + hi.count_ones() >= min {
        return true;
    }
    let (lo2, hi2) = buckets(rest);
    (lo | lo2).count_ones() + (hi | hi2).count_ones() >= min
}

/// Symbols of a gram counted before [`diverse_enough`] decides whether to read on.
const HEAD: usize = 16;

/// The buckets of `folded` as a 128-bit set in two registers, each symbol's bit read from
/// [`ONE_HOT`]: a load and two ORs a symbol, with no dependency but the ORs. Computing the bit
/// (a variable shift, a mask for the half) let the compiler vectorise the loop into SSE2 code
/// that has no per-lane shift and emulates one, which cost more than it saved.
fn buckets(folded: &[u8]) -> (u64, u64) {
    let (mut lo, mut hi) = (0u64, 0u64);
    for &f in folded {
        let (l, h) = ONE_HOT[usize::from(f & 127)];
        lo |= l;
        hi |= h;
    }
    (lo, hi)
}

/// Bucket `b`'s bit of the 128-bit set: `(low half, high half)`.
const ONE_HOT: [(u64, u64); 128] = {
    let mut t = [(0u64, 0u64); 128];
    let mut b = 0;
    while b < 128 {
        t[b] = if b < 64 {
            (1 << b, 0)
        } else {
            (0, 1 << (b - 64))
        };
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverse_enough_counts_as_the_whole_gram_does() {
        let mut x = 7u64;
        for len in [0usize, 1, 8, 16, 24, 40] {
            for _ in 0..2_000 {
                let gram: Vec<u8> = (0..len)
                    .map(|_| {
                        x = super::super::winnow::mix(x.wrapping_add(1));
                        // Few distinct values, so the floors are crossed both ways.
                        (x % 11) as u8 * 13 % 128
                    })
                    .collect();
                let mut set = 0u128;
                for &f in &gram {
                    set |= 1u128 << f;
                }
                for min in 0..=12 {
                    assert_eq!(
                        diverse_enough(&gram, min),
                        set.count_ones() >= min,
                        "{gram:?} {min}"
                    );
                }
            }
        }
    }
}
