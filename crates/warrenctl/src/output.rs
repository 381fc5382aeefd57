//! Printing results: rabbitmqctl's aligned tables (header first) or JSON,
//! its column aliases, and the one-line "done" messages.

use std::io::Write;

use serde_json::{json, Value};

use crate::cli::{Cli, Format};
use crate::client::{Client, CtlError};

/// The value of a column: a top-level key, or rabbitmqctl's alias for a
/// nested one.
pub(crate) fn column(item: &Value, col: &str) -> Value {
    let nested = |a: &str, b: &str| item.get(a).and_then(|v| v.get(b)).cloned();
    let found = match col {
        "source_name" => item.get("source").cloned(),
        "source_kind" => Some(json!("exchange")),
        "destination_name" => item.get("destination").cloned(),
        "destination_kind" => item.get("destination_type").cloned(),
        "queue_name" => nested("queue", "name"),
        "channel_pid" | "channel" => nested("channel_details", "name"),
        "connection" => nested("channel_details", "connection_name"),
        "user" if item.get("user").is_none() => item.get("name").cloned(),
        _ => item.get(col).cloned(),
    };
    found.unwrap_or(Value::Null)
}

pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(cell).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Print rows as an aligned table (header first) or as JSON objects.
pub(crate) fn print(format: Format, items: &[Value], columns: &[&str]) {
    let _ = std::io::stdout()
        .lock()
        .write_all(render(format, items, columns).as_bytes());
}

/// The text [`print`] writes.
fn render(format: Format, items: &[Value], columns: &[&str]) -> String {
    if format == Format::Json {
        let rows: Vec<Value> = items
            .iter()
            .map(|i| {
                Value::Object(
                    columns
                        .iter()
                        .map(|c| (c.to_string(), column(i, c)))
                        .collect(),
                )
            })
            .collect();
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|c| cell(&column(i, c))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            rows.iter()
                .map(|r| r[n].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (n, c) in cells.iter().enumerate() {
            if n + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[n]));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(columns.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// List a collection with the chosen or default columns.
pub(crate) fn list(
    cli: &Cli,
    client: &Client,
    path: &str,
    columns: &[String],
    default: &[&str],
    keep: impl Fn(&Value) -> bool,
) -> Result<(), CtlError> {
    let all = client.get(path)?;
    let items: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| keep(i))
        .collect();
    let cols: Vec<&str> = if columns.is_empty() {
        default.to_vec()
    } else {
        columns.iter().map(String::as_str).collect()
    };
    print(cli.format, &items, &cols);
    Ok(())
}

pub(crate) fn done(cli: &Cli, what: String) {
    if cli.format == Format::Json {
        println!("{}", json!({"result": "ok", "message": what}));
    } else {
        println!("{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_aliases_resolve() {
        let items = vec![
            json!({"source": "amq.topic", "destination": "q1", "routing_key": "a.#"}),
            json!({"source": "x", "destination": "longer-queue", "routing_key": ""}),
        ];
        let text = render(
            Format::Table,
            &items,
            &["source_name", "destination_name", "routing_key"],
        );
        assert_eq!(
            text,
            "source_name  destination_name  routing_key\n\
             amq.topic    q1                a.#\n\
             x            longer-queue      \n"
        );
    }

    #[test]
    fn cells_print_lists_and_nulls() {
        assert_eq!(cell(&json!(["a", "b"])), "[a, b]");
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&json!(3)), "3");
        let consumer = json!({"queue": {"name": "q"}, "channel_details": {"name": "c (1)"}});
        assert_eq!(column(&consumer, "queue_name"), json!("q"));
        assert_eq!(column(&consumer, "channel_pid"), json!("c (1)"));
        assert_eq!(column(&json!({"name": "guest"}), "user"), json!("guest"));
    }

    #[test]
    fn json_rows_keep_the_columns_asked_for() {
        let items = vec![json!({"name": "q", "messages": 2, "other": true})];
        let text = render(Format::Json, &items, &["name", "messages"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!([{"name": "q", "messages": 2}]));
    }
}
