//! The ledger behind a real scan: any store that answers a batch of fingerprints with
//! [`Matches`] (the embedded file, PostgreSQL, or the running gateway's admin API), turned into
//! the matcher's per-fingerprint [`Lookup`].
//!
//! The matcher asks about one fingerprint at a time; a remote ledger must not be asked that
//! way. [`Lookup::prefetch`] hands over a document's fingerprints first (or a group of
//! documents', `run::Group`), and they go out as one batch (split at [`BATCH`]); the answers
//! are kept until the next call.
//!
//! Fingerprints found in the ledger are also remembered for the rest of the scan (up to
//! [`KNOWN`] of them), and not asked about again: a tree that holds a copy usually holds it
//! more than once (vendored crates in several versions, generated files), and each fingerprint
//! in the ledger costs the embedded store a prefix scan and its entries a read, where an absent
//! one ends in the membership filter.
//!
//! When that filter is in this process (`--ledger file`), it comes first
//! ([`LedgerLookup::with_filter`]): a document's fingerprints are sorted, checked against the
//! remembered ones and sent to `find` only if the filter may hold them, which is about 1 % of
//! them; a document with none makes no call. When it is in the running gateway (`--ledger
//! api`), the gateway screens every fingerprint first ([`LedgerLookup::with_screen`], `POST
//! /v1/provenance/may-hold`) and only what passes is sorted and looked up; a directory's next
//! group is screened and looked up on a thread of the scan's own ([`Pipelined`]) while it
//! matches the one before.
//!
//! That ledger can also say which fingerprints of an entry no other entry holds
//! ([`LedgerLookup::with_sole`]). A document that holds a captured answer holds hundreds of
//! its fingerprints, each one a lookup in the store, a quarter of a scan of a tree full of
//! answers. So the document's fingerprints go in small batches, growing (8, 16, 32 …): when a
//! batch finds an entry not seen before, its sole fingerprints are remembered as its own, and
//! the document's others among them are answered from memory. Those another entry may share
//! are still asked, so the answers are the same as one lookup each.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Lookup, Response};
use crate::provenance::fingerprint::StopList;
use crate::provenance::ledger::{ByPrint, Entry, Matches, Uniform};

/// Fingerprints per lookup call: well under the admin API's limit of 200,000.
pub const BATCH: usize = 50_000;

/// Fingerprints found in the ledger that a scan remembers (about 100 bytes each).
pub const KNOWN: usize = 1_000_000;

/// Fingerprint → entry numbers; probed with every fingerprint of every document.
type Known = ByPrint<Vec<u64>>;

/// A batch lookup: the entries holding any of the fingerprints.
pub type Find<'a> = dyn Fn(&[u64]) -> anyhow::Result<Matches> + Sync + 'a;

/// A membership filter in this process (the embedded ledger's): appends to the second argument
/// the fingerprints of the first the ledger may hold, and never drops one it holds.
pub type MayHold<'a> = dyn Fn(&[u64], &mut Vec<u64>) + Sync + 'a;

/// A membership filter in another process (the running gateway's, `POST
/// /v1/provenance/may-hold`): fills the second argument with the fingerprints of the first the
/// ledger may hold, sorted and distinct, and never drops one it holds.
pub type Screen<'a> = dyn Fn(&[u64], &mut Vec<u64>) -> anyhow::Result<()> + Sync + 'a;

/// What `screen` passes of `hashes`, into `out` (sorted, distinct), asked [`BATCH`] at a time
/// (a document of several MB is more than one call may carry); the calls made.
fn screen_all(screen: &Screen<'_>, hashes: &[u64], out: &mut Vec<u64>) -> anyhow::Result<u64> {
    out.clear();
    let (mut part, mut calls) = (Vec::new(), 0);
    for chunk in hashes.chunks(BATCH) {
        calls += 1;
        screen(chunk, &mut part)?;
        out.append(&mut part);
    }
    if calls > 1 {
        out.sort_unstable();
        out.dedup();
    }
    Ok(calls)
}

/// Appends to the second argument fingerprints of the entry named by the first that no other
/// entry holds (some or all of them; never one another entry holds).
pub type Sole<'a> = dyn Fn(&str, &mut Vec<u64>) -> anyhow::Result<()> + Sync + 'a;

