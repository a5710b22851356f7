//! `[[workflows]]`, the workflow catalog, and the `[policy]` keys that say what happens to tags
//! and tools outside it (`unknown_workflow`, `unknown_tool`).

use std::collections::HashSet;

use super::{Problems, q};
use crate::config::raw::{RawPolicy, RawRule, RawWorkflow};
use crate::identify::workflow::{UNTAGGED, WorkflowCatalog, WorkflowEntry, valid_tag};
use crate::policy::{Action, UnknownWorkflow};

/// What the catalog and its policy keys validate to.
pub(super) struct Workflows {
    pub catalog: WorkflowCatalog,
    pub unknown_workflow: UnknownWorkflow,
    pub unknown_tool: Option<Action>,
}

pub(super) fn workflows(
    p: &mut Problems,
    raw: &[RawWorkflow],
    policy: &RawPolicy,
    rules: &[RawRule],
) -> Workflows {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for (i, w) in raw.iter().enumerate() {
        let at = format!("workflows[{i}]");
        let id = match w.id.as_deref() {
            None => {
                p.push(
                    format!("{at}.id"),
                    None,
                    "missing; give the tag clients send, e.g. \"code-analysis\"",
                );
                continue;
            }
            Some(UNTAGGED) => {
                p.push(format!("{at}.id"), q(UNTAGGED), "reserved: \"untagged\" is what a call without a tag that counts is decided as; remove this entry");
                continue;
            }
            Some(id) if !valid_tag(id) => {
                p.push(
                    format!("{at}.id"),
                    q(id),
                    "not a workflow tag; use 1-64 lower-case letters, digits, -, _ or .",
                );
                continue;
            }
            Some(id) => id,
        };
        if !seen.insert(id) {
            p.push(
                format!("{at}.id"),
                q(id),
                "duplicate workflow; each tag is declared once",
            );
        }
        let description = match w.description.as_deref().map(str::trim) {
            None | Some("") => {
                p.push(format!("{at}.description"), None, "missing; say what this workflow's output flows into (explain and the docs show it)");
                String::new()
            }
            Some(d) => d.to_string(),
        };
        for (key, list) in [("users", &w.users), ("groups", &w.groups)] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                p.push(
                    format!("{at}.{key}"),
                    None,
                    "empty list: nobody could claim this tag that way; remove the key (users and groups both absent: anyone may claim it)",
                );
            }
            for (j, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    p.push(format!("{at}.{key}[{j}]"), q(v), "empty value; remove it");
                }
            }
        }
        entries.push(WorkflowEntry {
            id: id.to_string(),
            description,
            users: w.users.clone(),
            groups: w.groups.clone(),
            protected: w.protected.unwrap_or(true),
        });
    }
    let catalog = WorkflowCatalog { entries };

    // A rule naming a tag the catalog does not have can never match a claimed tag: a typo that
    // would silently weaken the rule.
    let known = catalog.known().join(", ");
    for (i, r) in rules.iter().enumerate() {
        for (j, tag) in r.workflows.iter().flatten().enumerate() {
            if valid_tag(tag) && catalog.unknown(tag) {
                p.push(
                    format!("rules[{i}].workflows[{j}]"),
                    q(tag),
                    format!("not in the workflow catalog; known workflows are {known} (or add a [[workflows]] entry)"),
                );
            }
        }
    }

    let unknown_workflow = match policy.unknown_workflow.as_deref() {
        None => UnknownWorkflow::Untagged,
        Some(s) => UnknownWorkflow::parse(s).unwrap_or_else(|| {
            p.push(
                "policy.unknown_workflow",
                q(s),
                "unknown setting; use \"untagged\" (decide the call as untagged) or \"block\" (refuse it)",
            );
            UnknownWorkflow::Untagged
        }),
    };
    let unknown_tool = policy.unknown_tool.as_deref().map(|s| {
        Action::parse(s).unwrap_or_else(|| {
            p.push(
                "policy.unknown_tool",
                q(s),
                format!("unknown action; use one of {}", Action::ALL.join(", ")),
            );
            Action::Monitor
        })
    });
    Workflows {
        catalog,
        unknown_workflow,
        unknown_tool,
    }
}
