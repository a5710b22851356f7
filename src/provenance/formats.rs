//! One reader per API shape: which events carry text, thinking and tool inputs, and how streamed
//! tool inputs are put back together.
//!
//! Each event is read into a struct of just the fields its shape uses (`json.rs`: borrowed
//! strings, the rest stepped over), not into a `serde_json::Value`: the same output and the same
//! malformed count, for a fraction of the work (`formats/reference.rs` keeps the `Value` readers
//! as the oracle the tests compare with).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::ApiShape;
use super::PartKind::{Code, Text, Thinking};
use super::frame::Frame;
use super::json::{Fields, Flag, List, Obj, Seen, Str, Uint, fields, read_map};
use super::output::{Key, Output};
use super::tools;

#[cfg(test)]
mod reference;

/// Clone: the tests compare readers from a shared point of a stream.
#[derive(Clone)]
pub(super) struct Format {
    shape: ApiShape,
    sse: bool,
    tools: Pending,
}

impl Format {
    pub(super) fn new(shape: ApiShape, sse: bool, max_pending: usize) -> Self {
        Format {
            shape,
            sse,
            tools: Pending {
                open: BTreeMap::new(),
                held: 0,
                max: max_pending,
            },
        }
    }

    pub(super) fn on_frame(&mut self, frame: Frame<'_>, out: &mut Output) {
        let data = match frame {
            Frame::Data(d) => d,
            Frame::Dropped => return out.drop_one(),
            Frame::Malformed => {
                out.malformed += 1;
                return;
            }
        };
        // Chat Completions ends its stream with a sentinel that is not JSON.
        if self.sse && data.trim_ascii() == b"[DONE]" {
            return;
        }
        // Read whole before anything is kept: a malformed frame adds nothing.
        let read = match (self.shape, self.sse) {
            (ApiShape::AnthropicMessages, true) => {
                read::<AnthropicEvent>(data).map(|e| self.anthropic_event(&e, out))
            }
            (ApiShape::AnthropicMessages, false) => {
                read::<AnthropicMessage>(data).map(|m| anthropic_message(&m, out))
            }
            (ApiShape::OpenAiResponses, true) => {
                read::<ResponsesEvent>(data).map(|e| self.responses_event(&e, out))
            }
            (ApiShape::OpenAiResponses, false) => {
                read::<ResponsesObject>(data).map(|r| responses_object(&r, out))
            }
            (ApiShape::OpenAiChat, true) => {
                read::<ChatCompletion>(data).map(|c| self.chat_chunk(&c, out))
            }
            (ApiShape::OpenAiChat, false) => {
                read::<ChatCompletion>(data).map(|c| chat_completion(&c, out))
            }
            // Without alt=sse, streamGenerateContent sends one JSON array of the same objects.
            (ApiShape::Gemini, _) => json_text(data)
                .and_then(|t| serde_json::from_str::<GeminiBody>(t).ok())
                .map(|b| b.0.iter().for_each(|r| gemini_response(&r.0, out))),
        };
        if read.is_none() {
            out.malformed += 1;
        }
    }

    /// A stream that ended without closing its tool inputs (cut off, or Chat Completions, which
    /// never closes them): whatever parses is kept, the rest is counted as malformed.
    pub(super) fn finish(&mut self, out: &mut Output) {
        let keys: Vec<Key> = self.tools.open.keys().copied().collect();
        for k in keys {
            self.tools.close(k, out);
        }
    }

