//! One policy rule: conditions (all must hold; an absent list matches anything) and an action.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Call;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Monitor,
    Block,
    /// Only in audit records, never in a rule: the client went away before anything was
    /// decided (it closed its own TLS handshake with the gateway), so nothing was allowed and
    /// nothing blocked. A reviewer counting blocks must not count it (issue 15).
    Abandoned,
}

impl Action {
    /// The actions a rule or a query can name. `Abandoned` is not one: no rule can choose it.
    pub const ALL: [&'static str; 3] = ["allow", "monitor", "block"];

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "monitor" => Some(Action::Monitor),
            "block" => Some(Action::Block),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Monitor => "monitor",
            Action::Block => "block",
            Action::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model name or a prefix ending in `*` (`claude-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    Exact(String),
    Prefix(String),
}

impl ModelPattern {
    pub fn parse(s: &str) -> ModelPattern {
        match s.strip_suffix('*') {
            Some(prefix) => ModelPattern::Prefix(prefix.to_string()),
            None => ModelPattern::Exact(s.to_string()),
        }
    }

    fn matches(&self, model: &str) -> bool {
        match self {
            ModelPattern::Exact(m) => m == model,
            ModelPattern::Prefix(p) => model.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    pub description: Option<Arc<str>>,
    pub action: Action,
    pub exemptable: bool,
    pub tools: Option<Vec<String>>,
    pub vendors: Option<Vec<String>>,
    pub workflows: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub models: Option<Vec<ModelPattern>>,
}

/// The first condition of a rule that a call fails, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Tool,
    Vendor,
    Workflow,
    Subject,
    Model,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mismatch::Tool => "tool not listed",
            Mismatch::Vendor => "vendor not listed",
            Mismatch::Workflow => "workflow not listed",
            Mismatch::Subject => "user and groups not listed",
            Mismatch::Model => "model not listed",
        })
    }
}

fn listed(list: &Option<Vec<String>>, value: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|v| v == value))
}

impl Rule {
    /// `None` when every condition holds.
    pub fn mismatch(&self, call: &Call<'_>) -> Option<Mismatch> {
        if !listed(&self.tools, call.tool) {
            return Some(Mismatch::Tool);
        }
        if !listed(&self.vendors, call.vendor) {
            return Some(Mismatch::Vendor);
        }
        if !listed(&self.workflows, call.workflow) {
            return Some(Mismatch::Workflow);
        }
        if self.users.is_some() || self.groups.is_some() {
            let by_user = self
                .users
                .as_ref()
                .is_some_and(|u| u.iter().any(|u| u == call.user));
            let by_group = self
                .groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| call.groups.contains(g)));
            if !by_user && !by_group {
                return Some(Mismatch::Subject);
            }
        }
        if let Some(models) = &self.models {
            let hit = call
                .model
                .is_some_and(|m| models.iter().any(|p| p.matches(m)));
            if !hit {
                return Some(Mismatch::Model);
            }
        }
        None
    }
}
