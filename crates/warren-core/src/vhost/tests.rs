//! Declare, bind and route through a vhost in memory.

use std::sync::Arc;

use super::{ExchangeDeclare, QueueDeclare, RouteScratch, VHost};
use crate::error::CoreError;
use crate::exchange::Exchange;
use crate::props::Properties;
use crate::test_support::{declare, message_with, table, vhost};
use crate::value::{Table, Value};

/// exchange.declare of `name` with type `kind`, other fields default.
fn decl(name: &str, kind: &str) -> ExchangeDeclare {
    ExchangeDeclare {
        name: name.into(),
        kind: kind.into(),
        ..ExchangeDeclare::default()
    }
}

fn exchange(v: &VHost, name: &str, kind: &str) -> Arc<Exchange> {
    v.declare_exchange(&decl(name, kind))
        .expect("declare exchange")
}

/// Declare an auto-delete exchange.
fn auto_delete(v: &VHost, name: &str, kind: &str) {
    let d = ExchangeDeclare {
        auto_delete: true,
        ..decl(name, kind)
    };
    v.declare_exchange(&d).expect("declare exchange");
}

/// Publish a bodyless message with `key` (and `headers`) to `exchange`;
/// returns how many queues took it.
fn publish(v: &VHost, exchange: &str, key: &str, headers: Option<Table>) -> usize {
    let x = v.exchange(exchange).expect("exchange");
    let props = Properties {
        headers,
        ..Properties::default()
    };
    let m = message_with(exchange, key, &props, "");
    v.publish(&x, m, &mut RouteScratch::default())
        .expect("publish")
        .queues
}

fn no_args() -> Table {
    Table::default()
}

#[test]
fn redeclare_with_other_arguments_is_406_and_equal_ones_pass() {
    let v = vhost();
    declare(&v, "q", &[("x-message-ttl", Value::I32(1000))]);
    // Another integer width of the same value is equivalent, as in RabbitMQ.
    let same = QueueDeclare {
        name: "q".into(),
        args: table(&[("x-message-ttl", Value::I64(1000))]),
        ..QueueDeclare::default()
    };
    assert!(v.declare_queue(&same, 1).is_ok());
    let other = QueueDeclare {
        args: table(&[("x-message-ttl", Value::I64(2000))]),
        ..same.clone()
    };
    match v.declare_queue(&other, 1) {
        Err(CoreError::PreconditionFailed(m)) => assert_eq!(
            m,
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received 'I64(2000)' but current is 'I32(1000)'"
        ),
        r => panic!("expected 406, got {:?}", r.map(|_| ())),
    }
    let durable = QueueDeclare {
        durable: true,
        ..same
    };
    assert!(matches!(
        v.declare_queue(&durable, 1),
        Err(CoreError::PreconditionFailed(m)) if m.contains("'durable'")
    ));
}

#[test]
fn exchange_redeclare_of_another_type_is_406() {
    let v = vhost();
    exchange(&v, "x", "direct");
    let d = decl("x", "fanout");
    match v.declare_exchange(&d) {
        Err(CoreError::PreconditionFailed(m)) => assert_eq!(
            m,
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
        ),
        r => panic!("expected 406, got {:?}", r.map(|_| ())),
    }
    let unknown = decl("y", "no-such-type");
    assert!(matches!(
        v.declare_exchange(&unknown),
        Err(CoreError::CommandInvalid(_))
    ));
}

#[test]
fn passive_declare_of_a_missing_queue_or_exchange_is_404() {
    let v = vhost();
    let q = QueueDeclare {
        name: "missing".into(),
        passive: true,
        ..QueueDeclare::default()
    };
    match v.declare_queue(&q, 1) {
        Err(CoreError::NotFound(m)) => assert_eq!(m, "no queue 'missing' in vhost '/'"),
        r => panic!("expected 404, got {:?}", r.map(|_| ())),
    }
    let x = ExchangeDeclare {
        name: "missing".into(),
        passive: true,
        ..ExchangeDeclare::default()
    };
    assert!(matches!(
        v.declare_exchange(&x),
        Err(CoreError::NotFound(_))
    ));
    assert!(
        v.queue("missing").is_err(),
        "passive declare creates nothing"
    );
}

#[test]
fn reserved_names_are_refused() {
    let v = vhost();
    let d = decl("amq.mine", "direct");
    assert!(matches!(
        v.declare_exchange(&d),
        Err(CoreError::AccessRefused(_))
    ));
    assert!(matches!(
        v.delete_exchange("amq.direct", false),
        Err(CoreError::AccessRefused(_))
    ));
    assert!(matches!(
        v.bind_queue("q", "", "k", &no_args(), 1),
        Err(CoreError::AccessRefused(_))
    ));
}