/// The first batch of a document's fingerprints when entries can be expanded ([`Sole`]): big
/// enough that a document holding an answer finds its entry in it, small enough that the rest
/// are not asked. Each next batch is twice as large, up to [`BATCH`].
const FIRST_BATCH: usize = 8;

pub struct LedgerLookup<'a> {
    find: &'a Find<'a>,
    /// Asked before anything else when there is one: about 99 % of a document's fingerprints
    /// leave here, and the sorting, the probes of `known` and the call to `find` are paid for
    /// the rest only (they were a tenth of a scan's time when every fingerprint went through
    /// them; docs/provenance.md, "Scan speed"). A document it leaves with nothing makes no
    /// `find` call.
    may_hold: Option<&'a MayHold<'a>>,
    /// The same filter, asked remotely for a whole group of documents at once
    /// ([`LedgerLookup::with_screen`]).
    screen: Option<&'a Screen<'a>>,
    /// Each entry's fingerprints no other entry holds, read once when the entry is first
    /// found, and remembered as its own.
    sole: Option<&'a Sole<'a>>,
    /// Never looked up: dropped from what the filter or the screen passes, so only those few
    /// are probed ([`LedgerLookup::skipping`]).
    stop: Option<&'a StopList>,
    state: Mutex<State>,
    /// The current document has a fingerprint in the ledger. Nearly every document has none,
    /// and then the matcher's thousand lookups a document end here, without the lock.
    any: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The current document's (or group's) fingerprints that are in the ledger → entry numbers.
    hits: Known,
    /// Fingerprints found in the ledger earlier in this scan → entry numbers (at most
    /// [`KNOWN`]).
    known: Known,
    /// With a filter: fingerprints it let through that the ledger did not hold (its false
    /// positives), at most [`KNOWN`]. Versions of one crate, vendored copies and generated
    /// files repeat them, and each costs the store a prefix scan; the scan holds the ledger's
    /// lock, so the answer cannot change while it runs.
    absent: HashSet<u64, std::hash::BuildHasherDefault<Uniform>>,
    /// Entry id → its number here (the matcher's response id).
    numbers: HashMap<String, u64>,
    responses: Vec<Response>,
    calls: u64,
    screens: u64,
    /// The current document's fingerprints to ask about (a buffer kept across documents).
    wanted: Vec<u64>,
}

impl<'a> LedgerLookup<'a> {
    pub fn new(find: &'a Find<'a>) -> Self {
        LedgerLookup {
            find,
            may_hold: None,
            screen: None,
            sole: None,
            stop: None,
            state: Mutex::new(State::default()),
            any: AtomicBool::new(false),
        }
    }

    /// A ledger with a membership filter in this process: only what it may hold is looked up.
    pub fn with_filter(find: &'a Find<'a>, may_hold: &'a MayHold<'a>) -> Self {
        LedgerLookup {
            may_hold: Some(may_hold),
            ..Self::new(find)
        }
    }

    /// A ledger whose membership filter is in the process that holds it (the running
    /// gateway): every fingerprint is screened there first, and only what passes is sorted,
    /// checked against what this scan found before, and looked up. Sorting and probing every
    /// fingerprint here, to send fewer, cost the scan more than the gateway's screening costs
    /// it (docs/provenance.md, "Scan speed").
    pub fn with_screen(find: &'a Find<'a>, screen: &'a Screen<'a>) -> Self {
        LedgerLookup {
            screen: Some(screen),
            ..Self::new(find)
        }
    }

    /// A ledger that tells each entry's sole fingerprints (the embedded one, held by this
    /// process): the rest of a document that holds an entry's output is answered from them.
    pub fn with_sole(mut self, sole: &'a Sole<'a>) -> Self {
        self.sole = Some(sole);
        self
    }

