//! The reviewer's query engine: `aigate audit query` and the admin API's `GET /v1/audit` parse
//! their parameters into one [`Filter`], so both answer the same records for the same question,
//! and the console's explorer can reuse it.
//!
//! Records are read as plain JSON objects, not as `AuditRecord`: a filter or a `--group-by` can
//! name any field, including fields newer than this reader (a newer gateway's log, or fields
//! another part of the gateway adds), and the records come back exactly as they were written.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Read as _, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::record::Kind;
use crate::config::parse_duration;
use crate::policy::{Action, Reason};

/// Every field a record can carry, in the order of docs/audit-schema.md: what `--group-by`
/// accepts. A field added to the record must be added here (a test checks it), so that reviewers
/// can group by it.
pub const FIELDS: &[&str] = &[
    "v",
    "seq",
    "prev",
    "time",
    "id",
    "kind",
    "client",
    "user",
    "user_source",
    "tool",
    "tool_confidence",
    "evidence",
    "tool_conflicts",
    "tool_conflict_evidence",
    "user_agent",
    "vendor",
    "ai_host",
    "host",
    "port",
    "method",
    "path",
    "model",
    "workflow",
    "workflow_source",
    "workflow_claimed",
    "workflow_reason",
    "action",
    "reason",
    "rule",
    "policy_version",
    "exemption",
    "would_block",
    "status",
    "error",
    "bytes_up",
    "bytes_down",
    "duration_ms",
    "ttfb_ms",
    "admin",
    "replica",
    "provenance",
    "provenance_fingerprints",
    "provenance_chars",
    "hash",
];

/// The fields a filter matches exactly, by their record name (the API's parameter; the CLI flag
/// is the same with `-` for `_`).
pub const MATCH_FIELDS: &[&str] = &[
    "id",
    "action",
    "kind",
    "tool",
    "user",
    "workflow",
    "rule",
    "reason",
    "vendor",
    "exemption",
    "ai_host",
    "would_block",
];

/// How [`Filter::parse`] says a parameter is none of its own; a front end with parameters of its
/// own (the API's `limit`) adds them.
pub const UNKNOWN: &str = "unknown filter";

/// What stands for a field that is absent or null, in a filter value and in table cells.
pub const NONE: &str = "-";

/// Which records a reviewer wants. Every condition must hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    /// `(field, value)`: the field's text equals the value; [`NONE`] matches an absent field.
    pub matches: Vec<(&'static str, String)>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records before this time.
    pub until: Option<SystemTime>,
    /// Only these users' records (a manager sees their reports'); `None`: everyone's. Never set
    /// from a parameter: the caller's role decides it.
    pub users: Option<Arc<HashSet<String>>>,
    /// Only records whose `path` contains this text (case as written): the free-text search.
    pub path: Option<String>,
}

/// A parameter that cannot be a filter: which one, the value given, and what to write instead.
/// Each front end words where it came from (`--rule` for the CLI, `rule =` for the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub param: String,
    pub value: String,
    pub problem: String,
}

impl FilterError {
    /// As the CLI says it: `--ai-host "x": …`.
    pub fn for_cli(&self) -> String {
        format!(
            "--{} {:?}: {}",
            self.param.replace('_', "-"),
            self.value,
            self.problem
        )
    }

    /// As the admin API says it: `ai_host = "x": …`.
    pub fn for_api(&self) -> String {
        format!("{} = {:?}: {}", self.param, self.value, self.problem)
    }
}

impl Filter {
    /// The one parser of filter parameters, by their API names (`ai_host`, `since`, …). Times are
    /// RFC 3339 or a duration back from `now` (`24h`). An unknown or repeated parameter is an
    /// error, never silently ignored: a reviewer's typo must not widen the answer.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: SystemTime,
    ) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, value) in params {
            let err = |problem: String| FilterError {
                param: name.to_string(),
                value: value.to_string(),
                problem,
            };
            if !seen.insert(name) {
                return Err(err("given twice; give each filter once".into()));
            }
            match name {
                "since" => filter.since = Some(time_arg(value, now).map_err(err)?),
                "until" => filter.until = Some(time_arg(value, now).map_err(err)?),
                "path" if value.is_empty() => {
                    return Err(err("empty; give the text the path must contain".into()));
                }
                "path" => filter.path = Some(value.to_string()),
                _ => {
                    let Some(field) = MATCH_FIELDS.iter().find(|f| **f == name) else {
                        return Err(err(format!(
                            "{UNKNOWN}; use one of {}, path, since, until",
                            MATCH_FIELDS.join(", ")
                        )));
                    };
                    check_value(field, value).map_err(err)?;
                    filter.matches.push((field, value.to_string()));
                }
            }
        }
        Ok(filter)
    }

    pub fn accepts(&self, r: &Entry) -> bool {
        self.matches
            .iter()
            .all(|(field, want)| r.text(field) == want.as_str())
            && self
                .users
                .as_ref()
                .is_none_or(|users| users.contains(r.text("user").as_ref()))
            && self.path.as_deref().is_none_or(|text| {
                r.get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.contains(text))
            })
            && (self.since.is_none() && self.until.is_none() || {
                match r.time() {
                    Some(t) => {
                        self.since.is_none_or(|since| t >= since)
                            && self.until.is_none_or(|until| t < until)
                    }
                    None => false,
                }
            })
    }
}

