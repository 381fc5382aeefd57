//! Test helpers: a real broker on an ephemeral loopback port, and lapin
//! connections to it. Each test is then a few lines.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use warren::{Overrides, Running, Settings};

pub struct TestBroker {
    pub running: Running,
    pub data_dir: std::path::PathBuf,
}

/// A fresh, unique data directory under the system temp dir.
pub fn temp_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "warren-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_in(temp_data_dir()).await
    }

    /// Start on an existing data directory (restart tests).
    pub async fn start_in(data_dir: std::path::PathBuf) -> TestBroker {
        let settings = Settings::load(
            None,
            &Overrides {
                amqp_bind: Some("127.0.0.1:0".into()),
                http_bind: Some("127.0.0.1:0".into()),
                mqtt_bind: Some("127.0.0.1:0".into()),
                mqtt_ws_bind: Some("127.0.0.1:0".into()),
                data_dir: Some(data_dir.clone()),
                ..Default::default()
            },
        )
        .expect("settings");
        let running = warren::start(&settings).await.expect("broker starts");
        TestBroker { running, data_dir }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.running.amqp_addr)
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("connect")
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = c.create_channel().await.expect("channel");
        (c, ch)
    }
}

/// Declare a queue with default flags.
pub async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare")
}

/// Start a consumer.
pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery, or a panic after 5 seconds.
pub async fn next(consumer: &mut Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery within 5s")
        .expect("stream open")
        .expect("delivery ok")
}

/// Assert that nothing arrives within `ms` milliseconds.
pub async fn nothing_within(consumer: &mut Consumer, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
        panic!("unexpected delivery: {:?}", d.map(|d| d.data));
    }
}
