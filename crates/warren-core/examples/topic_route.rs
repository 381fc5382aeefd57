//! Routing cost of the topic exchange alone, without sockets: 100,000 mixed
//! bindings (the warren-bench topic-100k-bindings shape) and, optionally,
//! a pathological binding of many `#` words.
//!
//! usage: cargo run --release -p warren-core --example topic_route [--hashes N]

use std::time::Instant;

use warren_core::exchange::topic::Topic;
use warren_core::exchange::{ExchangeType, RouteInput};
use warren_core::Table;

fn main() {
    let hashes: Option<usize> = std::env::args()
        .skip_while(|a| a != "--hashes")
        .nth(1)
        .and_then(|v| v.parse().ok());
    let mut r = Topic.create(&Table::default()).expect("topic router");
    let (queues, per_queue) = (4usize, 25_000usize);
    let mut id = 0u32;
    for q in 0..queues {
        for b in 0..per_queue {
            let key = match b % 3 {
                0 => format!("metrics.q{q}.b{b}.*"),
                1 => format!("metrics.q{q}.b{b}.#"),
                _ => format!("*.q{q}.b{b}.x"),
            };
            r.bind(id, &key, &Table::default()).expect("bind");
            id += 1;
        }
    }
    if let Some(n) = hashes {
        let key = vec!["#"; n].join(".") + ".z";
        r.bind(id, &key, &Table::default()).expect("bind");
    }
    let keys: Vec<String> = (0..10_000)
        .map(|n| format!("metrics.q{}.b{}.x", n % queues, (n / queues) % per_queue))
        .collect();
    let mut out = Vec::new();
    let rounds = 100;
    let start = Instant::now();
    let mut matched = 0usize;
    for _ in 0..rounds {
        for k in &keys {
            out.clear();
            let input = RouteInput {
                routing_key: k.as_bytes(),
                message: None,
            };
            r.route(&input, &mut out).expect("route");
            matched += out.len();
        }
    }
    let n = rounds * keys.len();
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("100k mixed bindings: {ns:.0} ns per route ({matched} matches over {n} routes)");
    if hashes.is_some() {
        let long = vec!["y"; 127].join(".") + ".z";
        let start = Instant::now();
        out.clear();
        let input = RouteInput {
            routing_key: long.as_bytes(),
            message: None,
        };
        r.route(&input, &mut out).expect("route");
        println!(
            "255-byte key of 128 words against the {}-# binding: {:?} ({} matches)",
            hashes.unwrap_or(0),
            start.elapsed(),
            out.len()
        );
    }
}
