//! The workflow tag: what the output of this call may flow into.
//!
//! Clients set it with a request header (name in config). Anyone can type any header, so a
//! claimed tag counts only when the workflow catalog lists it and this person may claim it
//! (issue #14: `x-aigate-workflow: docs`, `training_data` or `code-analysis.` must not be a way
//! around a ban). A tag that does not count is replaced by `untagged`, which the shipped policy
//! treats as protected, and the record keeps the claim and the reason. A missing tag falls back
//! to the user's default from the directory (set by IT, so trusted), then to `untagged`.

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

pub const UNTAGGED: &str = "untagged";

/// How much of an untrusted claim the record keeps.
const MAX_CLAIM_LEN: usize = 64;

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

/// Why a claimed tag was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Not in the catalog (near-misses and malformed values included).
    Unknown,
    /// In the catalog, but this person may not claim it.
    NotPermitted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    /// The tag that decides.
    pub tag: String,
    pub source: WorkflowSource,
    /// The tag as claimed, when it is not the one that decides (printable ASCII, truncated).
    pub claimed: Option<String>,
    pub untrusted: Option<Untrusted>,
}

/// One catalogued tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowEntry {
    pub id: String,
    pub description: String,
    /// Who may claim it: these users, or members of these groups. Both `None`: anyone.
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    /// Output of this workflow may reach our code or data: `policy.unknown_tool` applies here.
    pub protected: bool,
}

impl WorkflowEntry {
    pub fn may_claim(&self, user: &str, groups: &[String]) -> bool {
        if self.users.is_none() && self.groups.is_none() {
            return true;
        }
        self.users.iter().flatten().any(|u| u == user)
            || self.groups.iter().flatten().any(|g| groups.contains(g))
    }
}

/// The declared tags. Empty means no catalog: every well-formed tag is taken at its word (the
/// behaviour before catalogs; the shipped policy has one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowCatalog {
    pub entries: Vec<WorkflowEntry>,
}

impl WorkflowCatalog {
    pub fn get(&self, tag: &str) -> Option<&WorkflowEntry> {
        self.entries.iter().find(|e| e.id == tag)
    }

    /// Whether a catalog exists and does not list `tag` (`untagged` is always known): a rule, a
    /// grant or a user's default naming it could never apply to a claimed tag.
    pub fn unknown(&self, tag: &str) -> bool {
        !self.entries.is_empty() && tag != UNTAGGED && self.get(tag).is_none()
    }

    /// The tags that count, for error messages: the catalog's, then `untagged`.
    pub fn known(&self) -> Vec<&str> {
        let mut known: Vec<&str> = Vec::new();
        for id in self.entries.iter().map(|e| e.id.as_str()).chain([UNTAGGED]) {
            if !known.contains(&id) {
                known.push(id);
            }
        }
        known
    }

    /// Whether `policy.unknown_tool` applies to calls decided under `tag`: every tag is
    /// protected unless its catalog entry says otherwise.
    pub fn protected(&self, tag: &str) -> bool {
        self.get(tag).is_none_or(|e| e.protected)
    }

    /// Whether `tag`, claimed by `user` in `groups`, counts.
    fn check(&self, tag: &str, user: &str, groups: &[String]) -> Option<Untrusted> {
        if self.entries.is_empty() || tag == UNTAGGED {
            return None;
        }
        match self.get(tag) {
            None => Some(Untrusted::Unknown),
            Some(e) if !e.may_claim(user, groups) => Some(Untrusted::NotPermitted),
            Some(_) => None,
        }
    }
}

/// A tag is 1–64 characters of `a-z 0-9 - _ .`; case is folded.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// A header value as the record may keep it: printable ASCII, at most `MAX_CLAIM_LEN` bytes.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .take(MAX_CLAIM_LEN)
        .collect()
}

/// Who is asking, for the catalog's claim check.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub default: Option<&'a str>,
}

