//! Raw-socket AMQP tests: heartbeats and malformed input, where a real
//! client library would refuse to misbehave. Frames are built with
//! amq-protocol, the reference codec.

mod common;

use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{FieldTable, LongString};
use common::*;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn send(&mut self, f: AMQPFrame) {
        let bytes = gen_frame(&f)(WriteContext::from(Vec::new())).unwrap().write;
        self.s.write_all(&bytes).await.unwrap();
    }

    /// Next frame, or None when the broker closed the socket.
    async fn recv(&mut self, wait: Duration) -> Option<AMQPFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok((rest, f)) = parse_frame(self.buf.as_slice()) {
                let used = self.buf.len() - rest.len();
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .expect("frame within deadline")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn method(&mut self) -> AMQPClass {
        loop {
            match self.recv(Duration::from_secs(5)).await {
                Some(AMQPFrame::Method(_, m)) => return m,
                Some(AMQPFrame::Heartbeat) => continue,
                other => panic!("expected a method, got {other:?}"),
            }
        }
    }

    /// Handshake as guest with the given heartbeat; opens channel 1.
    async fn open(b: &TestBroker, heartbeat: u16) -> Raw {
        let s = TcpStream::connect(b.running.amqp_addr).await.unwrap();
        let mut r = Raw { s, buf: Vec::new() };
        r.s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        assert!(matches!(
            r.method().await,
            AMQPClass::Connection(connection::AMQPMethod::Start(_))
        ));
        r.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from("\0guest\0guest"),
                locale: "en_US".into(),
            })),
        ))
        .await;
        assert!(matches!(
            r.method().await,
            AMQPClass::Connection(connection::AMQPMethod::Tune(_))
        ));
        r.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: 131072,
                heartbeat,
            })),
        ))
        .await;
        r.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ))
        .await;
        assert!(matches!(
            r.method().await,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        ));
        r.send(AMQPFrame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        assert!(matches!(
            r.method().await,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
        ));
        r
    }

    async fn expect_connection_close(&mut self, code: u16) {
        match self.method().await {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                assert_eq!(c.reply_code, code, "{}", c.reply_text)
            }
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
    }
}

/// The broker must still serve other clients after each bad input.
async fn broker_still_serves(b: &TestBroker) {
    let (_c, ch) = b.channel().await;
    declare(&ch, "alive").await;
    ch.basic_publish(
        "".into(),
        "alive".into(),
        BasicPublishOptions::default(),
        b"ok",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let m = ch
        .basic_get("alive".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_and_silent_clients_dropped() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 1).await;
    // The broker sends heartbeats on an idle connection...
    assert_eq!(
        r.recv(Duration::from_secs(3)).await,
        Some(AMQPFrame::Heartbeat)
    );
    // ...and, since we never send any, drops us after two missed intervals.
    let start = tokio::time::Instant::now();
    loop {
        match r.recv(Duration::from_secs(5)).await {
            Some(AMQPFrame::Heartbeat) => continue,
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(4));
    broker_still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_frame_error_501() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    // A body frame claiming 1 MiB with frame_max 128 KiB.
    r.s.write_all(&[3, 0, 1, 0, 0x10, 0, 0]).await.unwrap();
    r.expect_connection_close(501).await;
    broker_still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_without_publish_is_unexpected_frame_505() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Body(1, b"orphan".to_vec())).await;
    r.expect_connection_close(505).await;
    broker_still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_before_content_complete_is_505() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    ))
    .await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue: true })),
    ))
    .await;
    r.expect_connection_close(505).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_540_and_bad_arguments_502() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    // class 60, method 99 does not exist.
    r.s.write_all(&[1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99, 0xCE])
        .await
        .unwrap();
    r.expect_connection_close(540).await;
    let mut r = Raw::open(&b, 0).await;
    // queue.declare (50,10) with its arguments cut short.
    r.s.write_all(&[1, 0, 1, 0, 0, 0, 6, 0, 50, 0, 10, 0, 0, 0xCE])
        .await
        .unwrap();
    r.expect_connection_close(502).await;
    broker_still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_on_unopened_channel_are_504() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Method(
        7,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    ))
    .await;
    r.expect_connection_close(504).await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    r.expect_connection_close(504).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_flag_is_540_not_implemented() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: true,
        })),
    ))
    .await;
    r.expect_connection_close(540).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_panics_the_broker() {
    let b = TestBroker::start().await;
    // A deterministic stream of junk after a valid handshake, many times.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for round in 0..50 {
        let mut r = Raw::open(&b, 0).await;
        let mut junk = Vec::new();
        for _ in 0..(64 + round * 7) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        // Start with a plausible frame header so parsing goes deeper.
        junk[0] = [1u8, 2, 3, 8][round % 4];
        let _ = r.s.write_all(&junk).await;
        // The broker answers with connection.close or drops the socket.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(f) = r.recv(Duration::from_secs(5)).await {
                if matches!(
                    f,
                    AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_)))
                ) {
                    break;
                }
            }
        })
        .await;
    }
    broker_still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_is_406_channel_error() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 999,
            multiple: false,
        })),
    ))
    .await;
    match r.method().await {
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
            assert_eq!(c.reply_code, 406);
            assert!(c.reply_text.as_str().contains("unknown delivery tag 999"));
            assert_eq!((c.class_id, c.method_id), (60, 80));
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    // The connection is still usable: close-ok, then reopen the channel.
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    ))
    .await;
    r.send(AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    assert!(matches!(
        r.method().await,
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
    ));
}

/// A queue.declare whose arguments nest arrays 5,000 deep (25 KB) used to
/// overflow a worker's stack inside amq-protocol's recursive table parser,
/// aborting the whole broker (found while writing the fuzz targets). It is
/// refused as malformed arguments, and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_arguments_are_502_not_a_crash() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(&b, 0).await;
    let mut value: Vec<u8> = vec![b'A', 0, 0, 0, 0]; // empty array
    for _ in 0..5000 {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(value.len() as u32).to_be_bytes());
        outer.extend_from_slice(&value);
        value = outer;
    }
    let mut table = vec![1, b'a'];
    table.extend_from_slice(&value);
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
    payload.extend_from_slice(&table);
    let mut frame = vec![1, 0, 1];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    r.s.write_all(&frame).await.unwrap();
    r.expect_connection_close(502).await;
    broker_still_serves(&b).await;
}
