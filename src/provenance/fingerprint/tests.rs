use super::*;

fn fp() -> Fingerprinter {
    Fingerprinter::new(&Key::from_bytes([7; 32]))
}

fn hashes(fps: &[Fp]) -> Vec<u64> {
    fps.iter().map(|f| f.hash).collect()
}

const PROSE: &str = "The gateway sees every response a vendor sends back, so it is the one place \
where what a model wrote can be fingerprinted on the way in and found again later in a \
repository or a training set, even after someone reflowed the paragraph or changed its case.";

const RUST: &str = r#"
pub fn merge_ranges(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    // Sorted and disjoint from here on.
    out
}
"#;

#[test]
fn same_text_same_fingerprints_and_key_changes_them() {
    let a = fp().all(RUST);
    assert!(!a.is_empty());
    assert_eq!(a, fp().all(RUST));
    let other = Fingerprinter::new(&Key::from_bytes([8; 32])).all(RUST);
    assert_eq!(a.len(), other.len(), "selection does not depend on the key");
    assert!(a.iter().zip(&other).all(|(x, y)| x.hash != y.hash));
}

#[test]
fn channels_never_share_a_hash() {
    // The same symbols on both channels would hash alike under one key.
    let key = Key::from_bytes([1; 32]);
    let f = Fingerprinter::with_params(
        &key,
        Params {
            text_k: 3,
            text_w: 1,
            code_k: 3,
            code_w: 1,
            ..Params::default()
        },
    );
    let code: Vec<u64> = hashes(&f.code("x + y"));
    let text: Vec<u64> = hashes(&f.text("x + y"));
    assert!(code.iter().all(|h| !text.contains(h)));
}

#[test]
fn text_channel_ignores_case_spacing_and_punctuation() {
    let reflowed = PROSE.to_uppercase().replace(' ', "\n   ").replace(',', ";");
    assert_eq!(hashes(&fp().text(PROSE)), hashes(&fp().text(&reflowed)));
    assert!(fp().text(PROSE).len() > 5);
}

#[test]
fn code_channel_survives_renaming_and_reformatting() {
    let renamed = RUST
        .replace("merge_ranges", "coalesce")
        .replace("ranges", "spans")
        .replace("out", "acc")
        .replace("last", "tail")
        .replace("start", "lo")
        .replace("end", "hi")
        .replace("    ", "\t")
        .replace("Sorted and disjoint", "a different comment");
    let a = hashes(&fp().code(RUST));
    assert!(a.len() >= 4, "{a:?}");
    assert_eq!(a, hashes(&fp().code(&renamed)));
    // The text channel does not: renaming is what the code channel is for.
    assert_ne!(hashes(&fp().text(RUST)), hashes(&fp().text(&renamed)));
}