/// Values with a fixed vocabulary are checked, so `--action deny` is an error rather than an
/// empty answer. The vocabularies are the record's own types, so a new reason code or kind is
/// accepted as soon as the gateway can write it.
fn check_value(field: &str, value: &str) -> Result<(), String> {
    let known = |ok: bool, hint: &str| if ok { Ok(()) } else { Err(hint.to_string()) };
    let as_json = || Value::String(value.to_string());
    match field {
        // The record's vocabulary, not a rule's: `abandoned` is written but never chosen.
        "action" => known(
            serde_json::from_value::<Action>(as_json()).is_ok(),
            "use allow, monitor, block or abandoned",
        ),
        "kind" => known(
            serde_json::from_value::<Kind>(as_json()).is_ok(),
            "use request, tunnel or admin",
        ),
        "reason" => known(
            serde_json::from_value::<Reason>(as_json()).is_ok(),
            "not a reason code; docs/audit-schema.md lists them (rule_matched, default_action, exempted, …)",
        ),
        "would_block" => known(matches!(value, "true" | "false"), "use true or false"),
        _ if value.is_empty() => Err(format!(
            "empty; give a value, or {NONE} for records without {field}"
        )),
        _ => Ok(()),
    }
}

pub(crate) fn time_arg(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    parse_duration(s).map(|d| now - d).map_err(|_| {
        "write an RFC 3339 time (2026-11-20T09:00:00Z) or a duration back from now (24h)".into()
    })
}

/// One record as read back: the line exactly as written, and its fields.
#[derive(Debug, Clone)]
pub struct Entry {
    line: Box<str>,
    fields: Map<String, Value>,
}

impl Entry {
    /// `None` for a line that is not a JSON object (a torn write, garbage).
    pub fn parse(line: &str) -> Option<Entry> {
        let fields = serde_json::from_str::<Map<String, Value>>(line).ok()?;
        Some(Entry {
            line: line.into(),
            fields,
        })
    }

    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// The field as text, the way filters compare it and tables show it: strings as they are,
    /// numbers and booleans as JSON writes them, lists joined with `,`, absent or null as
    /// [`NONE`].
    pub fn text(&self, field: &str) -> Cow<'_, str> {
        self.get(field).map_or(Cow::Borrowed(NONE), value_text)
    }

    pub fn seq(&self) -> Option<u64> {
        self.get("seq").and_then(Value::as_u64)
    }

    pub fn time(&self) -> Option<SystemTime> {
        self.get("time")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    }
}

/// A forwarded call's decision, progress and outcome are joined into one row (audit/calls.rs).
impl super::calls::Part for Entry {
    fn id(&self) -> &str {
        self.get("id").and_then(Value::as_str).unwrap_or_default()
    }

    fn kind(&self) -> Option<Kind> {
        self.get("kind")
            .and_then(|k| <Kind as serde::Deserialize>::deserialize(k).ok())
    }

    fn outcome_follows(&self) -> bool {
        self.get("outcome_follows") == Some(&Value::Bool(true))
    }

    fn started(&self) -> (String, u64) {
        (
            self.text("time").into_owned(),
            self.seq().unwrap_or_default(),
        )
    }

    /// The joined row is written anew: it is no longer a line of the log.
    fn into_row(mut self) -> Self {
        let progress = self.kind() == Some(Kind::Progress);
        let kind = if self.get("vendor").is_some() {
            Kind::Request
        } else {
            Kind::Tunnel
        };
        self.fields
            .insert("kind".into(), Value::String(kind.as_str().into()));
        if progress {
            self.fields
                .insert("outcome_follows".into(), Value::Bool(true));
        }
        self.line = Value::Object(self.fields.clone()).to_string().into();
        self
    }

    fn is_slim(&self) -> bool {
        self.kind() == Some(Kind::Outcome) && !self.fields.contains_key(super::outcome::SLIM_MARKER)
    }

    fn complete_from(&mut self, earlier: &Self) {
        super::outcome::complete_fields(&mut self.fields, &earlier.fields);
        self.line = Value::Object(self.fields.clone()).to_string().into();
    }
}

/// The admin API answers each record as it is in the log.
impl serde::Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.line.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

fn value_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed(NONE),
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) => Cow::Owned(
            items
                .iter()
                .map(|i| value_text(i).into_owned())
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Cow::Owned(other.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// JSON Lines: each record as written; each group as one object.
    Json,
    Csv,
}

/// The table's columns: what a reviewer reads first.
const TABLE_COLUMNS: &[&str] = &[
    "time", "kind", "action", "reason", "user", "tool", "workflow", "host", "rule", "status", "id",
];

/// CSV carries more: it goes to a spreadsheet, where a column is cheap.
const CSV_COLUMNS: &[&str] = &[
    "time",
    "id",
    "kind",
    "client",
    "user",
    "user_source",
    "tool",
    "tool_confidence",
    "vendor",
    "ai_host",
    "host",
    "port",
    "method",
    "path",
    "model",
    "workflow",
    "workflow_source",
    "action",
    "reason",
    "rule",
    "exemption",
    "would_block",
    "status",
    "error",
    "bytes_up",
    "bytes_down",
    "duration_ms",
];

/// What a query prints: the records, or counts of them by some fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The records; with a limit, only the newest that many (printed oldest first).
    Records { limit: Option<usize> },
    /// Counts by these fields, largest first; with a limit, only that many groups.
    Summary {
        group_by: Vec<&'static str>,
        limit: Option<usize>,
    },
}

