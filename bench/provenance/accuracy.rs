//! Accuracy of provenance fingerprints (issue 17, section 4), on real code that ships on this
//! machine: crates in the cargo cache and Python's standard library. Nothing is fetched.
//!
//! `cargo bench --bench provenance_accuracy` (or with `-- --quick`). Environment:
//! `AIGATE_PROV_SAMPLES` (passages per case, default 400), `AIGATE_PROV_SWEEP=1` to try several
//! k-gram and window sizes, or `AIGATE_PROV_PARAMS="40,16,16,8;40,16,24,8"` (text k, text w,
//! code k, code w per set).
//!
//! The corpus is split by package (a crate, or a top-level module of the standard library), so
//! code shared inside one package cannot pass for a match between two:
//!  - "responses": files captured as model output (each file one response in the ledger);
//!  - "baseline": known-clean code, whose fingerprints form the stop-list;
//!  - "clean": at least 10,000 files never sent, to count false positives, and to host pastes.
//!
//! Transformations of passages taken from the responses: 1. whole file verbatim; 2. a passage
//! pasted into a clean file; 3. the same, reformatted (indentation, spaces around operators and
//! commas, quotes, joined and split lines); 4. identifiers renamed; 5. 10% and 25% of lines
//! edited or interleaved. A case is found when the scan's matcher names the right response.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aigate::provenance::fingerprint::{Fingerprinter, Key, Params, StopList};
use aigate::provenance::scan::matcher::ResponseFilter;
use aigate::provenance::scan::{Lookup, Matcher, Response, Thresholds, Tier};

/// A tiny deterministic generator, so every run measures the same cases.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct File {
    package: String,
    text: String,
}

fn collect(root: &Path, ext: &str, package_depth: usize, out: &mut Vec<File>) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if !p.ends_with("site-packages") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == ext) {
                let Ok(text) = std::fs::read_to_string(&p) else {
                    continue;
                };
                if text.len() < 600 || text.len() > 64 * 1024 {
                    continue;
                }
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let package: Vec<String> = rel
                    .components()
                    .take(package_depth)
                    .map(|c| {
                        c.as_os_str()
                            .to_string_lossy()
                            .trim_end_matches(".py")
                            .to_string()
                    })
                    .collect();
                out.push(File {
                    package: format!("{ext}:{}", package.join("/")),
                    text,
                });
            }
        }
    }
}

fn corpus() -> Vec<File> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(Path::new(&home).join(".cargo/registry/src")) {
        for index in rd.flatten() {
            collect(&index.path(), "rs", 1, &mut files);
        }
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig;print(sysconfig.get_paths()['stdlib'])",
        ])
        .output();
    if let Ok(out) = out {
        let stdlib = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !stdlib.is_empty() {
            collect(Path::new(&stdlib), "py", 1, &mut files);
        }
    }
    files
}

#[derive(Default)]
struct Mem {
    by_hash: HashMap<u64, Vec<u32>>,
    entries: Vec<Response>,
}

impl Lookup for Mem {
    fn responses(&self, hash: u64, out: &mut Vec<u64>) -> anyhow::Result<()> {
        out.extend(
            self.by_hash
                .get(&hash)
                .into_iter()
                .flatten()
                .map(|&i| u64::from(i)),
        );
        Ok(())
    }
    fn response(&self, id: u64) -> anyhow::Result<Option<Response>> {
        Ok(self.entries.get(id as usize).cloned())
    }
}

const KEYWORDS: &[&str] = &[
    "fn", "let", "mut", "pub", "impl", "struct", "enum", "match", "if", "else", "for", "while",
    "loop", "return", "use", "mod", "self", "Self", "super", "crate", "where", "trait", "type",
    "const", "static", "as", "in", "ref", "move", "dyn", "unsafe", "async", "await", "true",
    "false", "def", "class", "import", "from", "None", "True", "False", "and", "or", "not", "is",
    "lambda", "with", "try", "except", "finally", "raise", "yield", "pass", "elif", "del",
    "global", "nonlocal", "assert", "break", "continue", "Some", "None", "Ok", "Err", "Vec",
    "String", "Option", "Result", "print", "len", "range", "str", "int", "u8", "u32", "u64",
    "usize", "i32", "i64", "f64", "bool", "char",
];

