//! The rest of a request body, past the peek, in the spelling the body signatures read.
//!
//! The peek is decoded whole (`normalise::decode_body`), but the rest streams to the vendor
//! chunk by chunk while `proxy::late` searches it. A gzip, br, zstd or deflate body, or one whose
//! marker is written with JSON escapes, would hide a signal there that the peek path finds: the
//! compressed bytes never spell it. So the rest is decoded and escape-folded as it passes, with
//! decoders that carry their state from chunk to chunk (they are fed the raw peek first) and an
//! escape folder that holds back an escape cut in two by a chunk boundary.
//!
//! Only what is searched is decoded; nothing decoded is kept beyond one chunk's output, so a
//! bomb costs CPU up to `MAX_DECODED_BODY`, then refuses the request.

use std::io::Write;

use super::normalise::{BodyDecodeError, fold_json_escapes_partial};

/// How far the whole decoded body may expand. Vendors take request bodies of a few tens of MiB;
/// a body that decodes past this is a bomb, or a body built to push its signals out of reach.
pub const MAX_DECODED_BODY: usize = 256 << 20;

enum Stage {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Deflate(flate2::write::DeflateDecoder<Vec<u8>>),
    /// HTTP's deflate is zlib-wrapped, but clients also send raw deflate: decided by the first
    /// two bytes, as `normalise::decode_body` does.
    DeflateUndecided(Vec<u8>),
    Br(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Stage {
    fn new(encoding: &str) -> Result<Option<Stage>, BodyDecodeError> {
        Ok(Some(match encoding {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Stage::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            "deflate" => Stage::DeflateUndecided(Vec::new()),
            "br" => Stage::Br(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))),
            "zstd" => Stage::Zstd(zstd::stream::write::Decoder::new(Vec::new()).map_err(|e| {
                BodyDecodeError::Corrupt {
                    encoding: "zstd",
                    detail: e.to_string(),
                }
            })?),
            other => return Err(BodyDecodeError::Unsupported(other.to_string())),
        }))
    }

    fn name(&self) -> &'static str {
        match self {
            Stage::Gzip(_) => "gzip",
            Stage::Zlib(_) | Stage::Deflate(_) | Stage::DeflateUndecided(_) => "deflate",
            Stage::Br(_) => "br",
            Stage::Zstd(_) => "zstd",
        }
    }

    /// Feed encoded bytes; the bytes decoded so far come back.
    fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, BodyDecodeError> {
        let name = self.name();
        let corrupt = |e: std::io::Error| BodyDecodeError::Corrupt {
            encoding: name,
            detail: e.to_string(),
        };
        if let Stage::DeflateUndecided(held) = self {
            held.extend_from_slice(input);
            if held.len() < 2 {
                return Ok(Vec::new());
            }
            let zlib =
                (u16::from(held[0]) << 8 | u16::from(held[1])) % 31 == 0 && held[0] & 0x0f == 8;
            let held = std::mem::take(held);
            *self = if zlib {
                Stage::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
            } else {
                Stage::Deflate(flate2::write::DeflateDecoder::new(Vec::new()))
            };
            return self.push(&held);
        }
        let out = match self {
            Stage::Gzip(d) => {
                d.write_all(input).map_err(corrupt)?;
                d.flush().map_err(corrupt)?;
                std::mem::take(d.get_mut())
            }
            Stage::Zlib(d) => {
                d.write_all(input).map_err(corrupt)?;
                d.flush().map_err(corrupt)?;
                std::mem::take(d.get_mut())
            }
            Stage::Deflate(d) => {
                d.write_all(input).map_err(corrupt)?;
                d.flush().map_err(corrupt)?;
                std::mem::take(d.get_mut())
            }
            Stage::Br(d) => {
                d.write_all(input).map_err(corrupt)?;
                d.flush().map_err(corrupt)?;
                std::mem::take(d.get_mut())
            }
            Stage::Zstd(d) => {
                d.write_all(input).map_err(corrupt)?;
                d.flush().map_err(corrupt)?;
                std::mem::take(d.get_mut())
            }
            Stage::DeflateUndecided(_) => Vec::new(),
        };
        Ok(out)
    }
}

/// Raw body bytes in, searchable text out, chunk by chunk.
pub struct BodyStream {
    /// Outermost encoding last, as `Content-Encoding` lists them; undone from the last.
    stages: Vec<Stage>,
    /// The start of a JSON escape that the last chunk cut off.
    carry: Vec<u8>,
    decoded: usize,
    limit: usize,
}

