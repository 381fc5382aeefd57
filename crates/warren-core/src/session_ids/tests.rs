//! Session ids in memory and over a real log: add, remove, clear, recovery.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-sessids-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn synced(log: &Log, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.sync_state().synced < seq {
        assert!(Instant::now() < deadline, "not synced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reopen the log in `dir` and restore the pseudo-queue of vhost `/`.
fn reopen(dir: &std::path::Path) -> (Arc<Log>, SessionIds) {
    let (log, mut rec) = Log::open(dir).unwrap();
    let s = SessionIds::new("/", Some(log.clone()));
    let key = QueueKey {
        vhost: "/".into(),
        queue: SESSION_IDS_QUEUE.into(),
    };
    s.restore(rec.take(&key));
    (log, s)
}

#[test]
fn ids_are_held_once_by_kind_and_client() {
    let s = SessionIds::new("/", None);
    assert_eq!(s.add("c", IdKind::Received, 7), None);
    s.add("c", IdKind::Received, 7);
    s.add("c", IdKind::Released, 7);
    s.add("c", IdKind::Received, 3);
    s.add("d", IdKind::Received, 1);
    assert_eq!(s.ids("c", IdKind::Received), [3, 7]);
    assert_eq!(s.ids("c", IdKind::Released), [7]);
    assert!(s.remove("c", IdKind::Received, 7));
    assert!(!s.remove("c", IdKind::Received, 7));
    assert_eq!(s.ids("c", IdKind::Received), [3]);
    s.clear("c");
    assert!(s.ids("c", IdKind::Released).is_empty());
    assert_eq!(s.ids("d", IdKind::Received), [1]);
}

#[test]
fn held_ids_survive_a_reopen_and_removed_ones_do_not() {
    let dir = fresh_dir("reopen");
    {
        let (log, s) = reopen(&dir);
        s.add("dev", IdKind::Received, 1);
        s.add("dev", IdKind::Received, 2);
        s.add("dev", IdKind::Released, 9);
        s.add("gone", IdKind::Released, 4);
        s.remove("dev", IdKind::Received, 1);
        s.clear("gone");
        let seq = s.add("dev", IdKind::Received, 5).expect("logged");
        synced(&log, seq);
        log.close();
    }
    let (log, s) = reopen(&dir);
    assert_eq!(s.ids("dev", IdKind::Received), [2, 5]);
    assert_eq!(s.ids("dev", IdKind::Released), [9]);
    assert!(s.ids("gone", IdKind::Released).is_empty());
    s.drop_all();
    log.close();
    let (log, s) = reopen(&dir);
    assert!(s.ids("dev", IdKind::Received).is_empty());
    log.close();
    let _ = std::fs::remove_dir_all(&dir);
}
