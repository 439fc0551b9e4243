//! `summary.md`: a titled two-column markdown table.

use std::io::Write;

use crate::ReportError;

/// Writes `# title` and a `| metric | value |` table of `rows`.
pub fn write_markdown<W: Write>(mut w: W, title: &str, rows: &[(String, String)]) -> Result<(), ReportError> {
    writeln!(w, "# {title}\n\n| metric | value |\n|---|---|")?;
    for (k, v) in rows {
        writeln!(w, "| {} | {} |", k.replace('|', "\\|"), v.replace('|', "\\|"))?;
    }
    Ok(())
}
