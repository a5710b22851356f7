//! What may be submitted, approved and denied. PURE: plain data in, a refusal with its reason
//! out. Who may approve is not decided here: approval is a grant, and `exemptions::grant`
//! decides it (manager of the subject, approver or admin, never the subject).

use std::time::{Duration, SystemTime};

use super::Draft;
use crate::policy::Policy;

/// The durations the request form offers; any other up to `admin.max_exemption` is accepted.
pub const PRESETS: [(&str, Duration); 4] = [
    ("1 hour", Duration::from_secs(3600)),
    ("1 day", Duration::from_secs(86_400)),
    ("3 days", Duration::from_secs(3 * 86_400)),
    ("1 week", Duration::from_secs(7 * 86_400)),
];

pub const MAX_JUSTIFICATION: usize = 2000;
pub const MAX_TICKET: usize = 200;
pub const MAX_COMMENT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "aigate could not tell who made this call, so nothing can be exempted for it. IT must identify users first: proxy authentication (identity.require_auth with proxy tokens in the users file) or the source-address map (identity.source_addresses); see docs/identity.md"
    )]
    Anonymous,
    #[error(
        "{0} is not blocked by any exemptable rule, so there is nothing to request: the rule that blocked it allows no exemptions. Contact IT if you believe it is wrong"
    )]
    NotExemptable(String),
    #[error("justification is required: say why you need {0} and for what")]
    JustificationMissing(String),
    #[error("justification is too long: at most {MAX_JUSTIFICATION} characters")]
    JustificationTooLong,
    #[error("ticket is too long: at most {MAX_TICKET} characters")]
    TicketTooLong,
    #[error("duration must be more than zero")]
    DurationZero,
    #[error("duration is too long: an exemption lasts at most {0} (admin.max_exemption)")]
    DurationTooLong(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("request {0} is already {1}; only an open request can be decided")]
    NotOpen(String, &'static str),
    #[error("a comment is required when denying: tell the requester why")]
    CommentMissing,
    #[error("the comment is too long: at most {MAX_COMMENT} characters")]
    CommentTooLong,
    #[error(
        "duration must be more than zero and at most the {0} asked for (approve shorter, never longer)"
    )]
    LongerThanAsked(String),
}

/// Whether the draft's call may be the subject of a request with this justification,
/// duration and ticket.
pub fn check_submit(
    draft: &Draft,
    policy: &Policy,
    justification: &str,
    duration: Duration,
    ticket: Option<&str>,
    max_exemption: Duration,
) -> Result<(), SubmitError> {
    if draft.anonymous {
        return Err(SubmitError::Anonymous);
    }
    // The policy in force now, not the one that blocked: a rule edited since may no longer
    // yield to exemptions (or no longer block at all).
    if !draft.exemptable || !crate::exemptions::grant::exemptable(policy, &draft.tool) {
        return Err(SubmitError::NotExemptable(draft.tool_name.clone()));
    }
    if justification.trim().is_empty() {
        return Err(SubmitError::JustificationMissing(draft.tool_name.clone()));
    }
    if justification.chars().count() > MAX_JUSTIFICATION {
        return Err(SubmitError::JustificationTooLong);
    }
    if ticket.is_some_and(|t| t.chars().count() > MAX_TICKET) {
        return Err(SubmitError::TicketTooLong);
    }
    if duration.is_zero() {
        return Err(SubmitError::DurationZero);
    }
    if duration > max_exemption {
        return Err(SubmitError::DurationTooLong(
            crate::config::format_duration(max_exemption),
        ));
    }
    Ok(())
}

/// An approval's duration: as asked, or shorter.
pub fn check_approval(asked: Duration, granted: Duration) -> Result<(), DecideError> {
    if granted.is_zero() || granted > asked {
        return Err(DecideError::LongerThanAsked(
            crate::config::format_duration(asked),
        ));
    }
    Ok(())
}

pub fn check_denial(comment: &str) -> Result<(), DecideError> {
    if comment.trim().is_empty() {
        return Err(DecideError::CommentMissing);
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(DecideError::CommentTooLong);
    }
    Ok(())
}

/// When an open request expires unanswered.
pub fn expired(expires_at: SystemTime, now: SystemTime) -> bool {
    expires_at <= now
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn draft() -> Draft {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Draft {
            id: Arc::from("abcdefghijklmnop"),
            record_id: "rec".into(),
            user: "alice".into(),
            anonymous: false,
            tool: "claude-code".into(),
            tool_name: "Claude Code".into(),
            vendor: "anthropic".into(),
            vendor_name: "Anthropic".into(),
            workflow: "untagged".into(),
            rule: Some("rival-coding-tools-in-protected-workflows".into()),
            rule_description: None,
            exemptable: true,
            created_at: t0,
            expires_at: t0 + Duration::from_secs(86_400),
        }
    }

    #[test]
    fn every_submit_rule_has_its_refusal() {
        let policy = crate::config::load(None).unwrap().policy;
        let max = Duration::from_secs(14 * 86_400);
        let day = Duration::from_secs(86_400);
        let run = |d: &Draft, j: &str, dur: Duration, t: Option<&str>| {
            check_submit(d, &policy, j, dur, t, max)
        };
        assert_eq!(run(&draft(), "bake-off", day, Some("IT-1")), Ok(()));
        let mut anon = draft();
        anon.anonymous = true;
        assert_eq!(run(&anon, "x", day, None), Err(SubmitError::Anonymous));
        let mut sdk = draft();
        sdk.tool = "anthropic-sdk".into();
        sdk.tool_name = "Anthropic SDK".into();
        assert_eq!(
            run(&sdk, "x", day, None),
            Err(SubmitError::NotExemptable("Anthropic SDK".into()))
        );
        let mut hard = draft();
        hard.exemptable = false;
        assert!(matches!(
            run(&hard, "x", day, None),
            Err(SubmitError::NotExemptable(_))
        ));
        assert_eq!(
            run(&draft(), "  ", day, None),
            Err(SubmitError::JustificationMissing("Claude Code".into()))
        );
        assert_eq!(
            run(&draft(), "x", Duration::ZERO, None),
            Err(SubmitError::DurationZero)
        );
        assert_eq!(
            run(&draft(), "x", day * 15, None),
            Err(SubmitError::DurationTooLong("14 days".into()))
        );
        assert_eq!(
            run(&draft(), "x", day, Some(&"t".repeat(201))),
            Err(SubmitError::TicketTooLong)
        );
        assert_eq!(
            run(&draft(), &"j".repeat(2001), day, None),
            Err(SubmitError::JustificationTooLong)
        );
    }

    #[test]
    fn approvals_are_as_asked_or_shorter_and_denials_say_why() {
        let day = Duration::from_secs(86_400);
        assert_eq!(check_approval(day, day), Ok(()));
        assert_eq!(check_approval(day, day / 24), Ok(()));
        assert!(check_approval(day, day * 2).is_err());
        assert!(check_approval(day, Duration::ZERO).is_err());
        assert_eq!(check_denial(" "), Err(DecideError::CommentMissing));
        assert_eq!(check_denial("not for prod"), Ok(()));
    }
}