    /// With a filter or a screen in front: the stop-list's fingerprints are dropped from what
    /// it passes, not looked up. The matcher then probes the stop-list only for what is found
    /// ([`Lookup::stops_after`]), not for every fingerprint of every document (3 % of a scan
    /// through the admin API). One that passes is boilerplate (a licence line) that thousands
    /// of entries may hold: its answer would be large and of no use.
    pub fn skipping(mut self, stop: &'a StopList) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Lookup calls made so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Calls to the remote filter ([`LedgerLookup::with_screen`]) made so far.
    pub fn screens(&self) -> u64 {
        self.lock().screens
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ask(&self, hashes: &[u64], state: &mut State) -> anyhow::Result<()> {
        for chunk in hashes.chunks(BATCH) {
            let m = (self.find)(chunk)?;
            let mut hits = std::mem::take(&mut state.hits);
            state.note(m, &mut hits);
            state.hits = hits;
        }
        Ok(())
    }

    /// What of `hashes` may be in the ledger, into `wanted` (sorted, distinct): what the
    /// filter here or the gateway's screen passes, or all of them; the screen calls made.
    fn wanted_of(&self, hashes: &[u64], wanted: &mut Vec<u64>) -> anyhow::Result<u64> {
        wanted.clear();
        let screens = match (self.may_hold, self.screen) {
            (None, Some(screen)) => screen_all(screen, hashes, wanted)?,
            (may_hold, _) => {
                match may_hold {
                    Some(may_hold) => may_hold(hashes, wanted),
                    None => wanted.extend_from_slice(hashes),
                }
                wanted.sort_unstable();
                wanted.dedup();
                0
            }
        };
        if let Some(stop) = self.stop {
            wanted.retain(|h| !stop.contains(*h));
        }
        Ok(screens)
    }

    /// `wanted` (sorted, distinct: what the filter passed, if any) looked up, but for what
    /// this scan found before or found absent; the answers stand until the next call.
    fn prefetch_wanted(&self, state: &mut State, mut wanted: Vec<u64>) -> anyhow::Result<()> {
        state.hits.clear();
        if !state.absent.is_empty() {
            let absent = &state.absent;
            wanted.retain(|h| !absent.contains(h));
        }
        if !state.known.is_empty() {
            let State { hits, known, .. } = &mut *state;
            answer_known(known, &mut wanted, hits);
        }
        let asked = match self.sole {
            _ if wanted.is_empty() => Ok(()),
            Some(sole) => self.ask_expanding(sole, &mut wanted, state),
            None => self.ask(&wanted, state),
        };
        state.remember();
        // Not with a screen: the gateway writes while the scan runs, and a fingerprint absent
        // now may be captured later.
        if self.may_hold.is_some() && asked.is_ok() {
            let State { hits, absent, .. } = &mut *state;
            for h in &wanted {
                if absent.len() >= KNOWN {
                    break;
                }
                if !hits.contains_key(h) {
                    absent.insert(*h);
                }
            }
        }
        state.wanted = wanted;
        self.any.store(!state.hits.is_empty(), Ordering::Relaxed);
        asked
    }

    /// The entries numbered `from` on (new in the last batch): their sole fingerprints are
    /// theirs alone, remembered in `known` while there is room.
    fn expand(&self, sole: &Sole<'_>, from: usize, state: &mut State) -> anyhow::Result<()> {
        let mut prints = Vec::new();
        for number in from..state.responses.len() {
            if state.known.len() >= KNOWN {
                break;
            }
            prints.clear();
            sole(&state.responses[number].record_id, &mut prints)?;
            for p in &prints {
                if state.known.len() >= KNOWN {
                    break;
                }
                state.known.entry(*p).or_insert_with(|| vec![number as u64]);
            }
        }
        Ok(())
    }

    /// `wanted` (sorted, none found earlier in the scan) asked in growing batches; after a
    /// batch that found new entries, those of the rest that are now known are taken from
    /// `known` and not asked. Leaves in `wanted` only what was asked.
    fn ask_expanding(
        &self,
        sole: &Sole<'_>,
        wanted: &mut Vec<u64>,
        state: &mut State,
    ) -> anyhow::Result<()> {
        let (mut at, mut step) = (0, FIRST_BATCH);
        while at < wanted.len() {
            let end = (at + step).min(wanted.len());
            let before = state.responses.len();
            self.ask(&wanted[at..end], state)?;
            (at, step) = (end, (step * 2).min(BATCH));
            if state.responses.len() == before {
                continue;
            }
            // Also after the last batch: a later document may hold more of the entry.
            self.expand(sole, before, state)?;
            if at == wanted.len() {
                break;
            }
            let State { hits, known, .. } = state;
            let mut rest = wanted.split_off(at);
            answer_known(known, &mut rest, hits);
            wanted.append(&mut rest);
        }
        Ok(())
    }
}

impl State {
    /// This document's hits into `known`, while there is room.
    fn remember(&mut self) {
        let hits = std::mem::take(&mut self.hits);
        self.remember_hits(&hits);
        self.hits = hits;
    }

    fn remember_hits(&mut self, hits: &Known) {
        for (hash, numbers) in hits {
            if self.known.len() >= KNOWN {
                break;
            }
            self.known.entry(*hash).or_insert_with(|| numbers.clone());
        }
    }

    /// A lookup's answer into `hits`, its entries numbered.
    fn note(&mut self, m: Matches, hits: &mut Known) {
        self.calls += 1;
        for (hash, id) in m.hits {
            let number = match self.numbers.get(&id) {
                Some(n) => *n,
                None => {
                    let Some(entry) = m.entries.get(&id) else {
                        continue;
                    };
                    let n = self.responses.len() as u64;
                    self.responses.push(response_of(entry));
                    self.numbers.insert(id, n);
                    n
                }
            };
            hits.entry(hash).or_default().push(number);
        }
    }
}

/// A group's answers fetched ahead ([`Pipelined::fetch`]), made current by
/// [`Pipelined::install`].
pub struct Fetched(Known);

/// A lookup whose fetches can run on another thread: the scan fetches the next group of
/// documents (the gateway's screen, then the lookup of what passed) while it matches the one
/// before. Fetches are made in the order of the groups, so what one finds spares the next as
/// it would one after the other.
pub trait Pipelined: Sync {
    /// What [`Lookup::prefetch`] would fetch for `hashes`, without making it current.
    fn fetch(&self, hashes: &[u64]) -> anyhow::Result<Fetched>;
    /// Makes a fetch's answers current, as [`Lookup::prefetch`] does.
    fn install(&self, fetched: Fetched);
}

impl Pipelined for LedgerLookup<'_> {
    fn fetch(&self, hashes: &[u64]) -> anyhow::Result<Fetched> {
        let mut hits = Known::default();
        let mut wanted = Vec::new();
        let screens = self.wanted_of(hashes, &mut wanted)?;
        {
            let mut state = self.lock();
            state.screens += screens;
            answer_known(&state.known, &mut wanted, &mut hits);
        }
        // Without the lock: the scan reads this one's answers for the group before meanwhile.
        let mut answers = Vec::new();
        for chunk in wanted.chunks(BATCH) {
            answers.push((self.find)(chunk)?);
        }
        let mut state = self.lock();
        for m in answers {
            state.note(m, &mut hits);
        }
        state.remember_hits(&hits);
        Ok(Fetched(hits))
    }

    fn install(&self, fetched: Fetched) {
        let mut state = self.lock();
        state.hits = fetched.0;
        self.any.store(!state.hits.is_empty(), Ordering::Relaxed);
    }
}

/// Takes out of `wanted` the fingerprints found earlier in the scan (`known`), with their
/// answers into `hits`.
fn answer_known(known: &Known, wanted: &mut Vec<u64>, hits: &mut Known) {
    wanted.retain(|h| match known.get(h) {
        Some(numbers) => {
            hits.insert(*h, numbers.clone());
            false
        }
        None => true,
    });
}

fn response_of(e: &Entry) -> Response {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Response {
        record_id: e.id.clone(),
        time: e.time.clone(),
        user: some(&e.user),
        tool: some(&e.tool),
        vendor: some(&e.vendor),
        model: e.model.clone(),
    }
}

impl Lookup for LedgerLookup<'_> {
    fn filters_first(&self) -> bool {
        self.may_hold.is_some()
    }

