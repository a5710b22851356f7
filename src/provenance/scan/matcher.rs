//! One document against the ledger: which responses it shares fingerprints with, and where.

use std::collections::HashMap;

use super::{Lookup, Response};
use crate::provenance::fingerprint::{Channel, Fingerprinter, Fp, StopList};

/// When a match is a finding. A response's fingerprints in a document are grouped into runs,
/// per channel (fingerprints whose grams overlap or touch: a copied passage yields one run,
/// because winnowing keeps a gram at least every `w` symbols and grams are `k > w` long); runs
/// of fewer than `min_run` fingerprints are coincidences and are dropped. What is left must hold
/// at least `min_fingerprints` fingerprints and cover `min_chars` characters of the document,
/// each run counted with the `w - 1` symbols of its channel (letters and digits on the text
/// channel, tokens on the code channel) that winnowing may have left in no kept gram at each of
/// its ends. A finding is strong when
/// one passage of `strong_chars` was found verbatim (a single run of the text channel), or when
/// that passage is `strong_share` of the document (a small file copied whole).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub min_chars: usize,
    pub min_fingerprints: usize,
    pub min_run: usize,
    pub strong_chars: usize,
    pub strong_share: f64,
    /// A match's passage is where its runs sit no more than this many lines apart: pieces
    /// scattered over a file (an import here, a helper there) are what projects that share code
    /// look like, not one paste (docs/provenance.md, "A stable split, renaming as a refactoring
    /// does, a lower code floor").
    pub passage_gap_lines: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_chars: 200,
            min_fingerprints: 4,
            // 2, not 3: issue 17's renamed case (docs/provenance.md, "Runs of 2").
            min_run: 2,
            strong_chars: 400,
            strong_share: 0.5,
            passage_gap_lines: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 200–400 matched characters, or a match of the code channel alone (same structure,
    /// other names): could be shared boilerplate or a renamed copy; a person decides.
    NeedsReview,
    /// 400+ characters matched verbatim (text channel), or most of the document.
    Strong,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Strong => "strong",
            Tier::NeedsReview => "needs_review",
        }
    }
}

/// One response found in a document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResponseMatch {
    #[serde(flatten)]
    pub response: Response,
    /// Characters of the document covered by this response's fingerprints.
    pub matched_chars: usize,
    /// The longest passage the text channel found (the same letters and digits in the same
    /// order, one run), in characters of the document: a copy, not just code of the same shape.
    #[serde(skip)]
    pub verbatim_chars: usize,
    pub fingerprints: usize,
    /// 1-based inclusive line ranges of the document.
    pub lines: Vec<(usize, usize)>,
}

/// A document with at least one response over the thresholds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub tier: Tier,
    /// Characters of the document covered by any matched response.
    pub matched_chars: usize,
    pub total_chars: usize,
    /// `matched_chars / total_chars`.
    pub share: f64,
    pub lines: Vec<(usize, usize)>,
    pub responses: Vec<ResponseMatch>,
}

/// Filters on the responses a scan looks for.
#[derive(Debug, Clone, Default)]
pub struct ResponseFilter {
    pub tool: Option<String>,
    /// RFC 3339; responses captured before it are ignored.
    pub since: Option<String>,
}

impl ResponseFilter {
    fn admits(&self, r: &Response) -> bool {
        if let Some(tool) = &self.tool
            && r.tool.as_deref() != Some(tool.as_str())
        {
            return false;
        }
        // RFC 3339 UTC strings of one format order as their times do.
        self.since
            .as_deref()
            .is_none_or(|since| r.time.as_str() >= since)
    }
}

pub struct Matcher<'a, L: Lookup + ?Sized> {
    pub fingerprinter: &'a Fingerprinter,
    pub stop: &'a StopList,
    pub ledger: &'a L,
    pub thresholds: Thresholds,
    pub filter: ResponseFilter,
}

