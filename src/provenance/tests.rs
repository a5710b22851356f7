//! Each vendor shape from a recorded response (tests/fixtures/provenance/, written by its
//! generate.py), fed whole, split at every byte boundary, one byte at a time, and compressed.

use std::io::Write;

use super::PartKind::{Code, Text, Thinking};
use super::{ApiShape, Capture, Limits, Part, PartKind, Reassembler, SetupError, added_lines};

const CODE: &str = "fn main() {\n    println!(\"héllo, \\\"wörld\\\"\");\n}\n";
const EDIT: &str = "let x = 1;\n\tlet y = x + 1; // → two\n";
const ADDED: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n    new_call();\n";
const SSE: Option<&str> = Some("text/event-stream; charset=utf-8");
const JSON: Option<&str> = Some("application/json");
const EVENT_STREAM: Option<&str> = Some("application/vnd.amazon.eventstream");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/provenance/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn part(kind: PartKind, tool: Option<&str>, text: &str) -> Part {
    Part {
        kind,
        tool: tool.map(str::to_owned),
        text: text.to_owned(),
    }
}

fn run(
    shape: ApiShape,
    ct: Option<&str>,
    enc: Option<&str>,
    limits: Limits,
    chunks: &[&[u8]],
) -> Capture {
    let mut r = Reassembler::new(shape, ct, enc, limits).unwrap();
    for c in chunks {
        r.push(c);
    }
    r.finish()
}

/// The same capture whole and one byte at a time (cheaper, for tests whose subject is not
/// splitting).
fn same_bytewise(
    shape: ApiShape,
    ct: Option<&str>,
    enc: Option<&str>,
    limits: Limits,
    body: &[u8],
) -> Capture {
    let whole = run(shape, ct, enc, limits, &[body]);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        run(shape, ct, enc, limits, &bytes),
        whole,
        "one byte at a time"
    );
    whole
}

