//! `[audit]`'s integrity keys: checkpoints, the signing key, rotation, `on_gap`.

use std::path::Path;
use std::time::Duration;

use super::{Problems, duration, q, readable_file};
use crate::audit::checkpoint::DEFAULT_KEY_FILE;
use crate::config::raw::RawAudit;
use crate::config::{AuditIntegrity, OnGap};

const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Below this a file would rotate every few records: a typo, not a choice.
const MIN_ROTATE_SIZE: u64 = 64 * 1024;

pub(super) fn integrity(
    p: &mut Problems,
    raw: &RawAudit,
    base: &Path,
    state_dir: &Path,
) -> AuditIntegrity {
    let checkpoint_every = match raw.checkpoint_every {
        None => DEFAULT_CHECKPOINT_EVERY,
        Some(n) if (1..=1_000_000).contains(&n) => n,
        Some(n) => {
            p.push(
                "audit.checkpoint_every",
                Some(n.to_string()),
                "out of range; use between 1 and 1000000 records (default 1000)",
            );
            DEFAULT_CHECKPOINT_EVERY
        }
    };
    let checkpoint_interval = duration(
        p,
        "audit.checkpoint_interval",
        raw.checkpoint_interval.as_deref(),
        DEFAULT_CHECKPOINT_INTERVAL,
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    );
    let (signing_key, generate_key) = match &raw.signing_key {
        Some(path) => (readable_file(p, "audit.signing_key", base, path), false),
        None => (state_dir.join(DEFAULT_KEY_FILE), true),
    };
    let rotate_size = raw.rotate_size.as_deref().and_then(|s| match size(s) {
        Some(n) if n >= MIN_ROTATE_SIZE => Some(n),
        Some(_) => {
            p.push(
                "audit.rotate_size",
                q(s),
                "too small; use at least \"64KiB\" (e.g. \"1GiB\"), or remove the key to rotate by time only",
            );
            None
        }
        None => {
            p.push(
                "audit.rotate_size",
                q(s),
                "not a size; write a number with a unit, e.g. \"512MiB\" or \"1GiB\"",
            );
            None
        }
    });
    let rotate_interval = raw.rotate_interval.as_deref().map(|s| {
        duration(
            p,
            "audit.rotate_interval",
            Some(s),
            Duration::from_secs(86_400),
            Duration::from_secs(60),
            Duration::from_secs(366 * 86_400),
        )
    });
    let on_gap = match raw.on_gap.as_deref() {
        None | Some("record") => OnGap::Record,
        Some("refuse") => OnGap::Refuse,
        Some(other) => {
            p.push(
                "audit.on_gap",
                q(other),
                "unknown mode; use \"record\" (write a chain_gap record and run) or \"refuse\" (do not start until the log is restored)",
            );
            OnGap::Record
        }
    };
    AuditIntegrity {
        checkpoint_every,
        checkpoint_interval,
        signing_key,
        generate_key,
        rotate_size,
        rotate_interval,
        on_gap,
    }
}

/// `"512MiB"`, `"1 GiB"`, `"100MB"`, `"65536"` (bytes).
pub(super) fn size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::size;
    use crate::config::{ConfigError, OnGap, load_str};

    #[test]
    fn every_bad_key_is_named_with_its_path() {
        let text = r#"
[audit]
checkpoint_every = 0
checkpoint_interval = "forever"
signing_key = "/nonexistent/aigate-audit.key"
rotate_size = "1KiB"
rotate_interval = "1s"
on_gap = "ignore"
"#;
        let Err(ConfigError::Invalid { problems, .. }) = load_str(text, "t", Path::new(".")) else {
            panic!("accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "audit.checkpoint_every",
                "audit.checkpoint_interval",
                "audit.signing_key",
                "audit.rotate_size",
                "audit.rotate_interval",
                "audit.on_gap",
            ]
        );
        assert!(problems[3].message.contains("at least \"64KiB\""));
        assert!(problems[5].message.contains("\"refuse\""));
    }

    #[test]
    fn defaults_sign_every_1000_records_with_a_generated_key() {
        let cfg = load_str("[gateway]\nstate_dir = \"/s\"\n", "t", Path::new(".")).unwrap();
        let i = &cfg.audit.integrity;
        assert_eq!(i.checkpoint_every, 1000);
        assert_eq!(i.signing_key, Path::new("/s/audit-signing.key"));
        assert!(i.generate_key);
        assert_eq!((i.rotate_size, i.rotate_interval), (None, None));
        assert_eq!(i.on_gap, OnGap::Record);
    }

    #[test]
    fn sizes() {
        assert_eq!(size("512MiB"), Some(512 << 20));
        assert_eq!(size("1 GiB"), Some(1 << 30));
        assert_eq!(size("100MB"), Some(100_000_000));
        assert_eq!(size("65536"), Some(65536));
        assert_eq!(size("1 gallon"), None);
        assert_eq!(size("MiB"), None);
    }
}