impl<L: Lookup + ?Sized> Matcher<'_, L> {
    /// Matches one document. `first_line` is the line number of the text's first line (a diff
    /// hunk starts mid-file).
    pub fn document(&self, text: &str, first_line: usize) -> anyhow::Result<Option<Finding>> {
        let hits = SCRATCH.with_borrow_mut(|sc| {
            self.prints(text, &mut sc.fps);
            sc.wanted.clear();
            sc.wanted.extend(sc.fps.iter().map(|f| f.hash));
            self.ledger.prefetch(&sc.wanted)?;
            self.hits(sc)
        })?;
        self.finding(text, first_line, hits)
    }

    /// Matches several documents (text, first line) with one [`Lookup::prefetch`] for all of
    /// them: a remote ledger is asked once for the group, not once a document. The answers are
    /// those of [`Matcher::document`] on each.
    pub fn documents(&self, docs: &[(&str, usize)]) -> anyhow::Result<Vec<Option<Finding>>> {
        let (prints, wanted) = self.prints_of(docs);
        self.ledger.prefetch(&wanted)?;
        drop(wanted);
        self.prefetched(docs, prints)
    }

    /// Each document's fingerprints, and all of theirs together: what a group's lookup asks.
    pub fn prints_of(&self, docs: &[(&str, usize)]) -> (Vec<Vec<Fp>>, Vec<u64>) {
        let mut prints: Vec<Vec<Fp>> = Vec::with_capacity(docs.len());
        let mut wanted = Vec::new();
        for (text, _) in docs {
            let mut fps = Vec::new();
            self.prints(text, &mut fps);
            wanted.extend(fps.iter().map(|f| f.hash));
            prints.push(fps);
        }
        (prints, wanted)
    }

    /// The findings of documents whose fingerprints ([`Matcher::prints_of`]) the ledger has
    /// prefetched, in order.
    pub fn prefetched(
        &self,
        docs: &[(&str, usize)],
        prints: Vec<Vec<Fp>>,
    ) -> anyhow::Result<Vec<Option<Finding>>> {
        let mut found = Vec::with_capacity(docs.len());
        for ((text, first_line), fps) in docs.iter().zip(prints) {
            let hits = SCRATCH.with_borrow_mut(|sc| {
                sc.fps = fps;
                sc.wanted.clear();
                sc.wanted.extend(sc.fps.iter().map(|f| f.hash));
                self.hits(sc)
            })?;
            found.push(self.finding(text, *first_line, hits)?);
        }
        Ok(found)
    }

    /// The finding of a document from its hits, if any response is over the thresholds.
    fn finding(
        &self,
        text: &str,
        first_line: usize,
        hits: Hits,
    ) -> anyhow::Result<Option<Finding>> {
        if hits.is_empty() {
            return Ok(None);
        }
        let total_chars = text.chars().count();
        let lines = LineIndex::new(text);
        let mut matches = Vec::new();
        let mut all_spans = Vec::new();
        let mut hits: Vec<_> = hits.into_iter().collect();
        hits.sort_unstable_by_key(|(id, _)| *id);
        for (id, [text_spans, code_spans]) in hits {
            if text_spans.len() + code_spans.len() < self.thresholds.min_fingerprints {
                continue;
            }
            let t = &self.thresholds;
            // Strong: the longest passage the text channel found on its own, verbatim. Several
            // shorter ones that add up are what code shared between projects looks like (a
            // borrowed doc comment, a helper function), not a paste.
            let (text_runs, text_runs_count) = runs(text_spans, t.min_run);
            let verbatim_chars = text_runs
                .iter()
                .map(|&r| chars_in(text, &widen(text, vec![r])))
                .max()
                .unwrap_or(0);
            let (code_runs, code_count) = runs(code_spans, t.min_run);
            let count = text_runs_count + code_count;
            if count < t.min_fingerprints {
                continue;
            }
            // The passages' extent: each channel's runs with what winnowing may have left
            // uncovered at their ends, `w - 1` symbols of that channel (letters and digits,
            // tokens). Without it on the code channel, renamed passages of 400 characters found
            // by that channel alone often measured under 200 (issue 17's renamed case).
            let params = self.fingerprinter.params();
            let mut extent = extend(text, &text_runs, params.text_w.saturating_sub(1));
            extent.extend(extend_tokens(
                text,
                &code_runs,
                params.code_w.saturating_sub(1),
            ));
            let extent = largest_passage(text, &widen(text, merge(extent)), t.passage_gap_lines);
            if extent < t.min_chars.min(total_chars) {
                continue;
            }
            let mut spans = text_runs;
            spans.extend(code_runs);
            let spans = widen(text, merge(spans));
            let chars = chars_in(text, &spans);
            let Some(response) = self.ledger.response(id)? else {
                continue;
            };
            if !self.filter.admits(&response) {
                continue;
            }
            all_spans.extend_from_slice(&spans);
            matches.push(ResponseMatch {
                response,
                matched_chars: chars,
                verbatim_chars,
                fingerprints: count,
                lines: lines.ranges(&spans, first_line),
            });
        }
        if matches.is_empty() {
            return Ok(None);
        }
        matches.sort_by(|a, b| {
            b.matched_chars
                .cmp(&a.matched_chars)
                .then_with(|| a.response.record_id.cmp(&b.response.record_id))
        });
        let spans = merge(all_spans);
        let matched_chars = chars_in(text, &spans);
        let share = if total_chars == 0 {
            0.0
        } else {
            matched_chars as f64 / total_chars as f64
        };
        // Strong needs the text channel: the code channel alone (identifiers abstracted) finds
        // renamed copies, but also code that merely has the same shape, so a person decides;
        // and one passage, verbatim (`verbatim_chars`).
        let best = matches.iter().map(|m| m.verbatim_chars).max().unwrap_or(0);
        let tier = if best >= self.thresholds.strong_chars
            || (best as f64) >= self.thresholds.strong_share * total_chars as f64
        {
            Tier::Strong
        } else {
            Tier::NeedsReview
        };
        Ok(Some(Finding {
            tier,
            matched_chars,
            total_chars,
            share,
            lines: lines.ranges(&spans, first_line),
            responses: matches,
        }))
    }
}

