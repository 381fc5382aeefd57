//! Field tables: the typed key/value maps that carry message headers and
//! declare arguments. The wire codec follows RabbitMQ's reading of AMQP 0-9-1
//! (the "errata" type letters), because that is what every client sends.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// One typed value of a field table or array.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`: scale, value
    Decimal(u8, u32),
    /// `S`: bytes, usually UTF-8
    Str(Bytes),
    /// `A`
    Array(Vec<Value>),
    /// `T`: seconds since the epoch
    Timestamp(u64),
    /// `F`
    Table(Table),
    /// `x`
    Bytes(Bytes),
    /// `V`
    Void,
}

impl Value {
    /// The value as an integer, for arguments such as `x-message-ttl` that
    /// clients send with whatever integer width their language picked.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::I8(v) => v.into(),
            Value::U8(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I64(v) => v,
            Value::Timestamp(v) => i64::try_from(v).ok()?,
            Value::F64(v) if v.fract() == 0.0 => v as i64,
            Value::F32(v) if v.fract() == 0.0 => v as i64,
            _ => return None,
        })
    }

    /// The value as text, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Build a string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// An ordered field table; order is kept so that re-encoding is faithful.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table(pub Vec<(String, Value)>);

/// The value under `key` in an encoded table (with its length prefix),
/// found without decoding the others: per-message header lookups stay
/// allocation-free for scalar values.
pub fn find_in_table(encoded: &[u8], key: &str) -> Option<Value> {
    let mut outer = Reader::new(encoded);
    let body = outer.long_bytes().ok()?;
    let mut r = Reader::new(body);
    while r.pos < body.len() {
        let k = r.short_str().ok()?;
        if k == key.as_bytes() {
            return r.value(0).ok();
        }
        r.skip_value().ok()?;
    }
    None
}

impl Table {
    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Set `key`, replacing an existing entry.
    pub fn insert(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Decode a table including its 4-byte length prefix.
    pub fn decode(buf: &[u8]) -> Result<(Table, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let t = r.table()?;
        Ok((t, r.pos))
    }

    /// Encode with the 4-byte length prefix. A field whose name is longer
    /// than a short string holds (255 bytes; an MQTT 5 user property can be
    /// longer) is left out: cut, it would name another field.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        for (k, v) in &self.0 {
            let Ok(len) = u8::try_from(k.len()) else {
                tracing::debug!(bytes = k.len(), "table field name over 255 bytes left out");
                continue;
            };
            let k = k.as_bytes();
            out.put_u8(len);
            out.put_slice(k);
            encode_value(v, out);
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn encode_value(v: &Value, out: &mut BytesMut) {
    match v {
        Value::Bool(b) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*b));
        }
        Value::I8(x) => {
            out.put_u8(b'b');
            out.put_i8(*x);
        }
        Value::U8(x) => {
            out.put_u8(b'B');
            out.put_u8(*x);
        }
        Value::I16(x) => {
            out.put_u8(b's');
            out.put_i16(*x);
        }
        Value::U16(x) => {
            out.put_u8(b'u');
            out.put_u16(*x);
        }
        Value::I32(x) => {
            out.put_u8(b'I');
            out.put_i32(*x);
        }
        Value::U32(x) => {
            out.put_u8(b'i');
            out.put_u32(*x);
        }
        Value::I64(x) => {
            out.put_u8(b'l');
            out.put_i64(*x);
        }
        Value::F32(x) => {
            out.put_u8(b'f');
            out.put_f32(*x);
        }
        Value::F64(x) => {
            out.put_u8(b'd');
            out.put_f64(*x);
        }
        Value::Decimal(s, x) => {
            out.put_u8(b'D');
            out.put_u8(*s);
            out.put_u32(*x);
        }
        Value::Str(b) => {
            out.put_u8(b'S');
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        }
        Value::Array(items) => {
            out.put_u8(b'A');
            let start = out.len();
            out.put_u32(0);
            for i in items {
                encode_value(i, out);
            }
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        Value::Timestamp(t) => {
            out.put_u8(b'T');
            out.put_u64(*t);
        }
        Value::Table(t) => {
            out.put_u8(b'F');
            t.encode(out);
        }
        Value::Bytes(b) => {
            out.put_u8(b'x');
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        }
        Value::Void => out.put_u8(b'V'),
    }
}