    fn anthropic_event(&mut self, v: &AnthropicEvent<'_>, out: &mut Output) {
        let key = (0, v.index.0, 0);
        match v.kind.as_str() {
            "content_block_start" => {
                let block = &v.content_block.0;
                match block.kind.as_str() {
                    "text" => out.append(key, Text, block.text.as_str()),
                    "thinking" => out.append(key, Thinking, block.thinking.as_str()),
                    "tool_use" => self.tools.open(key, block.name.as_str(), false),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &v.delta.0;
                match delta.kind.as_str() {
                    "text_delta" => out.append(key, Text, delta.text.as_str()),
                    "thinking_delta" => out.append(key, Thinking, delta.thinking.as_str()),
                    "input_json_delta" => {
                        self.tools.append(key, delta.partial_json.as_str(), out);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => self.tools.close(key, out),
            _ => {}
        }
    }

    fn responses_event(&mut self, v: &ResponsesEvent<'_>, out: &mut Output) {
        let oi = v.output_index.0;
        let tool_key = (1, oi, 0);
        match v.kind.as_str() {
            "response.output_item.added" => {
                let item = &v.item.0;
                match item.kind.as_str() {
                    "function_call" => self.tools.open(tool_key, item.name.as_str(), false),
                    "custom_tool_call" => self.tools.open(tool_key, item.name.as_str(), true),
                    _ => {}
                }
            }
            "response.output_text.delta" => {
                let key = (2, oi, v.content_index.0);
                out.append(key, Text, v.delta.as_str());
            }
            "response.reasoning_summary_text.delta" => {
                let key = (3, oi, v.summary_index.0);
                out.append(key, Thinking, v.delta.as_str());
            }
            "response.reasoning_text.delta" => {
                let key = (4, oi, v.content_index.0);
                out.append(key, Thinking, v.delta.as_str());
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                self.tools.append(tool_key, v.delta.as_str(), out);
            }
            "response.output_item.done" => self.tools.close(tool_key, out),
            _ => {}
        }
    }

    fn chat_chunk(&mut self, v: &ChatCompletion<'_>, out: &mut Output) {
        for choice in &v.choices.0 {
            let choice = &choice.0;
            let ci = choice.index.0;
            let delta = &choice.delta.0;
            out.append((5, ci, 0), Text, delta.content.as_str());
            out.append((6, ci, 0), Thinking, delta.thinking());
            for call in &delta.tool_calls.0 {
                let call = &call.0;
                let key = (7, ci, call.index.0);
                let function = &call.function.0;
                if !self.tools.open.contains_key(&key) {
                    self.tools.open(key, function.name.as_str(), false);
                }
                self.tools.append(key, function.arguments.as_str(), out);
            }
        }
    }
}

/// One frame's JSON as `T`'s fields; `None` exactly where `serde_json::Value` failed
/// (malformed).
fn read<'a, T: Fields<'a>>(data: &'a [u8]) -> Option<T> {
    let text = json_text(data)?;
    serde_json::from_str::<Obj<T>>(text).ok().map(|o| o.0)
}

/// The frame as text, checked for UTF-8 once and whole rather than string by string as the
/// parser of bytes does (a tenth of the parse, in callgrind): the same frames fail, since JSON
/// outside strings is ASCII, and the parser of text checks escapes as the parser of bytes does.
fn json_text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fields! {
    /// An Anthropic Messages stream event (Bedrock's `chunk`s carry the same).
    struct AnthropicEvent<'de> {
        "type" => kind: Str<'de>,
        "index" => index: Uint,
        "content_block" => content_block: Obj<AnthropicBlockStart<'de>>,
        "delta" => delta: Obj<AnthropicDelta<'de>>,
    }
}

fields! {
    /// `content_block_start`'s block: a tool's input arrives in deltas, its `input` here is empty.
    struct AnthropicBlockStart<'de> {
        "type" => kind: Str<'de>,
        "text" => text: Str<'de>,
        "thinking" => thinking: Str<'de>,
        "name" => name: Str<'de>,
    }
}

fields! {
    struct AnthropicDelta<'de> {
        "type" => kind: Str<'de>,
        "text" => text: Str<'de>,
        "thinking" => thinking: Str<'de>,
        "partial_json" => partial_json: Str<'de>,
    }
}

fields! {
    /// A whole Anthropic Messages answer (JSON).
    struct AnthropicMessage<'de> {
        "content" => content: List<Obj<AnthropicBlock<'de>>>,
    }
}

fields! {
    struct AnthropicBlock<'de> {
        "type" => kind: Str<'de>,
        "text" => text: Str<'de>,
        "thinking" => thinking: Str<'de>,
        "name" => name: Str<'de>,
        "input" => input: Value,
    }
}

fields! {
    /// An OpenAI Responses stream event (SSE, or a WebSocket message).
    struct ResponsesEvent<'de> {
        "type" => kind: Str<'de>,
        "output_index" => output_index: Uint,
        "content_index" => content_index: Uint,
        "summary_index" => summary_index: Uint,
        "delta" => delta: Str<'de>,
        "item" => item: Obj<ResponsesItemHead<'de>>,
    }
}

fields! {
    /// What `response.output_item.added` says of the item: enough to open a tool input.
    struct ResponsesItemHead<'de> {
        "type" => kind: Str<'de>,
        "name" => name: Str<'de>,
    }
}

fields! {
    /// A whole Responses answer (JSON).
    struct ResponsesObject<'de> {
        "output" => output: List<Obj<ResponsesItem<'de>>>,
    }
}