#[test]
fn names_longer_than_a_short_string_are_refused() {
    let long = "n".repeat(256);
    assert!(matches!(
        crate::check_name("queue", &long),
        Err(CoreError::PreconditionFailed(_))
    ));
    assert!(crate::check_name("queue", &long[..255]).is_ok());
    // Declaring does not check: recovery must bring back a name an older
    // version accepted, and the protocols cannot carry a longer one.
    declare(&vhost(), &long, &[]);
}

#[test]
fn the_default_exchange_routes_by_queue_name() {
    let v = vhost();
    let q = declare(&v, "orders", &[]);
    assert_eq!(publish(&v, "", "orders", None), 1);
    assert_eq!(publish(&v, "", "other", None), 0);
    assert_eq!(q.message_count(), 1);
}

#[test]
fn direct_bind_and_unbind() {
    let v = vhost();
    let q = declare(&v, "q", &[]);
    v.bind_queue("q", "amq.direct", "k", &no_args(), 1).unwrap();
    assert_eq!(publish(&v, "amq.direct", "k", None), 1);
    assert_eq!(publish(&v, "amq.direct", "other", None), 0);
    v.unbind_queue("q", "amq.direct", "k", &no_args(), 1)
        .unwrap();
    assert_eq!(publish(&v, "amq.direct", "k", None), 0);
    assert_eq!(q.message_count(), 1);
    // Unbinding what is not bound is not an error; a missing queue is.
    v.unbind_queue("q", "amq.direct", "k", &no_args(), 1)
        .unwrap();
    assert!(matches!(
        v.bind_queue("nope", "amq.direct", "k", &no_args(), 1),
        Err(CoreError::NotFound(m)) if m.contains("queue 'nope'")
    ));
}

#[test]
fn fanout_reaches_every_bound_queue_once() {
    let v = vhost();
    let (a, b) = (declare(&v, "a", &[]), declare(&v, "b", &[]));
    for q in ["a", "b"] {
        v.bind_queue(q, "amq.fanout", "", &no_args(), 1).unwrap();
    }
    // A second binding to the same queue does not duplicate the message.
    v.bind_queue("a", "amq.fanout", "other", &no_args(), 1)
        .unwrap();
    assert_eq!(publish(&v, "amq.fanout", "whatever", None), 2);
    assert_eq!((a.message_count(), b.message_count()), (1, 1));
}

#[test]
fn topic_patterns_route_by_words() {
    let v = vhost();
    let (star, hash) = (declare(&v, "star", &[]), declare(&v, "hash", &[]));
    v.bind_queue("star", "amq.topic", "a.*", &no_args(), 1)
        .unwrap();
    v.bind_queue("hash", "amq.topic", "a.#", &no_args(), 1)
        .unwrap();
    assert_eq!(publish(&v, "amq.topic", "a.b", None), 2);
    assert_eq!(publish(&v, "amq.topic", "a.b.c", None), 1);
    assert_eq!(publish(&v, "amq.topic", "a", None), 1);
    assert_eq!(publish(&v, "amq.topic", "b.a", None), 0);
    assert_eq!((star.message_count(), hash.message_count()), (1, 3));
}

#[test]
fn headers_match_all_or_any() {
    let v = vhost();
    let (all, any) = (declare(&v, "all", &[]), declare(&v, "any", &[]));
    let want = |m: &str| {
        table(&[
            ("x-match", Value::str(m)),
            ("a", Value::I32(1)),
            ("b", Value::str("x")),
        ])
    };
    v.bind_queue("all", "amq.headers", "", &want("all"), 1)
        .unwrap();
    v.bind_queue("any", "amq.headers", "", &want("any"), 1)
        .unwrap();
    let both = table(&[("a", Value::I32(1)), ("b", Value::str("x"))]);
    let one = table(&[("a", Value::I32(1))]);
    assert_eq!(publish(&v, "amq.headers", "", Some(both)), 2);
    assert_eq!(publish(&v, "amq.headers", "", Some(one)), 1);
    assert_eq!(publish(&v, "amq.headers", "", None), 0);
    assert_eq!((all.message_count(), any.message_count()), (1, 2));
}

#[test]
fn exchange_to_exchange_bindings_route_and_unbind() {
    let v = vhost();
    exchange(&v, "src", "direct");
    exchange(&v, "dst", "fanout");
    let q = declare(&v, "q", &[]);
    v.bind_queue("q", "dst", "", &no_args(), 1).unwrap();
    v.bind_exchange("dst", "src", "k", &no_args()).unwrap();
    let x = v.exchange("src").unwrap();
    let mut scratch = RouteScratch::default();
    v.resolve(
        &x,
        &message_with("src", "k", &Properties::default(), ""),
        &mut scratch,
    )
    .unwrap();
    assert_eq!(scratch.queues.len(), 1);
    assert!(
        !scratch.cacheable,
        "a route through another exchange is not cached"
    );
    assert_eq!(publish(&v, "src", "other", None), 0);
    v.unbind_exchange("dst", "src", "k", &no_args()).unwrap();
    assert_eq!(publish(&v, "src", "k", None), 0);
    assert_eq!(q.message_count(), 0, "resolve alone enqueues nothing");
}

