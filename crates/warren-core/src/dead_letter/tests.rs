//! Dead-lettering through a vhost in memory: the drain task runs on the
//! test's runtime and the test awaits the dead letter's delivery.

use std::sync::Arc;

use super::{Death, DeathReason};
use crate::props::Properties;
use crate::queue::Queue;
use crate::test_support::{collector, consume, death_field, declare, message, next, table, vhost};
use crate::value::{Table, Value};
use crate::vhost::VHost;
use tokio::sync::mpsc::UnboundedReceiver;

/// A vhost with queue `work` dead-lettering to `amq.fanout` (plus `args`),
/// and a consumer on queue `dead` bound there.
fn setup(args: &[(&str, Value)]) -> (Arc<VHost>, Arc<Queue>, UnboundedReceiver<crate::Delivery>) {
    let v = vhost();
    let mut all = vec![("x-dead-letter-exchange", Value::str("amq.fanout"))];
    all.extend(args.iter().cloned());
    let work = declare(&v, "work", &all);
    let dead = declare(&v, "dead", &[]);
    v.bind_queue("dead", "amq.fanout", "", &Table::default(), 1)
        .unwrap();
    let (c, rx) = collector(100);
    consume(&dead, "c", 0, c);
    (v, work, rx)
}

#[tokio::test(flavor = "current_thread")]
async fn a_rejected_message_is_republished_with_x_death() {
    let (_v, work, mut rx) = setup(&[]);
    work.enqueue(message("work", "m"));
    let (d, _) = work.get(false).unwrap();
    work.reject([&d]);
    assert_eq!(work.stats().unacked, 0);
    let dead = next(&mut rx).await;
    assert_eq!(&dead.message.body[..], b"m");
    assert_eq!(death_field(&dead, "reason"), Some(Value::str("rejected")));
    assert_eq!(death_field(&dead, "queue"), Some(Value::str("work")));
    assert_eq!(death_field(&dead, "count"), Some(Value::I64(1)));
    assert_eq!(
        dead.message.header("x-first-death-reason"),
        Some(Value::str("rejected"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_expired_message_moves_on_without_being_touched() {
    let (_v, work, mut rx) = setup(&[("x-message-ttl", Value::I32(5))]);
    work.enqueue(message("work", "m"));
    // The TTL sweeper task wakes at the expiry; nothing touches `work`.
    let dead = next(&mut rx).await;
    assert_eq!(death_field(&dead, "reason"), Some(Value::str("expired")));
    assert_eq!(dead.message.expiration_ms, None);
    assert_eq!(work.message_count(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_head_dropped_by_max_length_is_dead_lettered() {
    let (_v, work, mut rx) = setup(&[("x-max-length", Value::I32(1))]);
    work.enqueue(message("work", "first"));
    work.enqueue(message("work", "second"));
    let dead = next(&mut rx).await;
    assert_eq!(&dead.message.body[..], b"first");
    assert_eq!(death_field(&dead, "reason"), Some(Value::str("maxlen")));
    assert_eq!(work.message_count(), 1);
}

#[test]
fn without_a_runtime_dead_letters_are_dropped_not_kept() {
    let (_v, work, _rx) = setup(&[]);
    work.enqueue(message("work", "m"));
    let (d, _) = work.get(false).unwrap();
    work.reject([&d]);
    assert!(work.dead.take().is_empty());
}

fn death_of(reason: DeathReason, m: &crate::Message) -> Death<'_> {
    Death {
        queue: "q",
        reason,
        message: m,
        original_expiration: None,
    }
}

#[test]
fn a_second_death_counts_up_and_an_automatic_cycle_is_cut() {
    let m = message("q", "");
    let mut headers = Table::default();
    assert!(death_of(DeathReason::Rejected, &m).record(&mut headers));
    assert!(death_of(DeathReason::Rejected, &m).record(&mut headers));
    let deaths = match headers.get("x-death") {
        Some(Value::Array(a)) => a.clone(),
        h => panic!("x-death missing: {h:?}"),
    };
    assert_eq!(deaths.len(), 1, "one entry per queue and reason");
    assert!(matches!(&deaths[0], Value::Table(t) if t.get("count") == Some(&Value::I64(2))));
    // Expiring round the same queue with no rejection ever is a cycle.
    let mut expired = Table::default();
    assert!(death_of(DeathReason::Expired, &m).record(&mut expired));
    assert!(!death_of(DeathReason::Expired, &m).record(&mut expired));
    // A rejection in the history breaks the cycle rule.
    assert!(death_of(DeathReason::Expired, &m).record(&mut headers));
    assert!(death_of(DeathReason::Expired, &m).record(&mut headers));
}

#[test]
fn the_original_expiration_is_kept_in_the_death_entry() {
    let props = Properties {
        expiration: Some("60000".into()),
        ..Properties::default()
    };
    let m = crate::test_support::message_with("", "q", &props, "");
    let d = Death {
        original_expiration: Some("60000"),
        ..death_of(DeathReason::Expired, &m)
    };
    let entry = d.entry(1);
    assert_eq!(entry.get("original-expiration"), Some(&Value::str("60000")));
    assert_eq!(
        entry.get("routing-keys"),
        Some(&Value::Array(vec![Value::str("q")]))
    );
    let _ = table(&[]);
}
