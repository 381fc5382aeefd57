//! The log file: appends survive a reopen, a torn tail is cut, truncate
//! and purge rewrite what is left, the vote is kept.

use std::io::Write;

use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::types::Command;
use warren_core::replicate::Change;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warren-cluster-log-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
        payload: EntryPayload::Normal(Command::Change(Change::AddVhost(format!("v{index}")))),
    }
}

fn put(store: &LogStore, from: u64, to: u64) {
    let mut inner = store.inner.lock();
    let mut bytes = Vec::new();
    for i in from..=to {
        let e = entry(i);
        frame(&e, &mut bytes).unwrap();
        inner.entries.insert(i, e);
    }
    inner.file.write_all(&bytes).unwrap();
}

fn indexes(store: &LogStore) -> Vec<u64> {
    store.inner.lock().entries.keys().copied().collect()
}

#[test]
fn entries_survive_reopen_and_a_torn_tail_is_cut() {
    let d = dir("torn");
    let s = LogStore::open(&d).unwrap();
    put(&s, 1, 5);
    drop(s);
    // A crash mid-append: half a frame at the end.
    let mut f = OpenOptions::new().append(true).open(d.join("log")).unwrap();
    f.write_all(&[0, 0, 0, 40, 1, 2, 3]).unwrap();
    drop(f);
    let s = LogStore::open(&d).unwrap();
    assert_eq!(indexes(&s), vec![1, 2, 3, 4, 5]);
    let len = fs::metadata(d.join("log")).unwrap().len() as usize;
    assert_eq!(intact_len(&fs::read(d.join("log")).unwrap()), len);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn truncate_and_purge_rewrite_the_file() {
    let d = dir("trunc");
    let s = LogStore::open(&d).unwrap();
    put(&s, 1, 10);
    {
        let mut inner = s.inner.lock();
        inner.entries.split_off(&8);
        inner.rewrite().unwrap();
        inner.purged = Some(entry(3).log_id);
        let keep = inner.entries.split_off(&4);
        inner.entries = keep;
        inner.rewrite().unwrap();
    }
    save_json(&d.join("purged"), &Some(entry(3).log_id), true).unwrap();
    drop(s);
    let s = LogStore::open(&d).unwrap();
    assert_eq!(indexes(&s), vec![4, 5, 6, 7]);
    assert_eq!(s.inner.lock().purged, Some(entry(3).log_id));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_frame_ends_the_log_there() {
    let mut bytes = Vec::new();
    for i in 1..=3 {
        frame(&entry(i), &mut bytes).unwrap();
    }
    let good = bytes.len();
    frame(&entry(4), &mut bytes).unwrap();
    let flip = good + 12;
    bytes[flip] ^= 0xff;
    assert_eq!(intact_len(&bytes), good);
    assert_eq!(intact_len(&[0xff; 3]), 0);
}
