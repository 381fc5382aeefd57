//! A queue on its own: arguments, overflow, priorities, consumers, requeue
//! and the `x-expires` lease.

use std::time::Duration;

use super::{Enqueued, Limits, Overflow};
use crate::error::CoreError;
use crate::test_support::{body, collector, consume, lone_queue, message, table, with_priority};
use crate::value::Value;

fn drain(q: &std::sync::Arc<super::Queue>) -> Vec<String> {
    std::iter::from_fn(|| q.get(true).map(|(d, _)| body(&d))).collect()
}

#[test]
fn arguments_are_parsed_and_checked() {
    let l = Limits::from_args(&table(&[
        ("x-message-ttl", Value::I32(1500)),
        ("x-max-length", Value::I64(3)),
        ("x-overflow", Value::str("reject-publish-dlx")),
        ("x-dead-letter-exchange", Value::str("dlx")),
        ("x-max-priority", Value::U8(9)),
    ]))
    .unwrap();
    assert_eq!(l.message_ttl, Some(Duration::from_millis(1500)));
    assert_eq!(l.max_length, Some(3));
    assert_eq!(l.overflow, Overflow::RejectPublishDlx);
    assert_eq!(
        l.dead_letter.as_ref().map(|d| d.exchange.as_str()),
        Some("dlx")
    );
    assert_eq!(l.max_priority, 9);
    let refused = |args: &[(&str, Value)]| match Limits::from_args(&table(args)) {
        Err(CoreError::PreconditionFailed(m)) => m,
        r => panic!("expected 406, got {r:?}"),
    };
    assert_eq!(
        refused(&[("x-max-length", Value::I32(-1))]),
        "invalid arg 'x-max-length' for queue: I32(-1)"
    );
    assert!(refused(&[("x-overflow", Value::str("drop-tail"))]).contains("x-overflow"));
    assert!(refused(&[("x-expires", Value::I32(0))]).contains("must be positive"));
    assert!(refused(&[("x-max-priority", Value::I32(256))]).contains("between 1 and 255"));
    assert!(refused(&[("x-dead-letter-routing-key", Value::str("k"))])
        .contains("needs x-dead-letter-exchange"));
    // The overflow rule is checked before the others.
    assert!(refused(&[
        ("x-max-length", Value::I32(-1)),
        ("x-overflow", Value::I32(1)),
    ])
    .contains("x-overflow"));
}

#[test]
fn ready_messages_come_out_in_order() {
    let q = lone_queue(&[]);
    for b in ["a", "b", "c"] {
        assert_eq!(q.enqueue(message("k", b)), Enqueued::Accepted);
    }
    let (first, left) = q.get(true).unwrap();
    assert_eq!((body(&first), left), ("a".to_string(), 2));
    assert_eq!(drain(&q), ["b", "c"]);
    assert!(q.get(true).is_none());
}

#[test]
fn higher_priorities_come_first_fifo_within_a_level() {
    let q = lone_queue(&[("x-max-priority", Value::I32(5))]);
    for (p, b) in [
        (1, "low"),
        (5, "high1"),
        (3, "mid"),
        (9, "capped"),
        (5, "high2"),
        (0, "zero"),
    ] {
        q.enqueue(with_priority(p, b));
    }
    // Priority 9 counts as the maximum, 5: after the 5s before it.
    assert_eq!(
        drain(&q),
        ["high1", "capped", "high2", "mid", "low", "zero"]
    );
}

#[test]
fn a_plain_queue_ignores_priorities() {
    let q = lone_queue(&[]);
    q.enqueue(with_priority(1, "a"));
    q.enqueue(with_priority(9, "b"));
    assert_eq!(drain(&q), ["a", "b"]);
}

#[test]
fn max_length_drops_the_head() {
    let q = lone_queue(&[("x-max-length", Value::I32(2))]);
    for b in ["a", "b", "c"] {
        assert_eq!(q.enqueue(message("k", b)), Enqueued::Accepted);
    }
    assert_eq!(q.message_count(), 2);
    assert_eq!(drain(&q), ["b", "c"]);
}

#[test]
fn max_length_bytes_drops_the_head() {
    let q = lone_queue(&[("x-max-length-bytes", Value::I32(5))]);
    for b in ["abc", "de", "fg"] {
        q.enqueue(message("k", b));
    }
    assert_eq!(q.stats().ready_bytes, 4);
    assert_eq!(drain(&q), ["de", "fg"]);
}

