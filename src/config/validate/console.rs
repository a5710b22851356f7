//! `[console]`: where engineers' browsers reach the console, how long request links and
//! requests live, and `[[console.notify]]` webhooks.

use std::time::Duration;

use super::{Problems, duration, q};
use crate::config::raw::RawConsole;
use crate::config::{ConsoleConfig, NotifyEvent, NotifyFormat, NotifyHook};

pub(super) fn console(p: &mut Problems, raw: &RawConsole, base: &std::path::Path) -> ConsoleConfig {
    let public_url = raw
        .public_url
        .as_deref()
        .and_then(|u| public_url(p, "console.public_url", u));
    let request_ttl = duration(
        p,
        "console.request_ttl",
        raw.request_ttl.as_deref(),
        Duration::from_secs(24 * 3600),
        Duration::from_secs(60),
        Duration::from_secs(90 * 86_400),
    );
    let draft_ttl = duration(
        p,
        "console.draft_ttl",
        raw.draft_ttl.as_deref(),
        Duration::from_secs(24 * 3600),
        Duration::from_secs(60),
        Duration::from_secs(30 * 86_400),
    );
    let request_retention = duration(
        p,
        "console.request_retention",
        raw.request_retention.as_deref(),
        Duration::from_secs(90 * 86_400),
        Duration::from_secs(86_400),
        Duration::from_secs(3650 * 86_400),
    );
    let mut notify = Vec::new();
    for (i, hook) in raw.notify.iter().enumerate() {
        let at = format!("console.notify[{i}]");
        let url = match hook.url.as_deref() {
            None => {
                p.push(
                    format!("{at}.url"),
                    None,
                    "missing; give the webhook's address, e.g. \"https://hooks.slack.com/services/…\"",
                );
                None
            }
            Some(u) => webhook_url(p, &format!("{at}.url"), u),
        };
        let format = match hook.format.as_deref() {
            None | Some("json") => NotifyFormat::Json,
            Some("slack") => NotifyFormat::Slack,
            Some(other) => {
                p.push(
                    format!("{at}.format"),
                    q(other),
                    "unknown format; use \"json\" (the event as JSON) or \"slack\" ({\"text\": …}, for Slack, Mattermost or Teams incoming webhooks)",
                );
                NotifyFormat::Json
            }
        };
        let mut events = Vec::new();
        match &hook.events {
            None => {
                events = NotifyEvent::ALL
                    .iter()
                    .filter_map(|e| NotifyEvent::parse(e))
                    .collect();
            }
            Some(list) if list.is_empty() => p.push(
                format!("{at}.events"),
                None,
                format!(
                    "empty; a hook told about nothing does nothing: give one or more of {}, or leave it out for all",
                    NotifyEvent::ALL.join(", ")
                ),
            ),
            Some(list) => {
                for (j, e) in list.iter().enumerate() {
                    match NotifyEvent::parse(e) {
                        Some(ev) => events.push(ev),
                        None => p.push(
                            format!("{at}.events[{j}]"),
                            q(e),
                            format!("unknown event; use one of {}", NotifyEvent::ALL.join(", ")),
                        ),
                    }
                }
            }
        }
        if let Some(url) = url {
            notify.push(NotifyHook {
                url,
                format,
                events,
                users: hook.users.clone().unwrap_or_default(),
            });
        }
    }
    // Sign-in, sessions and TLS: the web console's keys (console_web.rs).
    let (session_idle, session_max) = super::console_web::sessions(p, raw);
    ConsoleConfig {
        public_url,
        request_ttl,
        draft_ttl,
        request_retention,
        notify,
        session_idle,
        session_max,
        signin_link: super::console_web::signin_link(p, raw),
        tls: super::console_web::tls(p, raw, base),
        // `[console.oidc]` needs the admin address: config/validate/console_oidc.rs.
        oidc: None,
    }
}

