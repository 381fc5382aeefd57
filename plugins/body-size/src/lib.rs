//! `x-body-size`: routes by message size, something no built-in type can
//! do. The binding key is a byte range `MIN-MAX` (either side may be empty:
//! `-1024`, `1048576-`); a message goes to every binding whose range holds
//! its body length. Typical use: small messages to a fast queue, large ones
//! to a queue whose consumers stream them to object storage.

use warren_plugin::{warren_plugin, Fields, Message, Output, PluginExchange};

/// One exchange's state.
pub struct BodySize {
    ranges: Vec<(u32, u64, u64)>,
}

fn parse_range(key: &str) -> Result<(u64, u64), String> {
    let (a, b) = key
        .split_once('-')
        .ok_or_else(|| format!("binding key '{key}' must look like MIN-MAX"))?;
    let lo = if a.trim().is_empty() {
        0
    } else {
        a.trim()
            .parse()
            .map_err(|_| format!("bad minimum in '{key}'"))?
    };
    let hi = if b.trim().is_empty() {
        u64::MAX
    } else {
        b.trim()
            .parse()
            .map_err(|_| format!("bad maximum in '{key}'"))?
    };
    if lo > hi {
        return Err(format!("empty range '{key}'"));
    }
    Ok((lo, hi))
}

impl PluginExchange for BodySize {
    const TYPE_NAME: &'static str = "x-body-size";

    fn create(_args: Fields<'_>) -> Result<Self, String> {
        Ok(BodySize { ranges: Vec::new() })
    }

    fn bind(&mut self, binding: u32, key: &str, _args: Fields<'_>) -> Result<(), String> {
        let (lo, hi) = parse_range(key)?;
        self.ranges.push((binding, lo, hi));
        Ok(())
    }

    fn unbind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) {
        self.ranges.retain(|r| r.0 != binding);
    }

    fn route(&self, msg: &Message<'_>, out: &mut Output<'_>) {
        for &(id, lo, hi) in &self.ranges {
            if (lo..=hi).contains(&msg.body_len) {
                out.push(id);
            }
        }
    }
}

warren_plugin!("body-size", env!("CARGO_PKG_VERSION"), [BodySize]);

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-1024"), Ok((0, 1024)));
        assert_eq!(parse_range("-10"), Ok((0, 10)));
        assert_eq!(parse_range("5-"), Ok((5, u64::MAX)));
        assert!(parse_range("9-1").is_err());
        assert!(parse_range("big").is_err());
    }
}