impl Output {
    /// `--group-by tool,user`: each name must be a record field ([`FIELDS`]).
    pub fn parse_group_by(list: &str) -> Result<Vec<&'static str>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim) {
            let Some(field) = FIELDS.iter().find(|f| **f == name) else {
                return Err(format!(
                    "{name:?} is not a record field; use one or more of {}, separated by commas",
                    FIELDS.join(", ")
                ));
            };
            out.push(*field);
        }
        Ok(out)
    }
}

/// How a query went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Records printed, or counted in a summary.
    pub matched: usize,
    /// Lines that are not records (read from the start only).
    pub skipped: usize,
    /// Groups in a summary.
    pub groups: usize,
    /// The limit left older matching records out.
    pub cut: bool,
}

/// Run a query over a log file. With a record limit the file is read from its end, as the admin
/// API reads it: the newest records of a large log come back without reading the rest.
pub fn run_file(
    path: &std::path::Path,
    filter: &Filter,
    output: &Output,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<Tally> {
    run_page(path, filter, output, None, format, out).map(|(tally, _)| tally)
}

/// As [`run_file`], from before a cursor (a `seq`, as `/v1/audit` pages): with a record limit,
/// the page below it, and the cursor of the page after. Every file of the log is read (its
/// rotated files too), from the oldest without a limit, from the newest with one.
pub fn run_page(
    path: &std::path::Path,
    filter: &Filter,
    output: &Output,
    before_seq: Option<u64>,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<(Tally, Option<u64>)> {
    let Output::Records { limit: Some(n) } = output else {
        return run(series_reader(path)?, filter, output, format, out).map(|t| (t, None));
    };
    let (mut newest, next) = newest_first(path, filter, before_seq, *n)?;
    let cut = next.is_some();
    newest.reverse();
    write_records(&newest, format, out)?;
    Ok((
        Tally {
            matched: newest.len(),
            cut,
            ..Tally::default()
        },
        next,
    ))
}

/// Run a query over a log read from its start, writing `format` to `out`.
pub fn run(
    input: impl BufRead,
    filter: &Filter,
    output: &Output,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<Tally> {
    let mut tally = Tally::default();
    let mut records = match output {
        Output::Records { .. } => Some(Printer::new(format, &mut *out)?),
        Output::Summary { .. } => None,
    };
    // With a limit only the newest matches are kept: a bounded window, not the whole log.
    let mut window: VecDeque<Entry> = VecDeque::new();
    let mut summary = match output {
        Output::Summary { group_by, .. } => Some(Summary::new(group_by.clone())),
        Output::Records { .. } => None,
    };
    let mut take = |entry: Entry| -> std::io::Result<()> {
        if !filter.accepts(&entry) {
            return Ok(());
        }
        tally.matched += 1;
        match (output, &mut records) {
            (Output::Records { limit: None }, Some(p)) => p.record(&entry)?,
            (Output::Records { limit: Some(n) }, _) => {
                if window.len() == *n {
                    window.pop_front();
                }
                if *n > 0 {
                    window.push_back(entry);
                }
            }
            (Output::Summary { .. }, _) => {
                if let Some(s) = &mut summary {
                    s.add(&entry);
                }
            }
            (Output::Records { limit: None }, None) => {}
        }
        Ok(())
    };
    // A forwarded call's decision, progress and outcome are one row: a finished call at its
    // outcome, calls still open at the end (audit/calls.rs).
    let mut calls = super::calls::Calls::default();
    let mut skipped = 0;
    for line in input.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let Some(entry) = Entry::parse(&line) else {
            skipped += 1;
            continue;
        };
        if let Some(row) = calls.push(entry) {
            take(row)?;
        }
    }
    for row in calls.finish() {
        take(row)?;
    }
    tally.skipped = skipped;
    if let Some(mut p) = records.take() {
        if let Output::Records { limit: Some(n) } = output {
            tally.cut = tally.matched > *n;
            tally.matched = window.len();
        }
        for entry in &window {
            p.record(entry)?;
        }
        p.finish()?;
    }
    // The printer borrows `out` until it is dropped.
    drop(records);
    if let (Some(summary), Output::Summary { limit, .. }) = (summary, output) {
        let groups = summary.largest(limit.unwrap_or(usize::MAX));
        tally.groups = groups.rows.len();
        write_summary(&groups, format, out)?;
    }
    Ok(tally)
}

/// Counts of records by some fields: what `--group-by` prints and `/v1/audit?group_by=`
/// answers.
#[derive(Debug, Clone)]
pub struct Summary {
    group_by: Vec<&'static str>,
    counts: HashMap<Vec<String>, u64>,
}

impl Summary {
    pub fn new(group_by: Vec<&'static str>) -> Summary {
        Summary {
            group_by,
            counts: HashMap::new(),
        }
    }

    pub fn add(&mut self, e: &Entry) {
        let key = self
            .group_by
            .iter()
            .map(|f| e.text(f).into_owned())
            .collect();
        *self.counts.entry(key).or_default() += 1;
    }

    /// The `limit` largest groups, largest first (ties in order of their values).
    pub fn largest(self, limit: usize) -> Groups {
        let mut rows: Vec<(Vec<String>, u64)> = self.counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(limit);
        Groups {
            fields: self.group_by,
            rows,
        }
    }
}

/// A finished summary. As JSON, a list of objects with the grouped fields in the order asked
/// for (null for none) and `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    pub fields: Vec<&'static str>,
    pub rows: Vec<(Vec<String>, u64)>,
}

struct Group<'a> {
    fields: &'a [&'static str],
    key: &'a [String],
    count: u64,
}