/// A thread's buffers for [`Matcher::hits`], reused from one document to the next: a scan
/// reads tens of thousands of documents, and nearly all of them end in `hits` with nothing.
#[derive(Default)]
struct Scratch {
    fps: Vec<Fp>,
    wanted: Vec<u64>,
    pairs: Vec<(u32, u64)>,
    ids: Vec<u64>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Response id -> spans (byte ranges of the document) on the text and the code channel.
type Hits = HashMap<u64, [Vec<(u32, u32)>; 2]>;

impl<L: Lookup + ?Sized> Matcher<'_, L> {
    /// A document's fingerprints, both channels, into `fps`. The stop-list drops what is
    /// found in it either way. A remote ledger must not be asked about those, so it goes first;
    /// where the ledger's filter (here, or the gateway's screen) stops nearly every fingerprint
    /// before a lookup, the stop-list is probed only for the fingerprints found, in
    /// [`Matcher::hits`] (it was 2–4 % of a scan, a probe a fingerprint; docs/provenance.md,
    /// "Scan speed").
    fn prints(&self, text: &str, fps: &mut Vec<Fp>) {
        fps.clear();
        self.fingerprinter.code_into(text, fps);
        self.fingerprinter.text_into(text, fps);
        if !self.ledger.stops_after() {
            fps.retain(|f| !self.stop.contains(f.hash));
        }
    }

    /// The fingerprints of `sc.fps` (their hashes in `sc.wanted`, prefetched) that are in the
    /// ledger, by response.
    fn hits(&self, sc: &mut Scratch) -> anyhow::Result<Hits> {
        let Scratch {
            fps,
            wanted,
            pairs,
            ids,
        } = sc;
        let stop_first = !self.ledger.stops_after();
        let mut hits = Hits::new();
        pairs.clear();
        self.ledger.responses_each(wanted, pairs)?;
        if !stop_first {
            pairs.retain(|&(i, _)| !self.stop.contains(fps[i as usize].hash));
        }
        // `pairs` is in the order of `fps`: one group per fingerprint.
        for group in pairs.chunk_by(|a, b| a.0 == b.0) {
            let fp = &fps[group[0].0 as usize];
            ids.clear();
            ids.extend(group.iter().map(|&(_, id)| id));
            if ids.len() > 1 {
                ids.sort_unstable();
                ids.dedup();
            }
            let channel = usize::from(fp.channel == Channel::Code);
            for &id in ids.iter() {
                hits.entry(id).or_default()[channel].push((fp.start, fp.end));
            }
        }
        Ok(hits)
    }
}

/// The runs of at least `min_run` fingerprints (their grams overlapping or touching), merged,
/// and how many fingerprints they hold. A scattered gram shared with a response (a common
/// idiom, the shape of unrelated code on the code channel) is no evidence of a copy; a copy of
/// 200 characters yields a dozen overlapping ones.
fn runs(mut spans: Vec<(u32, u32)>, min_run: usize) -> (Vec<(u32, u32)>, usize) {
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut kept = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, mut end) = spans[i];
        let mut j = i + 1;
        while j < spans.len() && spans[j].0 <= end {
            end = end.max(spans[j].1);
            j += 1;
        }
        if j - i >= min_run.max(1) {
            out.push((start, end));
            kept += j - i;
        }
        i = j;
    }
    (out, kept)
}

/// Each span with up to `n` more letters and digits on each side: what winnowing may have left
/// uncovered at the ends of a copied passage (its first and last `w - 1` symbols can lie in no
/// kept gram). An estimate for the `min_chars` rule only; reported lines stay those the grams
/// cover.
fn extend(text: &str, spans: &[(u32, u32)], n: usize) -> Vec<(u32, u32)> {
    let reach = |chars: &mut dyn Iterator<Item = (usize, char)>, from: usize| {
        chars
            .filter(|(_, c)| c.is_alphanumeric())
            .take(n)
            .last()
            .map_or(from, |(i, _)| i)
    };
    spans
        .iter()
        .map(|&(s, e)| {
            let (s, e) = (s as usize, e as usize);
            let a = reach(&mut text[..s].char_indices().rev(), s);
            let z = reach(
                &mut text[e..]
                    .char_indices()
                    .map(|(i, c)| (e + i + c.len_utf8(), c)),
                e,
            );
            (a as u32, z as u32)
        })
        .collect()
}