    /// With the gateway's screen, only when the stop-list's fingerprints it passes are dropped
    /// here before the lookup ([`LedgerLookup::skipping`]).
    fn stops_after(&self) -> bool {
        self.may_hold.is_some() || (self.screen.is_some() && self.stop.is_some())
    }

    fn prefetch(&self, hashes: &[u64]) -> anyhow::Result<()> {
        let mut state = self.lock();
        let mut wanted = std::mem::take(&mut state.wanted);
        match self.wanted_of(hashes, &mut wanted) {
            Ok(screens) => state.screens += screens,
            Err(e) => {
                state.hits.clear();
                state.wanted = wanted;
                self.any.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        self.prefetch_wanted(&mut state, wanted)
    }

    fn pipelined(&self) -> Option<&dyn Pipelined> {
        // Only with a remote screen: a filter in this process answers nearly everything
        // here, and there is no call to wait for.
        self.screen.map(|_| self as &dyn Pipelined)
    }

    fn responses_each(&self, hashes: &[u64], out: &mut Vec<(u32, u64)>) -> anyhow::Result<()> {
        if !self.any.load(Ordering::Relaxed) {
            return Ok(());
        }
        // One lock for the document, not one per fingerprint.
        let state = self.lock();
        for (i, hash) in hashes.iter().enumerate() {
            if let Some(found) = state.hits.get(hash) {
                out.extend(found.iter().map(|&n| (i as u32, n)));
            }
        }
        Ok(())
    }

    fn responses(&self, hash: u64, out: &mut Vec<u64>) -> anyhow::Result<()> {
        // A fingerprint not prefetched counts as absent: the matcher prefetches every one it
        // looks up.
        if !self.any.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(found) = self.lock().hits.get(&hash) {
            out.extend_from_slice(found);
        }
        Ok(())
    }

    fn response(&self, id: u64) -> anyhow::Result<Option<Response>> {
        Ok(self.lock().responses.get(id as usize).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            time: "2026-12-04T10:00:00.000Z".into(),
            time_ms: 0,
            user: "alice".into(),
            tool: "claude-code".into(),
            vendor: String::new(),
            model: None,
            workflow: None,
            exemption: None,
            fingerprints: 2,
            chars: 10,
            truncated: false,
        }
    }

    /// A ledger stand-in that records each batch it is asked and holds each fingerprint
    /// `holder` names an entry for.
    fn recording<'a>(
        asked: &'a Mutex<Vec<Vec<u64>>>,
        holder: impl Fn(u64) -> Option<&'static str> + 'a,
    ) -> impl Fn(&[u64]) -> anyhow::Result<Matches> + 'a {
        move |fps| {
            asked.lock().unwrap().push(fps.to_vec());
            let mut m = Matches::default();
            for &h in fps {
                if let Some(id) = holder(h) {
                    m.hits.push((h, id.into()));
                    m.entries.insert(id.into(), entry(id));
                }
            }
            Ok(m)
        }
    }

