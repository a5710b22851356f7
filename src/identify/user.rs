//! People: the directory file, proxy credentials and the source-address map.
//!
//! Tokens are stored as `sha256:<hex>` only; a leaked directory file does not leak credentials,
//! and no token is ever logged. Proxy tokens are long random strings, so one SHA-256 is enough.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use ipnet::IpNet;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const ANONYMOUS: &str = "anonymous";

/// Whether `s` is a stored token hash (`sha256:` and 64 hex digits), not a token.
pub fn is_token_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `sha256:<hex>` of a token, the form stored in the directory file.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: String,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    manager: Option<String>,
    default_workflow: Option<String>,
    #[serde(default)]
    tokens: Vec<String>,
    /// Admin-API roles: manager, admin, auditor, approver.
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: Arc<str>,
    pub name: String,
    pub groups: Arc<[String]>,
    pub manager: Option<String>,
    pub default_workflow: Option<Arc<str>>,
    pub roles: Vec<crate::config::Role>,
}

/// The people aigate knows, indexed by id and by token hash.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    users: HashMap<String, User>,
    token_owner: HashMap<String, String>,
    user_tokens: HashMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Directory {
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Directory::parse(&text).map_err(|message| DirectoryError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Directory, String> {
        let raw: RawDirectory = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut dir = Directory::default();
        let order: Vec<String> = raw.users.iter().map(|u| u.id.clone()).collect();
        for (i, u) in raw.users.into_iter().enumerate() {
            if u.id.is_empty() {
                return Err(format!("users[{i}].id is empty; give every user an id"));
            }
            if dir.users.contains_key(&u.id) {
                return Err(format!("users[{i}].id = {:?}: duplicate user id", u.id));
            }
            for (j, t) in u.tokens.iter().enumerate() {
                if !is_token_hash(t) {
                    return Err(format!(
                        "users[{i}].tokens[{j}]: not a token hash; store `aigate user hash-token` output (sha256:<64 hex>), never the token"
                    ));
                }
                let hash = t.to_ascii_lowercase();
                if let Some(other) = dir.token_owner.insert(hash, u.id.clone()) {
                    return Err(format!(
                        "users[{i}].tokens[{j}]: the same token hash is also given to user {other:?}"
                    ));
                }
            }
            let mut roles = Vec::new();
            for (j, r) in u.roles.iter().enumerate() {
                match crate::config::Role::parse(r) {
                    Some(role) => roles.push(role),
                    None => {
                        return Err(format!(
                            "users[{i}].roles[{j}] = {r:?}: unknown role; use one of admin, manager, auditor, approver"
                        ));
                    }
                }
            }
            dir.user_tokens.insert(
                u.id.clone(),
                u.tokens.iter().map(|t| t.to_ascii_lowercase()).collect(),
            );
            dir.users.insert(
                u.id.clone(),
                User {
                    id: Arc::from(u.id.as_str()),
                    name: u.name.unwrap_or_else(|| u.id.clone()),
                    groups: Arc::from(u.groups),
                    manager: u.manager,
                    default_workflow: u.default_workflow.map(|w| Arc::from(w.as_str())),
                    roles,
                },
            );
        }
        dir.check_managers(&order)?;
        Ok(dir)
    }

    /// Every `manager` names someone in the file, and following managers upwards ends at someone
    /// with none. A manager who does not exist, or a cycle, would leave a report that nobody can
    /// grant an exemption to, or everyone in the loop "above" everyone else.
    fn check_managers(&self, order: &[String]) -> Result<(), String> {
        for (i, id) in order.iter().enumerate() {
            let Some(manager) = self.users.get(id).and_then(|u| u.manager.as_deref()) else {
                continue;
            };
            if !self.users.contains_key(manager) {
                return Err(format!(
                    "users[{i}].manager = {manager:?}: no user with that id in this file; add them or fix the id"
                ));
            }
            let mut chain = vec![id.as_str()];
            let mut current = Some(manager);
            while let Some(m) = current {
                if chain.contains(&m) {
                    chain.push(m);
                    return Err(format!(
                        "users[{i}].manager: a manager cycle ({}); the chain of managers must end at someone with no manager",
                        chain.join(" -> ")
                    ));
                }
                chain.push(m);
                current = self.users.get(m).and_then(|u| u.manager.as_deref());
            }
        }
        Ok(())
    }

    /// Users whose `default_workflow` the workflow catalog does not list, as problems: such a
    /// default would decide their calls under a tag no rule can name (config validation refuses
    /// a rule naming it), so their untagged calls would fall to the default action.
    pub fn uncatalogued_defaults(
        &self,
        catalog: &crate::identify::workflow::WorkflowCatalog,
    ) -> Vec<String> {
        let mut bad: Vec<String> = self
            .users
            .values()
            .filter_map(|u| {
                let tag = u.default_workflow.as_deref()?;
                catalog.unknown(tag).then(|| {
                    format!(
                        "user {:?}: default_workflow = {tag:?} is not in the workflow catalog; known workflows are {}",
                        &*u.id,
                        catalog.known().join(", ")
                    )
                })
            })
            .collect();
        bad.sort();
        bad
    }

    /// Add the people the gateway identifies without the users file (the source-address map,
    /// `identity.local_account`) who are not in it: no groups, manager or roles, but known, so
    /// that an admin can exempt a user whom the gateway names in its records and deny messages.
    pub fn include_identified<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if !self.users.contains_key(id) {
                self.users.insert(
                    id.to_string(),
                    User {
                        id: Arc::from(id),
                        name: id.to_string(),
                        groups: Arc::from(Vec::new()),
                        manager: None,
                        default_workflow: None,
                        roles: Vec::new(),
                    },
                );
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Everyone, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The owner of a token, by its hash.
    pub fn by_token_hash(&self, hash: &str) -> Option<&User> {
        self.token_owner.get(hash).and_then(|id| self.users.get(id))
    }

    /// Check a `Proxy-Authorization` value. `Basic` is user + token, `Bearer` is the token alone.
    pub fn authenticate(&self, header: &str) -> Option<&User> {
        let (scheme, rest) = header.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, token) = decoded.split_once(':')?;
            let hash = hash_token(token);
            let tokens = self.user_tokens.get(user)?;
            tokens
                .contains(&hash)
                .then(|| self.users.get(user))
                .flatten()
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let owner = self.token_owner.get(&hash_token(rest))?;
            self.users.get(owner)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    ProxyAuth,
    SourceAddress,
    Anonymous,
}

/// Who is behind a connection (CONNECT) or a plain-HTTP request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Arc<str>,
    pub groups: Arc<[String]>,
    pub default_workflow: Option<Arc<str>>,
    pub source: IdentitySource,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            user: Arc::from(ANONYMOUS),
            groups: Arc::from(Vec::new()),
            default_workflow: None,
            source: IdentitySource::Anonymous,
        }
    }

    fn of(user: &User, source: IdentitySource) -> Identity {
        Identity {
            user: user.id.clone(),
            groups: user.groups.clone(),
            default_workflow: user.default_workflow.clone(),
            source,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential and config requires one.
    Missing,
    /// A credential that matches nobody. `user` is the name a `Basic` credential tried (never
    /// the token), so a reviewer sees whose account was tried, not `anonymous`.
    Wrong { user: Option<Arc<str>> },
}

/// The longest tried user name kept for the record: it is whatever the client sent.
const MAX_TRIED_USER: usize = 128;

/// The user name of a `Basic` credential, whatever the token. `Bearer` carries none.
fn tried_user(header: &str) -> Option<Arc<str>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (user, _token) = decoded.split_once(':')?;
    let user: String = user.chars().take(MAX_TRIED_USER).collect();
    (!user.is_empty()).then(|| Arc::from(user))
}

