//! One scan from start to end: each source, each document through the matcher, JSON Lines
//! records kept or removed for `--write-clean`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, bail};
use serde_json::json;

use super::Lookup;
use super::access::{Fetched, Pipelined};
use super::matcher::{Finding, Matcher, Tier};
use super::parquet;
use super::repeats::Repeats;
use super::report::Located;
use super::sources::{self, Document, Tally};
use crate::provenance::fingerprint::{Fingerprinter, Fp, StopList};

/// What to scan, already validated by the command line.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub paths: Vec<PathBuf>,
    /// The repository is `paths[0]` (default `.`); only the lines the range adds are scanned.
    pub git_rev_range: Option<String>,
    /// Every blob in the history of the repository at `paths[0]`.
    pub git_history: bool,
    /// Read the files as JSON Lines datasets, taking this field of each record.
    pub jsonl_field: Option<String>,
    /// Write the dataset without its flagged records here, and a manifest beside it.
    pub write_clean: Option<PathBuf>,
}

impl Request {
    /// A file is a dataset when `--jsonl-field` is given or its name says so (JSON Lines or
    /// Parquet).
    fn is_dataset(&self, path: &Path) -> bool {
        self.jsonl_field.is_some()
            || parquet::is_parquet(path)
            || path.extension().is_some_and(|e| {
                e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson")
            })
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Located>,
    pub tally: Tally,
}

fn matched<L: Lookup + ?Sized>(
    matcher: &Matcher<'_, L>,
    repeats: &mut Repeats,
    doc: &Document,
    findings: &mut Vec<Located>,
) -> anyhow::Result<Option<Tier>> {
    let found = repeats.finding(&doc.text, || {
        matcher
            .document(&doc.text, 1)
            .with_context(|| format!("looking up {} in the ledger", doc.origin.label()))
    })?;
    Ok(located(doc, found, findings))
}

/// Source bytes matched with one lookup when the ledger is remote ([`Group`]): about 45,000
/// fingerprints after the stop-list, one call under `access::BATCH`.
const GROUP_BYTES: usize = 512 << 10;
/// Documents matched with one lookup at most (a tree of small files).
const GROUP_DOCS: usize = 256;

/// A directory's documents matched a group at a time ([`Matcher::documents`]) when the
/// ledger is remote (the running gateway's admin API, PostgreSQL): each lookup costs the scan
/// and the gateway tens of microseconds beside its fingerprints (the request, its token's
/// check, the hand-offs), and one a document was a fifth of their time on a registry of
/// 29,000 files (docs/provenance.md, "Scan speed"). A ledger with its filter in this process
/// answers nearly every fingerprint here and is asked a document at a time.
///
/// With the gateway's filter screening the fingerprints first ([`Lookup::pipelined`]), a
/// group is screened and looked up on the [`Fetcher`]'s thread while this one matches the
/// group before it and reads the next: the scan does not wait for the gateway's half of the
/// work.
struct Group<'s> {
    docs: Vec<Document>,
    bytes: usize,
    fetcher: Option<&'s Fetcher<'s>>,
    /// The group fingerprinted last, its fetch under way.
    staged: Option<Staged>,
}

/// A group fingerprinted and sent to be fetched, matched once its answers are in.
struct Staged {
    docs: Vec<Document>,
    digests: Vec<u128>,
    /// Digest → its place among the documents to match.
    unique: HashMap<u128, usize>,
    /// The documents to match (not copies), by place in `docs`.
    matched: Vec<usize>,
    prints: Vec<Vec<Fp>>,
}

impl<'s> Group<'s> {
    fn new(fetcher: Option<&'s Fetcher<'s>>) -> Self {
        Group {
            docs: Vec::new(),
            bytes: 0,
            fetcher,
            staged: None,
        }
    }

