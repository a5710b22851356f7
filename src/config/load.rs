//! From text to a validated `Config`, collecting every problem on the way.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;

use super::Config;
use super::raw::RawConfig;
use super::validate::validate;

/// The shipped default policy, compiled into the binary so `aigate run` works with no file.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/aigate.toml");

/// One thing wrong with a config: where, what was there, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub value: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {}: {}", self.path, v, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.source_name, .problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
}

fn render(source: &str, problems: &[Problem]) -> String {
    let mut out = format!(
        "{source}: {} problem{} found\n",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("  ");
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// The policy version recorded with every decision: the start of the SHA-256 of the file.
fn version_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

/// Load and validate a config file, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config = load_unplaced(path)?;
    config.file = path.map(Path::to_path_buf);
    Ok(config)
}

fn load_unplaced(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => load_str(DEFAULT_CONFIG, "embedded default config", Path::new(".")),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            let base = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            load_str(&text, &p.display().to_string(), base)
        }
    }
}

/// Validate config text; relative paths resolve against `base`.
pub fn load_str(text: &str, source_name: &str, base: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        source_name: source_name.to_string(),
        problems,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        invalid(vec![Problem {
            path: format!("line {line}, column {col}"),
            value: None,
            message: format!("not valid TOML: {}", e.message().trim()),
        }])
    })?;
    let included = include_defaults(&mut table);
    let (raw, mut problems) = deserialize_all(toml::Value::Table(table));
    let included = included.unwrap_or_else(|p| {
        problems.insert(0, p);
        false
    });
    match validate(raw, source_name, base) {
        Ok(mut config) if problems.is_empty() => {
            config.include_defaults = included;
            // The shipped catalogs are part of the policy in force: a new binary with new
            // signatures is a new version even when the file did not change.
            config.version = if included {
                version_of(&format!("{text}\n{DEFAULT_CONFIG}"))
            } else {
                version_of(text)
            }
            .into();
            Ok(config)
        }
        Ok(_) => Err(invalid(problems)),
        Err(more) => {
            // A key serde already complained about and removed would show up again as missing.
            let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
            problems.extend(more.into_iter().filter(|p| !reported.contains(&p.path)));
            Err(invalid(problems))
        }
    }
}

/// The catalogs a file extends with `include_defaults = true` instead of replacing them. The
/// shipped entries follow the file's own, so the file's key paths keep their indices and its tool
/// signatures are tried first; a shipped entry whose `id` the file also uses is left out, so a
/// file overrides one by reusing its id. A catalog added to the shipped config joins by being
/// named here. (The AI host catalog is data of its own, in force unless `ai_hosts.builtin =
/// false`, so it needs no entry.)
pub const CATALOGS: &[&str] = &["vendors", "tools"];

/// Merge the shipped catalogs into `table` when it asks for them (`include_defaults = true` at
/// the top of the file); whether it did.
fn include_defaults(table: &mut toml::Table) -> Result<bool, Problem> {
    let Some(flag) = table.remove("include_defaults") else {
        return Ok(false);
    };
    match flag {
        toml::Value::Boolean(true) => {}
        toml::Value::Boolean(false) => return Ok(false),
        other => {
            return Err(Problem {
                path: "include_defaults".into(),
                value: Some(other.to_string()),
                message: format!(
                    "write true (extend the shipped {}) or false",
                    CATALOGS.join(" and ")
                ),
            });
        }
    }
    let shipped: toml::Table = toml::from_str(DEFAULT_CONFIG).map_err(|e| Problem {
        path: "include_defaults".into(),
        value: None,
        message: format!("the shipped config does not parse: {e}"),
    })?;
    let id = |v: &toml::Value| {
        v.get("id")
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };
    for name in CATALOGS {
        let Some(toml::Value::Array(defaults)) = shipped.get(*name) else {
            continue;
        };
        let entry = table
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        // A catalog of the wrong type is reported by the deserializer, with its key path.
        let toml::Value::Array(own) = entry else {
            continue;
        };
        let ids: Vec<String> = own.iter().filter_map(id).collect();
        own.extend(
            defaults
                .iter()
                .filter(|d| id(d).is_none_or(|i| !ids.contains(&i)))
                .cloned(),
        );
    }
    Ok(true)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Deserialize, and on each serde error record it, remove the offending key and try again, so
/// that every unknown key and wrong type is reported, not just the first.
fn deserialize_all(mut value: toml::Value) -> (RawConfig, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..200 {
        match serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            Ok(raw) => return (raw, problems),
            Err(err) => {
                let mut segments: Vec<Segment> = err.path().iter().cloned().collect();
                let message = err.inner().message().to_string();
                if let Some(unknown) = unknown_field(&message) {
                    if !matches!(segments.last(), Some(Segment::Map { key }) if key == &unknown) {
                        segments.push(Segment::Map {
                            key: unknown.clone(),
                        });
                    }
                    problems.push(Problem {
                        path: render_path(&segments),
                        value: None,
                        message: format!("unknown key; {}", expected_list(&message)),
                    });
                } else {
                    problems.push(Problem {
                        path: render_path(&segments),
                        value: None,
                        message: message
                            .replace("invalid type: ", "wrong type: ")
                            .replace("a sequence", "an array")
                            .replace("sequence", "array")
                            .replace("a map", "a table"),
                    });
                }
                // Remove the nearest key at or above the error, so the next pass gets further.
                while matches!(segments.last(), Some(s) if !matches!(s, Segment::Map { .. })) {
                    segments.pop();
                }
                if segments.is_empty() || !remove(&mut value, &segments) {
                    return (RawConfig::default(), problems);
                }
            }
        }
    }
    (RawConfig::default(), problems)
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn expected_list(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((_, rest)) => format!("expected {}", rest.replace('`', "")),
        None => "remove it".to_string(),
    }
}

pub(crate) fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    if out.is_empty() {
        "(top level)".to_string()
    } else {
        out
    }
}

fn remove(value: &mut toml::Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        cur = match (seg, cur) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key).is_some(),
        _ => false,
    }
}
