//! What never reaches the audit log.
//!
//! Headers are never copied into records, except the `user-agent` of a request no signature
//! recognises (so IT can write one), cut to printable ASCII with long token-like words
//! replaced. Bodies are only read for the model name. The other place a secret can hide in what
//! we do record is the query string (`?key=AIza…` is how some Google clients pass their API key),
//! so query values are replaced unless the parameter is known to be harmless.

/// Query parameters whose values are kept: they carry no secret and help a reviewer.
const KEEP: [&str; 4] = ["alt", "beta", "stream", "api-version"];

pub const REDACTED: &str = "REDACTED";

/// A request target for the log: the path, and the query with its values redacted.
pub fn path_for_log(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) if KEEP.contains(&k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(v);
            }
            Some((k, _)) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(pair),
        }
    }
    out
}

/// How much of a user agent the record keeps.
pub const MAX_USER_AGENT: usize = 200;

/// A user agent for the log: bytes outside printable ASCII become `?`, words of 32 or more
/// characters without a `/` (an API key pasted into a custom user agent, say) become
/// `REDACTED`, and the result is cut to `MAX_USER_AGENT` characters.
pub fn user_agent_for_log(value: &[u8]) -> String {
    let text: String = value
        .iter()
        .take(4 * MAX_USER_AGENT)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    let mut out = String::with_capacity(text.len().min(MAX_USER_AGENT));
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.len() >= 32 && !word.contains('/') {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
    }
    out.truncate(MAX_USER_AGENT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_printable_short_and_keyless() {
        assert_eq!(
            user_agent_for_log(b"python-requests/2.32.3"),
            "python-requests/2.32.3"
        );
        assert_eq!(user_agent_for_log(&[b'a', 0xff, 0x01, b'b']), "a??b");
        assert_eq!(
            user_agent_for_log(b"mytool/1.0 sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"),
            "mytool/1.0 REDACTED"
        );
        assert_eq!(user_agent_for_log(&[b'x'; 1000]), "REDACTED");
        assert_eq!(
            user_agent_for_log(&b"ab/cd ".repeat(100)).len(),
            MAX_USER_AGENT
        );
    }

    #[test]
    fn query_values_are_redacted_unless_harmless() {
        assert_eq!(
            path_for_log("/v1/messages?beta=true"),
            "/v1/messages?beta=true"
        );
        assert_eq!(
            path_for_log("/v1beta/models/x:generateContent?key=AIzaSECRET&alt=sse"),
            "/v1beta/models/x:generateContent?key=REDACTED&alt=sse"
        );
        assert_eq!(path_for_log("/p?flag"), "/p?flag");
        assert_eq!(path_for_log("/p"), "/p");
    }
}
