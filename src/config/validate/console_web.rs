//! `[console]`, the console's own part: sessions, the one-time sign-in link, and TLS for the
//! admin listener (the request loop's keys are validated beside it).

use std::path::Path;
use std::time::Duration;

use super::{Problems, duration, q, readable_file};
use crate::config::raw::RawConsole;
use crate::config::{ConsoleTls, SigninLink, format_duration};

/// `session_idle` and `session_max`: an idle timeout longer than the absolute one would never
/// apply, which is a mistake worth naming.
pub(super) fn sessions(p: &mut Problems, raw: &RawConsole) -> (Duration, Duration) {
    let idle = duration(
        p,
        "console.session_idle",
        raw.session_idle.as_deref(),
        Duration::from_secs(3600),
        Duration::from_secs(60),
        Duration::from_secs(7 * 86_400),
    );
    let max = duration(
        p,
        "console.session_max",
        raw.session_max.as_deref(),
        Duration::from_secs(12 * 3600),
        Duration::from_secs(60),
        Duration::from_secs(30 * 86_400),
    );
    if idle > max {
        p.push(
            "console.session_idle",
            raw.session_idle.as_deref().and_then(q),
            format!(
                "longer than console.session_max ({}); a session ends at session_max anyway, so make session_idle shorter",
                format_duration(max)
            ),
        );
    }
    (idle, max)
}

pub(super) fn signin_link(p: &mut Problems, raw: &RawConsole) -> SigninLink {
    match raw.signin_link.as_deref() {
        None | Some("terminal") => SigninLink::Terminal,
        Some("always") => SigninLink::Always,
        Some("never") => SigninLink::Never,
        Some(other) => {
            p.push(
                "console.signin_link",
                q(other),
                "unknown value; use \"terminal\" (print the one-time link only when standard output is a terminal), \"always\" or \"never\"",
            );
            SigninLink::Terminal
        }
    }
}

pub(super) fn tls(p: &mut Problems, raw: &RawConsole, base: &Path) -> Option<ConsoleTls> {
    let t = raw.tls.as_ref()?;
    let mint = t.mint.unwrap_or(false);
    match (t.cert.as_deref(), t.key.as_deref(), mint) {
        (Some(cert), Some(key), false) => Some(ConsoleTls::Files {
            cert: readable_file(p, "console.tls.cert", base, cert),
            key: readable_file(p, "console.tls.key", base, key),
        }),
        (None, None, true) => Some(ConsoleTls::Mint),
        (_, _, true) => {
            p.push(
                "console.tls.mint",
                Some("true".into()),
                "mint = true and cert/key both given; use one: mint a certificate from aigate's CA, or give the cert and key files",
            );
            None
        }
        (Some(_), None, false) => {
            p.push(
                "console.tls.key",
                None,
                "missing; console.tls.cert needs its private key file (PEM)",
            );
            None
        }
        (None, Some(_), false) => {
            p.push(
                "console.tls.cert",
                None,
                "missing; console.tls.key needs its certificate chain file (PEM, leaf first)",
            );
            None
        }
        (None, None, false) => {
            p.push(
                "console.tls",
                None,
                "empty; give cert and key (PEM files), or mint = true for a certificate from aigate's CA",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{SigninLink, load_str};

    use super::super::problems_of as problems;

    #[test]
    fn defaults() {
        let cfg = load_str("", "test.toml", std::path::Path::new(".")).unwrap();
        assert_eq!(cfg.console.session_idle.as_secs(), 3600);
        assert_eq!(cfg.console.session_max.as_secs(), 12 * 3600);
        assert_eq!(cfg.console.signin_link, SigninLink::Terminal);
        assert!(cfg.console.tls.is_none());
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let text = problems(
            "[console]\nsession_idle = \"2d\"\nsession_max = \"1d\"\nsignin_link = \"sometimes\"\n[console.tls]\ncert = \"missing-cert.pem\"\n",
        );
        for want in [
            "console.session_idle = \"2d\": longer than console.session_max (1 day)",
            "console.signin_link = \"sometimes\": unknown value",
            "console.tls.key: missing",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let text = problems("[console.tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n");
        assert!(
            text.contains("console.tls.cert = \"nope.pem\": cannot read"),
            "{text}"
        );
        assert!(
            problems("[console.tls]\nmint = true\ncert = \"a\"\nkey = \"b\"\n")
                .contains("console.tls.mint = true: mint = true and cert/key both given"),
        );
        assert!(
            problems("[console]\nsession_max = \"5s\"\n")
                .contains("console.session_max = \"5s\": out of range")
        );
    }
}