fields! {
    struct ResponsesItem<'de> {
        "type" => kind: Str<'de>,
        "content" => content: List<Obj<ResponsesPart<'de>>>,
        "summary" => summary: List<Obj<ResponsesPart<'de>>>,
        "name" => name: Str<'de>,
        "arguments" => arguments: Str<'de>,
        "input" => input: Str<'de>,
    }
}

fields! {
    struct ResponsesPart<'de> {
        "type" => kind: Str<'de>,
        "text" => text: Str<'de>,
    }
}

fields! {
    /// A Chat Completions answer (JSON) or stream chunk (SSE).
    struct ChatCompletion<'de> {
        "choices" => choices: List<Obj<ChatChoice<'de>>>,
    }
}

fields! {
    /// A choice: `delta` in a chunk, `message` in a whole answer.
    struct ChatChoice<'de> {
        "index" => index: Uint,
        "delta" => delta: Obj<ChatMessage<'de>>,
        "message" => message: Obj<ChatMessage<'de>>,
    }
}

fields! {
    struct ChatMessage<'de> {
        "content" => content: Str<'de>,
        "reasoning_content" => reasoning_content: Seen<Str<'de>>,
        "reasoning" => reasoning: Seen<Str<'de>>,
        "tool_calls" => tool_calls: List<Obj<ChatToolCall<'de>>>,
    }
}

impl ChatMessage<'_> {
    /// `reasoning_content` (DeepSeek and others) where the key is there at all, else
    /// `reasoning` (OpenRouter, vLLM).
    fn thinking(&self) -> &str {
        match (&self.reasoning_content.0, &self.reasoning.0) {
            (Some(r), _) | (None, Some(r)) => r.as_str(),
            (None, None) => "",
        }
    }
}

fields! {
    struct ChatToolCall<'de> {
        "index" => index: Uint,
        "function" => function: Obj<ChatFunction<'de>>,
    }
}

fields! {
    struct ChatFunction<'de> {
        "name" => name: Str<'de>,
        "arguments" => arguments: Str<'de>,
    }
}

/// A Gemini body or event: one `GenerateContentResponse`, or (streamGenerateContent without
/// alt=sse) an array of them; anything else yields nothing.
struct GeminiBody<'de>(Vec<Obj<GeminiResponse<'de>>>);

impl<'de> Deserialize<'de> for GeminiBody<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GeminiBodyVisitor)
    }
}

struct GeminiBodyVisitor;

impl<'de> serde::de::Visitor<'de> for GeminiBodyVisitor {
    type Value = GeminiBody<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut one = GeminiResponse::default();
        match read_map(map, GeminiResponse::slot, |slot, map| one.read(slot, map))? {
            None => Ok(GeminiBody(vec![Obj(one)])),
            // serde_json's raw-value form (`json.rs`) may hold an array: read what it holds.
            Some(v) => GeminiBody::deserialize(v).map_err(serde::de::Error::custom),
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let items = List::<Obj<GeminiResponse<'de>>>::deserialize(
            serde::de::value::SeqAccessDeserializer::new(seq),
        )?;
        Ok(GeminiBody(items.0))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(GeminiBody(Vec::new()))
    }
}

fields! {
    struct GeminiResponse<'de> {
        "candidates" => candidates: List<Obj<GeminiCandidate<'de>>>,
    }
}

fields! {
    struct GeminiCandidate<'de> {
        "index" => index: Seen<Uint>,
        "content" => content: Obj<GeminiContent<'de>>,
    }
}

fields! {
    struct GeminiContent<'de> {
        "parts" => parts: List<Obj<GeminiPart<'de>>>,
    }
}

fields! {
    struct GeminiPart<'de> {
        "text" => text: Str<'de>,
        "thought" => thought: Flag,
        "functionCall" => function_call: Obj<GeminiCall<'de>>,
    }
}

fields! {
    struct GeminiCall<'de> {
        "name" => name: Str<'de>,
        "args" => args: Value,
    }
}

/// Tool inputs still streaming, keyed by block; together they hold at most `max` bytes.
#[derive(Clone)]
struct Pending {
    open: BTreeMap<Key, Tool>,
    held: usize,
    max: usize,
}

#[derive(Clone)]
struct Tool {
    name: String,
    /// A custom tool's free-form input rather than JSON arguments.
    raw: bool,
    input: String,
    /// Outgrew the budget: skipped to its end, already counted as dropped.
    dropped: bool,
}

