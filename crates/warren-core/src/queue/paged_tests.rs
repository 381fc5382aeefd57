//! Queues whose tail is paged out to disk behave as in-memory ones: order,
//! priorities, requeue, limits and TTL, with only the window in memory.

use std::sync::Arc;
use std::time::Duration;

use warren_store::pages::{PageOptions, Pages};

use super::{Enqueued, Queue};
use crate::test_support::{body, message, table, with_priority};
use crate::value::Value;

const WINDOW: usize = 16;

fn pages(name: &str) -> Arc<Pages> {
    let dir = std::env::temp_dir().join(format!("warren-paged-{name}-{}", std::process::id()));
    let opts = PageOptions {
        window_messages: WINDOW,
        window_bytes: 1 << 20,
        segment_size: 8 << 10,
    };
    Pages::open(&dir, opts).expect("pages")
}

fn paged_queue(name: &str, args: &[(&str, Value)]) -> Arc<Queue> {
    let q = Queue::new(&Arc::from("/"), name, false, None, false, table(args)).expect("queue");
    Arc::new(q.with_pages(Some(pages(name))))
}

fn get_all(q: &Arc<Queue>) -> Vec<String> {
    std::iter::from_fn(|| q.get(true).map(|(d, _)| body(&d))).collect()
}

#[test]
fn a_deep_queue_keeps_only_its_window_in_memory_and_its_order() {
    let q = paged_queue("order", &[]);
    for i in 0..1000 {
        assert_eq!(
            q.enqueue(message("k", &format!("m{i}"))),
            Enqueued::Accepted
        );
    }
    let st = q.stats();
    assert_eq!(st.ready, 1000);
    assert_eq!(st.ready_ram, WINDOW);
    // In memory: m0..m9 (2 bytes each) and m10..m15 (3 bytes each).
    assert_eq!(st.paged_bytes, st.ready_bytes - (10 * 2 + 6 * 3));
    let got = get_all(&q);
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(q.stats().paged_bytes, 0);
}

#[test]
fn priorities_are_served_highest_first_and_fifo_within_a_level() {
    let q = paged_queue("prio", &[("x-max-priority", Value::U8(3))]);
    for i in 0..300 {
        q.enqueue(with_priority((i % 4) as u8, &format!("{}-{i}", i % 4)));
    }
    assert!(q.stats().ready_ram <= WINDOW);
    let got = get_all(&q);
    assert_eq!(got.len(), 300);
    let mut want: Vec<(u8, usize)> = (0..300).map(|i| ((i % 4) as u8, i)).collect();
    want.sort_by_key(|(p, i)| (std::cmp::Reverse(*p), *i));
    let want: Vec<String> = want.iter().map(|(p, i)| format!("{p}-{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_requeued_message_goes_back_before_the_paged_tail() {
    let q = paged_queue("requeue", &[]);
    for i in 0..100 {
        q.enqueue(message("k", &format!("m{i}")));
    }
    let (first, _) = q.get(false).unwrap();
    let (second, _) = q.get(false).unwrap();
    q.requeue([second, first]);
    let got = get_all(&q);
    assert_eq!(got[..3], ["m0", "m1", "m2"]);
    assert_eq!(got.len(), 100);
}

#[test]
fn max_length_drops_from_the_head_of_a_paged_queue() {
    let q = paged_queue("maxlen", &[("x-max-length", Value::I64(50))]);
    for i in 0..200 {
        q.enqueue(message("k", &format!("m{i}")));
    }
    let got = get_all(&q);
    let want: Vec<String> = (150..200).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn paged_messages_expire_by_their_ttl() {
    let q = paged_queue("ttl", &[("x-message-ttl", Value::I32(50))]);
    for i in 0..100 {
        q.enqueue(message("k", &format!("m{i}")));
    }
    assert!(q.stats().ready_ram < 100);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(q.message_count(), 0, "every paged message expired too");
}

#[test]
fn purge_empties_the_page_files() {
    let q = paged_queue("purge", &[]);
    for i in 0..500 {
        q.enqueue(message("k", &format!("m{i}")));
    }
    assert_eq!(q.purge(), 500);
    let st = q.stats();
    assert_eq!((st.ready, st.ready_ram, st.paged_bytes), (0, 0, 0));
    q.enqueue(message("k", "after"));
    assert_eq!(get_all(&q), ["after"]);
}