    #[test]
    fn one_call_per_document_and_ids_stay_stable_across_documents() {
        let asked = Mutex::new(Vec::new());
        let find = recording(&asked, |h| {
            (h % 2 == 0).then_some(if h < 100 { "r-low" } else { "r-high" })
        });
        let lookup = LedgerLookup::new(&find);
        lookup.prefetch(&[4, 3, 4, 200]).unwrap();
        let mut out = Vec::new();
        lookup.responses(4, &mut out).unwrap();
        lookup.responses(3, &mut out).unwrap();
        lookup.responses(200, &mut out).unwrap();
        assert_eq!(out, vec![0, 1]);
        let r = lookup.response(0).unwrap().unwrap();
        assert_eq!(r.record_id, "r-low");
        assert_eq!(r.vendor, None, "an empty vendor is no vendor");
        // The next document: the earlier hits are gone, the numbering is kept.
        lookup.prefetch(&[202]).unwrap();
        out.clear();
        lookup.responses(4, &mut out).unwrap();
        lookup.responses(202, &mut out).unwrap();
        assert_eq!(out, vec![1]);
        assert_eq!(lookup.calls(), 2);
        assert_eq!(*asked.lock().unwrap(), vec![vec![3, 4, 200], vec![202]]);
    }

    #[test]
    fn a_fingerprint_found_once_is_not_asked_about_again() {
        let asked = Mutex::new(Vec::new());
        let find = recording(&asked, |h| (h % 2 == 0).then_some("r"));
        let lookup = LedgerLookup::new(&find);
        lookup.prefetch(&[2, 3]).unwrap();
        // 2 was found: answered from memory; 3 was not: asked again, with the new one.
        lookup.prefetch(&[2, 3, 5]).unwrap();
        let mut out = Vec::new();
        lookup.responses(2, &mut out).unwrap();
        lookup.responses(3, &mut out).unwrap();
        assert_eq!(out, vec![0]);
        assert_eq!(*asked.lock().unwrap(), vec![vec![2, 3], vec![3, 5]]);
        // A document with nothing in the ledger answers nothing, also for an earlier hit.
        lookup.prefetch(&[7]).unwrap();
        out.clear();
        lookup.responses(2, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn with_a_filter_only_what_it_may_hold_is_asked_and_answers_do_not_change() {
        let asked = Mutex::new(Vec::new());
        let find = recording(&asked, |h| (h % 4 == 0).then_some("r"));
        // The filter: no false negatives (every multiple of 4 passes), some false positives.
        let may_hold =
            |fps: &[u64], out: &mut Vec<u64>| out.extend(fps.iter().filter(|h| *h % 2 == 0));
        let filtered = LedgerLookup::with_filter(&find, &may_hold);
        let doc = [9, 4, 6, 8, 4, 3];
        filtered.prefetch(&doc).unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![vec![4, 6, 8]]);
        let mut each = Vec::new();
        filtered.responses_each(&doc, &mut each).unwrap();
        assert_eq!(each, vec![(1, 0), (3, 0), (4, 0)]);
        // Nothing the filter may hold: no call at all.
        filtered.prefetch(&[1, 3, 5]).unwrap();
        assert_eq!(filtered.calls(), 1);
        // Its false positive (6) was asked once: found absent, it is not asked again; nor are
        // the hits (remembered); 10 is new.
        filtered.prefetch(&[6, 4, 10]).unwrap();
        assert_eq!(asked.lock().unwrap().last().unwrap(), &vec![10]);
        filtered.prefetch(&[6, 8]).unwrap();
        assert_eq!(filtered.calls(), 2);
        each.clear();
        filtered.responses_each(&[1, 3, 5], &mut each).unwrap();
        assert!(each.is_empty());
        // The same answers as without the filter, one fingerprint at a time.
        let plain = LedgerLookup::new(&find);
        plain.prefetch(&doc).unwrap();
        let mut one_by_one = Vec::new();
        for (i, &h) in doc.iter().enumerate() {
            let mut ids = Vec::new();
            plain.responses(h, &mut ids).unwrap();
            one_by_one.extend(ids.into_iter().map(|id| (i as u32, id)));
        }
        assert_eq!(one_by_one, vec![(1, 0), (3, 0), (4, 0)]);
    }

    /// With each entry's sole fingerprints, a document holding an entry's output asks about a
    /// few of them, not all; those another entry also holds are still asked, and every answer
    /// is the one a lookup each gives.
    #[test]
    fn an_entry_found_answers_its_sole_fingerprints_and_shared_ones_are_still_asked() {
        let r1: Vec<u64> = (1_000..1_300).collect();
        let r2: Vec<u64> = (2_000..2_100).collect();
        let shared = [5_000u64, 5_001];
        let holders = |h: u64| -> Vec<&'static str> {
            match h {
                1_000..1_300 => vec!["r1"],
                2_000..2_100 => vec!["r2"],
                5_000 | 5_001 => vec!["r1", "r2"],
                _ => vec![],
            }
        };
        let asked = Mutex::new(Vec::<u64>::new());
        let find = |fps: &[u64]| -> anyhow::Result<Matches> {
            asked.lock().unwrap().extend_from_slice(fps);
            let mut m = Matches::default();
            for &h in fps {
                for id in holders(h) {
                    m.hits.push((h, id.into()));
                    m.entries.insert(id.into(), entry(id));
                }
            }
            Ok(m)
        };
        // Every held fingerprint passes the filter, and a few absent ones.
        let may_hold = |fps: &[u64], out: &mut Vec<u64>| {
            out.extend(
                fps.iter()
                    .filter(|h| !holders(**h).is_empty() || *h % 7 == 0),
            );
        };
        // The ledger vouches for most of an entry's fingerprints, never for a shared one.
        let sole = |id: &str, out: &mut Vec<u64>| -> anyhow::Result<()> {
            let own = if id == "r1" { &r1 } else { &r2 };
            out.extend(own.iter().filter(|h| *h % 10 != 3));
            Ok(())
        };
        let expanding = LedgerLookup::with_filter(&find, &may_hold).with_sole(&sole);
        let plain = LedgerLookup::new(&find);
        let answers = |lookup: &LedgerLookup, doc: &[u64]| {
            lookup.prefetch(doc).unwrap();
            let mut each = Vec::new();
            lookup.responses_each(doc, &mut each).unwrap();
            let mut named: Vec<(u32, String)> = each
                .into_iter()
                .map(|(i, n)| (i, lookup.response(n).unwrap().unwrap().record_id))
                .collect();
            named.sort();
            named
        };
        // A document with all of r1's output, the shared two, part of r2's and some absent.
        let mut doc: Vec<u64> = r1.iter().rev().copied().collect();
        doc.extend(shared);
        doc.extend(&r2[..40]);
        doc.extend(9_000..9_050);
        let later: Vec<u64> = r2.iter().chain(&shared).copied().collect();
        let mut asked_by_expanding = Vec::new();
        for d in [&doc, &later] {
            asked.lock().unwrap().clear();
            let mine = answers(&expanding, d);
            asked_by_expanding.push(std::mem::take(&mut *asked.lock().unwrap()));
            assert_eq!(mine, answers(&plain, d), "the same answers");
        }
        let first = &asked_by_expanding[0];
        assert!(
            shared.iter().all(|h| first.contains(h)),
            "a shared fingerprint is asked"
        );
        assert!(first.len() < 120, "{} of {} asked", first.len(), doc.len());
        // The second document asks only what r2's sole fingerprints do not vouch for and the
        // first document did not hold.
        let expected: Vec<u64> = r2[40..].iter().copied().filter(|h| h % 10 == 3).collect();
        let mut second = asked_by_expanding[1].clone();
        second.sort_unstable();
        assert_eq!(second, expected);
    }