/// A bounds-checked cursor over wire bytes; every read fails cleanly on
/// truncated input instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub(crate) fn short_str(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    pub(crate) fn long_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(crate) fn table(&mut self) -> Result<Table, DecodeError> {
        let body = self.long_bytes()?;
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while r.pos < body.len() {
            let k = std::str::from_utf8(r.short_str()?)
                .map_err(|_| DecodeError::BadUtf8)?
                .to_string();
            let v = r.value(0)?;
            out.push((k, v));
        }
        Ok(Table(out))
    }

    /// Step over one value without building it.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        let n = match self.u8()? {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'd' | b'T' => 8,
            b'D' => 5,
            b'S' | b'x' | b'A' | b'F' => {
                self.long_bytes()?;
                0
            }
            b'V' => 0,
            other => return Err(DecodeError::UnknownFieldType(other)),
        };
        self.take(n).map(|_| ())
    }

    fn value(&mut self, depth: u32) -> Result<Value, DecodeError> {
        if depth > 64 {
            return Err(DecodeError::TooDeep);
        }
        let tag = self.u8()?;
        Ok(match tag {
            b't' => Value::Bool(self.u8()? != 0),
            b'b' => Value::I8(self.u8()? as i8),
            b'B' => Value::U8(self.u8()?),
            b's' => Value::I16(self.u16()? as i16),
            b'u' => Value::U16(self.u16()?),
            b'I' => Value::I32(self.u32()? as i32),
            b'i' => Value::U32(self.u32()?),
            b'l' => Value::I64(self.u64()? as i64),
            b'f' => Value::F32(f32::from_bits(self.u32()?)),
            b'd' => Value::F64(f64::from_bits(self.u64()?)),
            b'D' => {
                let s = self.u8()?;
                Value::Decimal(s, self.u32()?)
            }
            b'S' => Value::Str(Bytes::copy_from_slice(self.long_bytes()?)),
            b'x' => Value::Bytes(Bytes::copy_from_slice(self.long_bytes()?)),
            b'A' => {
                let body = self.long_bytes()?;
                let mut r = Reader::new(body);
                let mut items = Vec::new();
                while r.pos < body.len() {
                    items.push(r.value(depth + 1)?);
                }
                Value::Array(items)
            }
            b'T' => Value::Timestamp(self.u64()?),
            b'F' => {
                // Nested tables reuse the table reader but count depth.
                let body = self.long_bytes()?;
                let mut r = Reader::new(body);
                let mut out = Vec::new();
                while r.pos < body.len() {
                    let k = std::str::from_utf8(r.short_str()?)
                        .map_err(|_| DecodeError::BadUtf8)?
                        .to_string();
                    out.push((k, r.value(depth + 1)?));
                }
                Value::Table(Table(out))
            }
            b'V' => Value::Void,
            other => return Err(DecodeError::UnknownFieldType(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_name_over_255_bytes_is_left_out_not_cut() {
        let long = "k".repeat(256);
        let t = Table(vec![
            (long.clone(), Value::str("dropped")),
            ("kept".into(), Value::str("v")),
            ("k".repeat(255), Value::str("edge")),
        ]);
        let mut b = BytesMut::new();
        t.encode(&mut b);
        let (back, _) = Table::decode(&b).unwrap();
        assert_eq!(back.get(&long), None);
        assert_eq!(back.get(&long[..255]), Some(&Value::str("edge")));
        assert_eq!(back.get("kept"), Some(&Value::str("v")));
        assert_eq!(back.0.len(), 2);
    }

    #[test]
    fn roundtrip_nested() {
        let mut inner = Table::default();
        inner.insert("n", Value::I64(-5));
        let t = Table(vec![
            ("a".into(), Value::str("x")),
            ("b".into(), Value::Table(inner)),
            (
                "c".into(),
                Value::Array(vec![Value::Bool(true), Value::Void]),
            ),
            ("d".into(), Value::F64(1.5)),
        ]);
        let mut b = BytesMut::new();
        t.encode(&mut b);
        let (back, used) = Table::decode(&b).unwrap();
        assert_eq!(used, b.len());
        assert_eq!(back, t);
    }

    #[test]
    fn find_without_decoding() {
        let mut t = Table::default();
        t.insert("a", Value::str("text"));
        t.insert("n", Value::Array(vec![Value::I32(1)]));
        t.insert("q", Value::U8(2));
        t.insert("d", Value::Decimal(2, 5));
        t.insert("z", Value::Bool(true));
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(find_in_table(&out, "q"), Some(Value::U8(2)));
        assert_eq!(find_in_table(&out, "z"), Some(Value::Bool(true)));
        assert_eq!(find_in_table(&out, "a"), Some(Value::str("text")));
        assert_eq!(find_in_table(&out, "missing"), None);
        assert_eq!(find_in_table(&out[..6], "z"), None);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut b = BytesMut::new();
        Table(vec![("k".into(), Value::str("value"))]).encode(&mut b);
        for cut in 0..b.len() {
            assert!(Table::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
