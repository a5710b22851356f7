//! Side-channel tells: the tools a user was recently seen with.
//!
//! A banned tool pointed at a model API that aigate does not inspect (an AI host catalog entry)
//! still makes its side calls through vendors that are inspected: Claude Code on a relay calls
//! `api.anthropic.com` (WebFetch preflight, settings), Codex with any provider calls
//! `chatgpt.com`. So when a user's uninspected AI-host tunnel follows an identified call of
//! theirs, the tunnel's record names that tool (`side_call_tool`) for a reviewer to query
//! (issue 14). Only named users count: `anonymous` is many people.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::identify::tools::UNKNOWN_TOOL;
use crate::identify::user::ANONYMOUS;

/// How long an identified call counts as "next to" a later tunnel.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Entries held at most; past it, the ones older than `WINDOW` are dropped (and, if that is not
/// enough, all of them: the flag is a hint, memory is a limit).
const MAX_USERS: usize = 100_000;

/// User -> (tool, when it was last identified).
type Seen = HashMap<Arc<str>, (Arc<str>, SystemTime)>;

#[derive(Default)]
pub struct RecentTools {
    seen: Mutex<Seen>,
}

impl RecentTools {
    /// An identified call by `user` with `tool` at `now`.
    pub fn note(&self, user: &Arc<str>, tool: &Arc<str>, now: SystemTime) {
        if &**tool == UNKNOWN_TOOL || &**user == ANONYMOUS {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_USERS && !seen.contains_key(user) {
            seen.retain(|_, (_, at)| fresh(*at, now));
            if seen.len() >= MAX_USERS {
                seen.clear();
            }
        }
        seen.insert(user.clone(), (tool.clone(), now));
    }

    /// The tool `user` was last identified with, if within `WINDOW` before `now`.
    pub fn recent(&self, user: &str, now: SystemTime) -> Option<Arc<str>> {
        if user == ANONYMOUS {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(user)
            .filter(|(_, at)| fresh(*at, now))
            .map(|(tool, _)| tool.clone())
    }
}

fn fresh(at: SystemTime, now: SystemTime) -> bool {
    now.duration_since(at).map_or(true, |d| d <= WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_users_tool_is_remembered_for_the_window() {
        let r = RecentTools::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let alice: Arc<str> = Arc::from("alice");
        r.note(&alice, &Arc::from("claude-code"), t0);
        r.note(&Arc::from(ANONYMOUS), &Arc::from("codex-cli"), t0);
        r.note(&Arc::from("bob"), &Arc::from(UNKNOWN_TOOL), t0);
        assert_eq!(
            r.recent("alice", t0 + WINDOW).as_deref(),
            Some("claude-code")
        );
        assert_eq!(
            r.recent("alice", t0 + WINDOW + Duration::from_secs(1)),
            None
        );
        assert_eq!(r.recent(ANONYMOUS, t0), None);
        assert_eq!(r.recent("bob", t0), None);
    }
}
