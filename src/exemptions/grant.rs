//! The rules a grant must satisfy, checked before anything is stored. PURE.
//!
//! - `expires_at` is required, in the future, and at most `max_duration` after the start;
//! - `starts_at` is not in the past (beyond a small clock skew) nor further ahead than
//!   `max_lead`;
//! - the subject's cover for each tool, this grant and the ones it already holds together
//!   (revoked ones up to their revocation), is at most `max_duration` in any `window`: chained
//!   future grants do not add up to a year (issue 15);
//! - a reason is required;
//! - the grantor is an admin, an approver, or a manager who is the subject's manager or an
//!   ancestor of them in the directory (groups can only be exempted by an admin), and never the
//!   subject. Approving an exemption request (`requests`) runs these same rules.
//! - every tool is known, and some `exemptable` block (or monitor) rule covers it.

use std::time::{Duration, SystemTime};

use super::{Exemption, Subject};
use crate::identify::Directory;
use crate::policy::{Action, Policy};

/// What a manager asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub subject: Subject,
    pub tools: Vec<String>,
    pub workflows: Option<Vec<String>>,
    pub starts_at: Option<SystemTime>,
    pub expires_at: Option<SystemTime>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
}

/// How much cover a grant may give, from `[admin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest single exemption, and the most cover a subject holds for a tool in `window`.
    pub max_duration: Duration,
    pub window: Duration,
    /// How far ahead `starts_at` may be.
    pub max_lead: Duration,
}

/// How far in the past `starts_at` may be: the grantor's clock and the gateway's disagree a
/// little. More than this would back-date cover (a 43-day grant that "started" 30 days ago).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Who asks, with the roles their token carries.
#[derive(Debug, Clone)]
pub struct Grantor {
    pub user: String,
    pub admin: bool,
    pub manager: bool,
    /// Grants for any user (not groups), without being their manager.
    pub approver: bool,
}

impl Grantor {
    /// What the caller's roles allow.
    pub fn with_roles(user: &str, roles: &[crate::config::Role]) -> Grantor {
        use crate::config::Role;
        Grantor {
            user: user.to_string(),
            admin: roles.contains(&Role::Admin),
            manager: roles.contains(&Role::Manager),
            approver: roles.contains(&Role::Approver),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("expires_at is required: an exemption is always time-boxed")]
    ExpiryMissing,
    #[error("expires_at must be after starts_at and in the future")]
    ExpiryPast,
    #[error("expires_at is too far ahead: an exemption lasts at most {max}")]
    TooLong { max: String },
    #[error(
        "starts_at is in the past: an exemption starts now or later (at most {skew} earlier, for clock skew)"
    )]
    StartsInPast { skew: String },
    #[error(
        "starts_at is too far ahead: an exemption starts at most {max} from now (admin.max_exemption_lead)"
    )]
    StartsTooLate { max: String },
    /// The subject's cover for a tool would exceed the limit in some window; the message names
    /// the amounts and the grants that count.
    #[error("{0}")]
    CoverExceeded(String),
    #[error("reason is required: say why this exemption is needed")]
    ReasonMissing,
    #[error("tools is empty: name the tool(s) to exempt")]
    NoTools,
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    /// A workflow the catalog does not list: no call could ever be decided in it, so the
    /// exemption would cover nothing (a typo such as `training_data`).
    #[error("workflow {tag:?} is not in the workflow catalog; known workflows are {known}")]
    UnknownWorkflow { tag: String, known: String },
    #[error("tool {0:?} is not blocked by any exemptable rule, so there is nothing to exempt")]
    NotExemptable(String),
    #[error("user {0:?} is not in the directory")]
    UnknownSubject(String),
    #[error("you cannot exempt yourself; ask your manager")]
    SelfGrant,
    #[error("only an admin can exempt a group")]
    GroupNeedsAdmin,
    #[error("{grantor:?} is not the manager of {subject:?} (nor above them in the directory)")]
    NotTheirManager { grantor: String, subject: String },
    #[error("granting needs the manager, approver or admin role")]
    NoGrantRole,
}