pub fn workflow(
    headers: &HeaderMap,
    header: &HeaderName,
    catalog: &WorkflowCatalog,
    who: Claimant<'_>,
) -> Workflow {
    let untagged = |source, claimed: String, why| Workflow {
        tag: UNTAGGED.to_string(),
        source,
        claimed: Some(claimed),
        untrusted: Some(why),
    };
    let mut values = headers.get_all(header).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            let tag = v.to_str().map(|s| s.trim().to_ascii_lowercase());
            match tag {
                Ok(tag) if valid_tag(&tag) => match catalog.check(&tag, who.user, who.groups) {
                    None => Workflow {
                        tag,
                        source: WorkflowSource::Header,
                        claimed: None,
                        untrusted: None,
                    },
                    Some(why) => untagged(WorkflowSource::Header, tag, why),
                },
                _ => untagged(
                    WorkflowSource::Invalid,
                    printable(v.as_bytes()),
                    Untrusted::Unknown,
                ),
            }
        }
        // Two tags on one request: ambiguous, so neither counts.
        (Some(_), Some(_)) => {
            let all: Vec<String> = headers
                .get_all(header)
                .iter()
                .map(|v| printable(v.as_bytes()))
                .collect();
            let mut claimed = all.join(",");
            claimed.truncate(MAX_CLAIM_LEN);
            untagged(WorkflowSource::Invalid, claimed, Untrusted::Unknown)
        }
        (None, _) => match who.default {
            Some(tag) => Workflow {
                tag: tag.to_string(),
                source: WorkflowSource::UserDefault,
                claimed: None,
                untrusted: None,
            },
            None => Workflow {
                tag: UNTAGGED.to_string(),
                source: WorkflowSource::None,
                claimed: None,
                untrusted: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> WorkflowCatalog {
        let entry = |id: &str, groups: Option<&[&str]>, users: Option<&[&str]>| WorkflowEntry {
            id: id.into(),
            description: format!("{id} work"),
            users: users.map(|u| u.iter().map(|s| s.to_string()).collect()),
            groups: groups.map(|g| g.iter().map(|s| s.to_string()).collect()),
            protected: true,
        };
        WorkflowCatalog {
            entries: vec![
                entry("training-data", None, None),
                entry("code-analysis", None, None),
                entry("docs", None, None),
                entry(
                    "vendor-evaluation",
                    Some(&["ai-evaluation"]),
                    Some(&["carol"]),
                ),
            ],
        }
    }

    fn run(
        catalog: &WorkflowCatalog,
        values: &[&[u8]],
        user: &str,
        groups: &[&str],
        default: Option<&str>,
    ) -> Workflow {
        let name = HeaderName::from_static("x-aigate-workflow");
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&name, http::HeaderValue::from_bytes(v).unwrap());
        }
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        workflow(
            &h,
            &name,
            catalog,
            Claimant {
                user,
                groups: &groups,
                default,
            },
        )
    }

    fn wf(
        tag: &str,
        source: WorkflowSource,
        claimed: Option<&str>,
        why: Option<Untrusted>,
    ) -> Workflow {
        Workflow {
            tag: tag.into(),
            source,
            claimed: claimed.map(str::to_string),
            untrusted: why,
        }
    }

    #[test]
    fn claimed_tags_count_only_when_catalogued_and_claimable() {
        use Untrusted::*;
        use WorkflowSource as S;
        let cat = catalog();
        // claimed header values, user, groups, user default, the result
        type Row<'a> = (
            &'a [&'a [u8]],
            &'a str,
            &'a [&'a str],
            Option<&'a str>,
            Workflow,
        );
        let rows: Vec<Row<'_>> = vec![
            (&[], "alice", &[], None, wf("untagged", S::None, None, None)),
            (
                &[],
                "alice",
                &[],
                Some("docs"),
                wf("docs", S::UserDefault, None, None),
            ),
            (
                &[b"Training-Data"],
                "alice",
                &[],
                None,
                wf("training-data", S::Header, None, None),
            ),
            (
                &[b" docs "],
                "alice",
                &[],
                None,
                wf("docs", S::Header, None, None),
            ),
            // Near-misses of a catalogued tag are unknown tags.
            (
                &[b"training_data"],
                "alice",
                &[],
                None,
                wf("untagged", S::Header, Some("training_data"), Some(Unknown)),
            ),
            (
                &[b"code-analysis."],
                "alice",
                &[],
                None,
                wf("untagged", S::Header, Some("code-analysis."), Some(Unknown)),
            ),
            (
                &[b"made-up"],
                "alice",
                &[],
                Some("docs"),
                wf("untagged", S::Header, Some("made-up"), Some(Unknown)),
            ),
            // Claimable by a group or a named user only.
            (
                &[b"vendor-evaluation"],
                "alice",
                &["ml"],
                None,
                wf(
                    "untagged",
                    S::Header,
                    Some("vendor-evaluation"),
                    Some(NotPermitted),
                ),
            ),
            (
                &[b"vendor-evaluation"],
                "bob",
                &["ml", "ai-evaluation"],
                None,
                wf("vendor-evaluation", S::Header, None, None),
            ),
            (
                &[b"vendor-evaluation"],
                "carol",
                &[],
                None,
                wf("vendor-evaluation", S::Header, None, None),
            ),
            // Claiming untagged is always allowed: it is the strictest tag.
            (
                &[b"untagged"],
                "alice",
                &[],
                None,
                wf("untagged", S::Header, None, None),
            ),
            // Not a tag, or two of them: unknown, the claim kept as printable text.
            (
                &[b"no spaces"],
                "alice",
                &[],
                None,
                wf("untagged", S::Invalid, Some("no spaces"), Some(Unknown)),
            ),
            (
                &[b"docs\xff"],
                "alice",
                &[],
                None,
                wf("untagged", S::Invalid, Some("docs?"), Some(Unknown)),
            ),
            (
                &[b"docs", b"training-data"],
                "alice",
                &[],
                None,
                wf(
                    "untagged",
                    S::Invalid,
                    Some("docs,training-data"),
                    Some(Unknown),
                ),
            ),
        ];
        for (i, (values, user, groups, default, want)) in rows.into_iter().enumerate() {
            assert_eq!(run(&cat, values, user, groups, default), want, "row {i}");
        }
        // A long claim is cut for the record.
        let long = "x".repeat(300);
        let got = run(&cat, &[long.as_bytes()], "alice", &[], None);
        assert_eq!(got.claimed.map(|c| c.len()), Some(MAX_CLAIM_LEN));
    }

    #[test]
    fn without_a_catalog_every_well_formed_tag_counts() {
        let none = WorkflowCatalog::default();
        assert_eq!(
            run(&none, &[b"training_data"], "alice", &[], None),
            wf("training_data", WorkflowSource::Header, None, None)
        );
        assert_eq!(
            run(&none, &[b"no spaces"], "alice", &[], None).untrusted,
            Some(Untrusted::Unknown)
        );
    }
}
