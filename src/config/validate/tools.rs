//! `[[tools]]`: tool signatures, each signal compiled once here.

use std::collections::HashSet;
use std::sync::Arc;

use http::HeaderName;
use regex::Regex;

use super::{Problems, first_line, id_ok, q};
use crate::config::raw::RawTool;
use crate::identify::ToolSignature;
use crate::identify::tools::{Signal, UNKNOWN_TOOL};

pub(super) fn tools(p: &mut Problems, raw: &[RawTool], vendor_ids: &[&str]) -> Vec<ToolSignature> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let all_ids: Vec<&str> = raw.iter().filter_map(|t| t.id.as_deref()).collect();
    for (i, t) in raw.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Some(id) = t.id.as_deref() else {
            p.push(
                format!("{at}.id"),
                None,
                "missing; give the tool an id such as \"claude-code\"",
            );
            continue;
        };
        if !id_ok(id) || id == UNKNOWN_TOOL {
            p.push(
                format!("{at}.id"),
                q(id),
                "not an id; use lower-case letters, digits, - and _ (\"unknown\" is reserved)",
            );
        } else if !seen.insert(id.to_string()) {
            p.push(
                format!("{at}.id"),
                q(id),
                "duplicate tool id; each signature has its own id",
            );
        }
        for (j, v) in t.vendors.iter().enumerate() {
            if !vendor_ids.contains(&v.as_str()) {
                p.push(
                    format!("{at}.vendors[{j}]"),
                    q(v),
                    format!(
                        "unknown vendor; known vendors are {}",
                        vendor_ids.join(", ")
                    ),
                );
            }
        }
        for (j, path) in t.paths.iter().enumerate() {
            if !path.starts_with('/') {
                p.push(
                    format!("{at}.paths[{j}]"),
                    q(path),
                    "a path prefix starts with /, e.g. \"/v1/messages\"",
                );
            }
        }
        let mut signals = Vec::new();
        if let Some(path) = &t.path {
            match signal_regex(path) {
                Ok(re) => signals.push(Signal::Path(re)),
                Err(e) => p.push(
                    format!("{at}.path"),
                    q(path),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        if let Some(ua) = &t.user_agent {
            match signal_regex(ua) {
                Ok(re) => signals.push(Signal::UserAgent(re)),
                Err(e) => p.push(
                    format!("{at}.user_agent"),
                    q(ua),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        for (name, re) in &t.headers {
            let hpath = format!("{at}.headers.\"{name}\"");
            let Ok(hn) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                p.push(hpath, None, "the key is not a valid HTTP header name");
                continue;
            };
            match signal_regex(re) {
                Ok(re) => signals.push(Signal::Header(hn, re)),
                Err(e) => p.push(
                    hpath,
                    q(re),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        if let Some(body) = &t.body {
            match regex::bytes::RegexBuilder::new(body)
                .case_insensitive(true)
                .build()
            {
                Ok(re) => signals.push(Signal::Body(re)),
                Err(e) => p.push(
                    format!("{at}.body"),
                    q(body),
                    format!("not a valid regex: {}", first_line(&e.to_string())),
                ),
            }
        }
        let declared =
            t.user_agent.is_some() as usize + t.headers.len() + t.body.is_some() as usize;
        if declared == 0 {
            p.push(
                &at,
                None,
                "no signals; give at least one of user_agent, headers, body",
            );
        }
        let min_signals = t.min_signals.unwrap_or(1) as usize;
        if min_signals == 0 || (declared > 0 && min_signals > declared) {
            p.push(
                format!("{at}.min_signals"),
                Some(min_signals.to_string()),
                format!("must be between 1 and the number of signals ({declared})"),
            );
        }
        let others: Vec<&str> = all_ids.iter().filter(|t| **t != id).copied().collect();
        for (j, b) in t.built_on.iter().enumerate() {
            if !others.contains(&b.as_str()) {
                let known = if others.is_empty() {
                    "no other tools are declared".to_string()
                } else {
                    format!("known tools are {}", others.join(", "))
                };
                p.push(
                    format!("{at}.built_on[{j}]"),
                    q(b),
                    format!("not another tool; built_on names the signatures this tool is built on (an SDK): {known}"),
                );
            }
        }
        out.push(ToolSignature {
            id: Arc::from(id),
            name: Arc::from(t.name.as_deref().unwrap_or(id)),
            vendors: t.vendors.clone(),
            paths: t.paths.clone(),
            signals,
            min_signals,
            built_on: t.built_on.iter().map(|b| Arc::from(b.as_str())).collect(),
            deny_status: super::vendors::deny_status(p, &at, t.deny_status),
        });
    }
    out
}

/// Signal regexes ignore case: vendors accept `x-app: CLI` and `Claude-CLI/…` as readily as the
/// spelling the real client sends, so a signature must not miss them (issue 14).
fn signal_regex(re: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(re).case_insensitive(true).build()
}
