//! The output: one Markdown table row per scenario, for AMQP and MQTT,
//! and the lines of the idle-connection scenarios.

use crate::amqp_load::Outcome;
use crate::args::Args;
use crate::mqtt;
use crate::mqtt_transport::Target;
use crate::scenarios::Spec;

/// Broker CPU and RSS cells, or dashes without a pid.
fn usage_cells(broker: Option<(f64, u64)>) -> (String, String) {
    broker
        .map(|(c, r)| {
            (
                format!("{:.0}%", c * 100.0),
                format!("{:.0}", r as f64 / 1048576.0),
            )
        })
        .unwrap_or(("-".into(), "-".into()))
}

/// The header of the AMQP table.
pub fn amqp_header() {
    println!("| broker | scenario | published msg/s | delivered msg/s | confirmed msg/s | p50 us | p99 us | p99.9 us | broker CPU | broker RSS MiB | generator CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
}

/// One AMQP scenario's row.
pub fn amqp_row(args: &Args, spec: &Spec, o: &Outcome) {
    let (cpu, rss) = usage_cells(o.broker);
    let confirmed = if spec.confirms.is_some() {
        format!("{:.0}", o.confirmed as f64 / o.secs)
    } else {
        "-".into()
    };
    println!(
        "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0}% |",
        args.label,
        spec.name,
        o.published as f64 / o.secs,
        o.delivered as f64 / o.secs,
        confirmed,
        o.p50,
        o.p99,
        o.p999,
        cpu,
        rss,
        o.own_cpu * 100.0
    );
}

/// The header of the MQTT table.
pub fn mqtt_header() {
    println!("| broker | scenario | published msg/s | delivered msg/s | p50 us | p99 us | broker CPU | broker RSS MiB | generator CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// The broker column of an MQTT row: the label, plus "ws" over WebSocket.
pub fn label(args: &Args, target: &Target) -> String {
    if target.ws {
        format!("{} ws", args.label)
    } else {
        args.label.clone()
    }
}

/// One MQTT scenario's row.
pub fn mqtt_row(label: &str, spec: &mqtt::Spec, o: &mqtt::Outcome) {
    let (cpu, rss) = usage_cells(o.broker);
    println!(
        "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.0}% |",
        label,
        spec.name,
        o.published,
        o.delivered,
        o.p50,
        o.p99,
        cpu,
        rss,
        o.own_cpu * 100.0
    );
}

/// The row of a scenario that failed.
pub fn failed(args: &Args, name: &str, e: &anyhow::Error) {
    failed_labelled(&args.label, name, e);
}

/// The row of a scenario that failed, under `label`.
pub fn failed_labelled(label: &str, name: &str, e: &anyhow::Error) {
    println!("| {label} | {name} | failed: {e:#} |");
}

/// AMQP idle connections: broker RSS growth, when the pid is known.
pub fn amqp_idle(args: &Args, rss: Option<(u64, u64)>) {
    match rss {
        Some((a, b)) => println!(
            "| {} | idle-connections | {} connections | RSS +{:.1} MiB | {:.1} KiB per connection |",
            args.label,
            args.idle_connections,
            (b.saturating_sub(a)) as f64 / 1048576.0,
            (b.saturating_sub(a)) as f64 / 1024.0 / args.idle_connections as f64
        ),
        None => println!(
            "| {} | idle-connections | {} opened | (pass --pid for RSS) |",
            args.label, args.idle_connections
        ),
    }
}

/// MQTT idle connections: KiB of broker RSS per connection.
pub fn mqtt_idle(label: &str, args: &Args, kib: Option<f64>) {
    match kib {
        Some(kib) => println!(
            "| {label} | mqtt-idle | {} connections | {kib:.2} KiB per connection |",
            args.idle_connections
        ),
        None => println!("| {label} | mqtt-idle | (pass --pid for RSS) |"),
    }
}

/// A QoS 2 publish-rate row: completed flows per second and broker CPU.
pub fn mqtt_qos2(label: &str, name: &str, publishers: usize, o: &crate::mqtt_qos2::Outcome) {
    let cpu = o
        .broker
        .map_or("-".to_string(), |(c, _)| format!("{:.0}%", c * 100.0));
    println!(
        "| {label} | {name} | {publishers} publishers | {:.0} msg/s | broker CPU {cpu} |",
        o.rate
    );
}

/// The `retained` scenario: fill rate, exact-topic latency, `#` stream rate.
pub fn retained(args: &Args, o: &crate::retained::Outcome) {
    let mib = |b: u64| b as f64 / 1048576.0;
    let rss = match o.rss {
        Some((fill, peak)) => format!(
            "{:.0} MiB after fill, {:.0} MiB peak during #",
            mib(fill),
            mib(peak)
        ),
        None => "(pass --pid for RSS)".into(),
    };
    println!(
        "| {} | retained | {} topics | fill {:.0} msg/s | exact SUBSCRIBE->message p50 {} us p99 {} us ({} subscribes) | # {:.0} msg/s | {rss} |",
        args.label, o.topics, o.fill_rate, o.exact.0, o.exact.1, o.subscribes, o.all_rate
    );
}