#[test]
fn code_tokens_abstract_literals_and_drop_comments() {
    let toks = |s: &str| {
        normalize::code(s)
            .iter()
            .map(|t| t.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(toks("let a = \"x\"; // hi"), toks("let bb = 'y' # no\n"));
    assert_eq!(toks("f(1, 2.5);"), toks("g(3,\n 4e9)"));
    assert_eq!(toks("x = '''a\nb''' + y"), toks("x = \"z\" + y"));
    // A lifetime is not a string literal.
    assert_eq!(toks("fn f<'a>(x: &'a str) {}").len(), 16);
    // Keywords carry structure.
    assert_ne!(toks("if a { b }"), toks("while a { b }"));
}

#[test]
fn positions_point_at_the_original_text() {
    let text = format!("{}\n\n  {}", "#".repeat(10), PROSE);
    for f in fp().text(&text) {
        let slice = &text[f.start as usize..f.end as usize];
        let alnum: String = slice.chars().filter(|c| c.is_alphanumeric()).collect();
        assert_eq!(alnum.len(), 40, "{slice:?}");
    }
    for f in fp().code(RUST) {
        let slice = &RUST[f.start as usize..f.end as usize];
        assert!(!slice.starts_with(char::is_whitespace) && !slice.ends_with(char::is_whitespace));
    }
}

#[test]
fn non_ascii_text_keeps_byte_offsets_on_char_boundaries() {
    let text = "Ärger über Öl, éèê façade ".repeat(20);
    let fps = fp().all(&text);
    assert!(!fps.is_empty());
    for f in fps {
        assert!(text.is_char_boundary(f.start as usize) && text.is_char_boundary(f.end as usize));
    }
    assert_eq!(
        hashes(&fp().text(&text)),
        hashes(&fp().text(&text.to_uppercase()))
    );
}

#[test]
fn short_text_has_no_fingerprints() {
    assert!(fp().text("fn main() {}").is_empty());
    assert!(fp().code("fn main() {}").is_empty());
}

/// The winnowing guarantee: a run of `w + k - 1` shared symbols yields a shared fingerprint,
/// wherever it sits in two otherwise different texts.
#[test]
fn shared_run_always_yields_a_shared_fingerprint() {
    use proptest::prelude::*;
    let params = Params::default();
    let need = params.text_w + params.text_k - 1;
    let f = fp();
    proptest!(ProptestConfig::with_cases(200), |(
        shared in proptest::collection::vec(b'a'..=b'z', need..need + 50),
        left in proptest::collection::vec(b'a'..=b'z', 0..200),
        right in proptest::collection::vec(b'a'..=b'z', 0..200),
    )| {
        let shared = String::from_utf8(shared).unwrap_or_default();
        let left = String::from_utf8(left).unwrap_or_default();
        let right = String::from_utf8(right).unwrap_or_default();
        let a = hashes(&f.text(&format!("{left}{shared}")));
        let b = hashes(&f.text(&format!("{shared}{right}")));
        prop_assert!(a.iter().any(|h| b.contains(h)));
    });
}

#[test]
fn key_is_created_once_with_mode_0600_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = Key::load_or_create(dir.path()).unwrap();
    let b = Key::load_or_create(dir.path()).unwrap();
    assert_eq!(a.0, b.0);
    assert_ne!(a.0, [0; 32]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Key::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!format!("{a:?}").contains(&hex::encode(a.0)));
    std::fs::write(Key::path(dir.path()), "short\n").unwrap();
    let err = Key::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not 64 hexadecimal characters"), "{err}");
}

#[test]
fn stop_list_round_trips_and_rejects_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = StopList::path(dir.path());
    assert!(StopList::load(&path).unwrap().is_empty());
    let mut list = StopList::from_hashes([5, 1, 5, 3]);
    assert_eq!(list.extend([3, 9]), 1);
    list.save(&path).unwrap();
    let back = StopList::load(&path).unwrap();
    assert_eq!(back, list);
    assert!(back.contains(9) && !back.contains(2));
    std::fs::write(&path, b"not a stop list").unwrap();
    let err = StopList::load(&path).unwrap_err().to_string();
    assert!(err.contains("not an aigate stop-list"), "{err}");
    std::fs::write(&path, b"AIGSTOP2\x01\x00").unwrap();
    let err = StopList::load(&path).unwrap_err().to_string();
    assert!(err.contains("not an aigate stop-list"), "{err}");
}

/// The list records the parameters its hashes were made with, so a scan can say when it was
/// built by a release that fingerprinted differently; a list from before the tag still loads.
#[test]
fn stop_list_knows_what_it_was_fingerprinted_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = StopList::path(dir.path());
    let now = Params::default();
    let earlier = Params {
        code_min_distinct: 7,
        ..now
    };
    let mut list = StopList::default();
    list.adding_with(now);
    list.extend([4, 2]);
    list.save(&path).unwrap();
    let back = StopList::load(&path).unwrap();
    assert!(back.is_of(now) && !back.is_of(earlier));
    assert_eq!(back, list);

    // An earlier release's file: the same hashes, no parameters.
    let mut v1 = b"AIGSTOP1".to_vec();
    for h in [2u64, 4] {
        v1.extend_from_slice(&h.to_le_bytes());
    }
    std::fs::write(&path, v1).unwrap();
    let mut old = StopList::load(&path).unwrap();
    assert!(old.contains(2) && old.contains(4) && !old.is_of(now));
    // Adding to it does not make it whole: the hashes it had were made the old way.
    old.adding_with(now);
    old.extend([7]);
    old.save(&path).unwrap();
    let back = StopList::load(&path).unwrap();
    assert!(back.contains(7) && !back.is_of(now));
    // Nor does a list of other parameters: adding makes a mix.
    let mut other = StopList::default();
    other.adding_with(earlier);
    other.extend([1]);
    assert!(other.is_of(earlier));
    other.adding_with(now);
    assert!(!other.is_of(now) && !other.is_of(earlier));
    assert!(StopList::default().is_of(now));
}

