//! Framing: server-sent events split into their `data`, or a whole JSON body, each bounded.

/// What framing hands to the shape's reader.
pub(super) enum Frame<'a> {
    /// One event's data (SSE) or the whole body (JSON).
    Data(&'a [u8]),
    /// An event or body larger than `max_pending_bytes`, skipped without being held.
    Dropped,
}

pub(super) enum Framer {
    Sse(Sse),
    Whole(Whole),
}

impl Framer {
    pub(super) fn new(sse: bool, max: usize) -> Self {
        if sse {
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
            Framer::Whole(w) => w.max,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Frame<'_>)) {
        match self {
            Framer::Sse(s) => s.push(bytes, emit),
            Framer::Whole(w) => w.push(bytes),
        }
    }

    pub(super) fn finish(&mut self, emit: &mut dyn FnMut(Frame<'_>)) {
        match self {
            Framer::Sse(s) => s.finish(emit),
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
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.extend_line(bytes);
                    break;
                }
                Some(i) => {
                    self.extend_line(&bytes[..i]);
                    self.after_cr = bytes[i] == b'\r';
                    self.end_line(emit);
                    bytes = &bytes[i + 1..];
                }
            }
        }
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
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        self.line = line;
        self.line.clear();
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
