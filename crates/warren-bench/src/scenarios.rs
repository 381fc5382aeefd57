//! The AMQP scenario table: what each named scenario declares, binds and
//! publishes, and the routing keys it uses.

/// One AMQP scenario.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Name in the output; also names its queues.
    pub name: &'static str,
    /// Exchange published to ("" for the default exchange).
    pub exchange: &'static str,
    /// Exchange type, which also picks the routing keys.
    pub kind: &'static str,
    /// Queues, each with one consumer.
    pub queues: usize,
    /// Bindings per queue.
    pub bindings_per_queue: usize,
    /// Consume without acknowledgements.
    pub no_ack: bool,
    /// basic.qos prefetch of each consumer.
    pub prefetch: u16,
    /// Closed loop: at most this many messages in flight.
    pub window: Option<u64>,
    /// Fixed publish rate (msg/s).
    pub rate: Option<u64>,
    /// Body bytes (at least 8: the send timestamp).
    pub body: usize,
    /// delivery_mode 2.
    pub persistent: bool,
    /// Publisher connections.
    pub publishers: usize,
    /// Outstanding publisher confirms per publisher (None: no confirms).
    pub confirms: Option<u64>,
    /// Durable queues.
    pub durable: bool,
}

/// The defaults every scenario starts from.
const BASE: Spec = Spec {
    name: "",
    exchange: "",
    kind: "",
    queues: 1,
    bindings_per_queue: 0,
    no_ack: true,
    prefetch: 0,
    window: None,
    rate: None,
    body: 16,
    persistent: false,
    publishers: 1,
    confirms: None,
    durable: false,
};

/// Every AMQP scenario, in the order they run.
pub const SCENARIOS: &[Spec] = &[
    Spec {
        name: "1to1-autoack-open",
        ..BASE
    },
    Spec {
        name: "1to1-autoack-closed",
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "1to1-ack-p100-open",
        no_ack: false,
        prefetch: 100,
        ..BASE
    },
    Spec {
        name: "1to1-ack-p100-closed",
        no_ack: false,
        prefetch: 100,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "fanout-4",
        exchange: "bench.fanout",
        kind: "fanout",
        queues: 4,
        bindings_per_queue: 1,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "topic-1000-bindings",
        exchange: "bench.topic",
        kind: "topic",
        queues: 4,
        bindings_per_queue: 250,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "topic-100k-bindings",
        exchange: "bench.topic",
        kind: "topic",
        queues: 4,
        bindings_per_queue: 25_000,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "latency-5k",
        rate: Some(5000),
        ..BASE
    },
    Spec {
        name: "direct-100keys",
        exchange: "bench.direct",
        kind: "direct",
        bindings_per_queue: 100,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "plugin-direct-100keys",
        exchange: "bench.plugin-direct",
        kind: "x-plugin-direct",
        bindings_per_queue: 100,
        window: Some(5000),
        ..BASE
    },
    Spec {
        name: "persistent-16b-1pub",
        persistent: true,
        durable: true,
        confirms: Some(100),
        no_ack: false,
        prefetch: 100,
        ..BASE
    },
    Spec {
        name: "persistent-16b-8pub",
        persistent: true,
        durable: true,
        confirms: Some(100),
        publishers: 8,
        no_ack: false,
        prefetch: 100,
        ..BASE
    },
    Spec {
        name: "persistent-1k-1pub",
        persistent: true,
        durable: true,
        confirms: Some(100),
        body: 1024,
        no_ack: false,
        prefetch: 100,
        ..BASE
    },
    Spec {
        name: "persistent-1k-8pub",
        persistent: true,
        durable: true,
        confirms: Some(100),
        body: 1024,
        publishers: 8,
        no_ack: false,
        prefetch: 100,
        ..BASE
    },
];

/// Routing keys: topic bindings mix `*` and `#`; publishes match one queue each.
pub fn binding_key(spec: &Spec, q: usize, b: usize) -> String {
    match spec.kind {
        "topic" => match b % 3 {
            0 => format!("metrics.q{q}.b{b}.*"),
            1 => format!("metrics.q{q}.b{b}.#"),
            _ => format!("*.q{q}.b{b}.x"),
        },
        // Many keys per queue, published in rotation, so that the channel's
        // one-entry route cache always misses and routing itself is measured.
        "direct" | "x-plugin-direct" => format!("k{q}.{b}"),
        _ => String::new(),
    }
}

/// The routing key of the `n`th publish.
pub fn publish_key(spec: &Spec, n: u64, queue_names: &[String]) -> String {
    match spec.kind {
        "topic" => {
            let q = (n as usize) % spec.queues;
            let b = (n as usize / spec.queues) % spec.bindings_per_queue;
            format!("metrics.q{q}.b{b}.x")
        }
        "fanout" => String::new(),
        "direct" | "x-plugin-direct" => {
            let q = (n as usize) % spec.queues;
            let b = (n as usize / spec.queues) % spec.bindings_per_queue;
            format!("k{q}.{b}")
        }
        _ => queue_names[0].clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn direct_publishes_rotate_over_the_bound_keys() {
        let spec = SCENARIOS
            .iter()
            .find(|s| s.name == "direct-100keys")
            .unwrap();
        let bound: Vec<String> = (0..spec.bindings_per_queue)
            .map(|b| binding_key(spec, 0, b))
            .collect();
        for n in 0..250 {
            assert!(bound.contains(&publish_key(spec, n, &[])));
        }
        let plain = &SCENARIOS[0];
        assert_eq!(publish_key(plain, 7, &["q".into()]), "q");
    }
}