/// Whole lines of `src`, about `chars` long, starting at a random line.
fn passage<'a>(rng: &mut Rng, src: &'a str, chars: usize) -> Option<&'a str> {
    if src.len() < chars + 2 {
        return None;
    }
    let mut from = rng.below(src.len() - chars);
    while !src.is_char_boundary(from) {
        from += 1;
    }
    let start = src[from..].find('\n').map(|i| from + i + 1)?;
    let mut end = start + chars;
    if end > src.len() {
        return None;
    }
    while !src.is_char_boundary(end) {
        end += 1;
    }
    let end = src[end..].find('\n').map_or(src.len(), |i| end + i + 1);
    let p = &src[start..end];
    // A passage of blank lines and braces is not a passage.
    (p.chars().filter(|c| c.is_alphanumeric()).count() * 2 > chars).then_some(p)
}

fn paste(rng: &mut Rng, host: &str, inner: &str) -> String {
    let lines: Vec<&str> = host.lines().collect();
    let at = rng.below(lines.len());
    let mut s = lines[..at].join("\n");
    s.push('\n');
    s.push_str(inner);
    if !inner.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&lines[at..].join("\n"));
    s
}

/// What a formatter does: indentation, spaces around operators and after commas, quote style,
/// short lines joined and long ones split at commas.
fn reformat(rng: &mut Rng, s: &str) -> String {
    let mut out = String::new();
    let indent = ["\t", "  ", "    ", "        "][rng.below(4)];
    for line in s.lines() {
        let depth = line.len() - line.trim_start().len();
        let body = line.trim();
        let mut b = body
            .replace(" = ", "=")
            .replace(", ", ",")
            .replace('\'', "\"")
            .replace("){", ") {");
        if rng.below(2) == 0 {
            b = b
                .replace(',', ", ")
                .replace('=', " = ")
                .replace(" =  = ", " == ");
        }
        if b.len() > 60 && rng.below(3) == 0 {
            b = b.replacen(", ", ",\n", 1);
        }
        out.push_str(&indent.repeat(depth / 4 + usize::from(depth % 4 != 0)));
        out.push_str(&b);
        if rng.below(6) == 0 && body.ends_with('{') {
            out.push(' ');
        } else {
            out.push('\n');
        }
    }
    out
}