/// The same capture whole, split in two at every byte, and one byte at a time.
fn same_at_every_split(
    shape: ApiShape,
    ct: Option<&str>,
    enc: Option<&str>,
    limits: Limits,
    body: &[u8],
) -> Capture {
    let whole = run(shape, ct, enc, limits, &[body]);
    for i in 0..=body.len() {
        let split = run(shape, ct, enc, limits, &[&body[..i], &body[i..]]);
        assert_eq!(split, whole, "split at byte {i}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        run(shape, ct, enc, limits, &bytes),
        whole,
        "one byte at a time"
    );
    whole
}

struct Case {
    file: &'static str,
    shape: ApiShape,
    ct: Option<&'static str>,
    thinking: Option<Part>,
    parts: Vec<Part>,
}

fn cases() -> Vec<Case> {
    use ApiShape::*;
    vec![
        Case {
            file: "anthropic_stream.sse",
            shape: AnthropicMessages,
            ct: SSE,
            thinking: Some(part(Thinking, None, "The user wants a main function.")),
            parts: vec![
                part(Text, None, "I'll write the file — now."),
                part(Code, Some("Write"), CODE),
                part(Code, Some("Edit"), EDIT),
                part(Code, Some("MultiEdit"), "print('one')\n"),
                part(Code, Some("MultiEdit"), "print('two')\n"),
            ],
        },
        // Bedrock's InvokeModelWithResponseStream: the same events in AWS event stream frames.
        Case {
            file: "bedrock_stream.eventstream",
            shape: AnthropicMessages,
            ct: EVENT_STREAM,
            thinking: Some(part(Thinking, None, "The user wants a main function.")),
            parts: vec![
                part(Text, None, "I'll write the file — now."),
                part(Code, Some("Write"), CODE),
                part(Code, Some("Edit"), EDIT),
                part(Code, Some("MultiEdit"), "print('one')\n"),
                part(Code, Some("MultiEdit"), "print('two')\n"),
            ],
        },
        Case {
            file: "anthropic_message.json",
            shape: AnthropicMessages,
            ct: JSON,
            thinking: Some(part(Thinking, None, "Plan it.")),
            parts: vec![
                part(Text, None, "Here is the notebook cell."),
                part(Code, Some("NotebookEdit"), "import pandas as pd\n"),
                part(Code, Some("Write"), CODE),
            ],
        },
        Case {
            file: "openai_responses_stream.sse",
            shape: OpenAiResponses,
            ct: SSE,
            thinking: Some(part(Thinking, None, "**Planning the patch**")),
            parts: vec![
                part(Text, None, "Adding `add`."),
                part(Code, Some("apply_patch"), ADDED),
                part(Code, Some("shell"), ADDED),
            ],
        },
        Case {
            file: "openai_responses.json",
            shape: OpenAiResponses,
            ct: JSON,
            thinking: Some(part(Thinking, None, "Think.")),
            parts: vec![
                part(Text, None, "Patched."),
                part(Code, Some("apply_patch"), ADDED),
            ],
        },
        Case {
            file: "openai_chat_stream.sse",
            shape: OpenAiChat,
            ct: SSE,
            thinking: None,
            parts: vec![
                part(Text, None, "Writing main.rs"),
                part(Code, Some("write"), CODE),
            ],
        },
        Case {
            file: "openai_chat.json",
            shape: OpenAiChat,
            ct: JSON,
            thinking: None,
            parts: vec![part(Text, None, "Done."), part(Code, Some("edit"), EDIT)],
        },
        Case {
            file: "gemini_stream.sse",
            shape: Gemini,
            ct: SSE,
            thinking: Some(part(Thinking, None, "Weighing options.")),
            parts: vec![
                part(Text, None, "Creating the file."),
                part(Code, Some("write_file"), "print('hi')\n"),
            ],
        },
        Case {
            file: "gemini_stream_array.json",
            shape: Gemini,
            ct: JSON,
            thinking: Some(part(Thinking, None, "Weighing options.")),
            parts: vec![
                part(Text, None, "Creating the file."),
                part(Code, Some("write_file"), "print('hi')\n"),
            ],
        },
        Case {
            file: "gemini_generate.json",
            shape: Gemini,
            ct: JSON,
            thinking: None,
            parts: vec![
                part(Text, None, "Replacing the line."),
                part(Code, Some("replace"), EDIT),
            ],
        },
    ]
}

fn expected(parts: &[Part]) -> Capture {
    Capture {
        output_bytes: parts.iter().map(|p| p.text.len()).sum(),
        parts: parts.to_vec(),
        ..Capture::default()
    }
}

#[test]
fn every_shape_reassembles_the_same_at_every_split() {
    for case in cases() {
        let body = fixture(case.file);
        let got = same_at_every_split(case.shape, case.ct, None, Limits::default(), &body);
        assert_eq!(got, expected(&case.parts), "{}", case.file);
    }
}

#[test]
fn thinking_is_captured_only_when_configured() {
    let limits = Limits {
        capture_thinking: true,
        ..Limits::default()
    };
    for case in cases() {
        let body = fixture(case.file);
        let got = same_bytewise(case.shape, case.ct, None, limits, &body);
        let want: Vec<Part> = case.thinking.into_iter().chain(case.parts).collect();
        assert_eq!(got, expected(&want), "{}", case.file);
    }
}

fn encode(encoding: &str, body: &[u8]) -> Vec<u8> {
    use flate2::Compression;
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "raw-deflate" => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(body).unwrap();
            drop(w);
            out
        }
        "zstd" => zstd::encode_all(body, 3).unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

#[test]
fn content_encodings_decode_as_they_stream() {
    for encoding in ["gzip", "deflate", "raw-deflate", "br", "zstd"] {
        // Servers that send raw deflate still label it `deflate`.
        let header = if encoding == "raw-deflate" {
            "deflate"
        } else {
            encoding
        };
        for case in cases() {
            let plain = fixture(case.file);
            let body = encode(encoding, &plain);
            // Every split for the smaller fixtures; the larger ones whole and byte by byte, to
            // keep the suite quick (their plain form is split everywhere above).
            let check = if plain.len() < 1000 {
                same_at_every_split
            } else {
                same_bytewise
            };
            let got = check(case.shape, case.ct, Some(header), Limits::default(), &body);
            assert_eq!(got, expected(&case.parts), "{} in {encoding}", case.file);
        }
    }
}

#[test]
fn encoding_names_are_matched_without_case() {
    let body = encode("gzip", &fixture("openai_chat.json"));
    let got = run(
        ApiShape::OpenAiChat,
        JSON,
        Some(" GZIP "),
        Limits::default(),
        &[&body],
    );
    assert_eq!(got.parts.len(), 2);
}

#[test]
fn an_encoding_it_cannot_decode_is_refused_by_name() {
    for enc in ["compress", "gzip, br", "snappy"] {
        let err = Reassembler::new(ApiShape::OpenAiChat, JSON, Some(enc), Limits::default())
            .err()
            .unwrap();
        assert_eq!(err, SetupError::UnsupportedEncoding(enc.to_string()));
        assert!(
            err.to_string()
                .contains("supported are gzip, br, zstd, deflate")
        );
    }
}

#[test]
fn a_corrupt_body_reports_its_decode_error_and_keeps_what_came_before() {
    let plain = fixture("openai_chat_stream.sse");
    let mut body = encode("gzip", &plain);
    let n = body.len();
    body[n / 2..n - 8].fill(0xff);
    let got = run(
        ApiShape::OpenAiChat,
        SSE,
        Some("gzip"),
        Limits::default(),
        &[&body],
    );
    assert!(got.decode_error.is_some(), "{got:?}");
    let got = run(
        ApiShape::OpenAiChat,
        SSE,
        Some("br"),
        Limits::default(),
        &[b"\xff\xff\xff\xff"],
    );
    assert!(got.decode_error.is_some(), "{got:?}");
}

#[test]
fn output_is_capped_on_a_character_boundary_and_reported() {
    // "I'll write the file " is 20 bytes; the dash after it is 3, so 21 cannot take it.
    let limits = Limits {
        max_output_bytes: 21,
        ..Limits::default()
    };
    let body = fixture("anthropic_stream.sse");
    let got = same_bytewise(ApiShape::AnthropicMessages, SSE, None, limits, &body);
    assert_eq!(got.parts, vec![part(Text, None, "I'll write the file ")]);
    assert_eq!(got.output_bytes, 20);
    assert!(got.truncated);
}

#[test]
fn an_event_over_the_pending_bound_is_dropped_and_counted_not_held() {
    let big = "x".repeat(5000);
    let body = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"a\"}}}}]}}\n\n\
         data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{big}\"}}}}]}}\n\n\
         data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"b\"}}}}]}}\n\n"
    );
    let limits = Limits {
        max_pending_bytes: 1000,
        ..Limits::default()
    };
    let got = same_at_every_split(ApiShape::OpenAiChat, SSE, None, limits, body.as_bytes());
    assert_eq!(got.parts, vec![part(Text, None, "ab")]);
    assert_eq!((got.dropped, got.truncated), (1, true));
}

