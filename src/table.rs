//! Text tables for a terminal: columns as wide as their widest cell, so long values never shift
//! the columns after them, and every cell made safe to print. Log fields come from clients (a
//! user name, a path, a workflow tag): a control character or a bidirectional override in one
//! could move the cursor, recolour the terminal or make a line read differently from what it
//! holds.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use unicode_width::UnicodeWidthStr;

/// `s` with every control character, and every invisible character that reorders or hides text,
/// written as an escape (`\n`, `\u{1b}`, `\u{202e}`).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_to_print) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_to_print(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn unsafe_to_print(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' // zero-width characters, direction marks
            | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2064}' // invisible operators
            | '\u{2066}'..='\u{2069}' // bidirectional isolates
            | '\u{feff}')
}

/// Write `header` and `rows` with aligned columns, two spaces apart, without trailing spaces.
pub fn write(out: &mut impl Write, header: &[String], rows: &[Vec<String>]) -> std::io::Result<()> {
    let escaped: Vec<Vec<Cow<'_, str>>> = std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|row| row.iter().map(|c| escape(c)).collect())
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &escaped {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let mut line = String::new();
    for row in &escaped {
        line.clear();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - cell.width()));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn render(header: &[&str], rows: &[&[&str]]) -> String {
        let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        let mut out = Vec::new();
        write(&mut out, &header, &rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_fit_the_longest_value_and_wide_characters() {
        assert_eq!(
            render(
                &["USER", "TOOL", "N"],
                &[
                    &["a-very-long-user-name@example.com", "x", "1"],
                    &["李雷", "claude-code", "22"]
                ]
            ),
            "USER                               TOOL         N\n\
             a-very-long-user-name@example.com  x            1\n\
             李雷                               claude-code  22\n"
        );
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(
            render(&["A", "B"], &[&["x\ty", "z"]]),
            "A     B\nx\\ty  z\n"
        );
    }
}