    fn push<L: Lookup + ?Sized>(
        &mut self,
        doc: &Document,
        matcher: &Matcher<'_, L>,
        repeats: &mut Repeats,
        findings: &mut Vec<Located>,
    ) -> anyhow::Result<()> {
        self.bytes += doc.text.len();
        self.docs.push(doc.clone());
        if self.bytes >= GROUP_BYTES || self.docs.len() >= GROUP_DOCS {
            self.flush(matcher, repeats, findings)?;
        }
        Ok(())
    }

    /// Matches the documents held, in order: copies of a document matched before (or earlier
    /// in the group) take its finding, the rest go to the ledger in one lookup. With a
    /// fetcher, they are only staged, and the group staged before them is matched.
    fn flush<L: Lookup + ?Sized>(
        &mut self,
        matcher: &Matcher<'_, L>,
        repeats: &mut Repeats,
        findings: &mut Vec<Located>,
    ) -> anyhow::Result<()> {
        let docs = std::mem::take(&mut self.docs);
        self.bytes = 0;
        if docs.is_empty() {
            return Ok(());
        }
        let digests: Vec<u128> = docs.iter().map(|d| repeats.digest(&d.text)).collect();
        let mut unique: HashMap<u128, usize> = HashMap::new();
        let mut matched = Vec::new();
        for (i, digest) in digests.iter().enumerate() {
            let staged = self
                .staged
                .as_ref()
                .is_some_and(|s| s.unique.contains_key(digest));
            if !repeats.knows(*digest) && !staged && !unique.contains_key(digest) {
                unique.insert(*digest, matched.len());
                matched.push(i);
            }
        }
        let texts = texts_of(&docs, &matched);
        let Some(fetcher) = self.fetcher else {
            let found = matcher
                .documents(&texts)
                .with_context(|| lookup_of(&docs, texts.len()))?;
            drop(texts);
            return Self::located_all(&docs, digests, &unique, found, matcher, repeats, findings);
        };
        let (prints, wanted) = matcher.prints_of(&texts);
        drop(texts);
        fetcher.send(wanted)?;
        self.finish(matcher, repeats, findings)?;
        self.staged = Some(Staged {
            docs,
            digests,
            unique,
            matched,
            prints,
        });
        Ok(())
    }

    /// Matches the group staged, once the fetcher has its answers.
    fn finish<L: Lookup + ?Sized>(
        &mut self,
        matcher: &Matcher<'_, L>,
        repeats: &mut Repeats,
        findings: &mut Vec<Located>,
    ) -> anyhow::Result<()> {
        let (Some(staged), Some(fetcher)) = (self.staged.take(), self.fetcher) else {
            return Ok(());
        };
        let texts = texts_of(&staged.docs, &staged.matched);
        let found = fetcher
            .answer()
            .and_then(|fetched| {
                fetcher.pipelined.install(fetched);
                matcher.prefetched(&texts, staged.prints)
            })
            .with_context(|| lookup_of(&staged.docs, texts.len()))?;
        drop(texts);
        Self::located_all(
            &staged.docs,
            staged.digests,
            &staged.unique,
            found,
            matcher,
            repeats,
            findings,
        )
    }

    /// Each document's finding: its own, or a copy's.
    fn located_all<L: Lookup + ?Sized>(
        docs: &[Document],
        digests: Vec<u128>,
        unique: &HashMap<u128, usize>,
        found: Vec<Option<Finding>>,
        matcher: &Matcher<'_, L>,
        repeats: &mut Repeats,
        findings: &mut Vec<Located>,
    ) -> anyhow::Result<()> {
        for (doc, digest) in docs.iter().zip(digests) {
            let f = repeats.finding_of(digest, || match unique.get(&digest) {
                Some(&i) => Ok(found[i].clone()),
                // A copy of one in the group staged before, which was not remembered after
                // all ([`super::repeats::REMEMBERED`]): matched on its own.
                None => matcher
                    .document(&doc.text, 1)
                    .with_context(|| format!("looking up {} in the ledger", doc.origin.label())),
            })?;
            located(doc, f, findings);
        }
        Ok(())
    }
}

