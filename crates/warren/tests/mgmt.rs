//! The management API from Rust: an HTTP client (ureq) against a real
//! broker, checked against what lapin did over AMQP.

mod common;

use base64::Engine;
use common::{declare, TestBroker};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

/// One HTTP call as `user:password`; (status, JSON body or null).
async fn http(
    b: &TestBroker,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    user: &str,
    password: &str,
) -> (u16, Value) {
    let url = format!("http://{}{path}", b.running.http_addr);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = match method {
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
            _ => agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut resp = resp.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .expect("blocking task")
}

async fn guest(
    b: &TestBroker,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    http(b, method, path, body, "guest", "guest").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shows_what_lapin_did() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    declare(&ch, "rust-mgmt-q").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..3u8 {
        ch.basic_publish(
            "".into(),
            "rust-mgmt-q".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let (s, q) = guest(&b, "GET", "/api/queues/%2F/rust-mgmt-q", None).await;
    assert_eq!(s, 200);
    assert_eq!(q["messages"], 3);
    assert_eq!(q["message_stats"]["publish"], 3);
    let (_, conns) = guest(&b, "GET", "/api/connections", None).await;
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["protocol"], "AMQP 0-9-1");
    assert_eq!(conns[0]["message_stats"]["publish"], 3);
    assert_eq!(conns[0]["message_stats"]["confirm"], 3);
    let (_, ov) = guest(&b, "GET", "/api/overview", None).await;
    assert_eq!(ov["object_totals"]["connections"], 1);
    assert_eq!(ov["object_totals"]["channels"], 1);
    // Wrong password: 401 with a challenge; no tag: 403.
    let (s, _) = http(&b, "GET", "/api/overview", None, "guest", "x").await;
    assert_eq!(s, 401);
    let (s, _) = guest(
        &b,
        "PUT",
        "/api/users/plain",
        Some(json!({"password": "p", "tags": []})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = http(&b, "GET", "/api/overview", None, "plain", "p").await;
    assert_eq!(s, 403);
    c.close(0, "".into()).await.unwrap();
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_set_over_http_bind_lapin() {
    let b = TestBroker::start().await;
    assert_eq!(guest(&b, "PUT", "/api/vhosts/rust-vh", None).await.0, 201);
    assert_eq!(
        guest(
            &b,
            "PUT",
            "/api/users/rusty",
            Some(json!({"password": "pw", "tags": "management"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        guest(
            &b,
            "PUT",
            "/api/permissions/rust-vh/rusty",
            Some(json!({"configure": "^rusty\\.", "write": "^rusty\\.", "read": "^rusty\\."}))
        )
        .await
        .0,
        201
    );
    let uri = format!("amqp://rusty:pw@{}/rust-vh", b.running.amqp_addr);
    let c = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("rusty connects to rust-vh");
    let ch = c.create_channel().await.unwrap();
    declare(&ch, "rusty.q").await;
    let err = ch
        .queue_declare(
            "other.q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("configure outside ^rusty. is refused");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    // The management user acts within the same permissions over HTTP.
    let (s, _) = http(
        &b,
        "PUT",
        "/api/queues/rust-vh/rusty.q2",
        Some(json!({})),
        "rusty",
        "pw",
    )
    .await;
    assert_eq!(s, 201);
    let (s, body) = http(
        &b,
        "PUT",
        "/api/queues/rust-vh/other.q2",
        Some(json!({})),
        "rusty",
        "pw",
    )
    .await;
    assert_eq!(s, 403, "{body}");
    // No permissions in / at all: the AMQP connection is refused (530).
    let uri = format!("amqp://rusty:pw@{}/%2f", b.running.amqp_addr);
    assert!(Connection::connect(&uri, ConnectionProperties::default())
        .await
        .is_err());
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_definitions_round_trip() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    ch.queue_declare(
        "rust-durable".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "rust-durable".into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // /metrics needs no login, like RabbitMQ's Prometheus endpoint.
    let mut text = String::new();
    for _ in 0..100 {
        let (s, _) = guest(&b, "GET", "/api/overview", None).await;
        assert_eq!(s, 200);
        let url = format!("http://{}/metrics", b.running.http_addr);
        text = tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap()
        })
        .await
        .unwrap();
        if text.contains("warren_queue_messages_ready{vhost=\"/\",queue=\"rust-durable\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        text.contains("warren_queue_messages_ready{vhost=\"/\",queue=\"rust-durable\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE warren_store_fsync_seconds histogram"));
    assert!(text.contains("warren_connections{protocol=\"AMQP 0-9-1\"} 1"));
    let (s, defs) = guest(&b, "GET", "/api/definitions", None).await;
    assert_eq!(s, 200);
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "rust-durable"));
    c.close(0, "".into()).await.unwrap();

    let fresh = TestBroker::start().await;
    assert_eq!(
        guest(&fresh, "POST", "/api/definitions", Some(defs.clone()))
            .await
            .0,
        204
    );
    let (_, again) = guest(&fresh, "GET", "/api/definitions", None).await;
    assert_eq!(again["queues"], defs["queues"]);
    assert_eq!(again["permissions"], defs["permissions"]);
    b.running.shutdown().await;
    fresh.running.shutdown().await;
}