/// An absolute http(s) URL with a host and no query or fragment; the trailing slash is dropped
/// so that links read `{public_url}/r/{id}`.
fn public_url(p: &mut Problems, path: &str, raw: &str) -> Option<String> {
    let fix = "write the console's address as engineers' browsers reach it, e.g. \"https://aigate.example.com\" or \"http://10.0.0.5:9180\"";
    let uri = match raw.parse::<http::Uri>() {
        Ok(u) => u,
        Err(_) => {
            p.push(path, q(raw), format!("not a URL; {fix}"));
            return None;
        }
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        p.push(
            path,
            q(raw),
            format!("not an absolute http(s) URL with a host; {fix}"),
        );
        return None;
    }
    if uri.query().is_some() || raw.contains('#') {
        p.push(
            path,
            q(raw),
            format!("has a query or fragment; request links append /r/<id> to it, so {fix}"),
        );
        return None;
    }
    Some(raw.trim_end_matches('/').to_string())
}

/// A webhook target: an absolute http(s) URL. Its value is not echoed in problems: it may hold
/// a secret (Slack's incoming-webhook path is one).
fn webhook_url(p: &mut Problems, path: &str, raw: &str) -> Option<http::Uri> {
    let hidden = Some("(hidden: a webhook URL may hold a secret)".to_string());
    match raw.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(u),
        _ => {
            p.push(
                path,
                hidden,
                "not an absolute http(s) URL; write e.g. \"https://hooks.slack.com/services/…\" or \"http://10.0.0.7:8080/aigate\"",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    use super::super::problems_of as problems;

    #[test]
    fn defaults_and_values() {
        let cfg = load_str("", "test.toml", std::path::Path::new(".")).unwrap();
        assert_eq!(cfg.console.public_url, None);
        assert_eq!(cfg.console.request_ttl.as_secs(), 86_400);
        assert_eq!(cfg.console.draft_ttl.as_secs(), 86_400);
        assert_eq!(
            cfg.console_url("0.0.0.0:9180".parse().unwrap()),
            "http://127.0.0.1:9180"
        );
        let cfg = load_str(
            "[console]\npublic_url = \"https://aigate.example.com/console/\"\nrequest_ttl = \"2d\"\ndraft_ttl = \"1h\"\n[[console.notify]]\nurl = \"https://hooks.example.com/T0/B0/xyz\"\nformat = \"slack\"\nevents = [\"requested\"]\n",
            "test.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        assert_eq!(
            cfg.console_url("127.0.0.1:1".parse().unwrap()),
            "https://aigate.example.com/console"
        );
        assert_eq!(cfg.console.request_ttl.as_secs(), 2 * 86_400);
        assert_eq!(cfg.console.draft_ttl.as_secs(), 3600);
        assert_eq!(cfg.console.notify.len(), 1);
        assert_eq!(
            cfg.console.notify[0].format,
            crate::config::NotifyFormat::Slack
        );
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let text = problems(
            "[console]\npublic_url = \"aigate.example.com\"\nrequest_ttl = \"10s\"\ndraft_ttl = \"soon\"\n[[console.notify]]\nurl = \"ftp://secret-token@x\"\nformat = \"teams\"\nevents = [\"approved\", \"granted\"]\n[[console.notify]]\nevents = []\n",
        );
        for want in [
            "console.public_url = \"aigate.example.com\": not an absolute http(s) URL with a host",
            "console.request_ttl = \"10s\": out of range; use between 1 minute and 90 days",
            "console.draft_ttl = \"soon\"",
            "console.notify[0].url = (hidden: a webhook URL may hold a secret): not an absolute http(s) URL",
            "console.notify[0].format = \"teams\": unknown format",
            "console.notify[0].events[1] = \"granted\": unknown event; use one of requested, approved, denied, expired",
            "console.notify[1].url: missing",
            "console.notify[1].events: empty",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            problems("[console]\npublic_url = \"https://a.example/?x=1\"\n")
                .contains("has a query or fragment")
        );
    }
}
