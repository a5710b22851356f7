//! Parquet datasets: one document per row, the text of one column. Training sets often ship
//! as Parquet (dataset hubs, Spark and pandas exports), so a scan that reads only JSON Lines
//! would make IT convert them first. Rows are read with the `parquet` crate's record reader
//! (no Arrow), projected to the text column and the `id` column, so other columns are never
//! decoded.

use std::path::Path;

use anyhow::{Context, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::sources::{Document, Origin, Tally};

/// Whether the file's name says Parquet.
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// The rows of a Parquet file: `field` names a top-level column (default `text`), and a column
/// `id`, if there is one, names each row. A row's `line` in the report is its 1-based number.
pub fn rows(
    path: &Path,
    field: &str,
    tally: &mut Tally,
    mut each: impl FnMut(Document) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("opening {shown}"))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{shown}: not a readable Parquet file"))?;
    let schema = reader.metadata().file_metadata().schema();
    let columns = schema.get_fields();
    let Some(text) = columns.iter().find(|c| c.name() == field) else {
        let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
        bail!(
            "{shown}: no column `{field}` (its columns: {}); name the text column with --jsonl-field",
            names.join(", ")
        );
    };
    if !text.is_primitive() {
        bail!(
            "{shown}: column `{field}` is nested (a list or a struct); name a column of text with --jsonl-field"
        );
    }
    let mut projected = vec![text.clone()];
    if field != "id"
        && let Some(id) = columns
            .iter()
            .find(|c| c.name() == "id" && c.is_primitive())
    {
        projected.push(id.clone());
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(projected)
        .build()
        .with_context(|| format!("{shown}: projecting column `{field}`"))?;
    let iter = reader
        .get_row_iter(Some(projection))
        .with_context(|| format!("{shown}: reading its rows"))?;
    for (i, row) in iter.enumerate() {
        let n = i + 1;
        let row = row.with_context(|| format!("{shown}: row {n} cannot be read"))?;
        let mut text = String::new();
        let mut id = None;
        for (name, value) in row.get_column_iter() {
            let value = as_text(value);
            if name == field {
                text = value.unwrap_or_default();
            } else {
                id = value;
            }
        }
        tally.documents += 1;
        tally.bytes += text.len() as u64;
        each(Document {
            origin: Origin::Record {
                path: shown.clone(),
                line: n,
                id,
            },
            text,
            line_map: None,
        })?;
    }
    Ok(())
}

/// A cell as text: strings as they are, UTF-8 byte arrays decoded, other values printed;
/// `None` for a null.
fn as_text(value: &Field) -> Option<String> {
    match value {
        Field::Null => None,
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => Some(String::from_utf8_lossy(b.data()).into_owned()),
        other => Some(other.to_string()),
    }
}