/// The bucket index finds every member and nothing else, whatever the hashes' top bits are.
#[test]
fn stop_list_index_finds_members_only() {
    use proptest::prelude::*;
    assert!(!StopList::default().contains(0));
    assert!(!StopList::default().contains(u64::MAX));
    proptest!(ProptestConfig::with_cases(50), |(
        members in proptest::collection::vec(any::<u64>(), 0..3000),
        others in proptest::collection::vec(any::<u64>(), 0..200),
    )| {
        let mut list = StopList::from_hashes(members.iter().copied().take(1000));
        list.extend(members.iter().copied().skip(1000));
        for h in &members {
            prop_assert!(list.contains(*h));
        }
        for h in others.iter().chain([0u64, u64::MAX].iter()) {
            prop_assert_eq!(list.contains(*h), members.contains(h));
        }
    });
}

/// A table of numbers has one shape in every file that has a table: with the shipped minimum of
/// distinct symbols it yields no fingerprint on either channel, while code does.
#[test]
fn low_diversity_grams_are_dropped() {
    let table: String = (0..200)
        .map(|i| format!("    code({}, {}, {}),\n", i % 7, 8 + i % 2, (i * 37) % 256))
        .collect();
    let bare = Fingerprinter::with_params(
        &Key::from_bytes([7; 32]),
        Params {
            text_min_distinct: 0,
            code_min_distinct: 0,
            ..Params::default()
        },
    );
    assert!(!bare.code(&table).is_empty());
    assert!(
        fp().code(&table).is_empty(),
        "{:?}",
        fp().code(&table).len()
    );
    assert!(fp().text(&"0x00, 0x00, 0x01, ".repeat(40)).is_empty());
    assert!(fp().code(RUST).len() >= 4);
    assert!(fp().text(PROSE).len() >= 4);
}

/// Source files under `root` (sorted walk), up to `limit` bytes.
fn sources_under(root: &std::path::Path, exts: &[&str], limit: usize, out: &mut Vec<String>) {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| exts.iter().any(|x| e == *x))
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                total += text.len();
                out.push(text);
                if total >= limit {
                    return;
                }
            }
        }
    }
}

/// Parameters that exercise the edges: one-symbol grams, a window of one, windows longer than
/// most documents, no diversity floor.
fn oracle_params() -> Vec<Params> {
    let d = Params::default();
    vec![
        d,
        Params {
            text_k: 3,
            text_w: 1,
            code_k: 2,
            code_w: 1,
            text_min_distinct: 0,
            code_min_distinct: 0,
            ..d
        },
        Params {
            text_k: 1,
            text_w: 3,
            code_k: 1,
            code_w: 2,
            text_min_distinct: 2,
            code_min_distinct: 2,
            ..d
        },
        Params {
            text_k: 30,
            text_w: 400,
            code_k: 12,
            code_w: 300,
            ..d
        },
    ]
}

fn assert_same(f: &Fingerprinter, text: &str, what: &str) {
    let fast = f.all(text);
    let reference = f.all_reference(text);
    assert!(
        fast == reference,
        "{what}: the fast fingerprints differ from the reference ({} against {}; params {:?})",
        fast.len(),
        reference.len(),
        f.params()
    );
}

