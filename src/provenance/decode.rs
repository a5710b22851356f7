//! Content-Encoding, decoded as the bytes arrive: each decoder writes straight into the body's
//! reader, so no decoded copy of the response is held.

use std::io::Write;

use super::{Body, SetupError};

pub(super) struct Decoder {
    state: State,
    error: Option<String>,
}

enum State {
    Identity(Body),
    Gzip(Box<flate2::write::MultiGzDecoder<Body>>),
    /// `deflate` is zlib-wrapped by the RFC but raw from some servers: the first two bytes tell.
    DeflateUndecided(Body, Vec<u8>),
    Zlib(Box<flate2::write::ZlibDecoder<Body>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<Body>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Body>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Body>>),
    /// Only while switching states.
    Moving,
}

impl Decoder {
    pub(super) fn new(encoding: Option<&str>, body: Body) -> Result<Self, SetupError> {
        let name = encoding
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let state = match name.as_str() {
            "" | "identity" => State::Identity(body),
            "gzip" | "x-gzip" => State::Gzip(Box::new(flate2::write::MultiGzDecoder::new(body))),
            "deflate" => State::DeflateUndecided(body, Vec::new()),
            "br" => State::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                body, 4096,
            ))),
            "zstd" => match zstd::stream::write::Decoder::new(body) {
                Ok(d) => State::Zstd(Box::new(d)),
                Err(e) => {
                    return Err(SetupError::UnsupportedEncoding(format!("zstd ({e})")));
                }
            },
            _ => return Err(SetupError::UnsupportedEncoding(name)),
        };
        Ok(Decoder { state, error: None })
    }

    pub(super) fn identity(body: Body) -> Self {
        Decoder {
            state: State::Identity(body),
            error: None,
        }
    }

    /// The body itself when nothing is encoded (message transports hand over whole events).
    pub(super) fn identity_body(&mut self) -> Option<&mut Body> {
        match &mut self.state {
            State::Identity(b) => Some(b),
            _ => None,
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        if self.error.is_some() || chunk.is_empty() {
            return;
        }
        if let State::DeflateUndecided(_, head) = &mut self.state {
            head.extend_from_slice(chunk);
            if head.len() < 2 {
                return;
            }
            let State::DeflateUndecided(body, head) =
                std::mem::replace(&mut self.state, State::Moving)
            else {
                return;
            };
            // RFC 1950: CM = 8 in the low nibble, and the two header bytes are a multiple of 31.
            let zlib = head[0] & 0x0f == 8 && u16::from_be_bytes([head[0], head[1]]) % 31 == 0;
            self.state = if zlib {
                State::Zlib(Box::new(flate2::write::ZlibDecoder::new(body)))
            } else {
                State::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(body)))
            };
            return self.write(&head);
        }
        self.write(chunk);
    }

    fn write(&mut self, bytes: &[u8]) {
        let result = match &mut self.state {
            State::Identity(b) => b.write_all(bytes),
            State::Gzip(d) => d.write_all(bytes),
            State::Zlib(d) => d.write_all(bytes),
            State::RawDeflate(d) => d.write_all(bytes),
            State::Brotli(d) => d.write_all(bytes),
            State::Zstd(d) => d.write_all(bytes),
            State::DeflateUndecided(..) | State::Moving => Ok(()),
        };
        if let Err(e) = result {
            self.error = Some(e.to_string());
        }
    }

    /// Flushes what the decoder still holds; returns the body (absent only if a state switch
    /// was interrupted, which cannot happen) and the decode error if there was one.
    pub(super) fn finish(&mut self) -> (Option<&mut Body>, Option<String>) {
        if self.error.is_none() {
            let result = match &mut self.state {
                State::Gzip(d) => d.try_finish(),
                State::Zlib(d) => d.try_finish(),
                State::RawDeflate(d) => d.try_finish(),
                State::Brotli(d) => d.close(),
                State::Zstd(d) => d.flush(),
                // One byte cannot be a deflate stream.
                State::DeflateUndecided(_, head) if !head.is_empty() => {
                    Err(std::io::Error::other("deflate body ended after one byte"))
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                self.error = Some(e.to_string());
            }
        }
        let body = match &mut self.state {
            State::Identity(b) | State::DeflateUndecided(b, _) => Some(b),
            State::Gzip(d) => Some(d.get_mut()),
            State::Zlib(d) => Some(d.get_mut()),
            State::RawDeflate(d) => Some(d.get_mut()),
            State::Brotli(d) => Some(d.get_mut()),
            State::Zstd(d) => Some(d.get_mut()),
            State::Moving => None,
        };
        (body, self.error.clone())
    }
}
