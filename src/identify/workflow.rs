//! The workflow tag: what the output of this call may flow into.
//!
//! Clients set it with a request header (name in config). A missing tag falls back to the
//! user's default from the directory, then to `untagged`, which the shipped policy treats as
//! protected: not saying where output goes must never be a way around the ban.

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

pub const UNTAGGED: &str = "untagged";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowSource {
    Header,
    UserDefault,
    /// No tag anywhere.
    None,
    /// The header held something that is not a tag; treated as untagged.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub tag: String,
    pub source: WorkflowSource,
}

/// A tag is 1–64 characters of `a-z 0-9 - _ .`; case is folded.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

pub fn workflow(headers: &HeaderMap, header: &HeaderName, user_default: Option<&str>) -> Workflow {
    let mut values = headers.get_all(header).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            let tag = v.to_str().map(|s| s.trim().to_ascii_lowercase());
            match tag {
                Ok(tag) if valid_tag(&tag) => Workflow {
                    tag,
                    source: WorkflowSource::Header,
                },
                _ => Workflow {
                    tag: UNTAGGED.to_string(),
                    source: WorkflowSource::Invalid,
                },
            }
        }
        // Two tags on one request: ambiguous, so neither counts.
        (Some(_), Some(_)) => Workflow {
            tag: UNTAGGED.to_string(),
            source: WorkflowSource::Invalid,
        },
        (None, _) => match user_default {
            Some(tag) => Workflow {
                tag: tag.to_string(),
                source: WorkflowSource::UserDefault,
            },
            None => Workflow {
                tag: UNTAGGED.to_string(),
                source: WorkflowSource::None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let name = HeaderName::from_static("x-aigate-workflow");
        let mut h = HeaderMap::new();
        assert_eq!(workflow(&h, &name, None).source, WorkflowSource::None);
        assert_eq!(workflow(&h, &name, Some("docs")).tag, "docs");
        h.insert(&name, "Training-Data".parse().unwrap());
        assert_eq!(
            workflow(&h, &name, Some("docs")),
            Workflow {
                tag: "training-data".into(),
                source: WorkflowSource::Header
            }
        );
        h.insert(&name, "no spaces".parse().unwrap());
        assert_eq!(
            workflow(&h, &name, None),
            Workflow {
                tag: "untagged".into(),
                source: WorkflowSource::Invalid
            }
        );
        h.insert(&name, "docs".parse().unwrap());
        h.append(&name, "training-data".parse().unwrap());
        assert_eq!(workflow(&h, &name, None).source, WorkflowSource::Invalid);
    }
}
