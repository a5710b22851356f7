//! The readers as they were before `json.rs` (issue 17, "Capture cost"): each event parsed into a
//! `serde_json::Value`, fields looked up in it. Kept as the oracle the typed readers are compared
//! with (`tests.rs`, "typed_readers_match_the_value_readers"), the way
//! `fingerprint/reference.rs` defines the fingerprints.

use serde_json::Value;

use super::super::ApiShape;
use super::super::PartKind::{Code, Text, Thinking};
use super::super::frame::Frame;
use super::super::output::Output;
use super::super::tools;
use super::{Format, add_code, add_code_from_arguments};

impl Format {
    /// `on_frame` as it was.
    pub(in crate::provenance) fn on_frame_reference(&mut self, frame: Frame<'_>, out: &mut Output) {
        let data = match frame {
            Frame::Data(d) => d,
            Frame::Dropped => return out.drop_one(),
            Frame::Malformed => {
                out.malformed += 1;
                return;
            }
        };
        if self.sse && data.trim_ascii() == b"[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            out.malformed += 1;
            return;
        };
        match (self.shape, self.sse) {
            (ApiShape::AnthropicMessages, true) => self.anthropic_event_value(&v, out),
            (ApiShape::AnthropicMessages, false) => anthropic_message(&v, out),
            (ApiShape::OpenAiResponses, true) => self.responses_event_value(&v, out),
            (ApiShape::OpenAiResponses, false) => responses_object(v.get("output"), out),
            (ApiShape::OpenAiChat, true) => self.chat_chunk_value(&v, out),
            (ApiShape::OpenAiChat, false) => chat_completion(&v, out),
            (ApiShape::Gemini, _) => match v.as_array() {
                Some(items) => items.iter().for_each(|i| gemini_response(i, out)),
                None => gemini_response(&v, out),
            },
        }
    }

    fn anthropic_event_value(&mut self, v: &Value, out: &mut Output) {
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

    fn responses_event_value(&mut self, v: &Value, out: &mut Output) {
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

    fn chat_chunk_value(&mut self, v: &Value, out: &mut Output) {
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
