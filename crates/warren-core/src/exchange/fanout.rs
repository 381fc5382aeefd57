//! Fanout routing: every binding, key ignored.

use super::{BindingId, ExchangeRouter, ExchangeType, RouteInput};
use crate::error::Result;
use crate::value::Table;

/// The `fanout` type.
pub struct Fanout;

impl ExchangeType for Fanout {
    fn name(&self) -> &str {
        "fanout"
    }
    fn routes_by_key_only(&self) -> bool {
        true
    }
    fn create(&self, _args: &Table) -> Result<Box<dyn ExchangeRouter>> {
        Ok(Box::new(FanoutRouter::default()))
    }
}

#[derive(Default)]
struct FanoutRouter {
    all: Vec<BindingId>,
}

impl ExchangeRouter for FanoutRouter {
    fn bind(&mut self, id: BindingId, _key: &str, _args: &Table) -> Result<()> {
        self.all.push(id);
        Ok(())
    }
    fn unbind(&mut self, id: BindingId, _key: &str, _args: &Table) {
        self.all.retain(|b| *b != id);
    }
    fn route(&self, _input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()> {
        out.extend_from_slice(&self.all);
        Ok(())
    }
}
