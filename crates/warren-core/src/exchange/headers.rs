//! Headers routing: bindings match on message headers with `x-match` set to
//! `all` (default), `any`, `all-with-x` or `any-with-x`, as RabbitMQ does.

use super::{BindingId, ExchangeRouter, ExchangeType, RouteInput};
use crate::error::{CoreError, Result};
use crate::value::{Table, Value};

/// The `headers` type (amq.headers and amq.match).
pub struct Headers;

impl ExchangeType for Headers {
    fn name(&self) -> &str {
        "headers"
    }
    fn create(&self, _args: &Table) -> Result<Box<dyn ExchangeRouter>> {
        Ok(Box::new(HeadersRouter::default()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

struct Rule {
    id: BindingId,
    mode: Mode,
    args: Vec<(String, Value)>,
}

#[derive(Default)]
struct HeadersRouter {
    rules: Vec<Rule>,
}

fn parse_mode(args: &Table) -> Result<Mode> {
    match args.get("x-match") {
        None => Ok(Mode::All),
        Some(v) => match v.as_str() {
            Some("all") => Ok(Mode::All),
            Some("any") => Ok(Mode::Any),
            Some("all-with-x") => Ok(Mode::AllWithX),
            Some("any-with-x") => Ok(Mode::AnyWithX),
            _ => Err(CoreError::PreconditionFailed(format!(
                "Invalid x-match field value {v:?}; expected all, any, all-with-x, or any-with-x"
            ))),
        },
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Rule {
    fn matches(&self, headers: Option<&Table>) -> bool {
        let with_x = matches!(self.mode, Mode::AllWithX | Mode::AnyWithX);
        let any = matches!(self.mode, Mode::Any | Mode::AnyWithX);
        for (k, want) in &self.args {
            if k == "x-match" || (!with_x && k.starts_with("x-")) {
                continue;
            }
            let got = headers.and_then(|h| h.get(k));
            let ok = match (want, got) {
                (_, None) => false,
                (Value::Void, Some(_)) => true,
                (w, Some(g)) => values_equal(w, g),
            };
            if any && ok {
                return true;
            }
            if !any && !ok {
                return false;
            }
        }
        // `all` over nothing matches everything; `any` over nothing matches nothing.
        !any
    }
}

impl ExchangeRouter for HeadersRouter {
    fn bind(&mut self, id: BindingId, _key: &str, args: &Table) -> Result<()> {
        let mode = parse_mode(args)?;
        self.rules.push(Rule {
            id,
            mode,
            args: args.0.clone(),
        });
        Ok(())
    }
    fn unbind(&mut self, id: BindingId, _key: &str, _args: &Table) {
        self.rules.retain(|r| r.id != id);
    }
    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let headers = input.message.and_then(|m| m.headers());
        for r in &self.rules {
            if r.matches(headers.as_ref()) {
                out.push(r.id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(args: &[(&str, Value)]) -> Rule {
        let t = Table(
            args.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        Rule {
            id: 0,
            mode: parse_mode(&t).unwrap(),
            args: t.0,
        }
    }

    #[test]
    fn all_and_any() {
        let h = Table(vec![
            ("format".into(), Value::str("pdf")),
            ("type".into(), Value::I32(1)),
        ]);
        let all = rule(&[("format", Value::str("pdf")), ("type", Value::I64(1))]);
        assert!(all.matches(Some(&h)));
        let all_miss = rule(&[("format", Value::str("pdf")), ("x", Value::I64(1))]);
        assert!(!all_miss.matches(Some(&h)));
        let any = rule(&[
            ("x-match", Value::str("any")),
            ("format", Value::str("zip")),
            ("type", Value::U8(1)),
        ]);
        assert!(any.matches(Some(&h)));
        let any_none = rule(&[
            ("x-match", Value::str("any")),
            ("format", Value::str("zip")),
        ]);
        assert!(!any_none.matches(Some(&h)));
        assert!(!any_none.matches(None));
        let empty_all = rule(&[]);
        assert!(empty_all.matches(None));
        let presence = rule(&[("format", Value::Void)]);
        assert!(presence.matches(Some(&h)));
        let x_ignored = rule(&[("x-foo", Value::str("1"))]);
        assert!(x_ignored.matches(None));
        let x_used = rule(&[
            ("x-match", Value::str("all-with-x")),
            ("x-foo", Value::str("1")),
        ]);
        assert!(!x_used.matches(None));
    }
}
