//! Human tables by default, JSON with `--json`.

use serde_json::Value;

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Print `rows` as an aligned table of the given columns (JSON pointers).
pub fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let data: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(_, ptr)| cell(r.pointer(ptr).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            data.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
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
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| h.to_uppercase()).collect())
    );
    for r in data {
        println!("{}", line(r));
    }
}

/// Print one record as `key: value` lines.
pub fn record(v: &Value) {
    if let Value::Object(map) = v {
        let w = map.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, val) in map {
            let s = match val {
                Value::Object(_) | Value::Array(_) if !matches!(val, Value::Array(a) if a.iter().all(|x| x.is_string())) => {
                    serde_json::to_string(val).unwrap_or_default()
                }
                other => cell(other),
            };
            println!("{k:<w$}  {s}");
        }
    } else {
        println!("{}", cell(v));
    }
}