/// `fast.rs` must give exactly the fingerprints of `reference.rs` (hash, channel, byte range,
/// order): the ledger and the stop-list hold them, and a different one would stop matching.
/// Checked on this crate's sources and docs, and on up to 6 MB of the cargo cache when present.
#[test]
fn fast_fingerprints_equal_the_reference_on_real_sources() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources_under(&root.join("src"), &["rs"], usize::MAX, &mut files);
    sources_under(&root.join("docs"), &["md"], usize::MAX, &mut files);
    let own = files.len();
    assert!(own > 50, "{own} files under src/ and docs/");
    if let Some(home) = std::env::var_os("HOME") {
        let registry = std::path::Path::new(&home).join(".cargo/registry/src");
        sources_under(
            &registry,
            &["rs", "py", "md", "toml", "c", "js"],
            6 << 20,
            &mut files,
        );
    }
    let key = Key::from_bytes([9; 32]);
    let mut checked = 0;
    for (n, p) in oracle_params().into_iter().enumerate() {
        let f = Fingerprinter::with_params(&key, p);
        // The default parameters on everything, the edge cases on every fourth file.
        for (i, text) in files.iter().enumerate() {
            if n == 0 || i % 4 == 0 {
                assert_same(&f, text, &format!("file {i}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= own);
}

/// Entries recorded with the code channel's earlier floor (7 distinct tokens) stay findable:
/// every fingerprint they hold is among those a scan now computes (the same grams are kept; a
/// lower floor drops fewer of them), so a copy matches an old entry as well as before. Checked
/// on this crate's sources.
#[test]
fn earlier_code_parameters_fingerprint_a_subset_of_today_s() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources_under(&root.join("src"), &["rs"], usize::MAX, &mut files);
    let key = Key::from_bytes([9; 32]);
    let now = Fingerprinter::new(&key);
    let before = Fingerprinter::with_params(
        &key,
        Params {
            code_min_distinct: 7,
            ..Params::default()
        },
    );
    assert_ne!(
        before.params(),
        now.params(),
        "the shipped parameters moved"
    );
    let (mut old, mut added) = (0, 0);
    for text in &files {
        let set =
            |fps: Vec<Fp>| -> std::collections::HashSet<u64> { hashes(&fps).into_iter().collect() };
        let (today, earlier) = (set(now.code(text)), set(before.code(text)));
        assert!(earlier.is_subset(&today));
        old += earlier.len();
        added += today.len() - earlier.len();
    }
    assert!(
        old > 10_000 && added > 0,
        "{old} fingerprints before, {added} added"
    );
}

/// The same on random text made of what the tokeniser treats specially: quotes, comment
/// openers, lifetimes, `..`, backslashes, characters of two to four bytes (and `İ`, whose lower
/// case is two characters), cut anywhere.
#[test]
fn fast_fingerprints_equal_the_reference_on_random_text() {
    use proptest::prelude::*;
    let alphabet: Vec<char> = "aZ_$9 0.\n\t\r\x0c'\"`/*#\\,;{}()<>&:=+-!İßÄé漢😀\u{0}x"
        .chars()
        .collect();
    let key = Key::from_bytes([3; 32]);
    let fps: Vec<Fingerprinter> = oracle_params()
        .into_iter()
        .chain([Params {
            text_k: 4,
            text_w: 3,
            code_k: 3,
            code_w: 2,
            text_min_distinct: 3,
            code_min_distinct: 3,
            ..Params::default()
        }])
        .map(|p| Fingerprinter::with_params(&key, p))
        .collect();
    proptest!(ProptestConfig::with_cases(400), |(
        picks in proptest::collection::vec(0..alphabet.len(), 0..500),
        words in proptest::collection::vec(0..8usize, 0..40),
    )| {
        let mut text: String = picks.iter().map(|&i| alphabet[i]).collect();
        // Keywords and identifiers between the symbols, so the code channel has tokens to keep.
        for (j, &w) in words.iter().enumerate() {
            let word = ["fn ", "self.", "return ", "implements ", "x1 ", "'a ", "1..2 ", "Ärger "][w];
            let at = (j * 37) % (text.len() + 1);
            let at = (0..=at).rev().find(|&a| text.is_char_boundary(a)).unwrap_or(0);
            text.insert_str(at, word);
        }
        // Repeated passages give equal gram hashes: the rightmost of equal minima is kept.
        let cut = (0..=text.len() / 2).rev().find(|&a| text.is_char_boundary(a)).unwrap_or(0);
        let twice = text[..cut].to_string();
        text.push_str(&twice);
        for f in &fps {
            prop_assert_eq!(f.all(&text), f.all_reference(&text));
        }
    });
}

/// The shipped licence headers parse into named, non-trivial texts, and each one adds
/// fingerprints to the stop-list (so a typo that empties an entry shows here).
#[test]
fn shipped_licence_headers_are_named_and_fingerprinted() {
    let fp = Fingerprinter::new(&Key::from_bytes([9; 32]));
    let texts: Vec<_> = boilerplate::texts().collect();
    assert!(texts.len() >= 10, "{}", texts.len());
    for (name, body) in &texts {
        assert!(!name.is_empty() && !name.starts_with('#'), "{name:?}");
        assert!(body.len() >= 150, "{name}: {} bytes", body.len());
        assert!(!fp.text(body).is_empty(), "{name} has no text fingerprints");
    }
    let stop = StopList::default().with_boilerplate(&fp);
    assert_eq!(stop.len(), {
        let mut all = boilerplate::hashes(&fp);
        all.sort_unstable();
        all.dedup();
        all.len()
    });
}