#[test]
fn exchange_cycles_are_cut() {
    let v = vhost();
    exchange(&v, "a", "fanout");
    exchange(&v, "b", "fanout");
    declare(&v, "q", &[]);
    v.bind_exchange("b", "a", "", &no_args()).unwrap();
    v.bind_exchange("a", "b", "", &no_args()).unwrap();
    v.bind_queue("q", "b", "", &no_args(), 1).unwrap();
    assert_eq!(publish(&v, "a", "", None), 1);
}

#[test]
fn alternate_exchange_takes_unroutable_messages() {
    let v = vhost();
    let d = ExchangeDeclare {
        args: table(&[("alternate-exchange", Value::str("amq.fanout"))]),
        ..decl("main", "direct")
    };
    v.declare_exchange(&d).unwrap();
    let q = declare(&v, "lost", &[]);
    v.bind_queue("lost", "amq.fanout", "", &no_args(), 1)
        .unwrap();
    assert_eq!(publish(&v, "main", "nobody", None), 1);
    assert_eq!(q.message_count(), 1);
}

#[test]
fn deleting_an_exchange_removes_bindings_to_it_and_empties_auto_delete_sources() {
    let v = vhost();
    auto_delete(&v, "auto", "fanout");
    exchange(&v, "dst", "fanout");
    v.bind_exchange("dst", "auto", "", &no_args()).unwrap();
    v.delete_exchange("dst", false).unwrap();
    assert!(v.exchange("dst").is_err());
    assert!(
        v.exchange("auto").is_err(),
        "its only binding went, so the auto-delete source went too"
    );
}

#[test]
fn removing_a_queue_removes_its_bindings() {
    let v = vhost();
    auto_delete(&v, "auto", "direct");
    declare(&v, "q", &[]);
    v.bind_queue("q", "auto", "k", &no_args(), 1).unwrap();
    v.bind_queue("q", "amq.direct", "k", &no_args(), 1).unwrap();
    assert_eq!(v.delete_queue("q", false, false, 1), Ok(0));
    assert_eq!(v.exchange("amq.direct").unwrap().binding_count(), 0);
    assert!(v.exchange("auto").is_err(), "auto-delete exchange emptied");
    assert!(v.bindings().iter().all(|b| b.destination != "q"));
}

#[test]
fn unbinding_the_last_binding_deletes_an_auto_delete_source() {
    let v = vhost();
    auto_delete(&v, "auto", "direct");
    declare(&v, "q", &[]);
    v.bind_queue("q", "auto", "k", &no_args(), 1).unwrap();
    v.unbind_queue_except("q", "auto", "k", None).unwrap();
    assert!(v.exchange("auto").is_err());
}

#[test]
fn resubscribe_keeps_only_the_new_arguments() {
    let v = vhost();
    declare(&v, "q", &[]);
    let (old, new) = (
        table(&[("qos", Value::I32(0))]),
        table(&[("qos", Value::I32(1))]),
    );
    v.bind_queue("q", "amq.topic", "t", &old, 1).unwrap();
    v.bind_queue("q", "amq.topic", "t", &new, 1).unwrap();
    v.unbind_queue_except("q", "amq.topic", "t", Some(&new))
        .unwrap();
    let left = v.exchange("amq.topic").unwrap().bindings();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].args, new);
}

#[test]
fn an_exclusive_queue_refuses_other_connections() {
    let v = vhost();
    let d = QueueDeclare {
        name: "mine".into(),
        exclusive: true,
        ..QueueDeclare::default()
    };
    v.declare_queue(&d, 7).unwrap();
    assert!(matches!(
        v.bind_queue("mine", "amq.direct", "k", &no_args(), 8),
        Err(CoreError::ResourceLocked(_))
    ));
    v.bind_queue("mine", "amq.direct", "k", &no_args(), 7)
        .unwrap();
    v.connection_closed(7);
    assert!(v.queue("mine").is_err(), "gone with its connection");
}

#[test]
fn server_named_queues_get_amq_gen_names() {
    let v = vhost();
    let (q, _, _) = v.declare_queue(&QueueDeclare::default(), 1).unwrap();
    assert!(q.name.starts_with("amq.gen-"));
    assert_eq!(q.name.len(), "amq.gen-".len() + 22);
    assert_eq!(publish(&v, "", &q.name, None), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unused_queue_with_x_expires_is_deleted() {
    let v = vhost();
    let q = declare(&v, "short", &[("x-expires", Value::I32(20))]);
    let kept = declare(&v, "kept", &[]);
    assert!(!q.is_deleted());
    // Nothing announces a queue's deletion but its consumers, and a
    // consumer would keep it alive: poll, bounded.
    let gone = async {
        while !q.is_deleted() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), gone)
        .await
        .expect("deleted by its x-expires timer");
    assert!(matches!(v.queue("short"), Err(CoreError::NotFound(_))));
    assert!(!kept.is_deleted());
}
