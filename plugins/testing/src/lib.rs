//! Exchange types for Warren's own tests and benchmarks, not for users:
//! `x-plugin-direct` (direct routing through the plugin ABI, to measure the
//! boundary's cost against the built-in) and `x-test-panic` (panics in
//! route when the routing key is `panic`, to prove the broker survives).

use std::collections::HashMap;

use warren_plugin::{warren_plugin, Fields, Message, Output, PluginExchange};

/// Direct routing behind the ABI.
pub struct PluginDirect {
    by_key: HashMap<Vec<u8>, Vec<u32>>,
}

impl PluginExchange for PluginDirect {
    const TYPE_NAME: &'static str = "x-plugin-direct";

    fn create(_args: Fields<'_>) -> Result<Self, String> {
        Ok(PluginDirect {
            by_key: HashMap::new(),
        })
    }
    fn bind(&mut self, binding: u32, key: &str, _args: Fields<'_>) -> Result<(), String> {
        self.by_key
            .entry(key.as_bytes().to_vec())
            .or_default()
            .push(binding);
        Ok(())
    }
    fn unbind(&mut self, binding: u32, key: &str, _args: Fields<'_>) {
        if let Some(v) = self.by_key.get_mut(key.as_bytes()) {
            v.retain(|b| *b != binding);
        }
    }
    fn route(&self, msg: &Message<'_>, out: &mut Output<'_>) {
        if let Some(v) = self.by_key.get(msg.routing_key) {
            for b in v {
                out.push(*b);
            }
        }
    }
}

/// Fanout that panics on the routing key `panic`.
pub struct TestPanic {
    bindings: Vec<u32>,
}

impl PluginExchange for TestPanic {
    const TYPE_NAME: &'static str = "x-test-panic";

    fn create(_args: Fields<'_>) -> Result<Self, String> {
        Ok(TestPanic {
            bindings: Vec::new(),
        })
    }
    fn bind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) -> Result<(), String> {
        self.bindings.push(binding);
        Ok(())
    }
    fn unbind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) {
        self.bindings.retain(|b| *b != binding);
    }
    fn route(&self, msg: &Message<'_>, out: &mut Output<'_>) {
        if msg.routing_key == b"panic" {
            panic!("x-test-panic was asked to panic");
        }
        for b in &self.bindings {
            out.push(*b);
        }
    }
}

warren_plugin!(
    "testing",
    env!("CARGO_PKG_VERSION"),
    [PluginDirect, TestPanic]
);
