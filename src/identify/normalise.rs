//! One spelling of a request before anything matches on it (issue 14, "Identification that
//! survives tampering").
//!
//! A vendor accepts many spellings of the same request: `x-app: CLI` or `cli`, a header value
//! with a stray `0xff` byte, `//api/…`, `/api/%63laude_code`, `/v1/../api/…`, a gzip, br, zstd
//! or deflate body, a body marker written as `\u0063laude`. Each spelling used to hide a signal.
//! Tool matching (tools.rs), model extraction (model.rs) and `aigate explain` read the request
//! through the functions here, so there is one normaliser, not one per reader.
//!
//! Pure: bytes in, bytes out. Case is handled by the signatures themselves (their regexes are
//! compiled case-insensitively, config/validate/tools.rs).

use std::borrow::Cow;
use std::io::Read;

use http::HeaderValue;

/// How far a compressed body peek may expand. The peek is at most 1 MiB of compressed bytes
/// (`gateway.body_peek_bytes`); a legitimate JSON request body compresses perhaps 10:1, so its
/// decoded peek stays well under this. A body that expands past it is a decompression bomb.
pub const MAX_DECODED_PEEK: usize = 8 << 20;

/// A header value as text for matching. Bytes that are not valid UTF-8 are dropped rather than
/// replaced, and surrounding whitespace trimmed: `cli\xff` is matched as `cli`, so a byte the
/// vendor ignores cannot make `^cli$` miss, and nothing here can fail on it.
pub fn header_text(v: &HeaderValue) -> Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => Cow::Borrowed(s.trim()),
        Err(_) => {
            let lossy = String::from_utf8_lossy(v.as_bytes());
            let kept: String = lossy
                .chars()
                .filter(|c| *c != char::REPLACEMENT_CHARACTER)
                .collect();
            Cow::Owned(kept.trim().to_string())
        }
    }
}

/// Whether `re` matches a header value in either spelling a vendor might read: with the bytes
/// that are not text dropped (`cli\xff` as `cli`, for `^cli$`), or replaced (`\xff` alone as
/// U+FFFD, so a presence signal like `.` still sees a value made only of such bytes).
pub fn header_matches(v: &HeaderValue, re: &regex::Regex) -> bool {
    re.is_match(&header_text(v))
        || (std::str::from_utf8(v.as_bytes()).is_err()
            && re.is_match(String::from_utf8_lossy(v.as_bytes()).trim()))
}