impl serde::Serialize for Group<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.fields.len() + 1))?;
        for (field, value) in self.fields.iter().zip(self.key) {
            map.serialize_entry(field, &(value != NONE).then_some(value))?;
        }
        map.serialize_entry("count", &self.count)?;
        map.end()
    }
}

impl Groups {
    fn each(&self) -> impl Iterator<Item = Group<'_>> {
        self.rows.iter().map(|(key, count)| Group {
            fields: &self.fields,
            key,
            count: *count,
        })
    }
}

impl serde::Serialize for Groups {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.each())
    }
}

/// A summary of a whole log file, read from its start.
pub fn summarize_file(
    path: &std::path::Path,
    filter: &Filter,
    group_by: Vec<&'static str>,
    limit: usize,
) -> std::io::Result<Groups> {
    let mut summary = Summary::new(group_by);
    // Counted by call: a forwarded call's records joined into one row (audit/calls.rs).
    let mut calls = super::calls::Calls::default();
    let mut add = |row: Entry| {
        if filter.accepts(&row) {
            summary.add(&row);
        }
    };
    for line in series_reader(path)?.lines() {
        if let Some(row) = Entry::parse(&line?).and_then(|e| calls.push(e)) {
            add(row);
        }
    }
    calls.finish().into_iter().for_each(add);
    Ok(summary.largest(limit))
}

