//! One reader per API shape: which events carry text, thinking and tool inputs, and how streamed
//! tool inputs are put back together.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ApiShape;
use super::PartKind::{Code, Text, Thinking};
use super::frame::Frame;
use super::output::{Key, Output};
use super::tools;

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
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            out.malformed += 1;
            return;
        };
        match (self.shape, self.sse) {
            (ApiShape::AnthropicMessages, true) => self.anthropic_event(&v, out),
            (ApiShape::AnthropicMessages, false) => anthropic_message(&v, out),
            (ApiShape::OpenAiResponses, true) => self.responses_event(&v, out),
            (ApiShape::OpenAiResponses, false) => responses_object(v.get("output"), out),
            (ApiShape::OpenAiChat, true) => self.chat_chunk(&v, out),
            (ApiShape::OpenAiChat, false) => chat_completion(&v, out),
            // Without alt=sse, streamGenerateContent sends one JSON array of the same objects.
            (ApiShape::Gemini, _) => match v.as_array() {
                Some(items) => items.iter().for_each(|i| gemini_response(i, out)),
                None => gemini_response(&v, out),
            },
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

    fn anthropic_event(&mut self, v: &Value, out: &mut Output) {
        let index = uint(v.get("index"));
        let key = (0, index, 0);
        match str_at(v, "type") {
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match str_at(block, "type") {
                    "text" => out.append(key, Text, str_at(block, "text")),
                    "thinking" => out.append(key, Thinking, str_at(block, "thinking")),
                    "tool_use" => self.tools.open(key, str_at(block, "name"), false),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match str_at(delta, "type") {
                    "text_delta" => out.append(key, Text, str_at(delta, "text")),
                    "thinking_delta" => out.append(key, Thinking, str_at(delta, "thinking")),
                    "input_json_delta" => {
                        self.tools.append(key, str_at(delta, "partial_json"), out);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => self.tools.close(key, out),
            _ => {}
        }
    }

    fn responses_event(&mut self, v: &Value, out: &mut Output) {
        let oi = uint(v.get("output_index"));
        let tool_key = (1, oi, 0);
        match str_at(v, "type") {
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                match str_at(item, "type") {
                    "function_call" => self.tools.open(tool_key, str_at(item, "name"), false),
                    "custom_tool_call" => self.tools.open(tool_key, str_at(item, "name"), true),
                    _ => {}
                }
            }
            "response.output_text.delta" => {
                let key = (2, oi, uint(v.get("content_index")));
                out.append(key, Text, str_at(v, "delta"));
            }
            "response.reasoning_summary_text.delta" => {
                let key = (3, oi, uint(v.get("summary_index")));
                out.append(key, Thinking, str_at(v, "delta"));
            }
            "response.reasoning_text.delta" => {
                let key = (4, oi, uint(v.get("content_index")));
                out.append(key, Thinking, str_at(v, "delta"));
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                self.tools.append(tool_key, str_at(v, "delta"), out);
            }
            "response.output_item.done" => self.tools.close(tool_key, out),
            _ => {}
        }
    }

    fn chat_chunk(&mut self, v: &Value, out: &mut Output) {
        for choice in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ci = uint(choice.get("index"));
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            out.append((5, ci, 0), Text, str_at(delta, "content"));
            let thinking = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"));
            out.append(
                (6, ci, 0),
                Thinking,
                thinking.and_then(Value::as_str).unwrap_or(""),
            );
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let key = (7, ci, uint(call.get("index")));
                let function = call.get("function").unwrap_or(&Value::Null);
                if !self.tools.open.contains_key(&key) {
                    self.tools.open(key, str_at(function, "name"), false);
                }
                self.tools.append(key, str_at(function, "arguments"), out);
            }
        }
    }
}

/// Tool inputs still streaming, keyed by block; together they hold at most `max` bytes.
struct Pending {
    open: BTreeMap<Key, Tool>,
    held: usize,
    max: usize,
}

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

fn anthropic_message(v: &Value, out: &mut Output) {
    for block in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_at(block, "type") {
            "text" => out.add(Text, None, str_at(block, "text")),
            "thinking" => out.add(Thinking, None, str_at(block, "thinking")),
            "tool_use" => {
                let input = block.get("input").unwrap_or(&Value::Null);
                add_code(str_at(block, "name"), input, out);
            }
            _ => {}
        }
    }
}

fn responses_object(output: Option<&Value>, out: &mut Output) {
    for item in output.and_then(Value::as_array).into_iter().flatten() {
        match str_at(item, "type") {
            "message" => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if str_at(part, "type") == "output_text" {
                        out.add(Text, None, str_at(part, "text"));
                    }
                }
            }
            "reasoning" => {
                let summary = item.get("summary").and_then(Value::as_array);
                let content = item.get("content").and_then(Value::as_array);
                for part in summary.into_iter().chain(content).flatten() {
                    out.add(Thinking, None, str_at(part, "text"));
                }
            }
            "function_call" => {
                add_code_from_arguments(str_at(item, "name"), str_at(item, "arguments"), out);
            }
            "custom_tool_call" => {
                let name = str_at(item, "name");
                if let Some(code) = tools::code_from_raw(name, str_at(item, "input")) {
                    out.add(Code, Some(name), &code);
                }
            }
            _ => {}
        }
    }
}

fn chat_completion(v: &Value, out: &mut Output) {
    for choice in v
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let message = choice.get("message").unwrap_or(&Value::Null);
        let thinking = message
            .get("reasoning_content")
            .or_else(|| message.get("reasoning"));
        out.add(
            Thinking,
            None,
            thinking.and_then(Value::as_str).unwrap_or(""),
        );
        out.add(Text, None, str_at(message, "content"));
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let function = call.get("function").unwrap_or(&Value::Null);
            let arguments = str_at(function, "arguments");
            add_code_from_arguments(str_at(function, "name"), arguments, out);
        }
    }
}

/// One `GenerateContentResponse`: each streamed chunk, or the whole answer.
fn gemini_response(v: &Value, out: &mut Output) {
    let candidates = v.get("candidates").and_then(Value::as_array);
    for (n, candidate) in candidates.into_iter().flatten().enumerate() {
        let ci = candidate.get("index").map_or(n as u64, |i| uint(Some(i)));
        let parts = candidate.get("content").and_then(|c| c.get("parts"));
        for part in parts.and_then(Value::as_array).into_iter().flatten() {
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
                let (key, kind) = if thought {
                    ((9, ci, 0), Thinking)
                } else {
                    ((8, ci, 0), Text)
                };
                out.append(key, kind, text);
            }
            if let Some(call) = part.get("functionCall") {
                let args = call.get("args").unwrap_or(&Value::Null);
                add_code(str_at(call, "name"), args, out);
            }
        }
    }
}

fn str_at<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn uint(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}
