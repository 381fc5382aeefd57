//! End-to-end AMQP tests with lapin against an in-process broker listening
//! on a real loopback socket.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Confirmation;
use lapin::{BasicProperties, ExchangeKind};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_message() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "confirms").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..500u32 {
        let p = ch
            .basic_publish(
                "".into(),
                "confirms".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        pending.push(p);
    }
    for p in pending {
        assert_eq!(p.await.unwrap(), Confirmation::Ack(None));
    }
    let q = ch
        .queue_declare(
            "confirms".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_then_acked() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let conf = ch
        .basic_publish(
            "amq.direct".into(),
            "nobody-home".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost?",
            BasicProperties::default().with_correlation_id("c-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    match conf {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(ret.delivery.data, b"lost?");
            assert_eq!(
                ret.delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.as_str()),
                Some("c-1")
            );
        }
        other => panic!("expected ack with returned message, got {other:?}"),
    }
    // Not mandatory: silently dropped, still acked.
    let conf = ch
        .basic_publish(
            "amq.direct".into(),
            "nobody-home".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(conf, Confirmation::Ack(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_redelivers_and_reject_drops() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "nacks").await;
    for body in [b"one".as_slice(), b"two"] {
        ch.basic_publish(
            "".into(),
            "nacks".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut cons = consume(&ch, "nacks", false).await;
    let d1 = next(&mut cons).await;
    let d2 = next(&mut cons).await;
    assert_eq!(
        (d1.data.as_slice(), d1.redelivered),
        (b"one".as_slice(), false)
    );
    ch.basic_nack(
        d1.delivery_tag,
        BasicNackOptions {
            requeue: true,
            multiple: false,
        },
    )
    .await
    .unwrap();
    let again = next(&mut cons).await;
    assert_eq!(again.data, b"one");
    assert!(again.redelivered);
    ch.basic_reject(d2.delivery_tag, BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch.basic_ack(again.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    nothing_within(&mut cons, 200).await;
    let q = ch
        .queue_declare(
            "nacks".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_all_and_any() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for q in ["h-all", "h-any"] {
        declare(&ch, q).await;
    }
    ch.queue_bind(
        "h-all".into(),
        "amq.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "h-any".into(),
        "amq.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await
    .unwrap();
    let publish = |h: FieldTable, body: &'static [u8]| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "amq.headers".into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_headers(h),
            )
            .await
            .unwrap();
        }
    };
    publish(
        table(&[("format", s("pdf")), ("type", s("report"))]),
        b"both",
    )
    .await;
    publish(
        table(&[("format", s("pdf")), ("type", s("log"))]),
        b"format-only",
    )
    .await;
    publish(table(&[("other", s("x"))]), b"neither").await;
    let mut all = consume(&ch, "h-all", true).await;
    let mut any = consume(&ch, "h-any", true).await;
    assert_eq!(next(&mut all).await.data, b"both");
    nothing_within(&mut all, 200).await;
    assert_eq!(next(&mut any).await.data, b"both");
    assert_eq!(next(&mut any).await.data, b"format-only");
    nothing_within(&mut any, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_and_cycles() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for (name, kind) in [
        ("e2e-src", ExchangeKind::Topic),
        ("e2e-dst", ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.exchange_bind(
        "e2e-dst".into(),
        "e2e-src".into(),
        "metrics.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // A cycle back to the source must not loop or duplicate.
    ch.exchange_bind(
        "e2e-src".into(),
        "e2e-dst".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "e2e-q").await;
    ch.queue_bind(
        "e2e-q".into(),
        "e2e-dst".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "e2e-q".into(),
        "e2e-src".into(),
        "metrics.cpu".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in ["metrics.cpu", "logs.app"] {
        ch.basic_publish(
            "e2e-src".into(),
            key.into(),
            BasicPublishOptions::default(),
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut c = consume(&ch, "e2e-q", true).await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"metrics.cpu");
    assert_eq!(d.exchange.as_str(), "e2e-src");
    nothing_within(&mut c, 300).await;
    ch.exchange_unbind(
        "e2e-dst".into(),
        "e2e-src".into(),
        "metrics.#".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_ok_and_empty() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "getq").await;
    assert!(ch
        .basic_get("getq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    for i in 0..3u8 {
        ch.basic_publish(
            "".into(),
            "getq".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let m = ch
        .basic_get("getq".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, vec![0]);
    assert_eq!(m.message_count, 2);
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let m = ch
        .basic_get("getq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.delivery.data.clone(), m.message_count), (vec![1], 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "txq").await;
    ch.tx_select().await.unwrap();
    ch.basic_publish(
        "".into(),
        "txq".into(),
        BasicPublishOptions::default(),
        b"rolled back",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.tx_rollback().await.unwrap();
    ch.basic_publish(
        "".into(),
        "txq".into(),
        BasicPublishOptions::default(),
        b"committed",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // Before commit nothing is visible to another channel.
    let (_c2, other) = b.channel().await;
    assert!(other
        .basic_get("txq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    ch.tx_commit().await.unwrap();
    let m = other
        .basic_get("txq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"committed");
    assert!(other
        .basic_get("txq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());

    // Acks inside a transaction take effect at commit.
    ch.basic_publish(
        "".into(),
        "txq".into(),
        BasicPublishOptions::default(),
        b"acked in tx",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.tx_commit().await.unwrap();
    let m = ch
        .basic_get("txq".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.tx_rollback().await.unwrap();
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let m = other
        .basic_get("txq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"acked in tx");
    assert!(m.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_nested_headers_round_trip() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "props").await;
    let nested = table(&[
        ("inner", AMQPValue::LongLongInt(-42)),
        ("flag", AMQPValue::Boolean(true)),
    ]);
    let headers = table(&[
        ("nested", AMQPValue::FieldTable(nested)),
        ("s", s("text")),
        ("d", AMQPValue::Double(2.5)),
    ]);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("tests".into());
    ch.basic_publish(
        "".into(),
        "props".into(),
        BasicPublishOptions::default(),
        b"{}",
        props.clone(),
    )
    .await
    .unwrap();
    let mut c = consume(&ch, "props", true).await;
    let d = next(&mut c).await;
    assert_eq!(d.properties, props);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_round_trip_intact() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "big").await;
    // Inline, single-frame zero-copy, and many-frame bodies.
    let sizes = [0usize, 1, 16 * 1024, 100_000, 131_000, 3 << 20];
    for (i, n) in sizes.iter().enumerate() {
        let body: Vec<u8> = (0..*n).map(|x| (x * 31 + i) as u8).collect();
        ch.basic_publish(
            "".into(),
            "big".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut c = consume(&ch, "big", true).await;
    for (i, n) in sizes.iter().enumerate() {
        let d = next(&mut c).await;
        let want: Vec<u8> = (0..*n).map(|x| (x * 31 + i) as u8).collect();
        assert_eq!(d.data.len(), *n);
        assert!(d.data == want, "body {i} of {n} bytes differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "doomed").await;
    let mut c = consume(&ch, "doomed", true).await;
    let (_c2, admin) = b.channel().await;
    admin
        .queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let end = tokio::time::timeout(
        Duration::from_secs(5),
        futures_lite::StreamExt::next(&mut c),
    )
    .await
    .expect("cancel within 5s");
    assert!(
        end.is_none(),
        "consumer stream should end on server-sent basic.cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_keep_connection() {
    let b = TestBroker::start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    let ch2 = c.create_channel().await.unwrap();
    declare(&ch2, "after-error").await;
    // (Unknown delivery tags: see raw.rs, which reads the 406 itself.)
    assert!(c.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacked_per_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "prefetch").await;
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    for i in 0..10u8 {
        ch.basic_publish(
            "".into(),
            "prefetch".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut c = consume(&ch, "prefetch", false).await;
    let mut tags = Vec::new();
    for i in 0..3u8 {
        let d = next(&mut c).await;
        assert_eq!(d.data, vec![i]);
        tags.push(d.delivery_tag);
    }
    nothing_within(&mut c, 300).await;
    ch.basic_ack(tags[2], BasicAckOptions { multiple: true })
        .await
        .unwrap();
    for i in 3..6u8 {
        assert_eq!(next(&mut c).await.data, vec![i]);
    }
    nothing_within(&mut c, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue_and_consumer_tags() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
    let c = consume(&ch, q.name().as_str(), true).await;
    assert!(c.tag().as_str().starts_with("amq.ctag-"));
}
