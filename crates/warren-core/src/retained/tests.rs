//! The retained store over a real log: replace, clear, expiry, recovery.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::props::Properties;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-retained-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn msg(key: &str, body: &'static [u8], expiration: Option<&str>) -> Message {
    let p = Properties {
        delivery_mode: Some(2),
        expiration: expiration.map(String::from),
        ..Default::default()
    };
    Message::from_parts("amq.topic", key, &p.encode(), Bytes::from_static(body)).unwrap()
}

fn synced(log: &Log, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.sync_state().synced < seq {
        assert!(Instant::now() < deadline, "not synced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn bodies(r: &Retained, filter: &str) -> Vec<Bytes> {
    let c = r.chunk(filter, None, 100, false);
    c.hits.into_iter().map(|h| h.message.body).collect()
}

/// Reopen the log in `dir` and restore the pseudo-queue of vhost `/`.
fn reopen(dir: &std::path::Path) -> (Arc<Log>, Retained) {
    let (log, mut rec) = Log::open(dir).unwrap();
    let r = Retained::new("/", Some(log.clone()));
    let key = QueueKey {
        vhost: "/".into(),
        queue: RETAINED_QUEUE.into(),
    };
    r.restore(rec.take(&key));
    (log, r)
}

#[test]
fn replace_and_clear_survive_a_reopen() {
    let dir = fresh_dir("reopen");
    {
        let (log, r) = reopen(&dir);
        r.put(msg("a.b", b"1", None));
        r.put(msg("a.b", b"2", None));
        r.put(msg("a.c", b"3", None));
        r.put(msg("x", b"4", None));
        let seq = r.put(msg("x", b"", None)).expect("clear is logged");
        synced(&log, seq);
        assert_eq!(bodies(&r, "#"), ["2", "3"]);
        log.close();
    }
    let (log, r) = reopen(&dir);
    assert_eq!(r.len(), 2);
    assert_eq!(bodies(&r, "a.+"), ["2", "3"]);
    assert!(bodies(&r, "x").is_empty());
    log.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expired_messages_are_not_returned_and_go_durably() {
    let dir = fresh_dir("expiry");
    {
        let (log, r) = reopen(&dir);
        r.put(msg("soon", b"s", Some("1")));
        r.put(msg("later", b"l", Some("60000")));
        std::thread::sleep(Duration::from_millis(5));
        let c = r.chunk("#", None, 10, false);
        assert_eq!(c.hits.len(), 1);
        let left = c.hits[0].remaining.unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert_eq!(r.len(), 1, "expired topic removed at lookup");
        log.close();
    }
    let (log, r) = reopen(&dir);
    let c = r.chunk("#", None, 10, false);
    assert_eq!(c.hits.len(), 1);
    // The deadline was stored, so the time left keeps counting down.
    assert!(c.hits[0].remaining.unwrap() < Duration::from_secs(60));
    log.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drop_all_clears_the_log_too() {
    let dir = fresh_dir("drop");
    {
        let (log, r) = reopen(&dir);
        for i in 0..10 {
            r.put(msg(&format!("t.{i}"), b"x", None));
        }
        r.drop_all();
        assert!(r.is_empty());
        log.close();
    }
    let (log, r) = reopen(&dir);
    assert!(r.is_empty());
    log.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chunks_and_pages_cover_everything_once() {
    let r = Retained::new("/", None);
    for i in 0..1000 {
        r.put(msg(&format!("s.{}.{i}", i / 100), b"x", None));
    }
    r.put(msg("$SYS.up", b"x", None));
    let mut after: Option<String> = None;
    let mut n = 0;
    for _ in 0..100 {
        let c = r.chunk("#", after.as_deref(), 64, false);
        n += c.hits.len();
        match c.next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert_eq!(n, 1000, "# skips $SYS");
    let first = r.range(0, 300);
    let last = r.range(900, 300);
    assert_eq!((first.len(), last.len(), r.len()), (300, 101, 1001));
    assert_eq!(
        first[299].message.routing_key(),
        r.range(299, 1)[0].message.routing_key()
    );
    assert!(r.range(1001, 300).is_empty());
}

#[test]
fn qos_of_a_hit() {
    let r = Retained::new("/", None);
    r.put(msg("a", b"x", None));
    assert_eq!(r.chunk("a", None, 1, false).hits[0].qos(), 1);
    let t = Message::from_parts("amq.topic", "b", &[0, 0], Bytes::from_static(b"y")).unwrap();
    r.put(t);
    assert_eq!(r.chunk("b", None, 1, false).hits[0].qos(), 0);
}

#[test]
fn the_pseudo_queue_cannot_be_declared() {
    let v = crate::test_support::vhost();
    let d = crate::vhost::QueueDeclare {
        name: RETAINED_QUEUE.into(),
        durable: true,
        server_named: true,
        ..Default::default()
    };
    assert!(v.declare_queue(&d, 0).is_err());
    assert!(v.queues().is_empty());
}

#[test]
fn deleting_a_vhost_drops_its_retained_messages() {
    let b = crate::Broker::new(None);
    let v = b.add_vhost("team").unwrap();
    v.retained.put(msg("a", b"x", None));
    assert_eq!(v.retained.len(), 1);
    assert!(b.delete_vhost("team").unwrap());
    assert!(v.retained.is_empty());
    assert!(b.add_vhost("team").unwrap().retained.is_empty());
}
