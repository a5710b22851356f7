//! What never reaches the audit log.
//!
//! Headers are never copied into records at all (the record has no header field), and bodies are
//! only read for the model name. The one place a secret can hide in what we do record is the
//! query string (`?key=AIza…` is how some Google clients pass their API key), so query values are
//! replaced unless the parameter is known to be harmless.

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

#[cfg(test)]
mod tests {
    use super::*;

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
