//! Direct routing: exact key match through one hash lookup.

use std::collections::HashMap;

use super::{BindingId, ExchangeRouter, ExchangeType, RouteInput};
use crate::error::Result;
use crate::value::Table;

/// The `direct` type; also serves the default exchange.
pub struct Direct;

impl ExchangeType for Direct {
    fn name(&self) -> &str {
        "direct"
    }
    fn routes_by_key_only(&self) -> bool {
        true
    }
    fn create(&self, _args: &Table) -> Result<Box<dyn ExchangeRouter>> {
        Ok(Box::new(DirectRouter::default()))
    }
}

#[derive(Default)]
struct DirectRouter {
    by_key: HashMap<Box<[u8]>, Vec<BindingId>>,
}

impl ExchangeRouter for DirectRouter {
    fn bind(&mut self, id: BindingId, key: &str, _args: &Table) -> Result<()> {
        self.by_key
            .entry(key.as_bytes().into())
            .or_default()
            .push(id);
        Ok(())
    }
    fn unbind(&mut self, id: BindingId, key: &str, _args: &Table) {
        if let Some(v) = self.by_key.get_mut(key.as_bytes()) {
            v.retain(|b| *b != id);
            if v.is_empty() {
                self.by_key.remove(key.as_bytes());
            }
        }
    }
    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()> {
        if let Some(v) = self.by_key.get(input.routing_key) {
            out.extend_from_slice(v);
        }
        Ok(())
    }
}