    /// A remote filter screens every fingerprint, in calls of at most [`BATCH`]; only what
    /// passes and was not found before is looked up; answers are those of a lookup of all.
    #[test]
    fn with_a_screen_only_what_passes_is_looked_up() {
        let asked = Mutex::new(Vec::new());
        let find = recording(&asked, |h| (h % 4 == 0).then_some("r"));
        let screened = Mutex::new(Vec::<usize>::new());
        let screen = |fps: &[u64], out: &mut Vec<u64>| -> anyhow::Result<()> {
            screened.lock().unwrap().push(fps.len());
            if fps.contains(&13) {
                anyhow::bail!("the gateway is gone");
            }
            out.clear();
            out.extend(fps.iter().filter(|h| *h % 2 == 0));
            out.sort_unstable();
            out.dedup();
            Ok(())
        };
        let lookup = LedgerLookup::with_screen(&find, &screen);
        let doc = [9, 8, 6, 4, 4, 3];
        lookup.prefetch(&doc).unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![vec![4, 6, 8]]);
        let mut each = Vec::new();
        lookup.responses_each(&doc, &mut each).unwrap();
        assert_eq!(each, vec![(1, 0), (3, 0), (4, 0)]);
        // Found before: screened, but not looked up again; nothing passes: no lookup.
        lookup.prefetch(&[8, 4, 1]).unwrap();
        lookup.prefetch(&[1, 3, 5]).unwrap();
        assert_eq!(lookup.calls(), 1);
        assert_eq!(lookup.screens(), 3);
        // A document larger than one call carries is screened in several.
        let many: Vec<u64> = (0..(BATCH as u64 * 2 + 1)).map(|h| 1_001 + h * 2).collect();
        lookup.prefetch(&many).unwrap();
        assert_eq!(screened.lock().unwrap()[3..], [BATCH, BATCH, 1]);
        // A failed screen fails the prefetch, and answers nothing.
        assert!(lookup.prefetch(&[13, 8]).is_err());
        each.clear();
        lookup.responses_each(&[8], &mut each).unwrap();
        assert!(each.is_empty());
        // A stop-listed fingerprint that passes the screen is not looked up, and the matcher
        // is told to probe the stop-list only for what is found.
        asked.lock().unwrap().clear();
        let stop = StopList::from_hashes([6, 9]);
        let skipping = LedgerLookup::with_screen(&find, &screen).skipping(&stop);
        assert!(skipping.stops_after() && !skipping.filters_first() && !lookup.stops_after());
        skipping.prefetch(&doc).unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![vec![4, 8]]);
        assert_eq!(skipping.fetch(&[12, 6, 2]).unwrap().0.len(), 1);
        assert_eq!(asked.lock().unwrap()[1], vec![2, 12]);
    }

    #[test]
    fn a_large_document_is_split_into_batches() {
        let calls = Mutex::new(0usize);
        let find = |fps: &[u64]| -> anyhow::Result<Matches> {
            assert!(fps.len() <= BATCH);
            *calls.lock().unwrap() += 1;
            Ok(Matches::default())
        };
        let lookup = LedgerLookup::new(&find);
        let many: Vec<u64> = (0..(BATCH as u64 * 2 + 1)).collect();
        lookup.prefetch(&many).unwrap();
        assert_eq!(*calls.lock().unwrap(), 3);
    }
}