fn texts_of<'d>(docs: &'d [Document], matched: &[usize]) -> Vec<(&'d str, usize)> {
    matched
        .iter()
        .map(|&i| (docs[i].text.as_str(), 1))
        .collect()
}

fn lookup_of(docs: &[Document], count: usize) -> String {
    format!(
        "looking up {count} documents from {} on in the ledger",
        docs.first().map_or_else(String::new, |d| d.origin.label())
    )
}

/// The ledger's fetches ([`Pipelined::fetch`]) on a thread of its own: a group's
/// fingerprints go in, its answers come out in the same order.
struct Fetcher<'p> {
    pipelined: &'p dyn Pipelined,
    jobs: mpsc::Sender<Vec<u64>>,
    answers: mpsc::Receiver<anyhow::Result<Fetched>>,
}

impl<'p> Fetcher<'p> {
    fn spawn<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        pipelined: &'p dyn Pipelined,
    ) -> Fetcher<'p>
    where
        'p: 'scope,
    {
        let (jobs, todo) = mpsc::channel::<Vec<u64>>();
        let (done, answers) = mpsc::channel();
        scope.spawn(move || {
            // Ends when the scan drops its sender.
            for hashes in todo {
                if done.send(pipelined.fetch(&hashes)).is_err() {
                    break;
                }
            }
        });
        Fetcher {
            pipelined,
            jobs,
            answers,
        }
    }

    fn send(&self, hashes: Vec<u64>) -> anyhow::Result<()> {
        self.jobs
            .send(hashes)
            .map_err(|_| anyhow::anyhow!("the scan's lookup thread has stopped"))
    }

    fn answer(&self) -> anyhow::Result<Fetched> {
        self.answers
            .recv()
            .map_err(|_| anyhow::anyhow!("the scan's lookup thread has stopped"))?
    }
}

/// A document's finding, if any, with its lines in the file's numbering, into `findings`.
fn located(doc: &Document, found: Option<Finding>, findings: &mut Vec<Located>) -> Option<Tier> {
    let mut finding = found?;
    if let Some(map) = &doc.line_map {
        finding.lines = sources::remap(&finding.lines, map);
        for r in &mut finding.responses {
            r.lines = sources::remap(&r.lines, map);
        }
    }
    let tier = finding.tier;
    findings.push(Located {
        origin: doc.origin.clone(),
        finding,
    });
    Some(tier)
}

pub fn scan<L: Lookup + ?Sized>(
    req: &Request,
    matcher: &Matcher<'_, L>,
) -> anyhow::Result<Outcome> {
    scan_with(req, matcher, Repeats::new()?)
}

/// [`scan`], remembering the documents matched in `repeats`.
pub(super) fn scan_with<L: Lookup + ?Sized>(
    req: &Request,
    matcher: &Matcher<'_, L>,
    mut repeats: Repeats,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    each_source(req, matcher, &mut repeats, &mut out)?;
    out.tally.copies = repeats.copies();
    Ok(out)
}