/// Decide who is behind a request: credentials first, then the source address, else anonymous.
/// A wrong credential is refused even when authentication is optional: falling back to the
/// source address would let anyone pick a worse identity than their own on purpose.
pub fn resolve(
    dir: &Directory,
    source_map: &[(IpNet, String)],
    require_auth: bool,
    proxy_authorization: Option<&str>,
    client: IpAddr,
) -> Result<Identity, AuthFailure> {
    if let Some(value) = proxy_authorization {
        return dir
            .authenticate(value)
            .map(|u| Identity::of(u, IdentitySource::ProxyAuth))
            .ok_or_else(|| AuthFailure::Wrong {
                user: tried_user(value),
            });
    }
    if require_auth {
        return Err(AuthFailure::Missing);
    }
    let best = source_map
        .iter()
        .filter(|(net, _)| net.contains(&client))
        .max_by_key(|(net, _)| net.prefix_len());
    Ok(match best {
        Some((_, id)) => match dir.get(id) {
            Some(u) => Identity::of(u, IdentitySource::SourceAddress),
            None => Identity {
                user: Arc::from(id.as_str()),
                groups: Arc::from(Vec::new()),
                default_workflow: None,
                source: IdentitySource::SourceAddress,
            },
        },
        None => Identity::anonymous(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::parse(&format!(
            "[[users]]\nid = \"alice\"\ngroups = [\"ml\"]\ntokens = [\"{}\"]\n[[users]]\nid = \"bob\"\n",
            hash_token("s3cret")
        ))
        .unwrap()
    }

    #[test]
    fn basic_and_bearer() {
        let d = dir();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        assert_eq!(d.authenticate(&basic).map(|u| &*u.id), Some("alice"));
        assert_eq!(
            d.authenticate("Bearer s3cret").map(|u| &*u.id),
            Some("alice")
        );
        let wrong_user = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:s3cret")
        );
        assert!(d.authenticate(&wrong_user).is_none());
        assert!(d.authenticate("Bearer nope").is_none());
        assert!(d.authenticate("Digest x").is_none());
    }

    #[test]
    fn resolution_order() {
        let d = dir();
        let map = vec![
            ("10.0.0.0/8".parse().unwrap(), "bob".to_string()),
            ("10.1.0.0/16".parse().unwrap(), "alice".to_string()),
        ];
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(&*resolve(&d, &map, false, None, ip).unwrap().user, "alice");
        assert_eq!(
            &*resolve(&d, &map, false, None, "10.9.9.9".parse().unwrap())
                .unwrap()
                .user,
            "bob"
        );
        assert_eq!(
            &*resolve(&d, &map, false, None, "192.168.0.1".parse().unwrap())
                .unwrap()
                .user,
            ANONYMOUS
        );
        assert_eq!(
            resolve(&d, &map, true, None, ip).unwrap_err(),
            AuthFailure::Missing
        );
        assert_eq!(
            resolve(&d, &map, false, Some("Bearer nope"), ip).unwrap_err(),
            AuthFailure::Wrong { user: None }
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:wrong")
        );
        assert_eq!(
            resolve(&d, &map, false, Some(&basic), ip).unwrap_err(),
            AuthFailure::Wrong {
                user: Some(Arc::from("alice"))
            }
        );
    }

    #[test]
    fn managers_exist_and_end_somewhere() {
        let err =
            Directory::parse("[[users]]\nid = \"a\"\n[[users]]\nid = \"b\"\nmanager = \"zed\"\n")
                .unwrap_err();
        assert_eq!(
            err,
            "users[1].manager = \"zed\": no user with that id in this file; add them or fix the id"
        );
        let err = Directory::parse(
            "[[users]]\nid = \"a\"\nmanager = \"b\"\n[[users]]\nid = \"b\"\nmanager = \"c\"\n[[users]]\nid = \"c\"\nmanager = \"b\"\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "users[0].manager: a manager cycle (a -> b -> c -> b); the chain of managers must end at someone with no manager"
        );
        let err = Directory::parse("[[users]]\nid = \"a\"\nmanager = \"a\"\n").unwrap_err();
        assert!(err.contains("(a -> a)"), "{err}");
        assert!(
            Directory::parse("[[users]]\nid = \"a\"\nmanager = \"b\"\n[[users]]\nid = \"b\"\n")
                .is_ok()
        );
    }

    #[test]
    fn plaintext_tokens_are_refused() {
        let err = Directory::parse("[[users]]\nid = \"a\"\ntokens = [\"hunter2\"]\n").unwrap_err();
        assert!(err.contains("not a token hash"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the token itself must not be echoed: {err}"
        );
    }
}