/// One AWS event stream message: string headers, the payload, both checksums.
fn es_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = Vec::new();
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// A Bedrock `chunk` event carrying one Anthropic event.
fn es_chunk(event: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    es_message(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        serde_json::json!({ "bytes": b64 }).to_string().as_bytes(),
    )
}

fn text_delta(text: &str) -> serde_json::Value {
    serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}})
}

#[test]
fn an_event_stream_frame_over_the_pending_bound_is_skipped_as_it_passes() {
    let mut body = es_chunk(
        &serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    body.extend(es_chunk(&text_delta("a")));
    body.extend(es_chunk(&text_delta(&"x".repeat(5000))));
    body.extend(es_chunk(&text_delta("b")));
    let limits = Limits {
        max_pending_bytes: 1000,
        ..Limits::default()
    };
    let got = same_at_every_split(
        ApiShape::AnthropicMessages,
        EVENT_STREAM,
        None,
        limits,
        &body,
    );
    assert_eq!(got.parts, vec![part(Text, None, "ab")]);
    assert_eq!((got.dropped, got.truncated, got.malformed), (1, true, 0));
}

#[test]
fn event_stream_exceptions_are_skipped_and_bad_checksums_counted() {
    let start = serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}});
    let mut body = es_chunk(&start);
    body.extend(es_chunk(&text_delta("kept ")));
    // An exception carries no model output.
    body.extend(es_message(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many requests"}"#,
    ));
    // A message whose payload was damaged: its checksum says so, the next one is read.
    let mut bad = es_chunk(&text_delta("LOST"));
    let at = bad.len() - 10;
    bad[at] ^= 0x20;
    body.extend(bad);
    body.extend(es_chunk(&text_delta("too")));
    let got = same_bytewise(
        ApiShape::AnthropicMessages,
        EVENT_STREAM,
        None,
        Limits::default(),
        &body,
    );
    assert_eq!(got.parts, vec![part(Text, None, "kept too")]);
    assert_eq!(got.malformed, 1);

    // A damaged prelude: the framing is lost, nothing after it is guessed at.
    let mut body = es_chunk(&start);
    body.extend(es_chunk(&text_delta("before")));
    let mut cut = es_chunk(&text_delta("after"));
    cut[2] ^= 0x01;
    body.extend(cut);
    body.extend(es_chunk(&text_delta("never")));
    let got = same_bytewise(
        ApiShape::AnthropicMessages,
        EVENT_STREAM,
        None,
        Limits::default(),
        &body,
    );
    assert_eq!(got.parts, vec![part(Text, None, "before")]);
    assert_eq!(got.malformed, 1);
}