/// Each span with up to `n` more code tokens on each side (a word or number, or one punctuation
/// character other than `,` and `;`, as the code channel counts them; comments and literals are
/// not told apart here, so a word of a comment counts as a token): what winnowing may have left
/// uncovered at the ends of a run of the code channel. An estimate for the `min_chars` rule
/// only, like [`extend`].
fn extend_tokens(text: &str, spans: &[(u32, u32)], n: usize) -> Vec<(u32, u32)> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let counts = |c: u8| !c.is_ascii_whitespace() && c != b',' && c != b';';
    let back = |mut i: usize| {
        let mut left = n;
        while left > 0 && i > 0 {
            let c = b[i - 1];
            if word(c) {
                while i > 0 && word(b[i - 1]) {
                    i -= 1;
                }
                left -= 1;
            } else {
                i -= 1;
                if counts(c) {
                    left -= 1;
                }
            }
        }
        while !text.is_char_boundary(i) {
            i += 1;
        }
        i
    };
    let forward = |mut i: usize| {
        let mut left = n;
        while left > 0 && i < b.len() {
            let c = b[i];
            if word(c) {
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                left -= 1;
            } else {
                i += 1;
                if counts(c) {
                    left -= 1;
                }
            }
        }
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    spans
        .iter()
        .map(|&(s, e)| (back(s as usize) as u32, forward(e as usize) as u32))
        .collect()
}

/// How far a matched span is widened on each side, at most (bytes).
const EDGE: usize = 48;

/// Each span widened to the whole lines it touches, by at most `EDGE` bytes a side. Winnowing
/// keeps a gram only where it is its window's minimum, so the first and last few symbols of a
/// copied passage are usually in no kept gram; without this a 200-character paste would count
/// as 170. A lone gram (under `RUN` bytes) is left as it is: widening it would turn scattered
/// coincidences into a passage.
fn widen(text: &str, spans: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    const RUN: usize = 100;
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        let (s, e) = (s as usize, e as usize);
        if e - s < RUN {
            out.push((s as u32, e as u32));
            continue;
        }
        let floor = s.saturating_sub(EDGE);
        let mut a = b[floor..s]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(floor, |i| floor + i + 1);
        let ceil = (e + EDGE).min(b.len());
        let mut z = b[e..ceil]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(ceil, |i| e + i);
        while !text.is_char_boundary(a) {
            a += 1;
        }
        while !text.is_char_boundary(z) {
            z -= 1;
        }
        out.push((a as u32, z.max(a) as u32));
    }
    merge(out)
}

/// Sorted, disjoint byte ranges; touching or overlapping ones joined.
pub fn merge(mut spans: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    spans.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The characters of the largest group of `spans` (sorted, disjoint) whose neighbours are no
/// more than `gap` lines apart: one passage, however edits inside it broke up its runs.
fn largest_passage(text: &str, spans: &[(u32, u32)], gap: usize) -> usize {
    let b = text.as_bytes();
    let (mut best, mut current, mut prev_end) = (0, 0, None::<usize>);
    for span in spans {
        if let Some(pe) = prev_end {
            // The first newline ends the earlier span's line; the rest are lines in between.
            let newlines = b
                .get(pe..span.0 as usize)
                .map_or(0, |g| g.iter().filter(|&&c| c == b'\n').count());
            if newlines.saturating_sub(1) > gap {
                current = 0;
            }
        }
        current += chars_in(text, std::slice::from_ref(span));
        best = best.max(current);
        prev_end = Some(span.1 as usize);
    }
    best
}

fn chars_in(text: &str, spans: &[(u32, u32)]) -> usize {
    spans
        .iter()
        .map(|&(s, e)| {
            text.get(s as usize..e as usize)
                .map_or(0, |t| t.chars().count())
        })
        .sum()
}

/// Byte offset to line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex { starts }
    }

    /// 0-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// Merged spans as 1-based inclusive line ranges, adjacent lines joined.
    fn ranges(&self, spans: &[(u32, u32)], first_line: usize) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for &(s, e) in spans {
            let a = self.line(s as usize) + first_line;
            let b = self.line((e as usize).saturating_sub(1).max(s as usize)) + first_line;
            match out.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
}
