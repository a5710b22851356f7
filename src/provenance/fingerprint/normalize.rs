//! The two normalisations: text into symbols that carry their byte range in the original, so a
//! match can be reported as lines of the file that was scanned.

/// One normalised symbol: a character (text channel) or a token (code channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym {
    pub value: u32,
    /// Byte range in the original text.
    pub start: u32,
    pub end: u32,
}

/// Letters and digits, lower-cased; everything else (spaces, punctuation, line breaks) is
/// dropped, so reflowing or re-indenting does not change the sequence.
pub fn text(s: &str) -> Vec<Sym> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if b.is_ascii_alphanumeric() {
                out.push(Sym {
                    value: u32::from(b.to_ascii_lowercase()),
                    start: i as u32,
                    end: i as u32 + 1,
                });
            }
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        let len = c.len_utf8();
        if c.is_alphanumeric() {
            let lower = c.to_lowercase().next().unwrap_or(c);
            out.push(Sym {
                value: u32::from(lower),
                start: i as u32,
                end: (i + len) as u32,
            });
        }
        i += len;
    }
    out
}

/// Abstract token values; keywords and operators get values of their own (see `word`).
pub const IDENT: u32 = 1;
pub(super) const NUMBER: u32 = 2;
pub(super) const STRING: u32 = 3;

/// Keywords of the languages model output is mostly written in (Rust, Python, JavaScript /
/// TypeScript, Go, C / C++, Java, shell). They carry the structure a renaming keeps, so they stay;
/// every other word is an identifier and becomes `IDENT`.
pub(super) const KEYWORDS: &[&str] = &[
    "abstract",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "crate",
    "def",
    "default",
    "defer",
    "del",
    "do",
    "dyn",
    "elif",
    "else",
    "enum",
    "except",
    "export",
    "extends",
    "extern",
    "false",
    "final",
    "finally",
    "fn",
    "for",
    "from",
    "func",
    "function",
    "go",
    "if",
    "impl",
    "implements",
    "import",
    "in",
    "interface",
    "is",
    "lambda",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "new",
    "nil",
    "None",
    "nonlocal",
    "not",
    "null",
    "or",
    "package",
    "pass",
    "private",
    "protected",
    "pub",
    "public",
    "raise",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "switch",
    "this",
    "throw",
    "throws",
    "trait",
    "True",
    "False",
    "true",
    "try",
    "type",
    "typeof",
    "undefined",
    "unsafe",
    "use",
    "var",
    "void",
    "where",
    "while",
    "with",
    "yield",
    "int",
    "char",
    "float",
    "double",
    "bool",
    "string",
    "str",
    "u8",
    "u16",
    "u32",
    "u64",
    "usize",
    "i8",
    "i16",
    "i32",
    "i64",
    "isize",
    "f32",
    "f64",
    "String",
    "Vec",
    "Option",
    "Result",
    "Some",
    "Ok",
    "Err",
    "print",
    "println",
    "len",
    "range",
    "then",
    "fi",
    "done",
    "esac",
    "echo",
    "unsigned",
    "long",
    "auto",
    "sizeof",
    "template",
    "typename",
    "namespace",
    "virtual",
    "override",
    "goto",
    "chan",
    "select",
    "map",
    "global",
    "instanceof",
    "delete",
    "of",
    "readonly",
    "declare",
];

/// `KEYWORDS` sorted, for a binary search: every identifier of a scanned file is looked up.
static SORTED_KEYWORDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut v = KEYWORDS.to_vec();
    v.sort_unstable();
    v
});

