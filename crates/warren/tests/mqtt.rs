//! MQTT with rumqttc (3.1.1 and 5.0) against a real listener, with lapin
//! on the AMQP side of amq.topic.

mod common;

use std::time::Duration;

use common::{declare, TestBroker};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

/// A rumqttc 3.1.1 client whose incoming packets land in a channel.
struct Mqtt {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

async fn mqtt(b: &TestBroker, id: &str, clean: bool, will: Option<LastWill>) -> Mqtt {
    let mut o = MqttOptions::new(id, "127.0.0.1", b.running.mqtt_addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(clean);
    o.set_credentials("guest", "guest");
    if let Some(w) = will {
        o.set_last_will(w);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Mqtt {
        client,
        events,
        task,
    }
}

impl Mqtt {
    /// The first incoming packet `f` picks, within 10 s.
    async fn next<T>(&mut self, f: impl Fn(&Packet) -> Option<T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let p = self.events.recv().await.expect("connection open");
                if let Some(t) = f(&p) {
                    return t;
                }
            }
        })
        .await
        .expect("packet within 10 s")
    }

    async fn connack(&mut self) -> bool {
        self.next(|p| match p {
            Packet::ConnAck(c) => Some(c.session_present),
            _ => None,
        })
        .await
    }

    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.next(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self) -> rumqttc::Publish {
        self.next(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }
}

async fn amqp_get(ch: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    for _ in 0..200 {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no message in {queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_and_lapin_interoperate_at_every_qos() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rs-amqp").await;
    ch.queue_bind(
        "rs-amqp".into(),
        "amq.topic".into(),
        "sensors.*.temp".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let mut sub = mqtt(&b, "rs-sub", true, None).await;
    sub.connack().await;
    sub.client
        .subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(
        sub.suback().await,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let mut publisher = mqtt(&b, "rs-pub", true, None).await;
    publisher.connack().await;
    for (qos, body) in [
        (QoS::AtMostOnce, "q0"),
        (QoS::AtLeastOnce, "q1"),
        (QoS::ExactlyOnce, "q2"),
    ] {
        publisher
            .client
            .publish("sensors/r1/temp", qos, false, body)
            .await
            .unwrap();
    }
    // MQTT -> MQTT at the publish QoS (granted 2).
    for (qos, body) in [
        (QoS::AtMostOnce, "q0"),
        (QoS::AtLeastOnce, "q1"),
        (QoS::ExactlyOnce, "q2"),
    ] {
        let p = sub.publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            ("sensors/r1/temp", body.as_bytes(), qos)
        );
    }
    // MQTT -> AMQP: key with dots, QoS 0 transient, QoS 1/2 persistent.
    for (mode, body) in [(1u8, "q0"), (2, "q1"), (2, "q2")] {
        let m = amqp_get(&ch, "rs-amqp").await;
        assert_eq!(m.delivery.routing_key.as_str(), "sensors.r1.temp");
        assert_eq!(m.delivery.data, body.as_bytes());
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(mode));
    }
    // AMQP -> MQTT: a persistent message arrives at QoS 1 with slashes.
    ch.basic_publish(
        "amq.topic".into(),
        "sensors.r2.temp".into(),
        BasicPublishOptions::default(),
        b"from-amqp",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    let p = sub.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("sensors/r2/temp", &b"from-amqp"[..], QoS::AtLeastOnce)
    );
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_retained_will_and_session_across_restart() {
    let b = TestBroker::start().await;
    let mut retainer = mqtt(&b, "rs-retainer", true, None).await;
    retainer.connack().await;
    retainer
        .client
        .publish("status/dev1", QoS::AtLeastOnce, true, "online")
        .await
        .unwrap();
    retainer
        .next(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    let mut watcher = mqtt(&b, "rs-watcher", true, None).await;
    watcher.connack().await;
    watcher
        .client
        .subscribe("status/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let p = watcher.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("status/dev1", &b"online"[..], true)
    );

    // A client that vanishes without DISCONNECT leaves its will.
    let mut doomed = mqtt(
        &b,
        "rs-doomed",
        true,
        Some(LastWill::new(
            "status/rs-doomed",
            "gone",
            QoS::AtLeastOnce,
            false,
        )),
    )
    .await;
    doomed.connack().await;
    doomed.task.abort();
    let _ = doomed.task.await;
    drop(doomed.client);
    let p = watcher.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("status/rs-doomed", &b"gone"[..])
    );

    // A persistent session keeps its subscription and QoS 1 messages
    // across a broker restart.
    let mut dev = mqtt(&b, "rs-persist", false, None).await;
    assert!(!dev.connack().await);
    dev.client
        .subscribe("cmd/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    dev.suback().await;
    dev.client.disconnect().await.unwrap();
    let _ = dev.task.await;
    let (c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "amq.topic".into(),
        "cmd.rs-persist.reboot".into(),
        BasicPublishOptions::default(),
        b"now",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    c.close(0, "".into()).await.unwrap();
    let TestBroker { running, data_dir } = b;
    running.shutdown().await;
    let b = TestBroker::start_in(data_dir).await;
    let mut dev = mqtt(&b, "rs-persist", false, None).await;
    assert!(dev.connack().await, "session present after restart");
    let p = dev.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("cmd/rs-persist/reboot", &b"now"[..], QoS::AtLeastOnce)
    );
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_properties_map_to_amqp() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rs-v5").await;
    ch.queue_bind(
        "rs-v5".into(),
        "amq.topic".into(),
        "props.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut o = Options5::new("rs-v5-client", "127.0.0.1", b.running.mqtt_addr.port());
    o.set_credentials("guest", "guest");
    let (client, mut el) = Client5::new(o, 10);
    let (tx, mut acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event5::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(a)) = ev {
                let _ = tx.send(a.reason);
            }
        }
    });
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("replies/1".into()),
        correlation_data: Some("corr-7".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(60),
        ..Default::default()
    };
    client
        .publish_with_properties("props/a", QoS5::AtLeastOnce, false, "{}", props)
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("PUBACK")
        .expect("open");
    assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
    let m = amqp_get(&ch, "rs-v5").await;
    let p = &m.delivery.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-7")
    );
    assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("60000"));
    let h = p.headers().as_ref().expect("headers").inner();
    assert_eq!(h.get("k"), Some(&AMQPValue::LongString("v".into())));
    assert_eq!(
        h.get("x-reply-to-topic"),
        Some(&AMQPValue::LongString("replies/1".into()))
    );
    b.running.shutdown().await;
}