/// Whether `manager` is `user`'s manager or above them in the directory.
pub fn manages(dir: &Directory, manager: &str, user: &str) -> bool {
    let mut current = dir.get(user).and_then(|u| u.manager.clone());
    // The directory refuses manager cycles when it loads (identify::user); the bound stays, so a
    // directory built some other way can still never hang the gateway.
    for _ in 0..64 {
        match current {
            Some(m) if m == manager => return true,
            Some(m) => current = dir.get(&m).and_then(|u| u.manager.clone()),
            None => return false,
        }
    }
    false
}

/// Whether `req` may be granted by `grantor`, given the exemptions that exist (`held`: every
/// stored one; those of other subjects are ignored).
#[expect(
    clippy::too_many_arguments,
    reason = "each is one independent input of the rule"
)]
pub fn check(
    req: &GrantRequest,
    grantor: &Grantor,
    dir: &Directory,
    policy: &Policy,
    known_tools: &[&str],
    limits: &Limits,
    held: &[Exemption],
    now: SystemTime,
) -> Result<(), GrantError> {
    use crate::config::format_duration;
    if !grantor.admin && !grantor.manager && !grantor.approver {
        return Err(GrantError::NoGrantRole);
    }
    let expires = req.expires_at.ok_or(GrantError::ExpiryMissing)?;
    let starts = req.starts_at.unwrap_or(now);
    if starts + CLOCK_SKEW < now {
        return Err(GrantError::StartsInPast {
            skew: format_duration(CLOCK_SKEW),
        });
    }
    if starts > now + limits.max_lead {
        return Err(GrantError::StartsTooLate {
            max: format_duration(limits.max_lead),
        });
    }
    if expires <= now || expires <= starts {
        return Err(GrantError::ExpiryPast);
    }
    if expires.duration_since(starts.max(now)).unwrap_or_default() > limits.max_duration {
        return Err(GrantError::TooLong {
            max: format_duration(limits.max_duration),
        });
    }
    if req.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(GrantError::ReasonMissing);
    }
    if req.tools.is_empty() {
        return Err(GrantError::NoTools);
    }
    for tool in &req.tools {
        if !known_tools.contains(&tool.as_str()) {
            return Err(GrantError::UnknownTool(tool.clone()));
        }
        if !exemptable(policy, tool) {
            return Err(GrantError::NotExemptable(tool.clone()));
        }
    }
    for tag in req.workflows.iter().flatten() {
        if policy.workflows.unknown(tag) {
            return Err(GrantError::UnknownWorkflow {
                tag: tag.clone(),
                known: policy.workflows.known().join(", "),
            });
        }
    }
    for tool in &req.tools {
        cover_limit(&req.subject, tool, (starts, expires), held, limits)?;
    }
    authority(grantor, dir, &req.subject)
}

/// Whether some `exemptable` block (or monitor) rule covers `tool`: else an exemption would
/// change nothing.
pub fn exemptable(policy: &Policy, tool: &str) -> bool {
    policy.rules.iter().any(|r| {
        r.action != Action::Allow
            && r.exemptable
            && r.tools.as_ref().is_none_or(|t| t.iter().any(|x| x == tool))
    })
}

/// Whether `grantor` may exempt `subject` at all: the role part of `check`, which denying an
/// exemption request uses too (who may approve may deny, and nobody decides for themselves).
pub fn authority(grantor: &Grantor, dir: &Directory, subject: &Subject) -> Result<(), GrantError> {
    if !grantor.admin && !grantor.manager && !grantor.approver {
        return Err(GrantError::NoGrantRole);
    }
    match subject {
        Subject::User(u) => {
            if u == &grantor.user {
                return Err(GrantError::SelfGrant);
            }
            if dir.get(u).is_none() {
                return Err(GrantError::UnknownSubject(u.clone()));
            }
            if !grantor.admin && !grantor.approver && !manages(dir, &grantor.user, u) {
                return Err(GrantError::NotTheirManager {
                    grantor: grantor.user.clone(),
                    subject: u.clone(),
                });
            }
        }
        Subject::Group(_) if !grantor.admin => return Err(GrantError::GroupNeedsAdmin),
        Subject::Group(_) => {}
    }
    Ok(())
}

