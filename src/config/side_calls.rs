//! A vendor's start-up side calls (`[[vendors]] side_calls`): the read-only calls a tool makes
//! before its model call and will not start without. Codex signed in with ChatGPT fetches its
//! workspace's managed config, the workspace routing, the plugin and the model lists from
//! `chatgpt.com` first, and stops with its own error when one fails
//! (`ERROR: workspace routing discovery failed`), so a blocked engineer never saw aigate's
//! message nor its request link (issue 16). A policy block of one of these calls is forwarded
//! as `monitor`, reason `side_call` (policy/mod.rs, step 2b), and the tool's model call is the
//! one that is refused, with the message the tool prints.
//!
//! Only exact, normalised paths, for GET and HEAD, never a WebSocket upgrade: a side call reads
//! configuration, it never carries a prompt or code. A prefix would let the next path the
//! vendor adds under it (Codex cloud tasks live next to the config bundle) through unseen.

/// The paths, each as `identify::normalise::path` writes it (no query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideCalls {
    paths: Vec<String>,
}

impl SideCalls {
    pub fn new(paths: Vec<String>) -> SideCalls {
        SideCalls { paths }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether a request is one of the start-up side calls. `path` is the normalised path.
    pub fn matches(&self, method: &http::Method, path: &str, websocket: bool) -> bool {
        !websocket
            && (method == http::Method::GET || method == http::Method::HEAD)
            && self.paths.iter().any(|p| p == path)
    }
}

/// Why a configured side-call path is not one, if it is not.
pub(crate) fn problem(raw: &str) -> Option<&'static str> {
    if !raw.starts_with('/') || raw.contains(['?', '#', '*']) {
        return Some(
            "not an exact path; write the path the tool calls, without query or wildcard, e.g. \"/backend-api/wham/config/bundle\"",
        );
    }
    if crate::identify::normalise::path(raw) != raw {
        return Some(
            "not in normalised form (no //, ., .. or %-escapes); write it as the vendor serves it, e.g. \"/backend-api/codex/models\"",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn only_exact_read_only_paths_match() {
        let s = SideCalls::new(vec!["/backend-api/wham/config/bundle".into()]);
        assert!(s.matches(&Method::GET, "/backend-api/wham/config/bundle", false));
        assert!(s.matches(&Method::HEAD, "/backend-api/wham/config/bundle", false));
        assert!(!s.matches(&Method::POST, "/backend-api/wham/config/bundle", false));
        assert!(!s.matches(&Method::GET, "/backend-api/wham/config/bundle", true));
        assert!(!s.matches(&Method::GET, "/backend-api/wham/config/bundle/x", false));
        assert!(!s.matches(&Method::GET, "/backend-api/codex/responses", false));
    }

    #[test]
    fn configured_paths_must_be_exact_and_normalised() {
        assert_eq!(problem("/backend-api/codex/models"), None);
        for bad in [
            "backend-api/x",
            "/backend-api/*",
            "/a?b=1",
            "/a//b",
            "/a/../b",
            "/%61",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }
}