impl Pending {
    fn open(&mut self, key: Key, name: &str, raw: bool) {
        let tool = Tool {
            name: name.to_owned(),
            raw,
            input: String::new(),
            dropped: false,
        };
        if let Some(old) = self.open.insert(key, tool) {
            self.held -= old.input.len();
        }
    }

    fn append(&mut self, key: Key, fragment: &str, out: &mut Output) {
        let Some(tool) = self.open.get_mut(&key) else {
            return;
        };
        if tool.dropped || fragment.is_empty() {
            return;
        }
        if self.held + fragment.len() > self.max {
            self.held -= tool.input.len();
            tool.input = String::new();
            tool.dropped = true;
            out.drop_one();
            return;
        }
        self.held += fragment.len();
        tool.input.push_str(fragment);
    }

    fn close(&mut self, key: Key, out: &mut Output) {
        let Some(tool) = self.open.remove(&key) else {
            return;
        };
        self.held -= tool.input.len();
        if tool.dropped {
            return;
        }
        if tool.raw {
            if let Some(code) = tools::code_from_raw(&tool.name, &tool.input) {
                out.add(Code, Some(&tool.name), &code);
            }
            return;
        }
        // Anthropic streams an input without fields as no fragments at all.
        let input = if tool.input.trim().is_empty() {
            "{}"
        } else {
            &tool.input
        };
        match serde_json::from_str::<Value>(input) {
            Ok(v) => add_code(&tool.name, &v, out),
            Err(_) => out.malformed += 1,
        }
    }
}

fn add_code(tool: &str, input: &Value, out: &mut Output) {
    for code in tools::code_from_input(tool, input) {
        out.add(Code, Some(tool), &code);
    }
}

/// JSON arguments sent as a string (OpenAI): parsed, or counted as malformed.
fn add_code_from_arguments(tool: &str, arguments: &str, out: &mut Output) {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v) => add_code(tool, &v, out),
        Err(_) => out.malformed += 1,
    }
}

fn anthropic_message(v: &AnthropicMessage<'_>, out: &mut Output) {
    for block in &v.content.0 {
        let block = &block.0;
        match block.kind.as_str() {
            "text" => out.add(Text, None, block.text.as_str()),
            "thinking" => out.add(Thinking, None, block.thinking.as_str()),
            "tool_use" => add_code(block.name.as_str(), &block.input, out),
            _ => {}
        }
    }
}

fn responses_object(v: &ResponsesObject<'_>, out: &mut Output) {
    for item in &v.output.0 {
        let item = &item.0;
        match item.kind.as_str() {
            "message" => {
                for part in &item.content.0 {
                    if part.0.kind.as_str() == "output_text" {
                        out.add(Text, None, part.0.text.as_str());
                    }
                }
            }
            "reasoning" => {
                for part in item.summary.0.iter().chain(&item.content.0) {
                    out.add(Thinking, None, part.0.text.as_str());
                }
            }
            "function_call" => {
                add_code_from_arguments(item.name.as_str(), item.arguments.as_str(), out);
            }
            "custom_tool_call" => {
                let name = item.name.as_str();
                if let Some(code) = tools::code_from_raw(name, item.input.as_str()) {
                    out.add(Code, Some(name), &code);
                }
            }
            _ => {}
        }
    }
}

fn chat_completion(v: &ChatCompletion<'_>, out: &mut Output) {
    for choice in &v.choices.0 {
        let message = &choice.0.message.0;
        out.add(Thinking, None, message.thinking());
        out.add(Text, None, message.content.as_str());
        for call in &message.tool_calls.0 {
            let function = &call.0.function.0;
            add_code_from_arguments(function.name.as_str(), function.arguments.as_str(), out);
        }
    }
}

/// One `GenerateContentResponse`: each streamed chunk, or the whole answer.
fn gemini_response(v: &GeminiResponse<'_>, out: &mut Output) {
    for (n, candidate) in v.candidates.0.iter().enumerate() {
        let candidate = &candidate.0;
        let ci = candidate.index.0.map_or(n as u64, |i| i.0);
        for part in &candidate.content.0.parts.0 {
            let part = &part.0;
            let (key, kind) = if part.thought.0 {
                ((9, ci, 0), Thinking)
            } else {
                ((8, ci, 0), Text)
            };
            out.append(key, kind, part.text.as_str());
            let call = &part.function_call.0;
            // A call without a name is no tool that writes code (`tools::code_from_input`).
            if !call.name.as_str().is_empty() {
                add_code(call.name.as_str(), &call.args, out);
            }
        }
    }
}