/// The most cover `subject` would hold for `tool` in any `limits.window` that the new grant
/// `new` touches, refused past `limits.max_duration`. Cover is the union of the intervals, so
/// overlapping grants count once. The maximum over all windows is reached by a window that
/// starts where some interval starts or ends where some interval ends, so those are the only
/// windows tried.
fn cover_limit(
    subject: &Subject,
    tool: &str,
    new: (SystemTime, SystemTime),
    held: &[Exemption],
    limits: &Limits,
) -> Result<(), GrantError> {
    let mut theirs: Vec<&Exemption> = Vec::new();
    let mut intervals = vec![new];
    for e in held {
        if &e.subject != subject || !e.tools.iter().any(|t| t == tool) {
            continue;
        }
        let end = e.revoked_at.map_or(e.expires_at, |r| r.min(e.expires_at));
        if end > e.starts_at {
            intervals.push((e.starts_at, end));
            theirs.push(e);
        }
    }
    if theirs.is_empty() {
        return Ok(());
    }
    let window = limits.window;
    let candidates = intervals
        .iter()
        .flat_map(|&(s, e)| [s, e.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH)])
        // Only windows that contain some of the new cover: an old excess is not this grant's.
        .filter(|&from| from < new.1 && from + window > new.0);
    let mut worst = Duration::ZERO;
    for from in candidates {
        worst = worst.max(covered(&intervals, from, from + window));
    }
    if worst <= limits.max_duration {
        return Ok(());
    }
    let fmt = crate::config::format_duration;
    let existing: Vec<String> = theirs
        .iter()
        .map(|e| {
            format!(
                "{} ({} from {})",
                e.id,
                fmt(e
                    .revoked_at
                    .map_or(e.expires_at, |r| r.min(e.expires_at))
                    .duration_since(e.starts_at)
                    .unwrap_or_default()),
                humantime::format_rfc3339_seconds(e.starts_at)
            )
        })
        .collect();
    let subject = match subject {
        Subject::User(u) => format!("user {u:?}"),
        Subject::Group(g) => format!("group {g:?}"),
    };
    // Whole minutes: seconds of "now" drifting between calls are noise in a refusal.
    let held = fmt(Duration::from_secs(worst.as_secs() / 60 * 60));
    let (max, window) = (fmt(limits.max_duration), fmt(window));
    Err(GrantError::CoverExceeded(format!(
        "{subject} would be exempt from {tool} for {held} within {window}; at most {max} of cover \
         in any {window} (admin.max_exemption, admin.exemption_window), counting the exemptions \
         they already hold: {}. Revoke one, or wait until older cover leaves the window",
        existing.join(", ")
    )))
}

