//! Winnowing over a symbol sequence with a rolling hash.

use std::collections::VecDeque;

use super::Sym;

/// Odd multiplier for the polynomial rolling hash (mod 2^64).
pub(super) const BASE: u64 = 0x100_0000_01b3;

/// Spreads the rolling hash's bits so the window minimum is a fair sample (the polynomial hash
/// of similar grams is close in its low bits). murmur3's 64-bit finaliser.
pub(super) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Calls `emit(gram_hash, first)` for each selected k-gram (`syms[first..first + k]`), in
/// order, each once. A text shorter than `k` symbols has no grams; one with fewer than `w`
/// grams keeps its minimum.
pub fn select(syms: &[Sym], k: usize, w: usize, emit: impl FnMut(u64, usize)) {
    select_rolling(syms, k, w, emit)
}

/// Like [`select`], for grams whose symbols take a value that depends on where the gram starts
/// (`value(gram_start, index)`), so no rolling hash: each gram is hashed whole.
pub fn select_by(
    syms: &[Sym],
    k: usize,
    w: usize,
    value: impl Fn(usize, usize) -> u32,
    mut emit: impl FnMut(u64, usize),
) {
    if syms.len() < k || k == 0 {
        return;
    }
    let grams = syms.len() - k + 1;
    let hashes = (0..grams).map(|g| {
        let mut h: u64 = 0;
        for i in g..g + k {
            h = h
                .wrapping_mul(BASE)
                .wrapping_add(u64::from(value(g, i)) + 1);
        }
        mix(h)
    });
    minima(hashes, grams, w, |j, h| emit(h, j));
}

/// The winnowing proper over a sequence of `grams` gram hashes: `emit(index, hash)` for the
/// rightmost minimum of every window of `w`, each gram once.
fn minima(
    hashes: impl Iterator<Item = u64>,
    grams: usize,
    w: usize,
    mut emit: impl FnMut(usize, u64),
) {
    let w = w.min(grams).max(1);
    let mut window: VecDeque<(usize, u64)> = VecDeque::with_capacity(w + 1);
    let mut last_emitted = usize::MAX;
    for (i, h) in hashes.enumerate() {
        while window.back().is_some_and(|&(_, b)| b >= h) {
            window.pop_back();
        }
        window.push_back((i, h));
        if i + 1 >= w {
            let lo = i + 1 - w;
            while window.front().is_some_and(|&(j, _)| j < lo) {
                window.pop_front();
            }
            if let Some(&(j, h)) = window.front()
                && j != last_emitted
            {
                last_emitted = j;
                emit(j, h);
            }
        }
    }
}

fn select_rolling(syms: &[Sym], k: usize, w: usize, mut emit: impl FnMut(u64, usize)) {
    if syms.len() < k || k == 0 {
        return;
    }
    let grams = syms.len() - k + 1;
    // BASE^(k-1), to take the oldest symbol out.
    let mut top: u64 = 1;
    for _ in 1..k {
        top = top.wrapping_mul(BASE);
    }
    let mut rolling: u64 = 0;
    for s in &syms[..k] {
        rolling = rolling
            .wrapping_mul(BASE)
            .wrapping_add(u64::from(s.value) + 1);
    }
    let hashes = (0..grams).map(|i| {
        if i > 0 {
            let out = u64::from(syms[i - 1].value) + 1;
            let inc = u64::from(syms[i + k - 1].value) + 1;
            rolling = rolling
                .wrapping_sub(out.wrapping_mul(top))
                .wrapping_mul(BASE)
                .wrapping_add(inc);
        }
        mix(rolling)
    });
    minima(hashes, grams, w, |j, h| emit(h, j));
}
