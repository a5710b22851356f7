//! Framing: server-sent events split into their `data`, an AWS event stream's `chunk` events
//! (Bedrock), or a whole JSON body, each bounded.

use base64::Engine;

/// What framing hands to the shape's reader.
pub(super) enum Frame<'a> {
    /// One event's data (SSE) or the whole body (JSON).
    Data(&'a [u8]),
    /// An event or body larger than `max_pending_bytes`, skipped without being held.
    Dropped,
    /// A frame that is not what its framing promises (a bad checksum, a `chunk` without base64
    /// `bytes`): counted as malformed.
    Malformed,
}

pub(super) enum Framer {
    Sse(Sse),
    EventStream(EventStream),
    Whole(Whole),
}

/// How a body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `text/event-stream`.
    Sse,
    /// `application/vnd.amazon.eventstream`: Bedrock's `InvokeModelWithResponseStream`.
    EventStream,
    /// Anything else: one JSON document.
    Whole,
}

impl Framing {
    pub(super) fn of(content_type: Option<&str>) -> Framing {
        let media = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if media.eq_ignore_ascii_case("text/event-stream") {
            Framing::Sse
        } else if media.eq_ignore_ascii_case(EVENT_STREAM) {
            Framing::EventStream
        } else {
            Framing::Whole
        }
    }

    /// Whether the frames are a stream's events (each one JSON event), not one whole document.
    pub(super) fn streamed(self) -> bool {
        self != Framing::Whole
    }
}

/// The media type of the AWS event stream encoding.
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

impl Framer {
    pub(super) fn new(framing: Framing, max: usize) -> Self {
        if framing == Framing::EventStream {
            return Framer::EventStream(EventStream {
                buf: Vec::new(),
                skip: 0,
                broken: false,
                max,
            });
        }
        if framing == Framing::Sse {
            Framer::Sse(Sse {
                line: Vec::new(),
                line_started: false,
                data: Vec::new(),
                has_data: false,
                after_cr: false,
                oversized: false,
                max,
            })
        } else {
            Framer::Whole(Whole {
                body: Vec::new(),
                oversized: false,
                max,
            })
        }
    }

    pub(super) fn max(&self) -> usize {
        match self {
            Framer::Sse(s) => s.max,
            Framer::EventStream(e) => e.max,
            Framer::Whole(w) => w.max,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        match self {
            Framer::Sse(s) => s.push(bytes, emit),
            Framer::EventStream(e) => e.push(bytes, emit),
            Framer::Whole(w) => w.push(bytes),
        }
    }

    pub(super) fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        match self {
            Framer::Sse(s) => s.finish(emit),
            Framer::EventStream(e) => e.finish(emit),
            Framer::Whole(w) => w.finish(emit),
        }
    }
}

/// The SSE line protocol (WHATWG `text/event-stream`): lines end in CR, LF or CRLF, a blank line
/// ends an event, `data:` lines are joined with LF. Only `data` matters: every API here repeats
/// the event name inside the JSON.
pub(super) struct Sse {
    line: Vec<u8>,
    /// The current line had bytes, even if they were dropped (so it is not a blank line).
    line_started: bool,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: an LF that starts this one belongs to the same line end.
    after_cr: bool,
    /// The current event outgrew `max`; it is skipped to its end.
    oversized: bool,
    max: usize,
}

impl Sse {
    fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            match memchr::memchr2(b'\n', b'\r', bytes) {
                None => {
                    self.extend_line(bytes);
                    break;
                }
                Some(i) => {
                    self.after_cr = bytes[i] == b'\r';
                    if self.line_started {
                        self.extend_line(&bytes[..i]);
                        self.end_line(emit);
                    } else {
                        // The whole line is in this chunk (the usual case): read in place.
                        self.whole_line(&bytes[..i], emit);
                    }
                    bytes = &bytes[i + 1..];
                }
            }
        }
    }

    /// `extend_line(line)` then `end_line()`, for a line that had no bytes before, without
    /// copying it into `self.line`.
    fn whole_line(&mut self, line: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        if line.is_empty() {
            return self.dispatch(emit);
        }
        if self.oversized {
            return;
        }
        if self.data.len() + line.len() > self.max {
            self.oversized = true;
            self.data = Vec::new();
            return;
        }
        self.field(line);
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.line_started = true;
        if self.oversized {
            return;
        }
        if self.line.len() + self.data.len() + bytes.len() > self.max {
            self.oversized = true;
            self.line = Vec::new();
            self.data = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        if !std::mem::take(&mut self.line_started) {
            self.dispatch(emit);
            return;
        }
        if self.oversized {
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.field(&line);
        self.line = line;
        self.line.clear();
    }

    /// One whole line: only `data` is kept, joined to the event's earlier data lines with LF.
    fn field(&mut self, line: &[u8]) {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        if std::mem::take(&mut self.oversized) {
            emit(Frame::Dropped);
        } else if std::mem::take(&mut self.has_data) {
            emit(Frame::Data(&self.data));
        }
        self.data.clear();
        self.has_data = false;
    }

    /// A stream cut before its last blank line still yields its last event: a partial capture
    /// is worth more than none, and a cut JSON event is counted as malformed by the reader.
    fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        if self.line_started {
            self.end_line(emit);
        }
        self.dispatch(emit);
    }
}