#[test]
fn reject_publish_refuses_and_keeps_what_is_there() {
    let q = lone_queue(&[
        ("x-max-length", Value::I32(1)),
        ("x-overflow", Value::str("reject-publish")),
    ]);
    assert_eq!(q.enqueue(message("k", "a")), Enqueued::Accepted);
    assert_eq!(q.enqueue(message("k", "b")), Enqueued::Rejected);
    assert_eq!(q.stats().published, 1);
    assert_eq!(drain(&q), ["a"]);
}

#[test]
fn requeued_messages_return_to_their_place_marked_redelivered() {
    let q = lone_queue(&[]);
    for b in ["a", "b", "c"] {
        q.enqueue(message("k", b));
    }
    let (a, _) = q.get(false).unwrap();
    let (b, _) = q.get(false).unwrap();
    assert_eq!(q.stats().unacked, 2);
    q.requeue([b, a]);
    assert_eq!(q.stats().unacked, 0);
    let (d, _) = q.get(true).unwrap();
    assert_eq!(body(&d), "a");
    assert!(d.redelivered);
    assert_eq!(drain(&q), ["b", "c"]);
}

#[test]
fn consumers_get_messages_within_their_credit_higher_priority_first() {
    let q = lone_queue(&[]);
    let (low, mut low_rx) = collector(10);
    let (high, mut high_rx) = collector(1);
    consume(&q, "low", 0, low);
    consume(&q, "high", 5, high);
    for b in ["a", "b", "c"] {
        q.enqueue(message("k", b));
    }
    assert_eq!(body(&high_rx.try_recv().unwrap()), "a");
    assert!(high_rx.try_recv().is_err(), "out of credit");
    assert_eq!(body(&low_rx.try_recv().unwrap()), "b");
    assert_eq!(body(&low_rx.try_recv().unwrap()), "c");
    assert_eq!(q.stats().unacked, 3);
    assert_eq!(q.consumer_count(), 2);
}

#[test]
fn a_consumer_without_credit_leaves_messages_ready() {
    let q = lone_queue(&[]);
    let (c, mut rx) = collector(0);
    consume(&q, "c", 0, c);
    q.enqueue(message("k", "a"));
    assert!(rx.try_recv().is_err());
    assert_eq!(q.message_count(), 1);
}

#[test]
fn exclusive_consumers_exclude_each_other() {
    let q = lone_queue(&[]);
    let (c, _rx) = collector(1);
    consume(&q, "first", 0, c.clone());
    let spec = crate::queue::ConsumerSpec {
        tag: "second".into(),
        channel_id: 2,
        no_ack: false,
        exclusive: true,
        priority: 0,
        consumer: c,
    };
    assert!(matches!(
        q.add_consumer(spec),
        Err(CoreError::AccessRefused(_))
    ));
}

#[test]
fn the_expires_lease_is_renewed_by_use_and_paused_by_consumers() {
    let q = lone_queue(&[("x-expires", Value::I32(60_000))]);
    assert_eq!(q.expires(), Some(Duration::from_secs(60)));
    assert!(q.unused_for().is_some_and(|d| d < Duration::from_secs(60)));
    let (c, _rx) = collector(1);
    consume(&q, "c", 0, c);
    assert_eq!(q.unused_for(), None, "a queue with consumers is in use");
    q.set_expires(Some(Duration::from_millis(1500)));
    assert_eq!(
        q.current_args().get("x-expires").and_then(|v| v.as_i64()),
        Some(1500)
    );
    q.set_expires(None);
    assert_eq!(q.expires(), None);
    assert!(q.current_args().get("x-expires").is_none());
}

#[test]
fn an_expired_message_is_never_delivered() {
    let q = lone_queue(&[("x-message-ttl", Value::I32(0))]);
    q.enqueue(message("k", "a"));
    assert!(q.get(true).is_none());
    assert_eq!(q.message_count(), 0);
    assert_eq!(q.stats().ready_bytes, 0);
}

#[test]
fn purge_and_delete_drop_ready_messages() {
    let q = lone_queue(&[]);
    q.enqueue(message("k", "a"));
    q.enqueue(message("k", "b"));
    assert_eq!(q.purge(), 2);
    q.enqueue(message("k", "c"));
    assert_eq!(q.delete(), 1);
    assert!(q.is_deleted());
    assert_eq!(q.enqueue(message("k", "d")), Enqueued::Accepted);
    assert_eq!(q.message_count(), 0, "a deleted queue keeps nothing");
}
