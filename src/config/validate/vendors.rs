//! `[[vendors]]`: the intercepted hosts and the error shape their clients parse.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Problems, host_list, id_ok, q};
use crate::config::raw::RawVendor;
use crate::config::{ErrorFormat, Vendor};
use crate::host::HostPattern;

pub(super) fn vendors(p: &mut Problems, raw: &[RawVendor]) -> Vec<Arc<Vendor>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in raw.iter().enumerate() {
        let at = format!("vendors[{i}]");
        let Some(id) = v.id.as_deref() else {
            p.push(
                format!("{at}.id"),
                None,
                "missing; give the vendor an id such as \"anthropic\"",
            );
            continue;
        };
        if !id_ok(id) {
            p.push(
                format!("{at}.id"),
                q(id),
                "not an id; use lower-case letters, digits, - and _",
            );
        } else if !seen.insert(id.to_string()) {
            p.push(
                format!("{at}.id"),
                q(id),
                "duplicate vendor id; each vendor is listed once",
            );
        }
        let hosts = host_list(
            p,
            &format!("{at}.hosts"),
            v.hosts.as_ref(),
            "list the vendor's API hosts, e.g. [\"api.anthropic.com\"]",
            "write a host name like \"api.openai.com\" or a wildcard like \"*.openai.com\"",
        );
        let error_format = match v.error_format.as_deref() {
            None => {
                p.push(
                    format!("{at}.error_format"),
                    None,
                    format!("missing; use one of {}", ErrorFormat::ALL.join(", ")),
                );
                ErrorFormat::OpenAi
            }
            Some(f) => ErrorFormat::parse(f).unwrap_or_else(|| {
                p.push(
                    format!("{at}.error_format"),
                    q(f),
                    format!("unknown format; use one of {}", ErrorFormat::ALL.join(", ")),
                );
                ErrorFormat::OpenAi
            }),
        };
        let mut fronts = Vec::new();
        for (j, raw_host) in v.fronts.iter().enumerate() {
            match HostPattern::parse(raw_host) {
                Ok(pat) => fronts.push(pat),
                Err(e) => p.push(
                    format!("{at}.fronts[{j}]"),
                    q(raw_host),
                    format!("{e}; list the hosts sharing the vendor's front end, e.g. \"*.googleapis.com\""),
                ),
            }
        }
        let mut side_calls = Vec::new();
        for (j, path) in v.side_calls.iter().enumerate() {
            match crate::config::side_calls::problem(path) {
                Some(why) => p.push(format!("{at}.side_calls[{j}]"), q(path), why),
                None => side_calls.push(path.clone()),
            }
        }
        out.push(Arc::new(Vendor {
            id: Arc::from(id),
            name: v.name.clone().unwrap_or_else(|| id.to_string()),
            hosts,
            error_format,
            fronts,
            deny_status: deny_status(p, &at, v.deny_status).unwrap_or(http::StatusCode::FORBIDDEN),
            side_calls: crate::config::SideCalls::new(side_calls),
        }));
    }
    out
}

/// A deny's status (`deny_status` of a vendor or a tool) must be one the clients print and never
/// retry: a 4xx, but not 401 or 407 (a login to fix), nor 408, 409 or 429 (retried by the
/// Anthropic and OpenAI SDKs and the CLIs). `None` when not given or not valid (then reported).
pub(super) fn deny_status(
    p: &mut Problems,
    at: &str,
    raw: Option<u16>,
) -> Option<http::StatusCode> {
    let code = raw?;
    match http::StatusCode::from_u16(code) {
        Ok(s) if s.is_client_error() && !matches!(code, 401 | 407 | 408 | 409 | 429) => Some(s),
        _ => {
            p.push(
                format!("{at}.deny_status"),
                Some(code.to_string()),
                "not a status clients show as a refusal; use 403 (the default), or 400, 422 or 451 for a client that hides a 403's body (never 401, 407, 408, 409, 429 or 5xx: clients ask for a login or retry)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, load_str};

    const VENDOR: &str =
        "[[vendors]]\nid = \"acme\"\nhosts = [\"api.acme.example\"]\nerror_format = \"openai\"\n";

    #[test]
    fn deny_status_defaults_to_403_and_takes_a_4xx_clients_show() {
        let cfg = load_str(VENDOR, "t", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.vendors[0].deny_status, 403);
        let cfg = load_str(&format!("{VENDOR}deny_status = 400\n"), "t", Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.vendors[0].deny_status, 400);
    }

    /// A status a client reads as a login, or retries, would hide the message behind a sign-in
    /// prompt or a retry loop.
    #[test]
    fn a_deny_status_that_asks_for_a_login_or_a_retry_is_named() {
        for code in [200, 401, 407, 408, 409, 429, 500, 503, 999] {
            let text = format!("{VENDOR}deny_status = {code}\n");
            let Err(ConfigError::Invalid { problems, .. }) = load_str(&text, "t", Path::new("."))
            else {
                panic!("{code} accepted");
            };
            assert_eq!(problems.len(), 1, "{code}: {problems:?}");
            assert_eq!(problems[0].path, "vendors[0].deny_status", "{code}");
            assert!(problems[0].message.contains("use 403"), "{code}");
        }
    }

    /// A side call is an exact, normalised path: a wildcard or a query would let more through
    /// than the one read-only call a tool needs to start.
    #[test]
    fn side_calls_are_exact_paths_and_each_bad_one_is_named() {
        let text = format!(
            "{VENDOR}side_calls = [\"/backend-api/wham/config/bundle\", \"/backend-api/wham/*\", \"backend-api/codex/models\"]\n"
        );
        let Err(ConfigError::Invalid { problems, .. }) = load_str(&text, "t", Path::new("."))
        else {
            panic!("accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["vendors[0].side_calls[1]", "vendors[0].side_calls[2]"]
        );
        assert!(
            problems[0].message.contains("not an exact path"),
            "{problems:?}"
        );
        let cfg = load_str(
            &format!("{VENDOR}side_calls = [\"/backend-api/wham/config/bundle\"]\n"),
            "t",
            Path::new("."),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.vendors[0].side_calls.matches(
            &http::Method::GET,
            "/backend-api/wham/config/bundle",
            false
        ));
    }
}
