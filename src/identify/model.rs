//! The model a request asks for, from a bounded peek at the JSON body (or the path, for Google).
//!
//! The peek may end mid-document, so this is a small scanner that finds the top-level `"model"`
//! key without building a tree, and ignores `"model"` keys nested in messages or tool schemas.

use std::borrow::Cow;

/// The longest model name we record; anything longer is not a model name.
const MAX_MODEL_LEN: usize = 200;

/// The model from a body prefix, if its top-level `"model"` key is in the prefix.
pub fn from_body(prefix: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut i = 0usize;
    // Set right after a string at depth 1 that could be a key.
    let mut last_key_was_model = false;
    while i < prefix.len() {
        match prefix[i] {
            b'{' | b'[' => {
                depth += 1;
                last_key_was_model = false;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                last_key_was_model = false;
            }
            b'"' => {
                let (s, end) = read_string(prefix, i)?;
                i = end;
                if depth == 1 && last_key_was_model {
                    return (s.len() <= MAX_MODEL_LEN)
                        .then(|| String::from_utf8_lossy(&s).into_owned());
                }
                last_key_was_model = depth == 1 && *s == *b"model" && next_is_colon(prefix, i);
                continue;
            }
            b':' | b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => last_key_was_model = false,
        }
        i += 1;
    }
    None
}

fn next_is_colon(buf: &[u8], mut i: usize) -> bool {
    while i < buf.len() && buf[i].is_ascii_whitespace() {
        i += 1;
    }
    buf.get(i) == Some(&b':')
}

/// The string starting at the quote at `start`, and the index after its closing quote.
/// Escapes are kept literally except `\"` and `\\`; model names do not need more. Borrowed
/// unless it has escapes: every key and value of the body prefix passes through here.
fn read_string(buf: &[u8], start: usize) -> Option<(Cow<'_, [u8]>, usize)> {
    let content = start + 1;
    let mut i = content;
    while i < buf.len() {
        match buf[i] {
            b'"' => return Some((Cow::Borrowed(&buf[content..i]), i + 1)),
            b'\\' => return read_escaped(buf, content, i),
            _ => i += 1,
        }
    }
    None
}

/// The rest of `read_string` once an escape is seen at `i`.
fn read_escaped(buf: &[u8], content: usize, mut i: usize) -> Option<(Cow<'_, [u8]>, usize)> {
    let mut out = buf[content..i].to_vec();
    while i < buf.len() {
        match buf[i] {
            b'"' => return Some((Cow::Owned(out), i + 1)),
            b'\\' => {
                let next = *buf.get(i + 1)?;
                out.push(next);
                i += 2;
            }
            b => {
                if out.len() <= MAX_MODEL_LEN {
                    out.push(b);
                }
                i += 1;
            }
        }
    }
    None
}

/// Google and Vertex put the model in the path
/// (`/v1beta/models/gemini-2.5-pro:streamGenerateContent`,
/// `…/publishers/anthropic/models/claude-sonnet-4-5:rawPredict`), and Bedrock too, URL-encoded
/// (`/model/anthropic.claude-sonnet-4-5-v1%3A0/invoke`).
pub fn from_path(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/model/") {
        let model = percent_decode(rest.split(['/', '?']).next()?);
        return (!model.is_empty() && model.len() <= MAX_MODEL_LEN).then_some(model);
    }
    let rest = path.split("/models/").nth(1)?;
    let model = rest.split([':', '/', '?']).next()?;
    (!model.is_empty() && model.len() <= MAX_MODEL_LEN).then(|| model.to_string())
}

/// `%XX` escapes decoded (a Bedrock model id's `:` arrives as `%3A`); anything else kept.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_model_only() {
        assert_eq!(
            from_body(br#"{"model":"claude-sonnet-4-5","max_tokens":5}"#).as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            from_body(br#"{"messages":[{"model":"nested"}], "model" : "gpt-5"}"#).as_deref(),
            Some("gpt-5")
        );
        assert_eq!(
            from_body(br#"{"messages":[{"content":"\"model\":\"x\""}]}"#),
            None
        );
        assert_eq!(from_body(br#"{"input":"model","x":"y"}"#), None);
        // Truncated before the value: nothing, rather than a guess.
        assert_eq!(from_body(br#"{"model":"clau"#), None);
        assert_eq!(from_body(b""), None);
        assert_eq!(from_body(b"not json"), None);
    }

    #[test]
    fn google_path() {
        assert_eq!(
            from_path("/v1beta/models/gemini-2.5-pro:streamGenerateContent").as_deref(),
            Some("gemini-2.5-pro")
        );
        assert_eq!(from_path("/v1/messages"), None);
    }

    #[test]
    fn bedrock_and_vertex_paths() {
        assert_eq!(
            from_path("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke").as_deref(),
            Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(
            from_path("/model/anthropic.claude-3%ZZ/invoke-with-response-stream").as_deref(),
            Some("anthropic.claude-3%ZZ")
        );
        assert_eq!(from_path("/model/"), None);
        assert_eq!(
            from_path("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict").as_deref(),
            Some("claude-opus-4-1@20250805")
        );
    }
}
