//! The rules a grant must satisfy, checked before anything is stored. PURE.
//!
//! - `expires_at` is required, in the future, and at most `max_duration` after the start;
//! - a reason is required;
//! - the grantor is an admin, or a manager who is the subject's manager or an ancestor of them in
//!   the directory (groups can only be exempted by an admin), and never the subject;
//! - every tool is known, and some `exemptable` block rule covers it.

use std::time::{Duration, SystemTime};

use super::Subject;
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

/// Who asks, with the roles their token carries.
#[derive(Debug, Clone)]
pub struct Grantor {
    pub user: String,
    pub admin: bool,
    pub manager: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("expires_at is required: an exemption is always time-boxed")]
    ExpiryMissing,
    #[error("expires_at must be after starts_at and in the future")]
    ExpiryPast,
    #[error("expires_at is too far ahead: an exemption lasts at most {max}")]
    TooLong { max: String },
    #[error("reason is required: say why this exemption is needed")]
    ReasonMissing,
    #[error("tools is empty: name the tool(s) to exempt")]
    NoTools,
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
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
    #[error("granting needs the manager or admin role")]
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

pub fn check(
    req: &GrantRequest,
    grantor: &Grantor,
    dir: &Directory,
    policy: &Policy,
    known_tools: &[&str],
    max_duration: Duration,
    now: SystemTime,
) -> Result<(), GrantError> {
    if !grantor.admin && !grantor.manager {
        return Err(GrantError::NoGrantRole);
    }
    let expires = req.expires_at.ok_or(GrantError::ExpiryMissing)?;
    let starts = req.starts_at.unwrap_or(now);
    if expires <= now || expires <= starts {
        return Err(GrantError::ExpiryPast);
    }
    if expires.duration_since(starts.max(now)).unwrap_or_default() > max_duration {
        return Err(GrantError::TooLong {
            max: crate::config::format_duration(max_duration),
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
        let exemptable = policy.rules.iter().any(|r| {
            r.action == Action::Block
                && r.exemptable
                && r.tools.as_ref().is_none_or(|t| t.contains(tool))
        });
        if !exemptable {
            return Err(GrantError::NotExemptable(tool.clone()));
        }
    }
    match &req.subject {
        Subject::User(u) => {
            if u == &grantor.user {
                return Err(GrantError::SelfGrant);
            }
            if dir.get(u).is_none() {
                return Err(GrantError::UnknownSubject(u.clone()));
            }
            if !grantor.admin && !manages(dir, &grantor.user, u) {
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

#[cfg(test)]
mod tests {
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
        }
    }

    fn run(r: &GrantRequest, g: &Grantor) -> Result<(), GrantError> {
        check(
            r,
            g,
            &dir(),
            &policy(),
            &["claude-code", "codex-cli", "anthropic-sdk"],
            Duration::from_secs(14 * 86_400),
            now(),
        )
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
                    manager: true
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
                    manager: false
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
        let mut r = req();
        r.subject = Subject::Group("ml".into());
        assert_eq!(run(&r, &manager("bob")), Err(GrantError::GroupNeedsAdmin));
        assert_eq!(
            run(
                &r,
                &Grantor {
                    user: "root".into(),
                    admin: true,
                    manager: false
                }
            ),
            Ok(())
        );
    }
}
