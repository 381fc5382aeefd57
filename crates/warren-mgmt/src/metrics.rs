//! GET /metrics in the Prometheus text format (version 0.0.4). Like
//! RabbitMQ's Prometheus endpoint it needs no login, so scrapers work
//! without credentials; bind the listener accordingly.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use warren_core::alarm::AlarmFigures;
use warren_core::registry::Totals;
use warren_core::Broker;

use crate::process::fds;
use crate::MgmtState;

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Protocols that always have a `warren_connections` row, even at zero.
const PROTOCOLS: [&str; 3] = ["AMQP 0-9-1", "MQTT 3.1.1", "MQTT 5.0"];

/// The per-queue families: name, type and help, in the order of
/// [`queue_row`]'s values.
const QUEUE_FAMILIES: [(&str, &str, &str); 11] = [
    (
        "warren_queue_messages_ready",
        "gauge",
        "Messages ready for delivery.",
    ),
    (
        "warren_queue_messages_paged_out",
        "gauge",
        "Ready messages paged out to disk (not in memory).",
    ),
    (
        "warren_queue_message_bytes_paged_out",
        "gauge",
        "Body bytes of ready messages paged out to disk.",
    ),
    (
        "warren_queue_messages_unacked",
        "gauge",
        "Messages delivered and not yet acknowledged.",
    ),
    ("warren_queue_consumers", "gauge", "Consumers of the queue."),
    (
        "warren_queue_messages_published_total",
        "counter",
        "Messages enqueued.",
    ),
    (
        "warren_queue_messages_delivered_total",
        "counter",
        "Messages delivered or fetched with basic.get.",
    ),
    (
        "warren_queue_messages_acked_total",
        "counter",
        "Messages acknowledged.",
    ),
    (
        "warren_queue_publish_rate",
        "gauge",
        "Messages enqueued per second over the last sample.",
    ),
    (
        "warren_queue_deliver_rate",
        "gauge",
        "Messages delivered per second over the last sample.",
    ),
    (
        "warren_queue_ack_rate",
        "gauge",
        "Acknowledgements per second over the last sample.",
    ),
];

/// Escape a label value (backslash, quote, newline).
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition being written.
pub(crate) struct Out(String);

impl Out {
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(crate) fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
}

/// Memory and disk alarm figures, under RabbitMQ's Prometheus names.
fn alarm_metrics(o: &mut Out, f: &AlarmFigures) {
    let rows: [(&str, &str, u64); 6] = [
        (
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes.",
            f.mem_limit,
        ),
        (
            "rabbitmq_process_resident_memory_bytes",
            "Memory used, as the memory alarm counts it.",
            f.mem_used,
        ),
        (
            "rabbitmq_alarms_memory_used_watermark",
            "1 while the memory alarm is on.",
            u64::from(f.alarms.memory),
        ),
        (
            "rabbitmq_disk_space_available_bytes",
            "Free bytes on the data directory's filesystem.",
            f.disk_free,
        ),
        (
            "rabbitmq_disk_space_available_limit_bytes",
            "Free disk space below which the disk alarm is on.",
            f.disk_limit,
        ),
        (
            "rabbitmq_alarms_free_disk_space_watermark",
            "1 while the disk alarm is on.",
            u64::from(f.alarms.disk),
        ),
    ];
    for (name, help, v) in rows {
        o.family(name, "gauge", help);
        o.sample(name, "", v);
    }
}

