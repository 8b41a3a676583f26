//! Output: data to stdout as a table, JSON or YAML; messages to stderr.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints `value` in `format`. A table shows `columns` (header, JSON key) of each item of
/// `value[list]`, or of `value` itself when `list` is empty.
pub fn print(
    format: Format,
    value: &Value,
    list: &str,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    match format {
        Format::Json => crate::cli_print(&serde_json::to_string_pretty(value)?),
        Format::Yaml => crate::cli_print(serde_norway::to_string(value)?.trim_end()),
        Format::Table => {
            let items: Vec<&Value> = if list.is_empty() {
                vec![value]
            } else {
                value[list]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default()
            };
            // Text from the server is data: a control character (an escape sequence, a
            // newline that would forge a row) is printed escaped, never raw.
            let cell = |v: &Value| match v {
                Value::Null => "-".to_owned(),
                Value::String(s) => crate::iam::escape_text(s),
                other => other.to_string(),
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| columns.iter().map(|(_, k)| cell(&i[*k])).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(c, (h, _))| {
                    rows.iter()
                        .map(|r| r[c].len())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let mut out = vec![line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())];
            out.extend(rows.into_iter().map(line));
            crate::cli_print(&out.join("\n"));
        }
    }
    Ok(())
}