fn each_source<L: Lookup + ?Sized>(
    req: &Request,
    matcher: &Matcher<'_, L>,
    repeats: &mut Repeats,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let repo = req
        .paths
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(range) = &req.git_rev_range {
        sources::git_diff(&repo, range, &mut out.tally, |doc| {
            matched(matcher, repeats, &doc, &mut out.findings).map(drop)
        })?;
        return Ok(());
    }
    if req.git_history {
        sources::git_history(&repo, &mut out.tally, |doc| {
            matched(matcher, repeats, &doc, &mut out.findings).map(drop)
        })?;
        return Ok(());
    }
    let field = req.jsonl_field.as_deref().unwrap_or("text");
    let datasets: Vec<&PathBuf> = req
        .paths
        .iter()
        .filter(|p| p.is_file() && req.is_dataset(p))
        .collect();
    if let Some(clean) = &req.write_clean {
        let [dataset] = datasets.as_slice() else {
            bail!(
                "--write-clean needs exactly one JSON Lines file to scan (got {})",
                datasets.len()
            );
        };
        if parquet::is_parquet(dataset) {
            bail!(
                "--write-clean writes JSON Lines, and {} is Parquet: scan it with --format json \
                 and drop the rows its findings name (`origin.line` is the row number)",
                dataset.display()
            );
        }
        write_clean(dataset, field, clean, matcher, repeats, out)?;
        return Ok(());
    }
    let mut files = Vec::new();
    for p in &req.paths {
        if datasets.contains(&p) && parquet::is_parquet(p) {
            parquet::rows(p, field, &mut out.tally, |doc| {
                matched(matcher, repeats, &doc, &mut out.findings).map(drop)
            })?;
        } else if datasets.contains(&p) {
            sources::jsonl(p, field, &mut out.tally, |doc, _| {
                matched(matcher, repeats, &doc, &mut out.findings).map(drop)
            })?;
        } else {
            files.push(p.clone());
        }
    }
    if matcher.ledger.filters_first() {
        sources::files(&files, &mut out.tally, |doc| {
            matched(matcher, repeats, doc, &mut out.findings).map(drop)
        })?;
        return Ok(());
    }
    std::thread::scope(|scope| {
        let fetcher = matcher
            .ledger
            .pipelined()
            .map(|pipelined| Fetcher::spawn(scope, pipelined));
        let mut group = Group::new(fetcher.as_ref());
        sources::files(&files, &mut out.tally, |doc| {
            group.push(doc, matcher, repeats, &mut out.findings)
        })?;
        group.flush(matcher, repeats, &mut out.findings)?;
        group.finish(matcher, repeats, &mut out.findings)
    })
}

/// The dataset without its flagged records, copied line for line, and `OUT.manifest.json`
/// naming each removed record with its tier, characters and responses.
fn write_clean<L: Lookup + ?Sized>(
    dataset: &Path,
    field: &str,
    clean: &Path,
    matcher: &Matcher<'_, L>,
    repeats: &mut Repeats,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let tmp = clean.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let mut kept = 0u64;
    let before = out.findings.len();
    sources::jsonl(dataset, field, &mut out.tally, |doc, raw| {
        if matched(matcher, repeats, &doc, &mut out.findings)?.is_none() {
            writer.write_all(raw.as_bytes())?;
            writer.write_all(b"\n")?;
            kept += 1;
        }
        Ok(())
    })?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, clean).with_context(|| format!("writing {}", clean.display()))?;
    let removed: Vec<_> = out.findings[before..].iter().collect();
    let manifest = json!({
        "version": super::report::SCHEMA_VERSION,
        "source": dataset.display().to_string(),
        "output": clean.display().to_string(),
        "records_kept": kept,
        "records_removed": removed.len(),
        "removed": removed,
    });
    let path = manifest_path(clean);
    let text = serde_json::to_vec_pretty(&manifest).context("encoding the manifest")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn manifest_path(clean: &Path) -> PathBuf {
    let mut name = clean.as_os_str().to_os_string();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// `aigate provenance baseline`: every fingerprint of the files under `paths` joins the
/// stop-list. Returns what was read and how many fingerprints were new.
pub fn baseline(
    paths: &[PathBuf],
    fingerprinter: &Fingerprinter,
    stop: &mut StopList,
) -> anyhow::Result<(Tally, usize)> {
    let mut tally = Tally::default();
    let mut hashes = Vec::new();
    let mut fps = Vec::new();
    sources::files(paths, &mut tally, |doc| {
        fps.clear();
        fingerprinter.code_into(&doc.text, &mut fps);
        fingerprinter.text_into(&doc.text, &mut fps);
        hashes.extend(fps.iter().map(|f| f.hash));
        Ok(())
    })?;
    let added = stop.extend(hashes);
    Ok((tally, added))
}
