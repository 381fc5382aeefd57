//! `x-consistent-hash`, compatible with RabbitMQ's plugin: the binding key
//! is an integer weight; messages are spread over bindings in proportion to
//! their weights, and the same hash input always picks the same binding
//! while the bindings do not change. The input is the routing key, or the
//! header named by the exchange argument `hash-header`, or the property named
//! by `hash-property` (message_id, correlation_id, timestamp, ...).
//!
//! Choice by weighted rendezvous hashing: each binding scores
//! `-weight / ln(u)` with `u` a uniform hash of (input, binding); the highest
//! wins. Shares match the weights in expectation, and adding or removing a
//! binding only moves the keys that binding wins or loses.

use warren_plugin::{
    stable_hash, wants, warren_plugin, Fields, Message, Output, PluginExchange, Value,
};

enum Source {
    RoutingKey,
    Header(String),
    Property(String),
}

/// One exchange's state.
pub struct ConsistentHash {
    source: Source,
    bindings: Vec<(u32, f64)>,
}

fn field_bytes(v: Value<'_>, scratch: &mut [u8; 24]) -> usize {
    match v {
        Value::Str(b) => {
            let n = b.len().min(scratch.len());
            scratch[..n].copy_from_slice(&b[..n]);
            n
        }
        Value::Int(i) => {
            scratch[..8].copy_from_slice(&i.to_be_bytes());
            8
        }
        Value::Bool(b) => {
            scratch[0] = u8::from(b);
            1
        }
        Value::Float(f) => {
            scratch[..8].copy_from_slice(&f.to_bits().to_be_bytes());
            8
        }
        Value::Other => 0,
    }
}

impl PluginExchange for ConsistentHash {
    const TYPE_NAME: &'static str = "x-consistent-hash";
    const WANTS: u32 = wants::HEADERS | wants::PROPERTIES;

    fn create(args: Fields<'_>) -> Result<Self, String> {
        let header = args
            .get("hash-header")
            .and_then(|v| v.as_str().map(String::from));
        let property = args
            .get("hash-property")
            .and_then(|v| v.as_str().map(String::from));
        let source = match (header, property) {
            (Some(_), Some(_)) => {
                return Err("hash-header and hash-property are mutually exclusive".into())
            }
            (Some(h), None) => Source::Header(h),
            (None, Some(p)) => Source::Property(p),
            (None, None) => Source::RoutingKey,
        };
        Ok(ConsistentHash {
            source,
            bindings: Vec::new(),
        })
    }

    fn bind(&mut self, binding: u32, key: &str, _args: Fields<'_>) -> Result<(), String> {
        let w: u32 = key
            .trim()
            .parse()
            .map_err(|_| format!("binding key '{key}' must be a positive integer weight"))?;
        if w == 0 {
            return Err("binding weight must be positive".into());
        }
        self.bindings.push((binding, f64::from(w)));
        Ok(())
    }

    fn unbind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) {
        self.bindings.retain(|(b, _)| *b != binding);
    }

    fn route(&self, msg: &Message<'_>, out: &mut Output<'_>) {
        let mut scratch = [0u8; 24];
        let input: &[u8] = match &self.source {
            Source::RoutingKey => msg.routing_key,
            Source::Header(h) => match msg.headers.get(h) {
                Some(Value::Str(b)) => b,
                Some(v) => {
                    let n = field_bytes(v, &mut scratch);
                    &scratch[..n]
                }
                None => return,
            },
            Source::Property(p) => match msg.properties.get(p) {
                Some(Value::Str(b)) => b,
                Some(v) => {
                    let n = field_bytes(v, &mut scratch);
                    &scratch[..n]
                }
                None => return,
            },
        };
        let mut best: Option<(u32, f64)> = None;
        for &(id, w) in &self.bindings {
            let h = stable_hash(input, u64::from(id));
            // Uniform in (0, 1]; ln of it is in (-inf, 0].
            let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let score = -w / u.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((id, score));
            }
        }
        if let Some((id, _)) = best {
            out.push(id);
        }
    }
}

warren_plugin!(
    "consistent-hash",
    env!("CARGO_PKG_VERSION"),
    [ConsistentHash]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_and_keys_are_sticky() {
        let mut x =
            ConsistentHash::create(unsafe { Fields::from_raw(std::ptr::null(), 0) }).unwrap();
        let none = unsafe { Fields::from_raw(std::ptr::null(), 0) };
        for (id, w) in [(0, "1"), (1, "1"), (2, "2"), (3, "4")] {
            x.bind(id, w, none).unwrap();
        }
        let mut counts = [0usize; 4];
        let mut buf = [0u32; 4];
        for i in 0..100_000u32 {
            let key = i.to_string();
            let m = Message {
                routing_key: key.as_bytes(),
                headers: none,
                properties: none,
                body_len: 0,
            };
            let mut o = Output::new(&mut buf);
            x.route(&m, &mut o);
            assert_eq!(o.len(), 1);
            counts[buf[0] as usize] += 1;
            let mut o2 = Output::new(&mut buf[1..]);
            x.route(&m, &mut o2);
            assert_eq!(buf[0], buf[1], "same key, same binding");
        }
        for (i, share) in [1.0 / 8.0, 1.0 / 8.0, 2.0 / 8.0, 4.0 / 8.0]
            .iter()
            .enumerate()
        {
            let got = counts[i] as f64 / 100_000.0;
            assert!(
                (got - share).abs() / share < 0.05,
                "binding {i}: {got} vs {share}"
            );
        }
        assert!(x.bind(9, "heavy", none).is_err());
    }
}
