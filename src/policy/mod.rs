//! The policy engine. PURE: no tokio, no hyper, no clock, no files.
//!
//! Evaluation order, the one place it is written down (docs/policy.md repeats it):
//! 0. The call claimed a workflow tag that does not count (not in the catalog, or not this
//!    person's to claim) and `unknown_workflow = "block"`: block, reason `workflow_unknown` or
//!    `workflow_not_permitted`. (With `"untagged"` the call arrives here already as `untagged`.)
//! 1. Rules in file order; the first rule whose every condition matches the call decides.
//! 2. If that rule blocks (or monitors, while a block is rolled out) and is `exemptable`, an
//!    active exemption covering the call (subject, tool, workflow, time window at `now`) turns it
//!    into an allow with reason `exempted`.
//!    2b. A block that still stands on one of the vendor's start-up side calls (`call.side_call`:
//!    `[[vendors]] side_calls`, read-only paths a tool fetches before its model call and will not
//!    start without) is forwarded as `monitor`, reason `side_call`, the rule kept: the tool then
//!    reaches its model call, and that call's deny, with the request link, is what it prints.
//! 3. No rule matches an `unknown` tool in a protected workflow and `unknown_tool` is set: that
//!    action, reason `unknown_tool`.
//! 4. No rule matches: the configured default action, reason `default_action`.
//!
//! `now` and the exemption snapshot are arguments so that decision tables are plain unit tests and
//! an exemption that expires takes effect on the very next request.

mod reason;
mod rule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use reason::Reason;
pub use rule::{Action, ModelPattern, Rule};

use crate::exemptions::Snapshot;
use crate::identify::tools::UNKNOWN_TOOL;
use crate::identify::workflow::{Untrusted, WorkflowCatalog};

/// What happens to a call whose claimed workflow tag does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownWorkflow {
    /// Decide it as `untagged` (the record keeps the claim and why).
    Untagged,
    /// Refuse it, whatever the tool.
    Block,
}

impl UnknownWorkflow {
    pub const ALL: [&'static str; 2] = ["untagged", "block"];

    pub fn parse(s: &str) -> Option<UnknownWorkflow> {
        match s {
            "untagged" => Some(UnknownWorkflow::Untagged),
            "block" => Some(UnknownWorkflow::Block),
            _ => None,
        }
    }
}

impl From<Untrusted> for Reason {
    fn from(u: Untrusted) -> Reason {
        match u {
            Untrusted::Unknown => Reason::WorkflowUnknown,
            Untrusted::NotPermitted => Reason::WorkflowNotPermitted,
        }
    }
}

/// The ordered rules and what happens when none matches.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_action: Action,
    /// The declared workflow tags and who may claim them.
    pub workflows: WorkflowCatalog,
    pub unknown_workflow: UnknownWorkflow,
    /// What an `unknown` tool gets in a protected workflow when no rule matches it; `None`: the
    /// default action.
    pub unknown_tool: Option<Action>,
    /// For each tool named by some rule, the rules that can match it, in file order; rules that
    /// name no tool are in every list. Most rules name tools, so `decide` looks at a handful of
    /// rules instead of all of them (issue #4: under 1 µs with 1,000 rules).
    by_tool: HashMap<String, Vec<usize>>,
    /// The rules that name no tool: what a tool no rule names can match.
    any_tool: Vec<usize>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>, default_action: Action) -> Policy {
        let any_tool: Vec<usize> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tools.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut by_tool: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            for tool in rule.tools.iter().flatten() {
                let list = by_tool.entry(tool.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        for list in by_tool.values_mut() {
            list.extend(&any_tool);
            list.sort_unstable();
            list.dedup();
        }
        Policy {
            rules,
            default_action,
            workflows: WorkflowCatalog::default(),
            unknown_workflow: UnknownWorkflow::Untagged,
            unknown_tool: None,
            by_tool,
            any_tool,
        }
    }

    /// The rules that can match `tool`, in order.
    fn candidates(&self, tool: &str) -> &[usize] {
        self.by_tool.get(tool).unwrap_or(&self.any_tool)
    }
}

/// What `decide` needs to know about one request, all already identified.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub tool: &'a str,
    pub vendor: &'a str,
    pub workflow: &'a str,
    pub user: &'a str,
    pub groups: &'a [String],
    pub model: Option<&'a str>,
    /// The claimed workflow tag did not count (and `workflow` is `untagged` instead).
    pub untrusted_workflow: Option<Untrusted>,
    /// One of the vendor's start-up side calls (`config::SideCalls`): step 2b.
    pub side_call: bool,
}