/// Writes records one by one in a format; a table waits for the last row so that its columns
/// fit the longest value.
enum Printer<'o, W: Write> {
    Json(&'o mut W),
    Table(&'o mut W, Vec<Vec<String>>),
    Csv(Box<csv::Writer<&'o mut W>>),
}

impl<'o, W: Write> Printer<'o, W> {
    fn new(format: Format, out: &'o mut W) -> std::io::Result<Printer<'o, W>> {
        Ok(match format {
            Format::Json => Printer::Json(out),
            Format::Table => Printer::Table(out, Vec::new()),
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                // The header even without a record, so a script reads an empty table.
                w.write_record(CSV_COLUMNS)?;
                Printer::Csv(Box::new(w))
            }
        })
    }

    fn record(&mut self, e: &Entry) -> std::io::Result<()> {
        match self {
            Printer::Json(out) => writeln!(out, "{}", e.line()),
            Printer::Table(_, rows) => {
                rows.push(
                    TABLE_COLUMNS
                        .iter()
                        .map(|c| e.text(c).into_owned())
                        .collect(),
                );
                Ok(())
            }
            // CSV leaves an absent field empty, as spreadsheets expect.
            Printer::Csv(w) => Ok(w.write_record(
                CSV_COLUMNS
                    .iter()
                    .map(|c| e.get(c).map_or(Cow::Borrowed(""), value_text).into_owned()),
            )?),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Printer::Json(_) => Ok(()),
            Printer::Table(out, rows) => {
                let header: Vec<String> = TABLE_COLUMNS.iter().map(|c| c.to_uppercase()).collect();
                crate::table::write(out, &header, &rows)
            }
            Printer::Csv(mut w) => w.flush(),
        }
    }
}

fn write_summary(groups: &Groups, format: Format, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        Format::Table => {
            let mut header: Vec<String> = groups.fields.iter().map(|f| f.to_uppercase()).collect();
            header.push("COUNT".into());
            let rows: Vec<Vec<String>> = groups
                .rows
                .iter()
                .map(|(key, n)| {
                    let mut row = key.clone();
                    row.push(n.to_string());
                    row
                })
                .collect();
            crate::table::write(out, &header, &rows)
        }
        Format::Json => {
            for group in groups.each() {
                serde_json::to_writer(&mut *out, &group)?;
                writeln!(out)?;
            }
            Ok(())
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(groups.fields.iter().copied().chain(["count"]))?;
            for (key, n) in &groups.rows {
                let key = key.iter().map(|k| if k == NONE { "" } else { k.as_str() });
                w.write_record(key.map(str::to_string).chain([n.to_string()]))?;
            }
            w.flush()
        }
    }
}

/// The files of the log whose live file is `live`: its rotated files
/// (`audit.000000001001.jsonl`, named after their first `seq`; audit/writer/evidence.rs) and
/// the live file, newest first. A file named directly that is not a live log's (a rotated file,
/// a copy) is the only one.
pub fn series_newest_first(live: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    let stem = live.file_stem().map(|s| s.to_string_lossy().into_owned());
    let ext = live.extension().map(|s| s.to_string_lossy().into_owned());
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if let (Some(stem), Some(ext), Ok(entries)) = (stem, ext, std::fs::read_dir(dir)) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let digits = name
                .strip_prefix(stem.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_suffix(ext.as_str()))
                .and_then(|r| r.strip_suffix('.'));
            if let Some(first) = digits
                .filter(|d| d.len() >= 12 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok())
            {
                rotated.push((first, entry.path()));
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files = Vec::with_capacity(rotated.len() + 1);
    if live.exists() || rotated.is_empty() {
        files.push(live.to_path_buf());
    }
    files.extend(rotated.into_iter().map(|(_, p)| p));
    Ok(files)
}

/// The files of the log, oldest first, read as one: what a query from the start reads.
fn series_reader(live: &std::path::Path) -> std::io::Result<impl BufRead> {
    let mut files = series_newest_first(live)?;
    files.reverse();
    let mut reader: Box<dyn std::io::Read> = Box::new(std::io::empty());
    for f in files {
        reader = Box::new(reader.chain(std::fs::File::open(&f)?));
    }
    Ok(std::io::BufReader::with_capacity(1 << 20, reader))
}

/// A test of a line's bytes before it is parsed: the text `"user":"alice"` must be in the line
/// of a record whose user is alice (the writer writes compact JSON, audit/json.rs). A line
/// without it cannot match, and a query skips it unparsed.
///
/// Skipping a line must not change the join of a call's records (audit/calls.rs): an outcome
/// or progress record skipped here is never shown, and its decision would then come back as
/// an open call. That cannot happen for the fields tested here, since the decision has the same
/// values (a slim outcome keeps every field tested here, audit/outcome.rs), except in an outcome
/// whose identification was revised after the decision (`late_body_signal`), which is never
/// skipped. Nor can a slim outcome's row wait in vain for its decision: the decision passes.
struct LineTest {
    needles: Vec<memchr::memmem::Finder<'static>>,
    revised: memchr::memmem::Finder<'static>,
    /// The needle likely to be the rarest, and the revised marker: a line without either
    /// cannot pass, so a chunk is searched for these two and only the lines around the hits
    /// are tested (`backwards::lines_with_backwards_in`).
    lead: Vec<memchr::memmem::Finder<'static>>,
}

impl LineTest {
    fn new(filter: &Filter) -> LineTest {
        // (needle, rank): the lower the rank, the rarer the value tends to be in a log.
        let mut needles: Vec<(Vec<u8>, u8)> = Vec::new();
        for (field, value) in &filter.matches {
            if value == NONE || !super::index::INDEXED.contains(field) {
                continue;
            }
            let json = match *field {
                "would_block" => value.clone(),
                _ => Value::String(value.clone()).to_string(),
            };
            let rank = match (*field, value.as_str()) {
                ("id", _) => 0,
                ("user" | "exemption", _) => 1,
                ("rule", _) => 3,
                // Blocks and monitors are the few calls among many allowed ones.
                ("action", "block" | "monitor" | "abandoned") => 4,
                ("workflow" | "tool" | "ai_host", _) => 5,
                ("reason" | "vendor", _) => 6,
                _ => 7,
            };
            needles.push((format!("\"{field}\":{json}").into_bytes(), rank));
        }
        if let Some(text) = &filter.path {
            // As the writer escapes it, without the quotes.
            let json = Value::String(text.clone()).to_string();
            needles.push((json.as_bytes()[1..json.len() - 1].to_vec(), 2));
        }
        let revised: &[u8] = b"\"late_body_signal\"";
        let lead = needles
            .iter()
            .min_by_key(|(n, rank)| (*rank, std::cmp::Reverse(n.len())))
            .map(|(n, _)| {
                vec![
                    memchr::memmem::Finder::new(n).into_owned(),
                    memchr::memmem::Finder::new(revised).into_owned(),
                ]
            })
            .unwrap_or_default();
        let needles: Vec<Vec<u8>> = needles.into_iter().map(|(n, _)| n).collect();
        LineTest {
            lead,
            needles: needles
                .iter()
                .map(|n| memchr::memmem::Finder::new(n).into_owned())
                .collect(),
            revised: memchr::memmem::Finder::new(b"\"late_body_signal\"").into_owned(),
        }
    }

    fn may_match(&self, line: &[u8]) -> bool {
        self.needles.iter().all(|n| n.find(line).is_some()) || self.revised.find(line).is_some()
    }
}

/// A page of records, newest first, from the log at `path` and its rotated files, read from
/// the end backwards so a large log is never loaded whole. `before_seq` is the cursor: only
/// records with a smaller `seq` (seqs grow across the files, so the cursor stays put while the
/// log grows). Each file's index (audit/index.rs) lets a selective filter skip the blocks that
/// cannot match; the bytes past the index (the newest records of the live file) are read as
/// they are. Returns the page and the next cursor: `None` on the last page, even a full one.
pub fn newest_first(
    path: &std::path::Path,
    filter: &Filter,
    before_seq: Option<u64>,
    limit: usize,
) -> std::io::Result<(Vec<Entry>, Option<u64>)> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok((out, None));
    }
    // One more than asked tells whether there is a next page.
    let want = limit.saturating_add(1);
    // Records above the cursor are read too: a call shown on an earlier page by its outcome
    // must not come back here as open by its decision.
    let mut calls = super::calls::NewestFirst::default();
    let mut take = |entry: Entry| {
        if before_seq.is_some_and(|c| entry.seq().is_none_or(|s| s >= c)) || !filter.accepts(&entry)
        {
            return ControlFlow::Continue(());
        }
        out.push(entry);
        if out.len() == want {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let mut full = false;
    scan_newest(path, filter, |entry| {
        calls.push(entry);
        while let Some(row) = calls.ready() {
            if take(row).is_break() {
                full = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if !full {
        for row in calls.finish() {
            if take(row).is_break() {
                break;
            }
        }
    }
    let next = if out.len() > limit {
        out.truncate(limit);
        out.last().and_then(Entry::seq)
    } else {
        None
    };
    Ok((out, next))
}

/// Hand every record of the log that may pass `filter` to `visit`, newest first, as written
/// (not joined), until it breaks: the files newest first, in each the bytes past its index,
/// then the blocks its index says may match, and of those the lines whose text may match.
fn scan_newest(
    path: &std::path::Path,
    filter: &Filter,
    mut visit: impl FnMut(Entry) -> ControlFlow<()>,
) -> std::io::Result<()> {
    let probe = super::index::Probe::new(
        filter.matches.iter().map(|(f, v)| (*f, v.as_str())),
        filter.users.as_deref(),
        filter.since,
        filter.until,
    );
    let test = LineTest::new(filter);
    let mut line_visit = |line: &[u8]| {
        if !test.may_match(line) {
            return ControlFlow::Continue(());
        }
        match std::str::from_utf8(line).ok().and_then(Entry::parse) {
            Some(entry) => visit(entry),
            None => ControlFlow::Continue(()),
        }
    };
    for file in series_newest_first(path)? {
        let mut f = std::fs::File::open(&file)?;
        let len = f.metadata()?.len();
        // Without a condition every block is read: the index would only cost its upkeep.
        let index = if probe.selective() {
            Some(super::index::open(&file)?)
        } else {
            None
        };
        let covered = index.as_ref().map_or(0, |i| i.covered());
        // The bytes past the index first: the newest.
        let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
        ranges.push(covered..len);
        if let Some(index) = &index {
            for b in index.blocks.iter().rev() {
                if !b.may_hold(&probe) {
                    continue;
                }
                // Neighbouring blocks are read as one range.
                match ranges.last_mut() {
                    Some(r) if r.start == b.end => r.start = b.start,
                    _ => ranges.push(b.start..b.end),
                }
            }
        }
        for range in ranges {
            let chunk = 256 * 1024;
            let flow = if test.lead.is_empty() {
                super::backwards::lines_backwards_in(&mut f, range, chunk, &mut line_visit)?
            } else {
                super::backwards::lines_with_backwards_in(
                    &mut f,
                    range,
                    chunk,
                    &test.lead,
                    &mut line_visit,
                )?
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Every row that passes `filter`, newest first (a call joined into one row, as a page shows
/// it): what the console's Overview counts.
pub fn each_row(
    path: &std::path::Path,
    filter: &Filter,
    mut visit: impl FnMut(&Entry),
) -> std::io::Result<()> {
    let mut calls = super::calls::NewestFirst::default();
    scan_newest(path, filter, |entry| {
        calls.push(entry);
        while let Some(row) = calls.ready() {
            if filter.accepts(&row) {
                visit(&row);
            }
        }
        ControlFlow::Continue(())
    })?;
    calls
        .finish()
        .filter(|r| filter.accepts(r))
        .for_each(|r| visit(&r));
    Ok(())
}

/// The records of one call (its decision, progress and outcome, or its one record), newest
/// first, as written: what the console's record page lists under the joined row. `scope` is
/// the caller's filter (its `users` applies; its id must be the call's).
pub fn call_records(
    path: &std::path::Path,
    scope: &Filter,
    max: usize,
) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let Some((_, id)) = scope.matches.iter().find(|(f, _)| *f == "id") else {
        return Ok(out);
    };
    let mut decision_seen = false;
    scan_newest(path, scope, |e| {
        if e.text("id") != id.as_str()
            || !scope
                .users
                .as_ref()
                .is_none_or(|u| u.contains(e.text("user").as_ref()))
        {
            return ControlFlow::Continue(());
        }
        // A call has one decision, its first record: nothing of it lies further back.
        decision_seen = !matches!(e.text("kind").as_ref(), "outcome" | "progress");
        out.push(e);
        if decision_seen || out.len() == max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(out)
}

/// Write records in a format, as `aigate audit query` prints them: the console's export uses
/// the same writers.
pub fn write_records<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut printer = Printer::new(format, out)?;
    for e in entries {
        printer.record(e)?;
    }
    printer.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(json: &str) -> Entry {
        Entry::parse(json).unwrap()
    }

    fn parse(params: &[(&str, &str)]) -> Result<Filter, FilterError> {
        Filter::parse(params.iter().copied(), SystemTime::now())
    }

    #[test]
    fn every_field_a_record_writes_can_be_grouped_by() {
        let stored = super::super::record::StoredRecord {
            v: 1,
            seq: 1,
            prev: String::new(),
            hash: String::new(),
            record: super::super::AuditRecord {
                replica: Some("r1".into()),
                ..super::super::AuditRecord::placeholder()
            },
        };
        let Value::Object(fields) = serde_json::to_value(&stored).unwrap() else {
            panic!("a record is an object");
        };
        for name in fields.keys() {
            assert!(
                FIELDS.contains(&name.as_str()),
                "the record field {name:?} is missing from audit::query::FIELDS: add it there and to docs/audit-schema.md"
            );
        }
    }

    #[test]
    fn a_filter_matches_any_field_by_its_text_and_dash_for_none() {
        let r = entry(
            r#"{"user":"alice","rule":null,"ai_host":"inference-apis","would_block":true,"status":403}"#,
        );
        let yes = |p: &[(&str, &str)]| parse(p).unwrap().accepts(&r);
        assert!(yes(&[("user", "alice"), ("ai_host", "inference-apis")]));
        assert!(yes(&[("rule", "-"), ("exemption", "-")]));
        assert!(yes(&[("would_block", "true")]));
        assert!(!yes(&[("would_block", "false")]));
        assert!(!yes(&[("user", "bob")]));
        assert!(!yes(&[("ai_host", "-")]));
    }

    #[test]
    fn until_and_since_bound_the_time_and_a_record_without_one_is_out() {
        let r = entry(r#"{"time":"2026-11-20T10:00:00.000Z"}"#);
        let f = |p: &[(&str, &str)]| parse(p).unwrap().accepts(&r);
        assert!(f(&[("since", "2026-11-20T09:00:00Z")]));
        assert!(!f(&[("until", "2026-11-20T09:00:00Z")]));
        assert!(f(&[("until", "2026-11-20T11:00:00Z")]));
        assert!(
            !f(&[("until", "2026-11-20T10:00:00Z")]),
            "until is exclusive"
        );
        assert!(!parse(&[("since", "1h")]).unwrap().accepts(&entry("{}")));
    }

    #[test]
    fn abandoned_is_an_action_a_query_can_name() {
        let r = entry(r#"{"action":"abandoned","reason":"client_closed_tls"}"#);
        assert!(parse(&[("action", "abandoned")]).unwrap().accepts(&r));
        assert!(!parse(&[("action", "block")]).unwrap().accepts(&r));
    }

    #[test]
    fn bad_parameters_name_the_problem_and_the_fix() {
        let e = |p: &[(&str, &str)]| parse(p).unwrap_err();
        assert_eq!(
            e(&[("action", "deny")]).for_api(),
            "action = \"deny\": use allow, monitor, block or abandoned"
        );
        assert_eq!(
            e(&[("action", "deny")]).for_cli(),
            "--action \"deny\": use allow, monitor, block or abandoned"
        );
        assert!(
            e(&[("reason", "blocked")])
                .problem
                .starts_with("not a reason code")
        );
        assert_eq!(
            e(&[("since", "yesterday")]).problem,
            "write an RFC 3339 time (2026-11-20T09:00:00Z) or a duration back from now (24h)"
        );
        assert!(
            e(&[("colour", "red")])
                .problem
                .starts_with("unknown filter")
        );
        assert_eq!(
            e(&[("user", "a"), ("user", "b")]).problem,
            "given twice; give each filter once"
        );
        assert_eq!(
            e(&[("ai_host", "")]).for_cli(),
            "--ai-host \"\": empty; give a value, or - for records without ai_host"
        );
        assert!(parse(&[("reason", "default_action"), ("kind", "tunnel")]).is_ok());
    }

    #[test]
    fn a_limit_keeps_the_newest_records_from_a_stream() {
        let log: String = (1..=5)
            .map(|i| format!("{{\"seq\":{i},\"user\":\"u{}\"}}\n", i % 2))
            .collect();
        let mut out = Vec::new();
        let tally = run(
            log.as_bytes(),
            &parse(&[("user", "u1")]).unwrap(),
            &Output::Records { limit: Some(2) },
            Format::Json,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"seq\":3,\"user\":\"u1\"}\n{\"seq\":5,\"user\":\"u1\"}\n"
        );
        assert_eq!((tally.matched, tally.cut), (2, true));
    }

    /// A call's line: `seq`, `id`, `kind`, user, action, reason; decisions of forwarded
    /// calls say `outcome_follows`.
    fn call_line(seq: u64, id: &str, kind: &str, user: &str, action: &str, reason: &str) -> String {
        let follows = if kind == "request" && action != "block" {
            ",\"outcome_follows\":true"
        } else {
            ""
        };
        // A slim outcome has no `client`; a revised one is written whole (audit/outcome.rs).
        let client = if kind == "outcome" && reason != "late_body_signal" {
            ""
        } else {
            "\"client\":\"10.0.0.1:1\","
        };
        format!(
            "{{\"v\":1,\"seq\":{seq},\"time\":\"2026-11-{:02}T10:00:00.000Z\",\"id\":\"{id}\",\"kind\":\"{kind}\",{client}\"user\":\"{user}\",\"vendor\":\"openai\",\"path\":\"/v1/p{}\",\"action\":\"{action}\",\"reason\":\"{reason}\",\"rule\":null{follows}}}\n",
            1 + seq / 600,
            // The outcome keeps the decision's path: the path goes with the call.
            id[1..].parse::<u64>().unwrap() % 7
        )
    }

    /// The page a plain scan of every line gives, newest first: what the index and the line
    /// test must not change.
    fn reference(files: &[&str], filter: &Filter, before: Option<u64>, limit: usize) -> Vec<u64> {
        let mut calls = super::super::calls::NewestFirst::default();
        let mut rows = Vec::new();
        for e in files
            .iter()
            .flat_map(|f| f.lines().rev().collect::<Vec<_>>())
            .filter_map(Entry::parse)
        {
            calls.push(e);
            rows.extend(std::iter::from_fn(|| calls.ready()));
        }
        rows.extend(calls.finish());
        rows.into_iter()
            .filter(|e| before.is_none_or(|c| e.seq().unwrap() < c) && filter.accepts(e))
            .take(limit)
            .map(|e| e.seq().unwrap())
            .collect()
    }

    #[test]
    fn pages_come_newest_first_across_rotated_files_and_the_index_changes_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        // Calls with a decision and an outcome some records later, denies, a rare user, and a
        // call whose outcome was revised to a block (late_body_signal) in a later block.
        let mut lines: Vec<String> = Vec::new();
        let mut pending: Vec<(u64, String, String)> = Vec::new();
        // The first forwarded call from seq 1000 on: its outcome, at seq 3100, is revised.
        let mut revised: Option<String> = None;
        for seq in 1..=5000u64 {
            if let Some(i) = pending.iter().position(|(due, _, _)| *due == seq) {
                let (_, id, user) = pending.remove(i);
                let (action, reason) = if revised.as_ref() == Some(&id) {
                    ("block", "late_body_signal")
                } else {
                    ("allow", "rule_matched")
                };
                lines.push(call_line(seq, &id, "outcome", &user, action, reason));
                continue;
            }
            let user = if seq % 997 == 0 {
                "rare".to_string()
            } else {
                format!("u{}", seq % 40)
            };
            if seq % 5 == 0 {
                lines.push(call_line(
                    seq,
                    &format!("c{seq}"),
                    "request",
                    &user,
                    "block",
                    "rule_matched",
                ));
            } else {
                let id = format!("c{seq}");
                let due = if seq >= 1000 && revised.is_none() {
                    revised = Some(id.clone());
                    3100
                } else {
                    seq + 3 + seq % 4
                };
                if pending.iter().all(|(d, _, _)| *d != due) && due <= 5000 {
                    pending.push((due, id.clone(), user.clone()));
                    lines.push(call_line(
                        seq,
                        &id,
                        "request",
                        &user,
                        "allow",
                        "rule_matched",
                    ));
                } else {
                    lines.push(
                        call_line(seq, &id, "request", &user, "allow", "default_action")
                            .replace(",\"outcome_follows\":true", ""),
                    );
                }
            }
        }
        let revised = revised.unwrap();
        let decision_seq: u64 = revised[1..].parse().unwrap();
        // Rotated at seq 2101: the older file, then the live one.
        let (old, live) = lines.split_at(2100);
        let (old, live) = (old.concat(), live.concat());
        std::fs::write(dir.path().join("audit.000000000001.jsonl"), &old).unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &live).unwrap();
        let files = [live.as_str(), old.as_str()];

        let filters: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("action", "block")],
            vec![("user", "rare")],
            vec![("action", "allow")],
            vec![("user", "u3"), ("reason", "rule_matched")],
            vec![("until", "2026-11-03T00:00:00Z")],
            vec![
                ("since", "2026-11-08T00:00:00Z"),
                ("until", "2026-11-09T00:00:00Z"),
            ],
            vec![("id", revised.as_str())],
            vec![("path", "/v1/p3")],
            vec![("rule", "-"), ("kind", "request")],
        ];
        for params in &filters {
            let filter = parse(params).unwrap();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                let (page, next) = newest_first(&path, &filter, cursor, 300).unwrap();
                let seqs: Vec<u64> = page.iter().map(|e| e.seq().unwrap()).collect();
                assert_eq!(
                    seqs,
                    reference(&files, &filter, cursor, 300),
                    "{params:?} from {cursor:?}"
                );
                pages += 1;
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            assert!(pages >= 1);
        }
        // The revised call: its decision (an allow) is never shown as an open call.
        let allow = newest_first(
            &path,
            &parse(&[("id", revised.as_str())]).unwrap(),
            None,
            10,
        )
        .unwrap()
        .0;
        assert_eq!(allow.len(), 1);
        assert_eq!(allow[0].text("action"), "block");
        assert_eq!(allow[0].text("kind"), "request");
        // The call's own records, as written: its outcome (live file), then its decision
        // (the rotated one); a manager's scope without its user finds nothing.
        let id = parse(&[("id", revised.as_str())]).unwrap();
        let parts = call_records(&path, &id, 16).unwrap();
        let kinds: Vec<(String, u64)> = parts
            .iter()
            .map(|e| (e.text("kind").into_owned(), e.seq().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("outcome".to_string(), 3100),
                ("request".to_string(), decision_seq)
            ]
        );
        let scoped = Filter {
            users: Some(Arc::new(HashSet::from(["someone".to_string()]))),
            ..id
        };
        assert!(call_records(&path, &scoped, 16).unwrap().is_empty());
        // Every row of a window, as the Overview counts them: the rows a page would list.
        let window = parse(&[("since", "2026-11-08T00:00:00Z")]).unwrap();
        let mut rows = Vec::new();
        each_row(&path, &window, |r| rows.push(r.seq().unwrap())).unwrap();
        assert_eq!(rows, reference(&files, &window, None, usize::MAX));
        // The index files are beside the log; they are derived, and rebuilt when deleted.
        assert!(dir.path().join("audit.jsonl.index").exists());
        assert!(dir.path().join("audit.000000000001.jsonl.index").exists());
        // A query from the start reads both files, oldest first.
        let mut out = Vec::new();
        let rare = parse(&[("user", "rare")]).unwrap();
        let (tally, _) = run_page(
            &path,
            &rare,
            &Output::Records { limit: None },
            None,
            Format::Json,
            &mut out,
        )
        .unwrap();
        let mut seqs: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| entry(l).seq().unwrap())
            .collect();
        seqs.reverse();
        assert_eq!(seqs, reference(&files, &rare, None, 100));
        assert_eq!(tally.matched, seqs.len());
        assert!(seqs.iter().any(|s| *s < 2100) && seqs.iter().any(|s| *s > 2100));
    }

    #[test]
    fn group_by_names_must_be_record_fields() {
        assert_eq!(
            Output::parse_group_by("tool, user").unwrap(),
            vec!["tool", "user"]
        );
        assert!(
            Output::parse_group_by("tool,usr")
                .unwrap_err()
                .starts_with("\"usr\" is not a record field")
        );
    }
}
