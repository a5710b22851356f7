//! Provenance capture, first part: reassembling what a model produced from the bytes of its
//! response, as they stream.
//!
//! Issue 17 asks aigate to fingerprint what AI vendors send back so it can be found later in code
//! bases and datasets. Everything downstream (the ledger, the scan) works on *output*: assistant
//! text and the code inside tool inputs, never the wire format. This module turns one response's
//! bytes, in chunks split anywhere, into that output:
//!
//! ```text
//! chunk ─▶ decode.rs (Content-Encoding: gzip, br, zstd, deflate) ─▶ frame.rs (SSE events, AWS
//!          event stream `chunk`s, or the whole JSON body) ─▶ formats.rs (one reader per API
//!          shape; json.rs reads just the fields it needs) ─▶ tools.rs (which tool input fields
//!          are code; the added lines of a patch) ─▶ Output (bounded) ─▶ Capture
//! ```
//!
//! It is pure (no tokio, no clock, no files) so each vendor shape is tested with recorded
//! responses split at every byte. It holds at most `Limits::max_output_bytes` of output and
//! `Limits::max_pending_bytes` of unparsed state (one SSE event, the tool inputs still streaming,
//! or a whole JSON body), never the raw stream: a response larger than that is reported as
//! truncated, not buffered. `capture` wires it to the forwarding path: a tee into a bounded
//! queue, worker threads, and the Responses WebSocket's frames (`websocket`); see
//! docs/provenance.md.

pub mod capture;
mod decode;
mod durable;
pub mod fingerprint;
mod formats;
mod frame;
mod json;
pub mod ledger;
mod output;
pub mod review;
pub mod scan;
mod tools;
mod websocket;

#[cfg(test)]
mod tests;

pub use tools::added_lines;

/// Which vendor API the response answers; the caller knows it from the request's host and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    /// Anthropic Messages (`/v1/messages`): SSE or JSON.
    AnthropicMessages,
    /// OpenAI Responses (`/v1/responses`, Codex): SSE or JSON.
    OpenAiResponses,
    /// OpenAI Chat Completions (`/v1/chat/completions`) and the many APIs that copy it.
    OpenAiChat,
    /// Gemini `generateContent` / `streamGenerateContent` (SSE with `alt=sse`, else JSON).
    Gemini,
}

/// Bounds on one response's capture, so a long or hostile stream cannot grow a worker's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Output kept per response (text and code together); the rest is cut and `truncated` set.
    pub max_output_bytes: usize,
    /// Unparsed bytes held at once: one SSE event, the tool inputs still streaming, or a whole
    /// JSON body. Whatever does not fit is dropped and counted in `Capture::dropped`.
    pub max_pending_bytes: usize,
    /// Thinking / reasoning blocks are output too, but some companies do not want them kept.
    pub capture_thinking: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: 1 << 20,
            max_pending_bytes: 4 << 20,
            capture_thinking: false,
        }
    }
}

/// What a piece of captured output is; scans treat code and prose differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// Assistant text.
    Text,
    /// Thinking / reasoning text (only with `Limits::capture_thinking`).
    Thinking,
    /// Code inside a tool input: a file written, an edit's new text, the added lines of a patch.
    Code,
}

/// One piece of output, in the order the model produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub kind: PartKind,
    /// The tool whose input carried the code (`Write`, `apply_patch`, …); `None` for text.
    pub tool: Option<String>,
    pub text: String,
}

/// The result for one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    pub parts: Vec<Part>,
    /// Output bytes kept (the sum of the parts' lengths).
    pub output_bytes: usize,
    /// Something was not kept: the output cap was reached or an event or tool input was dropped.
    pub truncated: bool,
    /// SSE events, tool inputs or JSON bodies dropped for exceeding `max_pending_bytes`.
    pub dropped: u32,
    /// Events or tool inputs that were not the JSON their API promises (or were cut off).
    pub malformed: u32,
    /// The body could not be decoded (bad gzip, …); output before the error is kept.
    pub decode_error: Option<String>,
}

/// A response the capture cannot read at all: told to the caller up front, not guessed at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetupError {
    #[error(
        "Content-Encoding {0:?} cannot be decoded for capture; supported are gzip, br, zstd, deflate and identity, one at a time"
    )]
    UnsupportedEncoding(String),
}

/// Reassembles one response. Feed it every chunk in order with [`Reassembler::push`], then call
/// [`Reassembler::finish`]; the result does not depend on where the chunks were split.
pub struct Reassembler {
    decoder: decode::Decoder,
}

impl Reassembler {
    /// `content_type` picks SSE (`text/event-stream`), Bedrock's AWS event stream
    /// (`application/vnd.amazon.eventstream`) or a whole JSON body (anything else);
    /// `content_encoding` is the response's `Content-Encoding` header, if any.
    pub fn new(
        shape: ApiShape,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limits: Limits,
    ) -> Result<Self, SetupError> {
        let body = Body::new(shape, content_type, limits);
        Ok(Reassembler {
            decoder: decode::Decoder::new(content_encoding, body)?,
        })
    }

    /// For a message-framed transport: the Responses WebSocket Codex uses, whose text messages
    /// are each one event, the same JSON an SSE event's data carries. Feed it with
    /// [`Reassembler::push_message`]; the caller has already undone the WebSocket framing.
    pub fn for_messages(shape: ApiShape, limits: Limits) -> Self {
        Reassembler {
            decoder: decode::Decoder::identity(Body::new(shape, Some("text/event-stream"), limits)),
        }
    }

    /// One whole message of a [`Reassembler::for_messages`] transport. A message over
    /// `max_pending_bytes` is dropped and counted, like an oversized SSE event.
    pub fn push_message(&mut self, message: &[u8]) {
        if let Some(body) = self.decoder.identity_body() {
            body.message(message);
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.decoder.push(chunk);
    }

    pub fn finish(mut self) -> Capture {
        let (body, decode_error) = self.decoder.finish();
        let mut capture = match body {
            Some(body) => body.finish(),
            None => Capture::default(),
        };
        capture.decode_error = decode_error;
        capture
    }
}

/// The decoded body: framing, then the shape's reader, then the bounded output.
pub(crate) struct Body {
    frame: frame::Framer,
    format: formats::Format,
    out: output::Output,
}

impl Body {
    fn new(shape: ApiShape, content_type: Option<&str>, limits: Limits) -> Self {
        let framing = frame::Framing::of(content_type);
        Body {
            frame: frame::Framer::new(framing, limits.max_pending_bytes),
            format: formats::Format::new(shape, framing.streamed(), limits.max_pending_bytes),
            out: output::Output::new(limits),
        }
    }

    fn decoded(&mut self, bytes: &[u8]) {
        let Body { frame, format, out } = self;
        frame.push(bytes, &mut |f| format.on_frame(f, out));
    }

    fn message(&mut self, message: &[u8]) {
        let frame = if message.len() > self.frame.max() {
            frame::Frame::Dropped
        } else {
            frame::Frame::Data(message)
        };
        self.format.on_frame(frame, &mut self.out);
    }

    fn finish(&mut self) -> Capture {
        let Body { frame, format, out } = self;
        frame.finish(&mut |f| format.on_frame(f, out));
        format.finish(out);
        out.take()
    }
}

impl std::io::Write for Body {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.decoded(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