/// The outcome of `decide`: a value, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    /// The rule that decided, if any.
    pub rule: Option<Arc<str>>,
    /// Why the rule exists, in the words of its author (shown to the blocked engineer).
    pub description: Option<Arc<str>>,
    /// The exemption that turned a block into an allow.
    pub exemption: Option<Arc<str>>,
    /// The deciding rule could have been exempted (the deny message says how to ask).
    pub exemptable: bool,
}

impl Decision {
    /// A decision made outside the rule table (a bypass attempt, an audit outage…).
    pub fn refused(reason: Reason) -> Decision {
        Decision {
            action: Action::Block,
            reason,
            rule: None,
            description: None,
            exemption: None,
            exemptable: false,
        }
    }

    /// A rule monitored: it forwarded, and the rule would have blocked had its action been
    /// `block`. Not the default action's monitor: no rule decided there, and a reviewer
    /// rolling out a rule must tell its catches from everything no rule names
    /// (docs/audit-schema.md, "Monitor").
    pub fn would_block(&self) -> bool {
        self.action == Action::Monitor && self.rule.is_some()
    }
}

/// One line of `aigate explain`: a rule and whether it matched, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub rule: Arc<str>,
    pub action: Action,
    pub mismatch: Option<String>,
}

/// Decide one call. This is the hot path: no allocation unless a rule matches.
pub fn decide(
    policy: &Policy,
    call: &Call<'_>,
    exemptions: &Snapshot,
    now: SystemTime,
) -> Decision {
    evaluate(policy, call, exemptions, now, None)
}

/// Decide one call and report every rule considered, for `aigate explain`.
pub fn explain(
    policy: &Policy,
    call: &Call<'_>,
    exemptions: &Snapshot,
    now: SystemTime,
) -> (Decision, Vec<RuleTrace>) {
    let mut trace = Vec::new();
    let decision = evaluate(policy, call, exemptions, now, Some(&mut trace));
    (decision, trace)
}

fn evaluate(
    policy: &Policy,
    call: &Call<'_>,
    exemptions: &Snapshot,
    now: SystemTime,
    mut trace: Option<&mut Vec<RuleTrace>>,
) -> Decision {
    if let Some(untrusted) = call.untrusted_workflow {
        if policy.unknown_workflow == UnknownWorkflow::Block {
            return Decision::refused(untrusted.into());
        }
    }
    // `explain` reports every rule; `decide` only looks at those that can match the tool.
    let all: Vec<usize>;
    let order: &[usize] = if trace.is_some() {
        all = (0..policy.rules.len()).collect();
        &all
    } else {
        policy.candidates(call.tool)
    };
    for rule in order.iter().map(|&i| &policy.rules[i]) {
        let mismatch = rule.mismatch(call);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(RuleTrace {
                rule: rule.name.clone(),
                action: rule.action,
                mismatch: mismatch.map(|m| m.to_string()),
            });
        }
        if mismatch.is_some() {
            continue;
        }
        let mut decision = Decision {
            action: rule.action,
            reason: Reason::RuleMatched,
            rule: Some(rule.name.clone()),
            description: rule.description.clone(),
            exemption: None,
            exemptable: rule.exemptable,
        };
        if rule.action != Action::Allow && rule.exemptable {
            if let Some(exemption) = exemptions.covering(call, now) {
                decision.action = Action::Allow;
                decision.reason = Reason::Exempted;
                decision.exemption = Some(exemption.id.clone());
            }
        }
        if decision.action == Action::Block && call.side_call {
            decision.action = Action::Monitor;
            decision.reason = Reason::SideCall;
        }
        return decision;
    }
    if let Some(action) = policy.unknown_tool {
        if call.tool == UNKNOWN_TOOL && policy.workflows.protected(call.workflow) {
            return Decision {
                action,
                reason: Reason::UnknownTool,
                rule: None,
                description: None,
                exemption: None,
                exemptable: false,
            };
        }
    }
    Decision {
        action: policy.default_action,
        reason: Reason::DefaultAction,
        rule: None,
        description: None,
        exemption: None,
        exemptable: false,
    }
}

#[cfg(test)]
mod tests;