/// GET /metrics: every family, in a fixed order.
pub(crate) async fn metrics(State(s): State<MgmtState>) -> impl IntoResponse {
    let mut o = Out(String::with_capacity(8192));
    let b = &s.broker;
    queue_metrics(&mut o, &s);
    connection_metrics(&mut o, b);
    total_metrics(&mut o, &b.registry.totals());
    object_metrics(&mut o, b);
    store_metrics(&mut o, b);
    alarm_metrics(&mut o, &b.alarms.figures());
    process_metrics(&mut o, &b.alarms.figures());
    crate::cluster::metrics(&mut o, b);
    o.family(
        "warren_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    o.sample("warren_uptime_seconds", "", s.started.elapsed().as_secs());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], o.0)
}

/// Labels and values of one queue, in the order of [`QUEUE_FAMILIES`].
type QueueRow = (String, [f64; 11]);

fn queue_row(s: &MgmtState, v: &warren_core::VHost, q: &warren_core::Queue) -> QueueRow {
    let st = q.stats();
    let r = s.rates.queue(&v.name, &q.name);
    (
        format!("vhost=\"{}\",queue=\"{}\"", label(&v.name), label(&q.name)),
        [
            st.ready as f64,
            (st.ready - st.ready_ram) as f64,
            st.paged_bytes as f64,
            st.unacked as f64,
            st.consumers as f64,
            st.published as f64,
            st.delivered as f64,
            st.acked as f64,
            r.publish,
            r.deliver_get,
            r.ack,
        ],
    )
}

/// Per queue: one row of values per queue, one family per column.
fn queue_metrics(o: &mut Out, s: &MgmtState) {
    let mut rows: Vec<QueueRow> = Vec::new();
    for v in s.broker.vhosts() {
        for q in v.queues() {
            rows.push(queue_row(s, &v, &q));
        }
    }
    for (i, (name, kind, help)) in QUEUE_FAMILIES.iter().enumerate() {
        o.family(name, kind, help);
        for (labels, vals) in &rows {
            o.sample(name, labels, vals[i]);
        }
    }
}

/// Connections and channels per protocol.
fn connection_metrics(o: &mut Out, b: &Broker) {
    let mut per_protocol: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in PROTOCOLS {
        per_protocol.insert(p, (0, 0));
    }
    for c in b.registry.list() {
        let e = per_protocol.entry(c.protocol).or_default();
        e.0 += 1;
        e.1 += c.channels().len() as u64;
    }
    o.family("warren_connections", "gauge", "Open client connections.");
    for (p, (n, _)) in &per_protocol {
        o.sample("warren_connections", &format!("protocol=\"{p}\""), n);
    }
    o.family("warren_channels", "gauge", "Open AMQP channels.");
    for (p, (_, n)) in &per_protocol {
        o.sample("warren_channels", &format!("protocol=\"{p}\""), n);
    }
}

/// Broker-wide message counters.
fn total_metrics(o: &mut Out, t: &Totals) {
    for (name, help, v) in [
        (
            "warren_messages_published_total",
            "Messages received from publishers.",
            t.published,
        ),
        (
            "warren_messages_delivered_total",
            "Messages sent to consumers.",
            t.delivered,
        ),
        (
            "warren_messages_acked_total",
            "Acknowledgements received from consumers.",
            t.acked,
        ),
        (
            "warren_messages_confirmed_total",
            "Publisher confirms (MQTT PUBACK/PUBREC) sent.",
            t.confirmed,
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, "", v);
    }
}

/// How many queues and exchanges exist.
fn object_metrics(o: &mut Out, b: &Broker) {
    let (queues, exchanges): (usize, usize) = b.vhosts().iter().fold((0, 0), |(q, x), v| {
        (q + v.queues().len(), x + v.exchanges().len())
    });
    o.family("warren_queues", "gauge", "Queues.");
    o.sample("warren_queues", "", queues);
    o.family("warren_exchanges", "gauge", "Exchanges.");
    o.sample("warren_exchanges", "", exchanges);
}

/// Log size on disk and the group-commit fsync histogram.
fn store_metrics(o: &mut Out, b: &Broker) {
    let Some(store) = b.store() else {
        return;
    };
    o.family(
        "warren_store_bytes",
        "gauge",
        "Bytes of message log segments on disk.",
    );
    o.sample("warren_store_bytes", "", store.log.disk_bytes());
    o.family(
        "warren_store_page_bytes",
        "gauge",
        "Bytes of queue page files on disk (ready messages paged out of memory).",
    );
    o.sample("warren_store_page_bytes", "", store.pages.disk_bytes());
    let (buckets, count, sum) = store.log.fsync.snapshot();
    o.family(
        "warren_store_fsync_seconds",
        "histogram",
        "Time of each group-commit fdatasync.",
    );
    for (le, n) in buckets {
        o.sample(
            "warren_store_fsync_seconds_bucket",
            &format!("le=\"{le}\""),
            n,
        );
    }
    o.sample("warren_store_fsync_seconds_bucket", "le=\"+Inf\"", count);
    o.sample("warren_store_fsync_seconds_sum", "", sum);
    o.sample("warren_store_fsync_seconds_count", "", count);
}

/// Resident memory (the alarm sampler's latest reading) and descriptors.
fn process_metrics(o: &mut Out, f: &AlarmFigures) {
    let p = fds();
    o.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the broker process.",
    );
    o.sample("process_resident_memory_bytes", "", f.mem_used);
    o.family("process_open_fds", "gauge", "Open file descriptors.");
    o.sample("process_open_fds", "", p.open);
    o.family("process_max_fds", "gauge", "File descriptor limit.");
    o.sample("process_max_fds", "", p.max);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_are_prometheus_text() {
        let mut o = Out(String::new());
        o.family("x_total", "counter", "Things.");
        o.sample("x_total", "", 3);
        o.sample("x_total", "q=\"a\"", 1.5);
        assert_eq!(
            o.0,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\nx_total{q=\"a\"} 1.5\n"
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