/// An Anthropic stream: a tool use whose input arrives in `fragments`, then a text block.
fn anthropic_tool_then_text(tool: &str, input: &str, fragments: usize) -> String {
    let event = |v: serde_json::Value| format!("event: x\ndata: {v}\n\n");
    let mut out = event(
        serde_json::json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "tool_use", "id": "t", "name": tool, "input": {}}}),
    );
    let step = input.len().div_ceil(fragments);
    for piece in input.as_bytes().chunks(step) {
        let piece = std::str::from_utf8(piece).unwrap();
        out += &event(
            serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": piece}}),
        );
    }
    out += &event(serde_json::json!({"type": "content_block_stop", "index": 0}));
    out += &event(
        serde_json::json!({"type": "content_block_start", "index": 1,
        "content_block": {"type": "text", "text": "after"}}),
    );
    out
}

#[test]
fn a_tool_input_over_the_pending_bound_is_dropped_and_counted() {
    // Each fragment (and so each event) fits the bound; the Write input they add up to does not.
    let input = serde_json::json!({"file_path": "/w/a", "content": "y".repeat(1000)}).to_string();
    let body = anthropic_tool_then_text("Write", &input, 10);
    let limits = Limits {
        max_pending_bytes: 600,
        ..Limits::default()
    };
    let got = same_at_every_split(
        ApiShape::AnthropicMessages,
        SSE,
        None,
        limits,
        body.as_bytes(),
    );
    assert_eq!(got.parts, vec![part(Text, None, "after")]);
    assert_eq!((got.dropped, got.truncated, got.malformed), (1, true, 0));
    // With room for it, the same stream keeps the code.
    let got = run(
        ApiShape::AnthropicMessages,
        SSE,
        None,
        Limits::default(),
        &[body.as_bytes()],
    );
    assert_eq!(got.parts[0], part(Code, Some("Write"), &"y".repeat(1000)));

    // A JSON body over the bound is dropped whole.
    let json = fixture("anthropic_message.json");
    let got = run(
        ApiShape::AnthropicMessages,
        JSON,
        None,
        limits,
        &[&json[..], &json[..]],
    );
    assert_eq!((got.parts.len(), got.dropped), (0, 1));
}

#[test]
fn a_stream_cut_inside_a_tool_input_keeps_the_text_and_counts_the_input() {
    let body = fixture("anthropic_stream.sse");
    let text = String::from_utf8(body).unwrap();
    // Cut in the middle of the Edit input's last fragment event.
    let edit = text.find("\"name\": \"Edit\"").unwrap();
    let stop = edit + text[edit..].find("content_block_stop").unwrap();
    let cut = text[..stop].rfind("data: ").unwrap() + 30;
    let got = run(
        ApiShape::AnthropicMessages,
        SSE,
        None,
        Limits::default(),
        &[&text.as_bytes()[..cut]],
    );
    assert_eq!(
        got.parts,
        vec![
            part(Text, None, "I'll write the file — now."),
            part(Code, Some("Write"), CODE)
        ]
    );
    assert_eq!(
        got.malformed, 2,
        "the cut event and the Edit input: {got:?}"
    );
}

