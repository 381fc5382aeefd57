//! Field tables: amq-protocol's parsed arguments (declare, bind, consume)
//! converted to the core's [`Table`].

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use warren_core::{Table, Value};

fn to_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(x) => Value::I8(*x),
        AMQPValue::ShortShortUInt(x) => Value::U8(*x),
        AMQPValue::ShortInt(x) => Value::I16(*x),
        AMQPValue::ShortUInt(x) => Value::U16(*x),
        AMQPValue::LongInt(x) => Value::I32(*x),
        AMQPValue::LongUInt(x) => Value::U32(*x),
        AMQPValue::LongLongInt(x) => Value::I64(*x),
        AMQPValue::Float(x) => Value::F32(*x),
        AMQPValue::Double(x) => Value::F64(*x),
        AMQPValue::DecimalValue(d) => Value::Decimal(d.scale, d.value),
        AMQPValue::ShortString(s) => Value::str(s.as_str()),
        AMQPValue::LongString(s) => Value::Str(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_value).collect()),
        AMQPValue::Timestamp(t) => Value::Timestamp(*t),
        AMQPValue::FieldTable(t) => Value::Table(to_table(t)),
        AMQPValue::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Void,
    }
}

/// Convert declare/bind/consume arguments to the core's table type.
pub fn to_table(t: &FieldTable) -> Table {
    Table(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), to_value(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::parsing::parse_field_table;
    use amq_protocol::types::{ByteArray, DecimalValue, LongString};
    use bytes::BytesMut;

    fn every_type() -> FieldTable {
        let mut inner = FieldTable::default();
        inner.insert("deep".into(), AMQPValue::LongInt(-7));
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::ShortInt(-300),
            AMQPValue::ShortUInt(300),
            AMQPValue::LongInt(-70_000),
            AMQPValue::LongUInt(70_000),
            AMQPValue::LongLongInt(-5_000_000_000),
            AMQPValue::Float(1.5),
            AMQPValue::Double(-2.25),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
            AMQPValue::LongString(LongString::from("long")),
            AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::LongInt(1)].into()),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldTable(inner),
            AMQPValue::ByteArray(ByteArray::from(&b"\x00\x01"[..])),
            AMQPValue::Void,
        ];
        let mut t = FieldTable::default();
        for (i, v) in values.into_iter().enumerate() {
            t.insert(format!("k{i:02}").into(), v);
        }
        t
    }

    fn wire(t: &FieldTable) -> Vec<u8> {
        gen_field_table(t)(amq_protocol::frame::WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    /// What a client's library writes, the core reads as our conversion says.
    #[test]
    fn conversion_agrees_with_the_core_reading_the_wire() {
        let t = every_type();
        let (decoded, _) = Table::decode(&wire(&t)).unwrap();
        assert_eq!(to_table(&t), decoded);
    }

    /// Converted, encoded by the core and parsed by amq-protocol: the same table.
    #[test]
    fn round_trip_through_the_core_encoding() {
        let t = every_type();
        let mut out = BytesMut::new();
        to_table(&t).encode(&mut out);
        let (_, back) = parse_field_table(&out[..]).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn short_strings_become_strings() {
        let mut t = FieldTable::default();
        t.insert("s".into(), AMQPValue::ShortString("v".into()));
        assert_eq!(to_table(&t).get("s").and_then(|v| v.as_str()), Some("v"));
    }
}
