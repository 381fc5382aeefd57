//! Helpers for the unit tests: an in-memory vhost (no store), tables,
//! messages, and a consumer that hands its deliveries to a channel, so a
//! test awaits a delivery instead of sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::exchange::TypeRegistry;
use crate::message::Message;
use crate::props::Properties;
use crate::queue::{Consumer, ConsumerSpec, Delivery, Queue};
use crate::value::{Table, Value};
use crate::vhost::{QueueDeclare, VHost};

/// A vhost with the built-in exchange types, no store and no hook.
pub(crate) fn vhost() -> Arc<VHost> {
    VHost::new_shared(
        "/",
        Arc::new(TypeRegistry::with_builtins()),
        None,
        None,
        None,
    )
}

/// A field table from pairs.
pub(crate) fn table(entries: &[(&str, Value)]) -> Table {
    Table(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// Declare a non-durable queue with `args` on connection 1.
pub(crate) fn declare(v: &VHost, name: &str, args: &[(&str, Value)]) -> Arc<Queue> {
    let d = QueueDeclare {
        name: name.into(),
        args: table(args),
        ..QueueDeclare::default()
    };
    v.declare_queue(&d, 1).expect("declare").0
}

/// A queue outside any vhost.
pub(crate) fn lone_queue(args: &[(&str, Value)]) -> Arc<Queue> {
    Arc::new(Queue::new(&Arc::from("/"), "q", false, None, false, table(args)).expect("queue"))
}

/// A message published to `exchange` with `key`, properties and body.
pub(crate) fn message_with(exchange: &str, key: &str, props: &Properties, body: &str) -> Message {
    let body = Bytes::copy_from_slice(body.as_bytes());
    Message::from_parts(exchange, key, &props.encode(), body).expect("message")
}

/// A message with default properties whose body is `body`.
pub(crate) fn message(key: &str, body: &str) -> Message {
    message_with("", key, &Properties::default(), body)
}

/// A message of priority `p`.
pub(crate) fn with_priority(p: u8, body: &str) -> Message {
    let props = Properties {
        priority: Some(p),
        ..Properties::default()
    };
    message_with("", "k", &props, body)
}

/// The body of a delivery as text.
pub(crate) fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).expect("utf-8 body")
}

/// A consumer that takes up to `credit` deliveries and sends each to a
/// channel; beyond its credit it hands them back, as a full prefetch does.
pub(crate) struct Collector {
    tx: UnboundedSender<Delivery>,
    credit: AtomicUsize,
}

impl Consumer for Collector {
    fn offer(&self, _queue: &Arc<Queue>, delivery: Delivery) -> Result<(), Delivery> {
        let ok = self
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        if ok.is_err() {
            return Err(delivery);
        }
        self.tx.send(delivery).map_err(|e| e.0)
    }

    fn queue_deleted(&self, _queue: &Arc<Queue>) {}
}

/// A collector with `credit` and the receiving end of its deliveries.
pub(crate) fn collector(credit: usize) -> (Arc<Collector>, UnboundedReceiver<Delivery>) {
    let (tx, rx) = unbounded_channel();
    let c = Arc::new(Collector {
        tx,
        credit: AtomicUsize::new(credit),
    });
    (c, rx)
}

/// Register `consumer` on `q` under `tag` with consumer priority `priority`.
pub(crate) fn consume(q: &Arc<Queue>, tag: &str, priority: i32, consumer: Arc<Collector>) {
    let spec = ConsumerSpec {
        tag: Arc::from(tag),
        channel_id: 1,
        no_ack: false,
        exclusive: false,
        priority,
        consumer,
    };
    q.add_consumer(spec).expect("consume");
}

/// The next delivery, failing the test after a generous bound instead of
/// hanging when none comes.
pub(crate) async fn next(rx: &mut UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("channel open")
}

/// Text of header `k` of an `x-death` entry.
pub(crate) fn death_field(d: &Delivery, k: &str) -> Option<Value> {
    match d.message.header("x-death")? {
        Value::Array(a) => match a.first()? {
            Value::Table(t) => t.get(k).cloned(),
            _ => None,
        },
        _ => None,
    }
}
