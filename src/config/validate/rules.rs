//! `[[rules]]`: the ordered policy rules, checked against the known tools and vendors.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Problems, q};
use crate::config::raw::RawRule;
use crate::identify::tools::UNKNOWN_TOOL;
use crate::identify::workflow::valid_tag;
use crate::policy::{Action, ModelPattern, Rule};

pub(super) fn rules(
    p: &mut Problems,
    raw: &[RawRule],
    tool_ids: &[&str],
    vendor_ids: &[&str],
) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let known_tools: Vec<&str> = tool_ids.iter().copied().chain([UNKNOWN_TOOL]).collect();
    for (i, r) in raw.iter().enumerate() {
        let at = format!("rules[{i}]");
        let name = match r.name.as_deref() {
            None | Some("") => {
                p.push(
                    format!("{at}.name"),
                    None,
                    "missing; every rule has a name, shown in deny messages and the audit log",
                );
                format!("rules[{i}]")
            }
            Some(n) => {
                if !seen.insert(n.to_string()) {
                    p.push(
                        format!("{at}.name"),
                        q(n),
                        "duplicate rule name; names identify rules in the audit log",
                    );
                }
                n.to_string()
            }
        };
        let action = match r.action.as_deref() {
            None => {
                p.push(
                    format!("{at}.action"),
                    None,
                    format!("missing; use one of {}", Action::ALL.join(", ")),
                );
                Action::Block
            }
            Some(a) => Action::parse(a).unwrap_or_else(|| {
                p.push(
                    format!("{at}.action"),
                    q(a),
                    format!("unknown action; use one of {}", Action::ALL.join(", ")),
                );
                Action::Block
            }),
        };
        // A monitor rule may be exemptable: rolling a block out as monitor first then shows
        // exactly what the block will do, exemptions included (issue 18).
        if r.exemptable && action == Action::Allow {
            p.push(format!("{at}.exemptable"), Some("true".into()), "an allow rule has nothing to exempt; remove `exemptable` or make the action \"block\" (or \"monitor\" while rolling a block out)");
        }
        let check_list = |p: &mut Problems,
                          key: &str,
                          list: &Option<Vec<String>>,
                          known: &[&str],
                          what: &str| {
            if let Some(list) = list {
                if list.is_empty() {
                    p.push(
                        format!("{at}.{key}"),
                        None,
                        format!("empty list matches nothing; remove the key to match every {what}"),
                    );
                }
                for (j, v) in list.iter().enumerate() {
                    if !known.contains(&v.as_str()) {
                        p.push(
                            format!("{at}.{key}[{j}]"),
                            q(v),
                            format!("unknown {what}; known {what}s are {}", known.join(", ")),
                        );
                    }
                }
            }
        };
        check_list(p, "tools", &r.tools, &known_tools, "tool");
        check_list(p, "vendors", &r.vendors, vendor_ids, "vendor");
        for (key, list) in [
            ("users", &r.users),
            ("groups", &r.groups),
            ("models", &r.models),
        ] {
            if let Some(list) = list {
                if list.is_empty() {
                    p.push(
                        format!("{at}.{key}"),
                        None,
                        "empty list matches nothing; remove the key to match everything",
                    );
                }
                for (j, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        p.push(format!("{at}.{key}[{j}]"), q(v), "empty value; remove it");
                    }
                }
            }
        }
        if let Some(w) = &r.workflows {
            if w.is_empty() {
                p.push(
                    format!("{at}.workflows"),
                    None,
                    "empty list matches nothing; remove the key to match every workflow",
                );
            }
            for (j, tag) in w.iter().enumerate() {
                if !valid_tag(tag) {
                    p.push(
                        format!("{at}.workflows[{j}]"),
                        q(tag),
                        "not a workflow tag; use 1-64 lower-case letters, digits, -, _ or .",
                    );
                }
            }
        }
        out.push(Rule {
            name: Arc::from(name.as_str()),
            description: r.description.as_deref().map(Arc::from),
            action,
            exemptable: r.exemptable,
            tools: r.tools.clone(),
            vendors: r.vendors.clone(),
            workflows: r.workflows.clone(),
            users: r.users.clone(),
            groups: r.groups.clone(),
            models: r
                .models
                .as_ref()
                .map(|m| m.iter().map(|s| ModelPattern::parse(s)).collect()),
        });
    }
    out
}