/// The request path as the matcher sees it: percent-escapes decoded, dot segments resolved,
/// repeated slashes collapsed, no query. `//api/%63laude_code/../claude_code` becomes
/// `/api/claude_code`. Decoding comes first, so `%2e%2e` and `%2f` count as `..` and `/`:
/// a spelling the vendor might resolve is resolved here too, which only makes matching stricter.
pub fn path(raw: &str) -> String {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(raw.as_bytes());
    let text = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in text.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = text.ends_with('/') && !segments.is_empty();
    let mut out = String::with_capacity(text.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// The request's `Content-Encoding` values, comma-joined in the order sent, each as matching
/// text (`header_text`), for `decode_body` and `body_stream::BodyStream`.
pub fn content_encoding(headers: &http::HeaderMap) -> String {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|v| header_text(v).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// `%XX` escapes decoded; anything else (a lone `%`, `%ZZ`) kept as written.
pub fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = (b[i] == b'%')
            .then(|| Some((hex_val(*b.get(i + 1)?)? << 4) | hex_val(*b.get(i + 2)?)?))
            .flatten();
        match byte {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// JSON string escapes folded into the bytes they stand for, so a body signature sees
/// `\u0063laude` as `claude` and `cc_version\u003d` as `cc_version=`. The result is text for
/// matching, no longer JSON. An escape that is not valid JSON is kept as written.
pub fn fold_json_escapes(b: &[u8]) -> Cow<'_, [u8]> {
    fold(b, false).0
}

/// `fold_json_escapes` over a body that continues: an escape that the end of `b` cuts short
/// (`\`, `\u00`, a high surrogate without its pair) is not folded but left for the next chunk.
/// Returns the folded text and how many bytes of `b` it consumed.
pub fn fold_json_escapes_partial(b: &[u8]) -> (Cow<'_, [u8]>, usize) {
    fold(b, true)
}

fn fold(b: &[u8], partial: bool) -> (Cow<'_, [u8]>, usize) {
    let Some(first) = b.iter().position(|&c| c == b'\\') else {
        return (Cow::Borrowed(b), b.len());
    };
    let mut out = b[..first].to_vec();
    let mut i = first;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        if partial && cut_short(&b[i..]) {
            return (Cow::Owned(out), i);
        }
        let simple = match b.get(i + 1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'n') => Some(b'\n'),
            Some(b't') => Some(b'\t'),
            Some(b'r') => Some(b'\r'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        match unicode_escape(b, i) {
            Some((ch, len)) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += len;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    (Cow::Owned(out), b.len())
}

/// Whether the escape starting at `rest[0]` (a backslash) might read differently once more
/// bytes arrive: a lone backslash, a `\u` with fewer than four hex digits, or a high surrogate
/// whose low half is not all here yet.
fn cut_short(rest: &[u8]) -> bool {
    match rest.get(1) {
        None => true,
        Some(b'u') => {
            if rest.len() < 6 {
                return rest[2..].iter().all(u8::is_ascii_hexdigit);
            }
            let hi = std::str::from_utf8(&rest[2..6])
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            match hi {
                Some(hi) if (0xD800..0xDC00).contains(&hi) && rest.len() < 12 => {
                    // Whatever of `\uDCxx` is here must still fit the pattern.
                    let tail = &rest[6..];
                    let want = b"\\u";
                    tail.iter().zip(want).all(|(a, b)| a == b)
                        && tail
                            .get(2..)
                            .is_none_or(|h| h.iter().all(u8::is_ascii_hexdigit))
                }
                _ => false,
            }
        }
        Some(_) => false,
    }
}

/// The character of a `\uXXXX` escape (or a `\uD8xx\uDCxx` surrogate pair) at `i`, and the
/// number of bytes it spans.
fn unicode_escape(b: &[u8], i: usize) -> Option<(char, usize)> {
    let unit = |at: usize| -> Option<u32> {
        if b.get(at) != Some(&b'\\') || b.get(at + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(b.get(at + 2..at + 6)?).ok()?;
        u32::from_str_radix(hex, 16).ok()
    };
    let hi = unit(i)?;
    if (0xD800..0xDC00).contains(&hi) {
        let lo = unit(i + 6).filter(|lo| (0xDC00..0xE000).contains(lo))?;
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return Some((char::from_u32(c)?, 12));
    }
    Some((char::from_u32(hi)?, 6))
}

/// Why a body's `Content-Encoding` could not be undone for matching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyDecodeError {
    /// An encoding aigate cannot read: the signals inside would be hidden from it.
    #[error("content-encoding {0:?} is not supported; send gzip, br, zstd, deflate or identity")]
    Unsupported(String),
    /// The bytes are not what the encoding says.
    #[error("the body is not valid {encoding}: {detail}")]
    Corrupt {
        encoding: &'static str,
        detail: String,
    },
    /// The decoded body passed the limit: a decompression bomb, or a body built to push its
    /// signals past what is read.
    #[error("the {encoding} body expands past the decompression limit of {limit} bytes")]
    TooLarge {
        encoding: &'static str,
        limit: usize,
    },
}

impl BodyDecodeError {
    /// A short stable label for the audit record's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            BodyDecodeError::Unsupported(_) => "unsupported_content_encoding",
            BodyDecodeError::Corrupt { .. } => "corrupt_content_encoding",
            BodyDecodeError::TooLarge { .. } => "decompression_limit",
        }
    }
}

/// The body with its `Content-Encoding` undone (a comma list, applied in order, so undone from
/// the last), at most `limit` decoded bytes per step. `body` may be a prefix of the real body
/// (the pipeline's peek): input that simply stops is not an error, the decoded part is returned.
/// Going past `limit` is an error, not a truncation: the caller refuses the request rather than
/// match on part of a bomb.
pub fn decode_body<'a>(
    content_encoding: &str,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, BodyDecodeError> {
    let mut out = Cow::Borrowed(body);
    for enc in content_encoding.rsplit(',') {
        let enc = enc.trim().to_ascii_lowercase();
        out = match enc.as_str() {
            "" | "identity" => out,
            "gzip" | "x-gzip" => Cow::Owned(read_limited(
                flate2::read::MultiGzDecoder::new(&out[..]),
                "gzip",
                limit,
            )?),
            "deflate" => {
                // HTTP's deflate is zlib-wrapped, but clients also send raw deflate.
                let zlib = out.len() >= 2
                    && (u16::from(out[0]) << 8 | u16::from(out[1])) % 31 == 0
                    && out[0] & 0x0f == 8;
                if zlib {
                    Cow::Owned(read_limited(
                        flate2::read::ZlibDecoder::new(&out[..]),
                        "deflate",
                        limit,
                    )?)
                } else {
                    Cow::Owned(read_limited(
                        flate2::read::DeflateDecoder::new(&out[..]),
                        "deflate",
                        limit,
                    )?)
                }
            }
            "br" => Cow::Owned(read_limited(
                brotli_decompressor::Decompressor::new(&out[..], 4096),
                "br",
                limit,
            )?),
            "zstd" => {
                let dec = zstd::stream::read::Decoder::with_buffer(&out[..]).map_err(|e| {
                    BodyDecodeError::Corrupt {
                        encoding: "zstd",
                        detail: e.to_string(),
                    }
                })?;
                Cow::Owned(read_limited(dec, "zstd", limit)?)
            }
            other => return Err(BodyDecodeError::Unsupported(other.to_string())),
        };
    }
    Ok(out)
}

/// Everything `r` yields, up to `limit` bytes. Input that ends early (a peek cut mid-stream)
/// ends the output. brotli cannot tell a cut stream from a corrupt one, so any error after some
/// output keeps that output (matching on it can only find more); an error before any output is
/// corruption.
fn read_limited(
    mut r: impl Read,
    encoding: &'static str,
    limit: usize,
) -> Result<Vec<u8>, BodyDecodeError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > limit {
                    return Err(BodyDecodeError::TooLarge { encoding, limit });
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof || !out.is_empty() => {
                return Ok(out);
            }
            Err(e) => {
                return Err(BodyDecodeError::Corrupt {
                    encoding,
                    detail: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const BODY: &[u8] = br#"{"model":"claude-sonnet-4-5","system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.197"}]}"#;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn br(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(b).unwrap();
        drop(w);
        out
    }

    fn zstd(b: &[u8]) -> Vec<u8> {
        zstd::encode_all(b, 3).unwrap()
    }

    #[test]
    fn paths() {
        let table = [
            ("/v1/messages", "/v1/messages"),
            ("//api/claude_code/settings", "/api/claude_code/settings"),
            ("/api/%63laude_code/settings", "/api/claude_code/settings"),
            ("/v1/../api/claude_code", "/api/claude_code"),
            ("/v1/%2e%2e/api/claude_code", "/api/claude_code"),
            ("/v1/%2E%2E%2fapi/claude_code", "/api/claude_code"),
            ("/./api///claude_cli/x/", "/api/claude_cli/x/"),
            ("/../../api/eval/sdk-1", "/api/eval/sdk-1"),
            ("/api\\claude_code", "/api/claude_code"),
            ("/v1/messages?beta=true", "/v1/messages"),
            ("/model/a%3A0/invoke", "/model/a:0/invoke"),
            ("/a%ZZb/%", "/a%ZZb/%"),
            ("/%ff%fe/x", "/\u{fffd}\u{fffd}/x"),
            ("", "/"),
            ("/", "/"),
            ("/..", "/"),
        ];
        for (raw, want) in table {
            assert_eq!(path(raw), want, "path({raw:?})");
        }
    }

    #[test]
    fn header_values() {
        let table: [(&[u8], &str); 5] = [
            (b"cli", "cli"),
            (b"cli\xff", "cli"),
            (
                b"\xffclaude-cli/2.1.197 (external, cli)",
                "claude-cli/2.1.197 (external, cli)",
            ),
            (b" CLI ", "CLI"),
            (b"\xff\xfe", ""),
        ];
        for (raw, want) in table {
            let v = HeaderValue::from_bytes(raw).unwrap();
            assert_eq!(header_text(&v), want, "{raw:?}");
        }
        let present = regex::Regex::new(".").unwrap();
        let cli = regex::RegexBuilder::new("^cli$")
            .case_insensitive(true)
            .build()
            .unwrap();
        for (raw, re, want) in [
            (&b"\xff"[..], &present, true),
            (b"cli\xff", &cli, true),
            (b"CLI", &cli, true),
            (b"cli2", &cli, false),
            (b"", &present, false),
        ] {
            let v = HeaderValue::from_bytes(raw).unwrap();
            assert_eq!(header_matches(&v, re), want, "{raw:?} ~ {re}");
        }
    }

    #[test]
    fn json_escapes() {
        let table: [(&[u8], &[u8]); 9] = [
            (br#"\u0063laude"#, b"claude"),
            (br#"cc_version\u003d2"#, b"cc_version=2"),
            (br#"a\"b\\c\/d\ne"#, b"a\"b\\c/d\ne"),
            // An escaped backslash is not the start of another escape.
            (br#"\\u0063"#, br#"\u0063"#),
            (br#"\ud83d\ude00"#, "\u{1F600}".as_bytes()),
            (br#"\u00e9"#, "é".as_bytes()),
            (br#"\uZZZZ \x"#, br#"\uZZZZ \x"#),
            (br#"\ud83d alone"#, br#"\ud83d alone"#),
            (b"plain", b"plain"),
        ];
        for (raw, want) in table {
            assert_eq!(
                &*fold_json_escapes(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn every_encoding_decodes() {
        let table: [(&str, Vec<u8>); 8] = [
            ("", BODY.to_vec()),
            ("identity", BODY.to_vec()),
            ("gzip", gzip(BODY)),
            ("GZip", gzip(BODY)),
            ("br", br(BODY)),
            ("zstd", zstd(BODY)),
            ("deflate", zlib(BODY)),
            ("deflate", raw_deflate(BODY)),
        ];
        for (enc, bytes) in table {
            let got = decode_body(enc, &bytes, MAX_DECODED_PEEK);
            assert_eq!(got.as_deref(), Ok(BODY), "{enc}");
        }
        // Layered: gzip applied first, then br.
        let layered = br(&gzip(BODY));
        assert_eq!(
            decode_body("gzip, br", &layered, 1 << 20).as_deref(),
            Ok(BODY)
        );
    }

    #[test]
    fn a_peek_cut_mid_stream_decodes_its_part() {
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        for (enc, bytes) in [
            ("gzip", gzip(&big)),
            ("br", br(&big)),
            ("zstd", zstd(&big)),
            ("deflate", zlib(&big)),
        ] {
            let cut = &bytes[..bytes.len() / 2];
            let got =
                decode_body(enc, cut, MAX_DECODED_PEEK).unwrap_or_else(|e| panic!("{enc}: {e:?}"));
            assert!(
                !got.is_empty() && big.starts_with(&got),
                "{enc}: {}",
                got.len()
            );
        }
    }

    #[test]
    fn a_bomb_is_refused() {
        let zeros = vec![b' '; 16 << 20];
        for (enc, bytes) in [
            ("gzip", gzip(&zeros)),
            ("br", br(&zeros)),
            ("zstd", zstd(&zeros)),
            ("deflate", zlib(&zeros)),
        ] {
            assert!(bytes.len() < 1 << 20, "{enc} bomb is {} bytes", bytes.len());
            assert_eq!(
                decode_body(enc, &bytes, MAX_DECODED_PEEK),
                Err(BodyDecodeError::TooLarge {
                    encoding: match enc {
                        "gzip" => "gzip",
                        "br" => "br",
                        "zstd" => "zstd",
                        _ => "deflate",
                    },
                    limit: MAX_DECODED_PEEK
                }),
                "{enc}"
            );
        }
    }

    #[test]
    fn unknown_and_corrupt_encodings_are_errors() {
        assert_eq!(
            decode_body("compress", BODY, 1 << 20),
            Err(BodyDecodeError::Unsupported("compress".into()))
        );
        assert_eq!(
            decode_body("gzip", b"not gzip at all", 1 << 20).map_err(|e| e.code()),
            Err("corrupt_content_encoding")
        );
        assert_eq!(
            decode_body("zstd", b"not zstd at all", 1 << 20).map_err(|e| e.code()),
            Err("corrupt_content_encoding")
        );
    }
}
