//! status: version, uptime, memory, descriptors, listeners and totals,
//! from /api/overview and /api/nodes.

use serde_json::{json, Value};

use crate::cli::{Cli, Format};
use crate::client::{Client, CtlError};
use crate::output::cell;

/// `status`.
pub(crate) fn status(cli: &Cli, c: &Client) -> Result<(), CtlError> {
    let o = c.get("/api/overview")?;
    let n = c.get("/api/nodes")?;
    let node = n.get(0).cloned().unwrap_or(Value::Null);
    if cli.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"overview": o, "node": node})).unwrap_or_default()
        );
        return Ok(());
    }
    print_node(&o, &node);
    print_totals(&o);
    Ok(())
}

fn print_node(o: &Value, node: &Value) {
    println!("Status of node {}", cell(&o["node"]));
    println!(
        "Product: {} {}",
        cell(&o["product_name"]),
        cell(&o["product_version"])
    );
    println!(
        "Uptime (seconds): {}",
        node["uptime"].as_u64().unwrap_or(0) / 1000
    );
    println!("Memory used (bytes): {}", cell(&node["mem_used"]));
    println!(
        "File descriptors: {} of {}",
        cell(&node["fd_used"]),
        cell(&node["fd_total"])
    );
    println!("Store bytes: {}", cell(&node["store_bytes"]));
}

fn print_totals(o: &Value) {
    let t = &o["object_totals"];
    let q = &o["queue_totals"];
    println!("Listeners:");
    for l in o["listeners"].as_array().into_iter().flatten() {
        println!(
            "  {} on {}:{}",
            cell(&l["protocol"]),
            cell(&l["ip_address"]),
            cell(&l["port"])
        );
    }
    println!(
        "Totals: {} connections, {} channels, {} queues, {} consumers, {} messages ({} ready, {} unacknowledged)",
        cell(&t["connections"]),
        cell(&t["channels"]),
        cell(&t["queues"]),
        cell(&t["consumers"]),
        cell(&q["messages"]),
        cell(&q["messages_ready"]),
        cell(&q["messages_unacknowledged"])
    );
}
