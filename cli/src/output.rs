//! `-o table|json|yaml`: one value, printed the way the user asked.

use serde::Serialize;

use crate::cli::Format;

/// Prints `value` as JSON or YAML, or as the table `rows` (header first) for `table`.
pub fn print<T: Serialize>(format: Format, value: &T, rows: impl FnOnce() -> Vec<Vec<String>>) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("CLI output serialises")
        ),
        Format::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(value).expect("CLI output serialises")
        ),
        Format::Table => print!("{}", table(&rows())),
    }
}

/// Left-aligned columns separated by two spaces, like kubectl.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let rows = vec![
            vec!["JOB".to_string(), "STATE".to_string()],
            vec!["a-long-job".to_string(), "running".to_string()],
        ];
        assert_eq!(table(&rows), "JOB         STATE\na-long-job  running\n");
    }
}