impl BodyStream {
    /// A stream for a body with this `Content-Encoding` (comma-joined values).
    pub fn new(content_encoding: &str, limit: usize) -> Result<BodyStream, BodyDecodeError> {
        let mut stages = Vec::new();
        for enc in content_encoding.split(',') {
            if let Some(stage) = Stage::new(&enc.trim().to_ascii_lowercase())? {
                stages.push(stage);
            }
        }
        Ok(BodyStream {
            stages,
            carry: Vec::new(),
            decoded: 0,
            limit,
        })
    }

    /// Decode and fold the next raw chunk. An escape cut by the chunk's end is held for the next.
    pub fn push(&mut self, raw: &[u8]) -> Result<Vec<u8>, BodyDecodeError> {
        if self.stages.is_empty() && self.carry.is_empty() {
            // The common case, a plain JSON body: no copy before the fold.
            let (folded, consumed) = fold_json_escapes_partial(raw);
            let out = folded.into_owned();
            self.carry.extend_from_slice(&raw[consumed..]);
            return Ok(out);
        }
        let mut bytes = raw.to_vec();
        for stage in self.stages.iter_mut().rev() {
            let name = stage.name();
            bytes = stage.push(&bytes)?;
            self.decoded = self.decoded.saturating_add(bytes.len());
            if self.decoded > self.limit {
                return Err(BodyDecodeError::TooLarge {
                    encoding: name,
                    limit: self.limit,
                });
            }
        }
        self.carry.extend_from_slice(&bytes);
        let text = std::mem::take(&mut self.carry);
        let (folded, consumed) = fold_json_escapes_partial(&text);
        let out = folded.into_owned();
        self.carry.extend_from_slice(&text[consumed..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const BODY: &[u8] = br#"{"system":"x-anthropic-billing-header: cc_version=2.1.197","pad":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;

    fn encode(encoding: &str, b: &[u8]) -> Vec<u8> {
        match encoding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(b).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(b).unwrap();
                e.finish().unwrap()
            }
            "raw-deflate" => {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(b).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(b).unwrap();
                drop(w);
                out
            }
            "zstd" => zstd::encode_all(b, 3).unwrap(),
            _ => b.to_vec(),
        }
    }

    /// Every encoding, fed one byte at a time, gives back the body whole.
    #[test]
    fn each_encoding_decodes_across_any_chunking() {
        for enc in ["identity", "gzip", "deflate", "raw-deflate", "br", "zstd"] {
            let wire = encode(enc, BODY);
            let header = if enc == "raw-deflate" { "deflate" } else { enc };
            for size in [1, 7, wire.len()] {
                let mut s = BodyStream::new(header, MAX_DECODED_BODY).unwrap();
                let mut got = Vec::new();
                for chunk in wire.chunks(size) {
                    got.extend(s.push(chunk).unwrap());
                }
                assert_eq!(got, BODY, "{enc} in chunks of {size}");
            }
        }
    }

    /// A JSON escape cut by a chunk boundary is folded once the rest arrives.
    #[test]
    fn escapes_cut_by_a_chunk_are_folded() {
        let body = br#"x-anthropic-billing-header: cc_version\u003d2 \ud83d\ude00 \\u0063"#;
        for size in 1..body.len() {
            let mut s = BodyStream::new("", MAX_DECODED_BODY).unwrap();
            let mut got = Vec::new();
            for chunk in body.chunks(size) {
                got.extend(s.push(chunk).unwrap());
            }
            assert_eq!(
                String::from_utf8(got).unwrap(),
                "x-anthropic-billing-header: cc_version=2 \u{1F600} \\u0063",
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let wire = encode("gzip", &vec![b'a'; 1 << 20]);
        let mut s = BodyStream::new("gzip", 64 << 10).unwrap();
        let err = s.push(&wire).unwrap_err();
        assert_eq!(err.code(), "decompression_limit");
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_errors() {
        assert_eq!(
            BodyStream::new("compress", 1).err().map(|e| e.code()),
            Some("unsupported_content_encoding")
        );
        let mut s = BodyStream::new("gzip", MAX_DECODED_BODY).unwrap();
        assert_eq!(
            s.push(b"not gzip at all, not even close")
                .err()
                .map(|e| e.code()),
            Some("corrupt_content_encoding")
        );
    }
}