#[test]
fn sse_framing_follows_the_event_stream_rules() {
    // CR-only line ends, a comment, an event split over two data lines, an unterminated last event.
    let body = b": keep-alive\r\rdata: {\"choices\":[{\"index\":0,\r\
                 data: \"delta\":{\"content\":\"one \"}}]}\r\rdata:{\"choices\":[{\"delta\":{\"content\":\"two\"}}]}";
    let got = same_at_every_split(ApiShape::OpenAiChat, SSE, None, Limits::default(), body);
    assert_eq!(got.parts, vec![part(Text, None, "one two")]);
    assert_eq!(got.malformed, 0);
}

#[test]
fn crlf_line_ends_split_between_cr_and_lf_are_one_line_end() {
    // An event over two data lines: an extra line end would end the event after its first half.
    let body =
        b"data: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"x\"}}]}\r\n\r\n";
    let got = same_at_every_split(ApiShape::OpenAiChat, SSE, None, Limits::default(), body);
    assert_eq!((got.parts, got.malformed), (vec![part(Text, None, "x")], 0));
}

#[test]
fn responses_websocket_messages_are_events() {
    // Codex's Responses WebSocket sends each event as one text message: the SSE fixture's data.
    let sse = String::from_utf8(fixture("openai_responses_stream.sse")).unwrap();
    let messages: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(messages.len() > 10);
    let mut r = Reassembler::for_messages(ApiShape::OpenAiResponses, Limits::default());
    for m in &messages {
        r.push_message(m.as_bytes());
    }
    let case = cases()
        .into_iter()
        .find(|c| c.file == "openai_responses_stream.sse")
        .unwrap();
    assert_eq!(r.finish(), expected(&case.parts));

    let limits = Limits {
        max_pending_bytes: 300,
        ..Limits::default()
    };
    let mut r = Reassembler::for_messages(ApiShape::OpenAiResponses, limits);
    for m in &messages {
        r.push_message(m.as_bytes());
    }
    let got = r.finish();
    assert!(got.dropped > 0 && got.truncated, "{got:?}");
}

#[test]
fn tools_that_write_nothing_add_no_code() {
    // The Read tool use in the Anthropic fixture is already left out; a Chat tool call too.
    let body = br#"{"choices":[{"index":0,"message":{"content":null,"tool_calls":[{"function":{"name":"read_file","arguments":"{\"path\":\"/etc/passwd\"}"}}]}}]}"#;
    let got = run(ApiShape::OpenAiChat, JSON, None, Limits::default(), &[body]);
    assert_eq!(got, Capture::default());
}

#[test]
fn only_the_added_lines_of_a_patch_count() {
    let cases = [
        (
            "*** Begin Patch\n*** Add File: a\n+x\n+y\n*** End Patch\n",
            "x\ny\n",
        ),
        (
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-old\n+new\n context\n",
            "new\n",
        ),
        // Not a header: no `---` line before it.
        ("@@ -1 +1 @@\n+++ counter\n", "++ counter\n"),
        ("*** Begin Patch\n*** Delete File: a\n*** End Patch\n", ""),
    ];
    for (patch, want) in cases {
        assert_eq!(added_lines(patch), want, "{patch:?}");
    }
}

/// The frames a body's framing hands to the reader, kept.
enum Owned {
    Data(Vec<u8>),
    Dropped,
    Malformed,
}

impl Owned {
    fn frame(&self) -> super::frame::Frame<'_> {
        use super::frame::Frame;
        match self {
            Owned::Data(d) => Frame::Data(d),
            Owned::Dropped => Frame::Dropped,
            Owned::Malformed => Frame::Malformed,
        }
    }
}

