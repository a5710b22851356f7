//! The model a request asks for, from a bounded peek at the JSON body (or the path, for Google).
//!
//! The peek may end mid-document, so this is a small scanner that finds the top-level `"model"`
//! key without building a tree, and ignores `"model"` keys nested in messages or tool schemas.

use std::borrow::Cow;

use super::normalise;

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
/// Borrowed unless it has escapes: every key and value of the body prefix passes through here.
/// Escapes are folded by the shared normaliser, so `"\u006dodel"` is the `model` key and a
/// model name spelled with escapes is recorded as the vendor reads it.
fn read_string(buf: &[u8], start: usize) -> Option<(Cow<'_, [u8]>, usize)> {
    let content = start + 1;
    let mut i = content;
    let mut escaped = false;
    while i < buf.len() {
        match buf[i] {
            b'"' => {
                let raw = &buf[content..i];
                let s = if escaped {
                    Cow::Owned(normalise::fold_json_escapes(raw).into_owned())
                } else {
                    Cow::Borrowed(raw)
                };
                return Some((s, i + 1));
            }
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
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
    String::from_utf8_lossy(&normalise::percent_decode(s.as_bytes())).into_owned()
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
        // Escapes in the key or the value are folded, not a way to hide the model.
        assert_eq!(
            from_body(br#"{"\u006dodel":"claude-\u006fpus-4-1"}"#).as_deref(),
            Some("claude-opus-4-1")
        );
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
