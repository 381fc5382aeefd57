//! `x-random`: each message goes to one bound queue chosen at random
//! (uniformly over bindings), like RabbitMQ's random exchange. Useful to
//! spread work without a consumer-side balancer.

use std::sync::atomic::{AtomicU64, Ordering};

use warren_plugin::{warren_plugin, Fields, Message, Output, PluginExchange};

/// One exchange's state.
pub struct Random {
    bindings: Vec<u32>,
    state: AtomicU64,
}

impl PluginExchange for Random {
    const TYPE_NAME: &'static str = "x-random";

    fn create(_args: Fields<'_>) -> Result<Self, String> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x853c_49e6_748f_ea9b);
        Ok(Random {
            bindings: Vec::new(),
            state: AtomicU64::new(seed | 1),
        })
    }

    fn bind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) -> Result<(), String> {
        self.bindings.push(binding);
        Ok(())
    }

    fn unbind(&mut self, binding: u32, _key: &str, _args: Fields<'_>) {
        self.bindings.retain(|b| *b != binding);
    }

    fn route(&self, _msg: &Message<'_>, out: &mut Output<'_>) {
        if self.bindings.is_empty() {
            return;
        }
        // splitmix64 over a shared counter: lock-free and well spread.
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.push(self.bindings[(z % self.bindings.len() as u64) as usize]);
    }
}

warren_plugin!("random", env!("CARGO_PKG_VERSION"), [Random]);