/// How much of `[from, to)` the union of `intervals` covers.
fn covered(intervals: &[(SystemTime, SystemTime)], from: SystemTime, to: SystemTime) -> Duration {
    let mut clipped: Vec<(SystemTime, SystemTime)> = intervals
        .iter()
        .map(|&(s, e)| (s.max(from), e.min(to)))
        .filter(|(s, e)| s < e)
        .collect();
    clipped.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(SystemTime, SystemTime)> = None;
    for (s, e) in clipped {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce.duration_since(cs).unwrap_or_default();
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += ce.duration_since(cs).unwrap_or_default();
    }
    total
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn dir() -> Directory {
        Directory::parse(
            "[[users]]\nid = \"carol\"\n[[users]]\nid = \"bob\"\nmanager = \"carol\"\n[[users]]\nid = \"alice\"\nmanager = \"bob\"\n[[users]]\nid = \"dave\"\n",
        )
        .unwrap()
    }

    fn policy() -> Policy {
        crate::config::load(None).unwrap().policy
    }

    fn req() -> GrantRequest {
        GrantRequest {
            subject: Subject::User("alice".into()),
            tools: vec!["claude-code".into()],
            workflows: None,
            starts_at: None,
            expires_at: Some(now() + Duration::from_secs(3 * 86_400)),
            reason: Some("vendor bake-off".into()),
            ticket: None,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn manager(user: &str) -> Grantor {
        Grantor {
            user: user.into(),
            admin: false,
            manager: true,
            approver: false,
        }
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    fn limits() -> Limits {
        Limits {
            max_duration: days(14),
            window: days(30),
            max_lead: days(30),
        }
    }

    fn run(r: &GrantRequest, g: &Grantor) -> Result<(), GrantError> {
        run_with(r, g, &[])
    }

    fn run_with(r: &GrantRequest, g: &Grantor, held: &[Exemption]) -> Result<(), GrantError> {
        check(
            r,
            g,
            &dir(),
            &policy(),
            &["claude-code", "codex-cli", "anthropic-sdk"],
            &limits(),
            held,
            now(),
        )
    }

    fn held(id: &str, from_day: u64, length: u64) -> Exemption {
        Exemption {
            id: Arc::from(id),
            subject: Subject::User("alice".into()),
            tools: vec!["claude-code".into()],
            workflows: None,
            starts_at: now() + days(from_day),
            expires_at: now() + days(from_day + length),
            revoked_at: None,
            reason: "pilot".into(),
            ticket: None,
            granted_by: "bob".into(),
            created_at: Some(now()),
            revoked_by: None,
            request: None,
        }
    }

    fn from(day: u64, length: u64) -> GrantRequest {
        GrantRequest {
            starts_at: Some(now() + days(day)),
            expires_at: Some(now() + days(day + length)),
            ..req()
        }
    }

    /// Issue 15: a manager chained 26 grants of 14 days with future `starts_at` values, and the
    /// report was exempt for a year.
    #[test]
    fn chained_grants_stay_within_the_window() {
        let bob = manager("bob");
        let first = held("ex-1", 0, 14);
        assert!(matches!(
            run_with(&from(14, 14), &bob, std::slice::from_ref(&first)),
            Err(GrantError::CoverExceeded(_))
        ));
        // A window after the first grant has left it is fine: 30 days on, 14 more.
        assert_eq!(
            run_with(&from(30, 14), &bob, std::slice::from_ref(&first)),
            Ok(())
        );
        // Halves add up: 7 + 7 is 14, a third 7 in the same 30 days is not.
        let halves = [held("ex-1", 0, 7), held("ex-2", 7, 7)];
        assert!(run_with(&from(14, 7), &bob, &halves).is_err());
        assert_eq!(run_with(&from(14, 7), &bob, &halves[..1]), Ok(()));
        // Overlapping cover counts once; another tool or subject is not this cover.
        assert_eq!(
            run_with(&from(0, 14), &bob, std::slice::from_ref(&first)),
            Ok(())
        );
        let mut codex = held("ex-3", 0, 14);
        codex.tools = vec!["codex-cli".into()];
        let mut dave = held("ex-4", 0, 14);
        dave.subject = Subject::User("dave".into());
        assert_eq!(run_with(&from(14, 14), &bob, &[codex, dave]), Ok(()));
        // A revoked grant counts up to its revocation.
        let mut revoked = held("ex-5", 0, 14);
        revoked.revoked_at = Some(now() + days(1));
        assert_eq!(
            run_with(&from(2, 13), &bob, std::slice::from_ref(&revoked)),
            Ok(())
        );
        assert!(run_with(&from(2, 14), &bob, std::slice::from_ref(&revoked)).is_err());
        let err = run_with(&from(14, 14), &bob, &[first])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "user \"alice\" would be exempt from claude-code for 28 days within 30 days; at most 14 days of cover in any 30 days (admin.max_exemption, admin.exemption_window), counting the exemptions they already hold: ex-1 (14 days from 2027-01-15T08:00:00Z). Revoke one, or wait until older cover leaves the window"
        );
    }

    /// Issue 15: `starts_at` 30 days in the past made a 43-day grant.
    #[test]
    fn starts_at_is_neither_back_dated_nor_far_ahead() {
        let bob = manager("bob");
        let mut r = req();
        r.starts_at = Some(now() - days(30));
        r.expires_at = Some(now() + days(13));
        assert_eq!(
            run(&r, &bob),
            Err(GrantError::StartsInPast {
                skew: "5 minutes".into()
            })
        );
        r.starts_at = Some(now() - Duration::from_secs(60));
        assert_eq!(run(&r, &bob), Ok(()), "a minute of clock skew is fine");
        assert_eq!(
            run(&from(31, 1), &bob),
            Err(GrantError::StartsTooLate {
                max: "30 days".into()
            })
        );
        assert_eq!(run(&from(30, 1), &bob), Ok(()));
    }

    #[test]
    fn every_rule_has_its_own_refusal() {
        assert_eq!(run(&req(), &manager("bob")), Ok(()));
        assert_eq!(
            run(&req(), &manager("carol")),
            Ok(()),
            "an ancestor may grant"
        );
        assert_eq!(
            run(&req(), &manager("dave")),
            Err(GrantError::NotTheirManager {
                grantor: "dave".into(),
                subject: "alice".into()
            })
        );
        assert_eq!(
            run(
                &req(),
                &Grantor {
                    user: "alice".into(),
                    admin: true,
                    manager: true,
                    approver: false,
                }
            ),
            Err(GrantError::SelfGrant)
        );
        assert_eq!(
            run(
                &req(),
                &Grantor {
                    user: "erin".into(),
                    admin: false,
                    manager: false,
                    approver: false,
                }
            ),
            Err(GrantError::NoGrantRole)
        );
        let mut r = req();
        r.expires_at = None;
        assert_eq!(run(&r, &manager("bob")), Err(GrantError::ExpiryMissing));
        r.expires_at = Some(now() - Duration::from_secs(1));
        assert_eq!(run(&r, &manager("bob")), Err(GrantError::ExpiryPast));
        r.expires_at = Some(now() + Duration::from_secs(15 * 86_400));
        assert_eq!(
            run(&r, &manager("bob")),
            Err(GrantError::TooLong {
                max: "14 days".into()
            })
        );
        let mut r = req();
        r.reason = Some("  ".into());
        assert_eq!(run(&r, &manager("bob")), Err(GrantError::ReasonMissing));
        let mut r = req();
        r.tools = vec!["claude_code".into()];
        assert_eq!(
            run(&r, &manager("bob")),
            Err(GrantError::UnknownTool("claude_code".into()))
        );
        r.tools = vec!["anthropic-sdk".into()];
        assert_eq!(
            run(&r, &manager("bob")),
            Err(GrantError::NotExemptable("anthropic-sdk".into()))
        );
        // An approver grants for anyone but themselves, and never for a group.
        let approver = |user: &str| Grantor {
            user: user.into(),
            admin: false,
            manager: false,
            approver: true,
        };
        assert_eq!(run(&req(), &approver("erin")), Ok(()));
        assert_eq!(run(&req(), &approver("alice")), Err(GrantError::SelfGrant));
        let mut r = req();
        r.subject = Subject::Group("ml".into());
        assert_eq!(run(&r, &approver("erin")), Err(GrantError::GroupNeedsAdmin));
        assert_eq!(run(&r, &manager("bob")), Err(GrantError::GroupNeedsAdmin));
        assert_eq!(
            run(
                &r,
                &Grantor {
                    user: "root".into(),
                    admin: true,
                    manager: false,
                    approver: false,
                }
            ),
            Ok(())
        );
    }
}
