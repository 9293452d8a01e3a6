//! Rendering server-side Tables as kubectl does: upper-case headers, columns padded by 3,
//! priority-1 columns only with `-o wide`, an optional leading NAMESPACE column.

use serde_json::Value;

pub struct TablePrinter {
    pub wide: bool,
    pub namespace_column: bool,
    /// Prefix names with `kind.group/` (when several kinds are printed together).
    pub name_prefix: Option<String>,
    pub no_headers: bool,
    /// Indices of the columns to print, from the first Table seen.
    columns: Option<Vec<(usize, String)>>,
}

impl TablePrinter {
    pub fn new(wide: bool, namespace_column: bool) -> Self {
        TablePrinter { wide, namespace_column, name_prefix: None, no_headers: false, columns: None }
    }

    fn learn_columns(&mut self, table: &Value) {
        if self.columns.is_some() {
            return;
        }
        let defs = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
        if defs.is_empty() {
            return;
        }
        self.columns = Some(
            defs.iter()
                .enumerate()
                .filter(|(_, d)| self.wide || d["priority"].as_i64().unwrap_or(0) == 0)
                .map(|(i, d)| (i, d["name"].as_str().unwrap_or("").to_uppercase()))
                .collect(),
        );
    }

    /// Rows (as cells) of a Table; the header is the first row when wanted and `header`.
    pub fn rows(&mut self, table: &Value, header: bool) -> Vec<Vec<String>> {
        self.learn_columns(table);
        let cols = self.columns.clone().unwrap_or_default();
        let mut out = Vec::new();
        if header && !self.no_headers {
            let mut h: Vec<String> = cols.iter().map(|(_, n)| n.clone()).collect();
            if self.namespace_column {
                h.insert(0, "NAMESPACE".into());
            }
            out.push(h);
        }
        for row in table["rows"].as_array().into_iter().flatten() {
            let cells = row["cells"].as_array().cloned().unwrap_or_default();
            let mut r: Vec<String> = cols
                .iter()
                .map(|(i, name)| {
                    let s = cell(cells.get(*i).unwrap_or(&Value::Null));
                    match (&self.name_prefix, name.as_str()) {
                        (Some(p), "NAME") => format!("{p}/{s}"),
                        _ => s,
                    }
                })
                .collect();
            if self.namespace_column {
                let ns = row["object"]["metadata"]["namespace"].as_str().unwrap_or("").to_string();
                r.insert(0, ns);
            }
            out.push(r);
        }
        out
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Align rows into columns separated by at least three spaces.
pub fn align(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An object (or list) as YAML, like `-o yaml`.
pub fn yaml(v: &Value) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_kubectl() {
        let t = json!({
            "columnDefinitions": [{"name": "Name", "priority": 0}, {"name": "Ready", "priority": 0}, {"name": "IP", "priority": 1}],
            "rows": [{"cells": ["web-1", "1/1", "10.0.0.1"], "object": {"metadata": {"namespace": "default"}}}]
        });
        let mut p = TablePrinter::new(false, false);
        assert_eq!(align(&p.rows(&t, true)), "NAME    READY\nweb-1   1/1\n");
        let mut p = TablePrinter::new(true, true);
        assert_eq!(align(&p.rows(&t, true)), "NAMESPACE   NAME    READY   IP\ndefault     web-1   1/1     10.0.0.1\n");
    }
}