fn frames_of(ct: Option<&str>, body: &[u8]) -> Vec<Owned> {
    use super::frame::{Frame, Framer, Framing};
    let mut framer = Framer::new(Framing::of(ct), Limits::default().max_pending_bytes);
    let mut frames = Vec::new();
    let mut keep = |f: Frame<'_>| {
        frames.push(match f {
            Frame::Data(d) => Owned::Data(d.to_vec()),
            Frame::Dropped => Owned::Dropped,
            Frame::Malformed => Owned::Malformed,
        })
    };
    framer.push(body, &mut keep);
    framer.finish(&mut keep);
    frames
}

/// A reader and its output: the typed one (`formats.rs`) or the `Value` one it replaced.
#[derive(Clone)]
struct Reader {
    format: super::formats::Format,
    out: super::output::Output,
    typed: bool,
}

impl Reader {
    fn new(shape: ApiShape, sse: bool, limits: Limits, typed: bool) -> Self {
        Reader {
            format: super::formats::Format::new(shape, sse, limits.max_pending_bytes),
            out: super::output::Output::new(limits),
            typed,
        }
    }

    fn feed(&mut self, frame: super::frame::Frame<'_>) {
        if self.typed {
            self.format.on_frame(frame, &mut self.out);
        } else {
            self.format.on_frame_reference(frame, &mut self.out);
        }
    }

    fn finish(mut self) -> Capture {
        self.format.finish(&mut self.out);
        self.out.take()
    }
}