/// Every identifier that is not a keyword gets a new name, consistently.
fn rename(s: &str) -> String {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let w = &s[st..i];
            if KEYWORDS.contains(&w) {
                out.push_str(w);
            } else {
                let n = names.len();
                let new = names
                    .entry(w.to_string())
                    .or_insert_with(|| format!("q{n}x"));
                out.push_str(new);
            }
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `share` of the lines replaced by lines of `other` or edited.
fn edit_lines(rng: &mut Rng, s: &str, other: &str, share: f64) -> String {
    let others: Vec<&str> = other.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = String::new();
    for line in s.lines() {
        if (rng.below(1000) as f64) < share * 1000.0 {
            match rng.below(3) {
                0 => {} // deleted
                1 => {
                    out.push_str(others[rng.below(others.len())]);
                    out.push('\n');
                }
                _ => {
                    // edited in place: a word changed, something appended
                    out.push_str(&line.replacen(' ', " tmp ", 1));
                    out.push_str(" // changed\n");
                }
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

struct Split<'a> {
    responses: Vec<&'a File>,
    baseline: Vec<&'a File>,
    clean: Vec<&'a File>,
}

fn split(files: &[File]) -> Split<'_> {
    let mut packages: Vec<&str> = files.iter().map(|f| f.package.as_str()).collect();
    packages.sort();
    packages.dedup();
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut role: HashMap<&str, usize> = HashMap::new();
    for p in packages {
        // 15% responses, 15% baseline, 70% clean.
        let r = rng.below(100);
        role.insert(
            p,
            if r < 15 {
                0
            } else if r < 30 {
                1
            } else {
                2
            },
        );
    }
    let mut s = Split {
        responses: vec![],
        baseline: vec![],
        clean: vec![],
    };
    for f in files {
        match role[f.package.as_str()] {
            0 => s.responses.push(f),
            1 => s.baseline.push(f),
            _ => s.clean.push(f),
        }
    }
    s
}

struct Results {
    rows: Vec<(String, usize, usize, usize)>,
    clean_files: usize,
    clean_strong: usize,
    clean_review: usize,
    ledger_fps: usize,
    stop_fps: usize,
    fp_mb_s: f64,
}

fn run(split: &Split, params: Params, samples: usize) -> Results {
    let key = Key::from_bytes([42; 32]);
    let fp = Fingerprinter::with_params(&key, params);
    let mut mem = Mem::default();
    let mut ledger_fps = 0;
    let responses: Vec<&File> = split.responses.iter().copied().take(3000).collect();
    for (i, f) in responses.iter().enumerate() {
        let fps = fp.all(&f.text);
        ledger_fps += fps.len();
        for x in fps {
            let v = mem.by_hash.entry(x.hash).or_default();
            if v.last() != Some(&(i as u32)) {
                v.push(i as u32);
            }
        }
        mem.entries.push(Response {
            record_id: format!("r{i}"),
            time: "2026-11-01T00:00:00Z".into(),
            user: None,
            tool: None,
            vendor: None,
            model: None,
        });
    }
    let mut stop = StopList::default();
    let mut hashes = Vec::new();
    for f in &split.baseline {
        hashes.extend(fp.all(&f.text).into_iter().map(|x| x.hash));
    }
    stop.extend(hashes);
    let m = Matcher {
        fingerprinter: &fp,
        stop: &stop,
        ledger: &mem,
        thresholds: Thresholds::default(),
        filter: ResponseFilter::default(),
    };
    let found = |text: &str, want: usize| -> bool {
        m.document(text, 1).ok().flatten().is_some_and(|f| {
            f.responses
                .iter()
                .any(|r| r.response.record_id == format!("r{want}"))
        })
    };
    let mut rng = Rng(0xfeed_beef_0bad_cafe);
    let mut rows = Vec::new();
    type Transform = fn(&mut Rng, &str, &str) -> String;
    let cases: Vec<(&str, Transform)> = vec![
        ("2 pasted", |_, p, _| p.to_string()),
        ("3 reformatted", |r, p, _| reformat(r, p)),
        ("4 renamed", |_, p, _| rename(p)),
        ("4 renamed+reformatted", |r, p, _| reformat(r, &rename(p))),
        ("5 10% lines edited", |r, p, o| edit_lines(r, p, o, 0.10)),
        ("5 25% lines edited", |r, p, o| edit_lines(r, p, o, 0.25)),
    ];
    // 1: whole files verbatim.
    {
        let mut hit = 0;
        let n = responses.len().min(samples);
        for _ in 0..n {
            let i = rng.below(responses.len());
            hit += usize::from(found(&responses[i].text, i));
        }
        rows.push(("1 whole file".into(), 0, n, hit));
    }
    for &len in &[200usize, 400] {
        for (name, t) in &cases {
            let mut hit = 0;
            let mut n = 0;
            while n < samples {
                let i = rng.below(responses.len());
                let Some(p) = passage(&mut rng, &responses[i].text, len) else {
                    continue;
                };
                let host = split.clean[rng.below(split.clean.len())];
                let other = split.clean[rng.below(split.clean.len())];
                let changed = t(&mut rng, p, &other.text);
                let doc = paste(&mut rng, &host.text, &changed);
                hit += usize::from(found(&doc, i));
                n += 1;
            }
            rows.push((name.to_string(), len, n, hit));
        }
    }
    let mut clean_strong = 0;
    let mut clean_review = 0;
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for f in &split.clean {
        bytes += f.text.len();
        if let Ok(Some(x)) = m.document(&f.text, 1) {
            match x.tier {
                Tier::Strong => clean_strong += 1,
                Tier::NeedsReview => clean_review += 1,
            }
        }
    }
    let scan_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut n = 0;
    for f in &split.clean {
        n += fp.all(&f.text).len();
    }
    std::hint::black_box(n);
    let fp_mb_s = bytes as f64 / 1e6 / t0.elapsed().as_secs_f64();
    eprintln!(
        "  scan of the clean set (in-memory ledger): {:.1} MB/s",
        bytes as f64 / 1e6 / scan_s
    );
    Results {
        rows,
        clean_files: split.clean.len(),
        clean_strong,
        clean_review,
        ledger_fps,
        stop_fps: stop.len(),
        fp_mb_s,
    }
}

fn print(params: Params, r: &Results, responses: usize) {
    println!(
        "\n## text k={} w={}, code k={} w={}",
        params.text_k, params.text_w, params.code_k, params.code_w
    );
    println!("| case | passage | n | recall |");
    println!("|---|---|---|---|");
    for (name, len, n, hit) in &r.rows {
        let len = if *len == 0 {
            "whole".to_string()
        } else {
            format!("{len}+")
        };
        println!(
            "| {name} | {len} | {n} | {:.1}% |",
            100.0 * *hit as f64 / (*n).max(1) as f64
        );
    }
    println!(
        "clean files: {} ; strong: {} ({:.3}%) ; needs review: {} ({:.3}%)",
        r.clean_files,
        r.clean_strong,
        100.0 * r.clean_strong as f64 / r.clean_files.max(1) as f64,
        r.clean_review,
        100.0 * r.clean_review as f64 / r.clean_files.max(1) as f64
    );
    println!(
        "ledger: {} responses, {} fingerprints ; stop-list: {} ; fingerprinting (both channels, one core): {:.1} MB/s",
        responses, r.ledger_fps, r.stop_fps, r.fp_mb_s
    );
}

fn main() {
    let samples: usize = std::env::var("AIGATE_PROV_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let files = corpus();
    let split = split(&files);
    println!(
        "corpus: {} files; responses {} (up to 3000 used), baseline {}, clean {}",
        files.len(),
        split.responses.len(),
        split.baseline.len(),
        split.clean.len()
    );
    let mut sets = vec![Params::default()];
    // AIGATE_PROV_PARAMS="40,16,16,8;40,16,24,8": text k, text w, code k, code w per set.
    if let Ok(list) = std::env::var("AIGATE_PROV_PARAMS") {
        sets = list
            .split(';')
            .filter_map(|set| {
                let v: Vec<usize> = set
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                (v.len() == 4).then(|| Params {
                    text_k: v[0],
                    text_w: v[1],
                    code_k: v[2],
                    code_w: v[3],
                })
            })
            .collect();
    }
    if std::env::var("AIGATE_PROV_SWEEP").is_ok_and(|v| v == "1") {
        let d = Params::default();
        for (k, w) in [(30, 16), (50, 16), (40, 24), (30, 32)] {
            sets.push(Params {
                text_k: k,
                text_w: w,
                ..d
            });
        }
        for (k, w) in [(12, 6), (20, 10), (16, 12), (24, 8)] {
            sets.push(Params {
                code_k: k,
                code_w: w,
                ..d
            });
        }
    }
    for p in sets {
        let r = run(&split, p, samples);
        print(p, &r, split.responses.len().min(3000));
    }
}
