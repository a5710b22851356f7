//! `[provenance]`: which forwarded model calls are captured, how long the ledger keeps them,
//! and the size of the capture's queue.

use std::sync::Arc;
use std::time::Duration;

use super::{Problems, duration, q};
use crate::config::raw::RawProvenance;
use crate::config::{ProvenanceConfig, WorkerPriority};
use crate::identify::tools::UNKNOWN_TOOL;

/// More queued chunks than this would hold gigabytes of responses in memory.
const MAX_QUEUE: u64 = 1_000_000;
/// Below one read buffer's worth a queue drops nearly every streamed response.
const MIN_QUEUE_BYTES: u64 = 64 << 10;
const MAX_QUEUE_BYTES: u64 = 16 << 30;
const MAX_WORKERS: u64 = 64;

pub(super) fn provenance(
    p: &mut Problems,
    raw: &RawProvenance,
    tool_ids: &[&str],
    vendor_ids: &[&str],
) -> ProvenanceConfig {
    let defaults = ProvenanceConfig::default();
    let known_tools: Vec<&str> = tool_ids.iter().copied().chain([UNKNOWN_TOOL]).collect();
    let tools = ids(
        p,
        "provenance.tools",
        raw.tools.as_deref(),
        &known_tools,
        "tool",
    );
    let vendors = ids(
        p,
        "provenance.vendors",
        raw.vendors.as_deref(),
        vendor_ids,
        "vendor",
    );
    let retention = duration(
        p,
        "provenance.retention",
        raw.retention.as_deref(),
        defaults.retention,
        Duration::from_secs(86_400),
        Duration::from_secs(20 * 365 * 86_400),
    );
    let queue = raw.queue.unwrap_or(defaults.queue as u64);
    if !(1..=MAX_QUEUE).contains(&queue) {
        p.push(
            "provenance.queue",
            Some(queue.to_string()),
            format!("use between 1 and {MAX_QUEUE} response chunks (the default is {}); a full queue drops captures, never slows a client", defaults.queue),
        );
    }
    let queue_bytes = match raw.queue_bytes.as_deref() {
        None => defaults.queue_bytes as u64,
        Some(s) => match super::audit::size(s) {
            Some(n) if (MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&n) => n,
            Some(_) => {
                p.push(
                    "provenance.queue_bytes",
                    q(s),
                    "out of range; use between \"64KiB\" and \"16GiB\" (the default is \"64MiB\"); a full queue drops captures, never slows a client",
                );
                defaults.queue_bytes as u64
            }
            None => {
                p.push(
                    "provenance.queue_bytes",
                    q(s),
                    "not a size; write a number with a unit, e.g. \"64MiB\" or \"1GiB\"",
                );
                defaults.queue_bytes as u64
            }
        },
    };
    let workers = raw.workers.unwrap_or(defaults.workers as u64);
    if !(1..=MAX_WORKERS).contains(&workers) {
        p.push(
            "provenance.workers",
            Some(workers.to_string()),
            format!(
                "use between 1 and {MAX_WORKERS} worker threads (one per spare core is plenty)"
            ),
        );
    }
    let worker_priority = match raw.worker_priority.as_deref() {
        None => defaults.worker_priority,
        Some("normal") => WorkerPriority::Normal,
        Some("low") => WorkerPriority::Low,
        Some(other) => {
            p.push(
                "provenance.worker_priority",
                q(other),
                "use \"low\" (the default: the data path first, so at full load captures are dropped) or \"normal\" (every capture kept, at the data path's expense at full load)",
            );
            defaults.worker_priority
        }
    };
    ProvenanceConfig {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        tools,
        vendors,
        retention,
        queue: queue.clamp(1, MAX_QUEUE) as usize,
        queue_bytes: usize::try_from(queue_bytes).unwrap_or(usize::MAX),
        workers: workers.clamp(1, MAX_WORKERS) as usize,
        worker_priority,
        thinking: raw.thinking.unwrap_or(defaults.thinking),
    }
}

/// A list of tool or vendor ids, each of which must be known; absent or empty means all.
fn ids(
    p: &mut Problems,
    path: &str,
    raw: Option<&[String]>,
    known: &[&str],
    what: &str,
) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    for (i, id) in raw.unwrap_or_default().iter().enumerate() {
        if known.contains(&id.as_str()) {
            out.push(Arc::from(id.as_str()));
        } else {
            p.push(
                format!("{path}[{i}]"),
                q(id),
                format!(
                    "unknown {what}; known {what}s are {} (leave the list out to capture every {what})",
                    known.join(", ")
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use crate::config::load_str;

    /// The shipped policy with these keys added to its `[provenance]`.
    fn with(keys: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let shipped = crate::config::DEFAULT_CONFIG;
        let at = "enabled = true\n# Only these tools";
        assert!(shipped.contains(at), "the shipped policy has {at:?}");
        let text = shipped.replacen(at, &format!("{keys}\n# Only these tools"), 1);
        load_str(&text, "test.toml", Path::new("."))
    }

    fn problems(keys: &str) -> String {
        match with(keys) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_shipped_policy_captures_every_forwarded_call() {
        let cfg = load_str(crate::config::DEFAULT_CONFIG, "shipped", Path::new(".")).unwrap();
        let p = &cfg.provenance;
        assert!(p.enabled);
        assert!(p.tools.is_empty() && p.vendors.is_empty());
        assert!(p.covers("claude-code", "anthropic"));
        assert!(!p.thinking);
        assert_eq!(p.worker_priority, crate::config::WorkerPriority::Low);
        let normal = with("enabled = true\nworker_priority = \"normal\"").unwrap();
        assert_eq!(
            normal.provenance.worker_priority,
            crate::config::WorkerPriority::Normal
        );
    }

    #[test]
    fn every_bad_key_is_named_with_its_path() {
        let text = problems(
            "enabled = true\ntools = [\"claude-code\", \"claude_code\"]\nvendors = [\"anthropik\"]\nretention = \"1h\"\nqueue = 0\nworkers = 65\nqueue_bytes = \"1KiB\"\nworker_priority = \"idle\"\n",
        );
        for want in [
            "provenance.tools[1] = \"claude_code\": unknown tool; known tools are",
            "provenance.vendors[0] = \"anthropik\": unknown vendor",
            "provenance.retention = \"1h\": out of range",
            "provenance.queue = 0: use between 1 and 1000000",
            "provenance.workers = 65: use between 1 and 64",
            "provenance.queue_bytes = \"1KiB\": out of range; use between \"64KiB\" and \"16GiB\"",
            "provenance.worker_priority = \"idle\": use \"low\" (the default",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn the_queue_is_bounded_by_bytes_too() {
        let cfg = with("enabled = true").unwrap();
        assert_eq!(cfg.provenance.queue_bytes, 64 << 20);
        let cfg = with("enabled = true\nqueue_bytes = \"256KiB\"").unwrap();
        assert_eq!(cfg.provenance.queue_bytes, 256 << 10);
        let text = problems("enabled = true\nqueue_bytes = \"lots\"");
        assert!(
            text.contains("provenance.queue_bytes = \"lots\": not a size; write a number with a unit, e.g. \"64MiB\""),
            "{text}"
        );
    }

    #[test]
    fn tools_and_vendors_narrow_what_is_captured() {
        let cfg = with("enabled = true\ntools = [\"codex-cli\"]\nvendors = [\"openai\"]").unwrap();
        let p = &cfg.provenance;
        assert!(p.covers("codex-cli", "openai"));
        assert!(!p.covers("claude-code", "openai"));
        assert!(!p.covers("codex-cli", "anthropic"));
    }
}