/// Deterministic variants of one JSON frame: bytes changed, values swapped for every other JSON
/// type, keys repeated, objects in serde_json's raw-value form.
fn variants(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
    use serde_json::{Value, json};
    const TOKEN: &str = "$serde_json::private::RawValue";
    let mut rng = seed | 1;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    let mut out = vec![data.to_vec()];
    let bytes: &[u8] = b"\"\\{}[],:0-.en \xff\x01";
    for _ in 0..24 {
        let at = next(data.len() + 1);
        let mut v = data.to_vec();
        match next(4) {
            0 => v.truncate(at),
            1 => v.insert(at, bytes[next(bytes.len())]),
            2 if at < v.len() => v[at] = bytes[next(bytes.len())],
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
        out.push(v);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return out;
    };
    // Every node's pointer, and every key.
    fn walk(v: &Value, at: String, nodes: &mut Vec<String>, keys: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    keys.push(k.clone());
                    walk(
                        c,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        nodes,
                        keys,
                    );
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{at}/{i}"), nodes, keys);
                }
            }
            _ => {}
        }
        nodes.push(at);
    }
    let (mut nodes, mut keys) = (Vec::new(), Vec::new());
    walk(&value, String::new(), &mut nodes, &mut keys);
    let replacements = |old: &Value| {
        vec![
            Value::Null,
            json!(true),
            json!(-1),
            json!(0),
            json!(3),
            json!(1.0),
            json!(18446744073709551615u64),
            json!(""),
            json!("x\"\\u00e9\n"),
            json!([]),
            json!([1, "two"]),
            json!({}),
            json!({"type": "text", "text": "t"}),
            json!({ TOKEN: serde_json::to_string(old).unwrap_or_default() }),
            json!({ TOKEN: 5 }),
        ]
    };
    for _ in 0..10 {
        let node = &nodes[next(nodes.len())];
        let old = value.pointer(node).cloned().unwrap_or(Value::Null);
        for r in replacements(&old) {
            let mut v = value.clone();
            if let Some(slot) = v.pointer_mut(node) {
                *slot = r;
            }
            out.push(serde_json::to_vec(&v).unwrap());
        }
    }
    // A key again, after the last one (it wins) and before the first (it loses).
    let text = String::from_utf8_lossy(data).into_owned();
    let closes: Vec<usize> = text.match_indices('}').map(|(i, _)| i).collect();
    let opens: Vec<usize> = text.match_indices('{').map(|(i, _)| i).collect();
    for _ in 0..8 {
        let key = serde_json::to_string(&keys[next(keys.len())]).unwrap_or_default();
        let val = [
            "null",
            "7",
            "\"again\"",
            "{\"type\":\"tool_use\",\"name\":\"Write\"}",
        ][next(4)];
        if let Some(&at) = closes.get(next(closes.len())) {
            let mut t = text.clone();
            t.insert_str(at, &format!(",{key}:{val}"));
            out.push(t.into_bytes());
        }
        if let Some(&at) = opens.get(next(opens.len())) {
            let mut t = text.clone();
            t.insert_str(at + 1, &format!("{key}:{val},"));
            out.push(t.into_bytes());
        }
    }
    // Keys the readers look for, wherever an object opens or closes, alone and in pairs whose
    // order matters (`reasoning_content` shadows `reasoning` even when it is null).
    const KEYS: &[&str] = &[
        "type",
        "index",
        "text",
        "thinking",
        "name",
        "delta",
        "content",
        "reasoning_content",
        "reasoning",
        "tool_calls",
        "function",
        "arguments",
        "partial_json",
        "item",
        "output_index",
        "content_index",
        "summary_index",
        "candidates",
        "parts",
        "thought",
        "functionCall",
        "args",
        "input",
        "message",
        "choices",
        "output",
        "summary",
        "content_block",
    ];
    const VALUES: &[&str] = &[
        "null",
        "true",
        "2",
        "-2",
        "2.0",
        "\"t\"",
        "\"\\u0074\"",
        "[]",
        "[{}]",
        "{}",
        "{\"text\":\"x\"}",
        "[{\"text\":\"y\",\"thought\":true}]",
    ];
    let pairs = [
        "\"reasoning_content\":null,\"reasoning\":\"r\"",
        "\"reasoning\":\"r\",\"reasoning_content\":7",
        "\"reasoning_content\":\"rc\",\"reasoning\":\"r\"",
        "\"index\":null",
        "\"text\":\"z\",\"thought\":true",
        "\"functionCall\":{\"name\":\"write_file\",\"args\":{\"content\":\"w\"}}",
    ];
    let places: Vec<usize> = opens.iter().map(|o| o + 1).collect();
    for _ in 0..40 {
        let Some(&at) = places.get(next(places.len())) else {
            break;
        };
        let entry = if next(3) == 0 {
            pairs[next(pairs.len())].to_owned()
        } else {
            format!(
                "\"{}\":{}",
                KEYS[next(KEYS.len())],
                VALUES[next(VALUES.len())]
            )
        };
        let mut t = text.clone();
        t.insert_str(at, &format!("{entry},"));
        out.push(t.into_bytes());
        if let Some(&close) = closes.get(next(closes.len())) {
            let mut t = text.clone();
            t.insert_str(close, &format!(",{entry}"));
            out.push(t.into_bytes());
        }
    }
    // The whole frame in raw-value form.
    out.push(serde_json::to_vec(&json!({ TOKEN: text })).unwrap());
    out
}

#[test]
fn typed_readers_match_the_value_readers() {
    for thinking in [false, true] {
        let limits = Limits {
            capture_thinking: thinking,
            ..Limits::default()
        };
        for case in cases() {
            let frames = frames_of(case.ct, &fixture(case.file));
            let sse = case.ct != JSON;
            let mut typed = Reader::new(case.shape, sse, limits, true);
            let mut value = Reader::new(case.shape, sse, limits, false);
            for (i, frame) in frames.iter().enumerate() {
                if let Owned::Data(data) = frame {
                    for variant in variants(data, i as u64 * 7919 + 1) {
                        let (mut t, mut v) = (typed.clone(), value.clone());
                        t.feed(Owned::Data(variant.clone()).frame());
                        v.feed(Owned::Data(variant.clone()).frame());
                        for rest in frames.iter().skip(i + 1).take(3) {
                            t.feed(rest.frame());
                            v.feed(rest.frame());
                        }
                        assert_eq!(
                            t.finish(),
                            v.finish(),
                            "{} frame {i}: {}",
                            case.file,
                            String::from_utf8_lossy(&variant)
                        );
                    }
                }
                typed.feed(frame.frame());
                value.feed(frame.frame());
            }
            assert_eq!(typed.finish(), value.finish(), "{}", case.file);
        }
    }
}
