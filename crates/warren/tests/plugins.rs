//! Plugins driven from lapin: the Rust plugin libraries built by
//! `cargo build --workspace` are loaded into an in-process broker.

mod common;

use std::path::PathBuf;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use warren::{Overrides, Settings};

fn plugin_dir() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug");
    let dir = temp_data_dir().with_extension("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for p in ["consistent_hash", "random"] {
        let f = format!("libwarren_plugin_{p}.so");
        std::fs::copy(target.join(&f), dir.join(&f))
            .unwrap_or_else(|e| panic!("{f} not built ({e}); run cargo build --workspace"));
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_routes_through_plugin_exchanges() {
    let settings = Settings::load(
        None,
        &Overrides {
            amqp_bind: Some("127.0.0.1:0".into()),
            http_bind: Some("127.0.0.1:0".into()),
            mqtt_bind: Some("127.0.0.1:0".into()),
            mqtt_ws_bind: Some("127.0.0.1:0".into()),
            data_dir: Some(temp_data_dir()),
            plugins_dir: Some(plugin_dir()),
        },
    )
    .unwrap();
    let running = warren::start(&settings).await.unwrap();
    let mut names: Vec<_> = running.plugins.iter().map(|p| p.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["consistent-hash", "random"]);
    let b = TestBroker {
        running,
        data_dir: PathBuf::new(),
    };
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        "hashed".into(),
        ExchangeKind::Custom("x-consistent-hash".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (q, w) in [("h1", "1"), ("h2", "3")] {
        declare(&ch, q).await;
        ch.queue_bind(
            q.into(),
            "hashed".into(),
            w.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..4000u32 {
        ch.basic_publish(
            "hashed".into(),
            i.to_string().as_str().into(),
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let count = |q: &'static str| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(
                q.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
        }
    };
    let (a, c) = (count("h1").await, count("h2").await);
    assert_eq!(a + c, 4000);
    // Weights 1:3, within 5% of the expected share.
    assert!((c as f64 / 4000.0 - 0.75).abs() < 0.0375, "h1={a} h2={c}");
    ch.exchange_declare(
        "spread".into(),
        ExchangeKind::Custom("x-random".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "r1").await;
    ch.queue_bind(
        "r1".into(),
        "spread".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "spread".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"only one queue",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let m = ch
        .basic_get("r1".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"only one queue");
}
