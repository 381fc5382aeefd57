//! AMQPS from a Rust client (lapin over rustls), certificates made with
//! rcgen at test time; connection.update-secret through lapin.

mod common;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use warren::{Overrides, Settings};

/// A CA and a server certificate for localhost, written under `dir`; the
/// CA's PEM.
fn write_pki(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "warren test ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_over_amqps_and_update_secret() {
    let data_dir = common::temp_data_dir();
    let pki = data_dir.with_extension("pki");
    let ca_pem = write_pki(&pki);
    let config = pki.join("warren.toml");
    let toml = format!(
        "[amqp]\ntls_bind = \"127.0.0.1:0\"\n[mqtt]\ntls_bind = \"\"\nwss_bind = \"\"\n\
         [http]\ntls_bind = \"\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display()
    );
    std::fs::write(&config, toml).unwrap();
    let overrides = Overrides {
        amqp_bind: Some("127.0.0.1:0".into()),
        http_bind: Some("127.0.0.1:0".into()),
        mqtt_bind: Some("127.0.0.1:0".into()),
        mqtt_ws_bind: Some(String::new()),
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    let settings = Settings::load(Some(&config), &overrides).unwrap();
    let running = warren::start(&settings).await.expect("broker starts");
    let addrs = running.tls_addrs;
    let amqps = addrs.amqp.expect("AMQPS listener");
    assert!(
        addrs.mqtt.is_none() && addrs.http.is_none(),
        "empty binds stay off"
    );

    let uri = format!("amqps://guest:guest@localhost:{}/%2f", amqps.port());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(ca_pem),
    };
    let runtime = lapin::runtime::default_runtime().unwrap();
    let conn = Connection::connect_with_config(&uri, ConnectionProperties::default(), tls, runtime)
        .await
        .expect("AMQPS connect");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "tls-q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "tls-q".into(),
        BasicPublishOptions::default(),
        b"hello over rustls",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = ch
        .basic_get("tls-q".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"hello over rustls");

    conn.update_secret("guest".into(), "rotation".into())
        .await
        .expect("the right secret is accepted");
    let wrong = conn.update_secret("wrong".into(), "bad".into()).await;
    assert!(wrong.is_err(), "a wrong secret closes the connection");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pki);
}
