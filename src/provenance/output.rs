//! The bounded output of one response: parts in the order the model produced them.

use std::collections::HashMap;

use super::{Capture, Limits, Part, PartKind};

/// Where a streamed piece belongs: deltas with the same key extend the same part (an Anthropic
/// content block, a Responses content part, a Chat choice, a Gemini candidate).
pub(super) type Key = (u64, u64, u64);

/// Clone: the tests compare readers from a shared point of a stream.
#[derive(Clone)]
pub(super) struct Output {
    limits: Limits,
    parts: Vec<Part>,
    open: HashMap<Key, usize>,
    /// The part the last append went to: a stream's deltas nearly always extend the part the
    /// one before did, so most appends find it here without hashing the key.
    last: Option<(Key, usize)>,
    used: usize,
    truncated: bool,
    /// The cap was reached: nothing after it is kept, so the capture is a prefix of the output.
    full: bool,
    pub(super) dropped: u32,
    pub(super) malformed: u32,
}

impl Output {
    pub(super) fn new(limits: Limits) -> Self {
        Output {
            limits,
            parts: Vec::new(),
            open: HashMap::new(),
            last: None,
            used: 0,
            truncated: false,
            full: false,
            dropped: 0,
            malformed: 0,
        }
    }

    /// Something was left out before it reached the output (an oversized event or tool input).
    pub(super) fn drop_one(&mut self) {
        self.dropped += 1;
        self.truncated = true;
    }

    /// Appends streamed text to the part `key` names, or starts it.
    pub(super) fn append(&mut self, key: Key, kind: PartKind, text: &str) {
        let Some(kept) = self.admit(kind, text) else {
            return;
        };
        let found = match self.last {
            Some((k, i)) if k == key => Some(i),
            _ => self.open.get(&key).copied(),
        };
        let i = match found {
            Some(i) => {
                self.parts[i].text.push_str(kept);
                i
            }
            None => {
                let i = self.parts.len();
                self.open.insert(key, i);
                self.push_part(kind, None, kept);
                i
            }
        };
        self.last = Some((key, i));
    }

    /// Adds a part that arrived whole (a tool input's code, a JSON body's text).
    pub(super) fn add(&mut self, kind: PartKind, tool: Option<&str>, text: &str) {
        if let Some(kept) = self.admit(kind, text) {
            self.push_part(kind, tool, kept);
        }
    }

    fn push_part(&mut self, kind: PartKind, tool: Option<&str>, text: &str) {
        self.parts.push(Part {
            kind,
            tool: tool.map(str::to_owned),
            text: text.to_owned(),
        });
    }

    /// The share of `text` that fits under the output cap, cut on a character boundary.
    fn admit<'t>(&mut self, kind: PartKind, text: &'t str) -> Option<&'t str> {
        if text.is_empty() || (kind == PartKind::Thinking && !self.limits.capture_thinking) {
            return None;
        }
        if self.full {
            return None;
        }
        let room = self.limits.max_output_bytes.saturating_sub(self.used);
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end < text.len() {
            self.truncated = true;
            self.full = true;
        }
        if end == 0 {
            return None;
        }
        self.used += end;
        Some(&text[..end])
    }

    pub(super) fn take(&mut self) -> Capture {
        let done = std::mem::replace(self, Output::new(self.limits));
        Capture {
            parts: done.parts,
            output_bytes: done.used,
            truncated: done.truncated,
            dropped: done.dropped,
            malformed: done.malformed,
            decode_error: None,
        }
    }
}
