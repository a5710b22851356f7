//! The server's side of a WebSocket, as the gateway splices it: frames (RFC 6455) back into
//! whole messages, inflated when `permessage-deflate` (RFC 7692) was agreed. The Responses
//! WebSocket that Codex uses sends one event per text message.
//!
//! Bounded like the rest of the capture: a frame header is at most 14 bytes, and a message
//! larger than `max` is skipped to its end (counted in `dropped`), never held.

use flate2::{Decompress, FlushDecompress, Status};

pub(crate) struct Deframer {
    /// Bytes of a frame header not yet complete.
    head: Vec<u8>,
    /// Payload bytes still to come in the current frame, and whether they are kept.
    remaining: u64,
    keep: bool,
    /// The current frame's flags, once its header is read.
    fin: bool,
    control: bool,
    /// The data message being assembled (text or binary), still compressed if `compressed`.
    message: Vec<u8>,
    in_message: bool,
    compressed: bool,
    oversized: bool,
    inflate: Option<Decompress>,
    no_context_takeover: bool,
    max: usize,
    dropped: u32,
}

impl Deframer {
    pub(crate) fn new(deflate: bool, no_context_takeover: bool, max: usize) -> Self {
        Deframer {
            head: Vec::with_capacity(14),
            remaining: 0,
            keep: false,
            fin: false,
            control: false,
            message: Vec::new(),
            in_message: false,
            compressed: false,
            oversized: false,
            inflate: deflate.then(|| Decompress::new(false)),
            no_context_takeover,
            max,
            dropped: 0,
        }
    }

    /// Messages skipped for their size (or that failed to inflate).
    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                // Reading a header.
                let need = header_len(&self.head)
                    .saturating_sub(self.head.len())
                    .max(1);
                let take = need.min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() >= 2 && self.head.len() == header_len(&self.head) {
                    self.start_frame(emit);
                }
                continue;
            }
            let take = (self.remaining.min(bytes.len() as u64)) as usize;
            if self.keep {
                self.message.extend_from_slice(&bytes[..take]);
            }
            self.remaining -= take as u64;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                self.end_frame(emit);
            }
        }
    }

    fn start_frame(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let h = std::mem::take(&mut self.head);
        let opcode = h[0] & 0x0f;
        self.fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        self.control = opcode >= 8;
        // Server frames are never masked; a masked one is not something to read as output.
        let data = !self.control && !masked;
        if data && opcode != 0 {
            // A new message (a continuation carries on the current one).
            self.message.clear();
            self.in_message = true;
            self.oversized = false;
            self.compressed = rsv1 && self.inflate.is_some();
        }
        let fits = (self.message.len() as u64).saturating_add(len) <= self.max as u64;
        if data && self.in_message && !fits {
            self.oversized = true;
            self.message = Vec::new();
        }
        self.keep = data && self.in_message && !self.oversized;
        self.remaining = len;
        if len == 0 {
            self.end_frame(emit);
        }
    }

    fn end_frame(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if self.control || !self.fin || !self.in_message {
            return;
        }
        self.in_message = false;
        self.keep = false;
        if self.oversized {
            self.dropped += 1;
            return;
        }
        let message = std::mem::take(&mut self.message);
        if !self.compressed {
            emit(&message);
            return;
        }
        match self.inflate(&message) {
            Some(plain) => emit(&plain),
            None => self.dropped += 1,
        }
    }

    /// RFC 7692 7.2.2: append 00 00 ff ff and inflate; the window carries over between
    /// messages unless the server said `server_no_context_takeover`.
    fn inflate(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let max = self.max;
        let reset = self.no_context_takeover;
        let z = self.inflate.as_mut()?;
        if reset {
            z.reset(false);
        }
        let mut input = message.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(message.len() * 4 + 64);
        let mut at = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return None;
                }
                out.reserve(out.len().max(1024));
            }
            let before_in = z.total_in();
            let status = z
                .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                .ok()?;
            at += (z.total_in() - before_in) as usize;
            if status == Status::StreamEnd || (at >= input.len() && out.len() < out.capacity()) {
                break;
            }
        }
        Some(out)
    }
}

/// The length of the frame header that starts with `head` (2 until the length byte is known).
fn header_len(head: &[u8]) -> usize {
    if head.len() < 2 {
        return 2;
    }
    let ext = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn messages(d: &mut Deframer, stream: &[u8], step: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in stream.chunks(step) {
            d.push(chunk, &mut |m| {
                out.push(String::from_utf8_lossy(m).into_owned())
            });
        }
        out
    }

    #[test]
    fn fragmented_messages_with_a_ping_between_come_out_whole_at_any_split() {
        let big = "x".repeat(70_000);
        let mut stream = frame(true, false, 1, b"{\"a\":1}");
        stream.extend(frame(false, false, 1, b"{\"b\":"));
        stream.extend(frame(true, false, 9, b"ping"));
        stream.extend(frame(true, false, 0, b"2}"));
        stream.extend(frame(true, false, 1, big.as_bytes()));
        stream.extend(frame(true, false, 1, b""));
        for step in [1, 2, 3, 7, 100, stream.len()] {
            let mut d = Deframer::new(false, false, 1 << 20);
            let got = messages(&mut d, &stream, step);
            assert_eq!(
                got,
                ["{\"a\":1}", "{\"b\":2}", big.as_str(), ""],
                "step {step}"
            );
        }
    }

    #[test]
    fn an_oversized_message_is_skipped_and_counted_and_the_next_one_read() {
        let mut stream = frame(true, false, 1, &[b'y'; 300]);
        stream.extend(frame(true, false, 1, b"after"));
        let mut d = Deframer::new(false, false, 100);
        assert_eq!(messages(&mut d, &stream, 13), ["after"]);
        assert_eq!(d.dropped(), 1);
    }

    #[test]
    fn permessage_deflate_with_and_without_context_takeover() {
        let texts = ["{\"type\":\"response.output_text.delta\",\"delta\":\"hello\"}"; 3];
        for takeover in [true, false] {
            // One deflate stream for the connection (takeover), or one per message.
            let mut z =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let mut stream = Vec::new();
            for t in texts {
                if !takeover {
                    z = flate2::write::DeflateEncoder::new(
                        Vec::new(),
                        flate2::Compression::default(),
                    );
                }
                z.write_all(t.as_bytes()).unwrap();
                z.flush().unwrap();
                let mut out = std::mem::take(z.get_mut());
                assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
                out.truncate(out.len() - 4);
                stream.extend(frame(true, true, 1, &out));
            }
            let mut d = Deframer::new(true, !takeover, 1 << 20);
            assert_eq!(messages(&mut d, &stream, 5), texts, "takeover {takeover}");
            assert_eq!(d.dropped(), 0);
        }
    }
}