pub(super) fn word(w: &str) -> u32 {
    if w.len() <= 10 && SORTED_KEYWORDS.binary_search(&w).is_ok() {
        // FNV-1a into the space above the abstract values.
        let mut h: u32 = 0x811c_9dc5;
        for b in w.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h | 0x8000_0000
    } else {
        IDENT
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Tokens of source code in any common language, without a grammar: identifiers, numbers and
/// string literals each become one abstract symbol, comments and the separators formatters
/// move around (`,` `;`) are dropped, and every other punctuation byte is a token of its own.
pub fn code(s: &str) -> Vec<Sym> {
    let b = s.as_bytes();
    let n = b.len();
    let mut out = Vec::with_capacity(n / 3);
    let mut i = 0;
    let mut push = |value: u32, start: usize, end: usize| {
        out.push(Sym {
            value,
            start: start as u32,
            end: end as u32,
        })
    };
    let mut prev_sig = b' ';
    while i < n {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if is_ident_start(c) {
            while i < n && is_ident_continue(b[i]) {
                i += 1;
            }
            // Keep the cut on a character boundary: bytes >= 0x80 are all taken together.
            let w = s.get(start..i).unwrap_or("");
            push(word(w), start, i);
        } else if c.is_ascii_digit() {
            while i < n && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                // `1..10` is a range, not a number.
                if b[i] == b'.' && i + 1 < n && b[i + 1] == b'.' {
                    break;
                }
                i += 1;
            }
            push(NUMBER, start, i);
        } else if c == b'/' && i + 1 < n && b[i + 1] == b'/' {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'/' && i + 1 < n && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < n && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(n);
            continue;
        } else if c == b'#' && (i + 1 >= n || matches!(b[i + 1], b' ' | b'\t' | b'#' | b'\n')) {
            // Python / shell comments; `#[attr]`, `#include` and `#!` stay code.
            while i < n && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'"' || c == b'`' || (c == b'\'' && !lifetime(b, i, prev_sig)) {
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
    out
}

/// A Rust lifetime or label (`'a`, `&'static`, `<'de>`) rather than a character or string literal.
pub(super) fn lifetime(b: &[u8], i: usize, prev: u8) -> bool {
    let rest = &b[i + 1..];
    if rest.len() >= 2 && rest[1] == b'\'' {
        return false; // 'x'
    }
    if rest.first().is_none_or(|&c| !is_ident_start(c)) {
        return false;
    }
    matches!(prev, b'&' | b'<' | b',' | b'+' | b':') || {
        let end = rest
            .iter()
            .position(|&c| !is_ident_continue(c))
            .unwrap_or(rest.len());
        matches!(rest.get(end), Some(b'>' | b',' | b':' | b' ' | b')'))
            && !rest[end..]
                .iter()
                .take_while(|&&c| c != b'\n')
                .any(|&c| c == b'\'')
    }
}

/// The end of the string literal starting at `i`: triple quotes to their close, `` ` `` across
/// lines, other quotes to the close on the same line. A passage cut inside a literal then
/// misreads one line, not the rest of the file.
pub(super) fn string_end(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let n = b.len();
    if i + 2 < n && b[i + 1] == q && b[i + 2] == q {
        let mut j = i + 3;
        while j + 2 < n {
            if b[j] == b'\\' {
                j += 2;
                continue;
            }
            if b[j] == q && b[j + 1] == q && b[j + 2] == q {
                return j + 3;
            }
            j += 1;
        }
        return n;
    }
    let mut j = i + 1;
    while j < n {
        match b[j] {
            b'\\' => j += 2,
            c if c == q => return j + 1,
            b'\n' if q != b'`' => return j,
            _ => j += 1,
        }
    }
    n
}

/// For each token, how many tokens back the same identifier was last seen (0: not an
/// identifier, or its first use). Renaming consistently keeps these distances, so a gram can
/// say "the identifier of 3 tokens ago" instead of just "an identifier" (Baker's parameterised
/// matching, 1993): the shape of a copied passage, not of every loop that looks like it.
pub fn back_refs(s: &str, syms: &[Sym]) -> Vec<u32> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    syms.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.value != IDENT {
                return 0;
            }
            let name = s.get(t.start as usize..t.end as usize).unwrap_or("");
            last.insert(name, i).map_or(0, |j| (i - j) as u32)
        })
        .collect()
}