/// The AWS event stream encoding, read as it arrives. Each message is
/// `total length (u32) | headers length (u32) | CRC32 of those 8 bytes | headers | payload |
/// CRC32 of everything before it`, big-endian. Bedrock's `chunk` events carry
/// `{"bytes": "<base64>"}`, the base64 of one Anthropic Messages event: that event is the frame.
/// At most one message (up to `max`) is held; a longer one is skipped as it passes. A bad
/// prelude checksum means the stream lost its framing: the rest is not guessed at.
pub(super) struct EventStream {
    buf: Vec<u8>,
    /// Bytes still to pass of a message too large to hold.
    skip: usize,
    /// The framing was lost; nothing more is read.
    broken: bool,
    max: usize,
}

/// Prelude (12) and message checksum (4).
const ES_OVERHEAD: usize = 16;

impl EventStream {
    fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        while !bytes.is_empty() && !self.broken {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // The prelude first, then the rest of the message it announces.
            let want = if self.buf.len() < 12 {
                12
            } else {
                prelude_total(&self.buf)
            };
            let n = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == 12 && want == 12 {
                let total = prelude_total(&self.buf);
                let crc =
                    u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
                let headers =
                    u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
                if crc32fast::hash(&self.buf[..8]) != crc
                    || total < ES_OVERHEAD
                    || headers as usize > total - ES_OVERHEAD
                {
                    self.broken = true;
                    self.buf = Vec::new();
                    emit(Frame::Malformed);
                    return;
                }
                if total > self.max {
                    self.skip = total - 12;
                    self.buf.clear();
                    emit(Frame::Dropped);
                }
                continue;
            }
            if self.buf.len() >= 12 && self.buf.len() == prelude_total(&self.buf) {
                let message = std::mem::take(&mut self.buf);
                self.message(&message, emit);
                self.buf = message;
                self.buf.clear();
            }
        }
    }

    /// One whole message: a `chunk` event's decoded bytes go on; other events (Bedrock's
    /// exceptions, `initial-response`) carry no model output.
    fn message(&self, m: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        let total = m.len();
        let crc = u32::from_be_bytes([m[total - 4], m[total - 3], m[total - 2], m[total - 1]]);
        if crc32fast::hash(&m[..total - 4]) != crc {
            return emit(Frame::Malformed);
        }
        let headers_len = u32::from_be_bytes([m[4], m[5], m[6], m[7]]) as usize;
        let Some(headers) = es_headers(&m[12..12 + headers_len]) else {
            return emit(Frame::Malformed);
        };
        let is = |name: &str, value: &str| {
            headers
                .iter()
                .any(|(n, v)| *n == name.as_bytes() && *v == value.as_bytes())
        };
        if !is(":message-type", "event") || !is(":event-type", "chunk") {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Chunk<'a> {
            #[serde(borrow)]
            bytes: std::borrow::Cow<'a, str>,
        }
        let payload = &m[12 + headers_len..total - 4];
        let decoded = serde_json::from_slice::<Chunk<'_>>(payload)
            .ok()
            .and_then(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c.bytes.as_bytes())
                    .ok()
            });
        match decoded {
            Some(event) => emit(Frame::Data(&event)),
            None => emit(Frame::Malformed),
        }
    }

    /// A stream cut inside a message: that message is lost (its checksum cannot be checked).
    fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        if !self.broken && (!self.buf.is_empty() || self.skip > 0) {
            emit(Frame::Malformed);
        }
        self.buf = Vec::new();
        self.skip = 0;
    }
}

fn prelude_total(buf: &[u8]) -> usize {
    u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The headers of an event stream message: `(name, value)` for the string-valued ones (the
/// only kind Bedrock sends); other value types are stepped over. `None` if they do not parse.
fn es_headers(mut h: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    while !h.is_empty() {
        let name_len = *h.first()? as usize;
        let name = h.get(1..1 + name_len)?;
        h = &h[1 + name_len..];
        let kind = *h.first()?;
        h = &h[1..];
        let fixed = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = u16::from_be_bytes([*h.first()?, *h.get(1)?]) as usize;
                let value = h.get(2..2 + len)?;
                if kind == 7 {
                    out.push((name, value));
                }
                h = &h[2 + len..];
                continue;
            }
            _ => return None,
        };
        h = h.get(fixed..)?;
    }
    Some(out)
}

/// A JSON body, held until its end (bounded) because it is parsed as one document.
pub(super) struct Whole {
    body: Vec<u8>,
    oversized: bool,
    max: usize,
}

impl Whole {
    fn push(&mut self, bytes: &[u8]) {
        if self.oversized {
            return;
        }
        if self.body.len() + bytes.len() > self.max {
            self.oversized = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        if self.oversized {
            emit(Frame::Dropped);
        } else if !self.body.is_empty() {
            emit(Frame::Data(&self.body));
        }
    }
}
