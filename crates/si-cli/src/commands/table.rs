//! Tables for the terminal: plain aligned columns, no borders.

use std::io::{self, Write};

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Row, Table};

/// A borderless table of `rows` under `header` (none when empty), its columns two
/// spaces apart; the columns numbered in `right` (figures) are right-aligned.
pub(crate) fn plain<R: Into<Row>>(
    header: &[&str],
    rows: impl IntoIterator<Item = R>,
    right: &[usize],
) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    table.add_rows(rows);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Writes `table`, each line after `indent` and without trailing spaces.
pub(crate) fn write(out: &mut impl Write, table: &Table, indent: &str) -> io::Result<()> {
    for line in table.lines() {
        writeln!(out, "{indent}{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_borders() {
        let rows = [
            ["gateway", "ok", "1.5ms"],
            ["tiny-llama-1b-8080", "down", "-"],
        ];
        let mut out = Vec::new();
        let table = plain(&["NAME", "STATE", "LATENCY"], rows, &[2]);
        write(&mut out, &table, "  ").unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "  NAME                STATE  LATENCY\n  \
             gateway             ok       1.5ms\n  \
             tiny-llama-1b-8080  down         -\n"
        );
    }
}
