//! AMQP field values to and from JSON, the way RabbitMQ's API shows them.

use bytes::Bytes;
use serde_json::{json, Map, Value as Json};
use warren_core::{Table, Value};

/// AMQP field values as JSON, the way RabbitMQ shows arguments.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Str(b) | Value::Bytes(b) => json!(String::from_utf8_lossy(b)),
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
        Value::Table(t) => table_json(t),
        Value::Void => Json::Null,
        Value::Decimal(s, x) => json!(f64::from(*x) / 10f64.powi(i32::from(*s))),
        other => other.as_i64().map_or(Json::Null, |i| json!(i)),
    }
}

/// A field table as a JSON object.
pub fn table_json(t: &Table) -> Json {
    Json::Object(
        t.iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

/// A JSON value as an AMQP field value: integers become signed 64-bit, as
/// RabbitMQ's API does, so `x-message-ttl` and friends read as numbers.
pub fn json_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Void,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Str(Bytes::copy_from_slice(s.as_bytes())),
        Json::Array(a) => Value::Array(a.iter().map(json_value).collect()),
        Json::Object(o) => Value::Table(object_table(o)),
    }
}

fn object_table(o: &Map<String, Json>) -> Table {
    Table(o.iter().map(|(k, v)| (k.clone(), json_value(v))).collect())
}

/// A JSON object (or null/absent) as a field table.
pub fn json_to_table(j: Option<&Json>) -> Table {
    match j {
        Some(Json::Object(o)) => object_table(o),
        _ => Table::default(),
    }
}
