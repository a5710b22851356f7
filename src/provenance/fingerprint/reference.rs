//! The straightforward implementation: a `Sym` per character or token (`normalize`), a rolling
//! hash over them (`winnow`), the keyed hash of each kept gram. It defines which fingerprints
//! come out for given parameters; `fast.rs` computes the same ones with less work per byte, and
//! the tests compare the two. `code_refs` (off by default) runs only here.

use super::normalize::{self, Sym};
use super::{Channel, Fingerprinter, Fp, diverse, keyed, winnow};

pub(super) fn code_into(f: &Fingerprinter, s: &str, out: &mut Vec<Fp>) {
    let syms = normalize::code(s);
    if f.params.code_refs {
        let refs = normalize::back_refs(s, &syms);
        let value = |g: usize, i: usize| {
            let r = refs[i] as usize;
            if r != 0 && r <= i - g {
                // Above the abstract values, below the keywords' and operators' range.
                0x4000_0000 | refs[i]
            } else {
                syms[i].value
            }
        };
        let hasher = &f.code;
        let min = f.params.code_min_distinct;
        let k = f.params.code_k;
        winnow::select_by(&syms, k, f.params.code_w, value, |gram, at| {
            let g = &syms[at..at + k];
            if diverse(g, min) {
                out.push(Fp {
                    hash: keyed(hasher, gram),
                    channel: Channel::Code,
                    start: g[0].start,
                    end: g[k - 1].end,
                })
            }
        });
        return;
    }
    select(
        f,
        Channel::Code,
        &syms,
        f.params.code_k,
        f.params.code_w,
        out,
    );
}

pub(super) fn text_into(f: &Fingerprinter, s: &str, out: &mut Vec<Fp>) {
    let syms = normalize::text(s);
    select(
        f,
        Channel::Text,
        &syms,
        f.params.text_k,
        f.params.text_w,
        out,
    );
}

fn select(
    f: &Fingerprinter,
    channel: Channel,
    syms: &[Sym],
    k: usize,
    w: usize,
    out: &mut Vec<Fp>,
) {
    let (hasher, min) = match channel {
        Channel::Code => (&f.code, f.params.code_min_distinct),
        Channel::Text => (&f.text, f.params.text_min_distinct),
    };
    winnow::select(syms, k, w, |gram, at| {
        let g = &syms[at..at + k];
        if diverse(g, min) {
            out.push(Fp {
                hash: keyed(hasher, gram),
                channel,
                start: g[0].start,
                end: g[k - 1].end,
            });
        }
    });
}
