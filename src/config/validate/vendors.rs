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
        out.push(Arc::new(Vendor {
            id: Arc::from(id),
            name: v.name.clone().unwrap_or_else(|| id.to_string()),
            hosts,
            error_format,
            fronts,
        }));
    }
    out
}
