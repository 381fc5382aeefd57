//! Unit tests of the log as a whole: recovery, compaction, the two enqueue paths.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn key(q: &str) -> QueueKey {
    QueueKey {
        vhost: "/".into(),
        queue: q.into(),
    }
}

fn sync(log: &Log, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.sync_state().synced < seq {
        assert!(Instant::now() < deadline, "not synced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    v
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-log-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory whose first segment holds `seg`.
fn seeded(name: &str, seg: &[u8]) -> std::path::PathBuf {
    let dir = fresh_dir(name);
    fs::write(segment_path(&dir, 1), seg).unwrap();
    dir
}

/// Found by the `store_record` and `store_recover` fuzz targets: an
/// enqueue record whose id lies far past the others (here 2^44, between
/// ids 1 and 2; the fuzzer's had 2^52 and u64::MAX) made recovery size
/// its id-indexed vector by the id, a multi-petabyte allocation that
/// aborted the broker at start-up. Three records: id 1, 2^44, 2, each
/// held by queue "/" "q", empty exchange, meta and body.
const FAR_APART_IDS: &[u8] = b"\x00\x00\x00\x1c\x1b\xac\x7f\xdf\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x1c&\xdcc\xf7\x01\x00\x00\x10\x00\x00\x00\x00\x00\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x1c\xb4\x052\x15\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn fuzz_regression_far_apart_ids_do_not_size_recovery() {
    assert_eq!(decode_segment(FAR_APART_IDS), (3, FAR_APART_IDS.len()));
    let dir = seeded("far-ids", FAR_APART_IDS);
    let (log, mut rec) = Log::open_with(&dir, 4096).unwrap();
    assert_eq!((rec.records, rec.truncated), (3, 0));
    let ids: Vec<u64> = rec.take(&key("q")).iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 1 << 44, 2], "recovered in log order");
    assert!(log.next_id() > 1 << 44);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// Found by the `store_recover` fuzz target: an enqueue record that
/// lists the same queue twice (the broker de-duplicates, so only a
/// corrupt record does) recovered the message twice into that queue.
/// One record: id 7, queues "/" "q" and "/" "q", empty exchange, meta, body.
const SAME_QUEUE_TWICE: &[u8] =
    b"\x00\x00\x00\x22Iz\x9e~\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x02\x00\x01/\x00\x01q\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn fuzz_regression_queue_listed_twice_recovers_once() {
    assert_eq!(
        decode_segment(SAME_QUEUE_TWICE),
        (1, SAME_QUEUE_TWICE.len())
    );
    let dir = seeded("twice", SAME_QUEUE_TWICE);
    let (log, mut rec) = Log::open_with(&dir, 4096).unwrap();
    let ids: Vec<u64> = rec.take(&key("q")).iter().map(|m| m.id).collect();
    assert_eq!(ids, [7]);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// Found by the `store_recover` fuzz target: an enqueue record with id
/// u64::MAX overflowed the next message id (a panic in debug builds, ids
/// handed out again from 0 in release). Two records: id 3 and id
/// u64::MAX, each held by "/" "q"; the second is corrupt and cut.
const ID_AT_U64_MAX: &[u8] = b"\x00\x00\x00\x1c\xd1b\x09S\x01\x00\x00\x00\x00\x00\x00\x00\x03\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x1c\x16\x112n\x01\xff\xff\xff\xff\xff\xff\xff\xff\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn fuzz_regression_id_at_u64_max_is_corrupt() {
    assert_eq!(decode_segment(ID_AT_U64_MAX), (1, 36));
    let dir = std::env::temp_dir().join(format!("warren-log-max-id-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(segment_path(&dir, 1), ID_AT_U64_MAX).unwrap();
    let (log, rec) = Log::open_with(&dir, 4096).unwrap();
    assert_eq!((rec.records, rec.truncated), (1, 36));
    assert_eq!(rec.queues[&key("q")].len(), 1);
    assert_eq!(log.next_id(), 4);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// Found by the `store_recover` fuzz target (as a second recovery that
/// disagreed with the first): recovery interned queue names as
/// `vhost NUL queue`, so ("v", "\0q") and ("v\0", "q") were one queue
/// and one queue's messages came back in the other. Two records: id 1
/// held by ("v", "\0q"), id 2 by ("v\0", "q").
const NUL_IN_NAMES: &[u8] = b"\x00\x00\x00\x1du\xbb\x07L\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01v\x00\x02\x00q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
    \x00\x00\x00\x1da\xc7\xc3\x03\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x02v\x00\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn fuzz_regression_names_with_nul_stay_apart() {
    let dir = seeded("nul", NUL_IN_NAMES);
    let (log, mut rec) = Log::open_with(&dir, 4096).unwrap();
    let mut ids = |vhost: &str, queue: &str| -> Vec<u64> {
        let k = QueueKey {
            vhost: vhost.into(),
            queue: queue.into(),
        };
        rec.take(&k).iter().map(|m| m.id).collect()
    };
    assert_eq!(ids("v", "\0q"), [1]);
    assert_eq!(ids("v\0", "q"), [2]);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn long_lived_message_is_copied_forward_and_old_segments_reclaimed() {
    let dir = std::env::temp_dir().join(format!("warren-log-compact-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    {
        let (log, _) = Log::open_with(&dir, 4096).unwrap();
        let mut rec = Vec::new();
        // One message that is never acked, then churn that is.
        let keeper = log.next_id();
        encode_enqueue(&mut rec, keeper, &[key("q")], "x", b"kprops", 1, b"keep me");
        let mut last = log.append_enqueue(keeper, &[key("q")], &rec);
        for i in 0..400u32 {
            let id = log.next_id();
            rec.clear();
            encode_enqueue(&mut rec, id, &[key("q")], "x", b"k", 1, &[i as u8; 64]);
            last = log.append_enqueue(id, &[key("q")], &rec);
            log.append_remove(id, &key("q"));
            if i % 50 == 0 {
                sync(&log, last);
            }
        }
        sync(&log, last);
        // Let the writer run a few more rounds (compaction copies, then deletion).
        for _ in 0..3 {
            log.append_delivered(keeper, &key("q"));
            let seq = log.pending.lock().seq;
            sync(&log, seq);
        }
        let segs = segments(&dir);
        assert!(
            !segs.contains(&1),
            "the pinned first segment should be gone: {segs:?}"
        );
        assert!(
            segs.len() <= 3,
            "dead segments should be reclaimed: {segs:?}"
        );
        log.close();
    }
    let (log, mut rec) = Log::open_with(&dir, 4096).unwrap();
    let q = rec.take(&key("q"));
    assert_eq!(q.len(), 1);
    assert_eq!(&q[0].body[..], b"keep me");
    assert!(q[0].redelivered);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// The segment files of `dir` by name, with their bytes.
fn files(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    segments(dir)
        .into_iter()
        .map(|s| (s, fs::read(segment_path(dir, s)).unwrap()))
        .collect()
}

#[test]
fn enqueue_writes_the_same_bytes_as_encode_then_append() {
    let old_dir = fresh_dir("old-path");
    let new_dir = fresh_dir("new-path");
    let (old, _) = Log::open_with(&old_dir, 4096).unwrap();
    let (new, _) = Log::open_with(&new_dir, 4096).unwrap();
    let queues = [key("a"), key("b\0c")];
    let (mut s_old, mut s_new) = (0, 0);
    for i in 0..200u32 {
        let (id_old, id_new) = (old.next_id(), new.next_id());
        assert_eq!(id_old, id_new);
        let qs = &queues[..1 + (i % 2) as usize];
        let body = vec![i as u8; (i as usize * 37) % 900];
        let meta = format!("rk{i}props");
        let mut rec = Vec::new();
        encode_enqueue(&mut rec, id_old, qs, "ex", meta.as_bytes(), 3, &body);
        s_old = old.append_enqueue(id_old, qs, &rec);
        s_new = new.enqueue(id_new, qs, "ex", meta.as_bytes(), 3, &body);
        assert_eq!(s_old, s_new);
        if i % 3 == 0 {
            old.append_remove(id_old, &qs[0]);
            new.append_remove(id_new, &qs[0]);
        }
    }
    sync(&old, s_old);
    sync(&new, s_new);
    old.close();
    new.close();
    let (a, b) = (files(&old_dir), files(&new_dir));
    assert!(a.len() > 3, "several segments: {}", a.len());
    assert!(a == b, "segment files differ");
    let _ = fs::remove_dir_all(&old_dir);
    let _ = fs::remove_dir_all(&new_dir);
}

/// A segment whose first messages stay live and whose next segment is all
/// dead, so that the first batch after opening compacts it.
fn pinned_segments(dir: &Path, bodies: &[&[u8]]) {
    let mut seg1 = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        encode_enqueue(&mut seg1, 1 + i as u64, &[key("q")], "x", b"k", 1, body);
    }
    let mut seg2 = Vec::new();
    for id in 100..110 {
        encode_enqueue(&mut seg2, id, &[key("q")], "x", b"k", 1, b"churn");
        record::encode_marker(&mut seg2, record::Kind::Remove, id, &key("q"));
    }
    fs::write(segment_path(dir, 1), seg1).unwrap();
    fs::write(segment_path(dir, 2), seg2).unwrap();
}

/// Compaction must agree with recovery about a corrupt record: it copies
/// what comes before it and nothing from it on (the old compaction loop
/// skipped the checksum and wrote the garbled body forward under a fresh,
/// valid one, and then deleted the segment).
#[test]
fn compaction_does_not_copy_a_corrupt_record_forward() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = fresh_dir("compact-corrupt");
    pinned_segments(&dir, &[b"first", b"second", b"third"]);
    let (log, rec) = Log::open_with(&dir, 1 << 20).unwrap();
    assert_eq!(rec.queues[&key("q")].len(), 3);
    drop(rec); // its bodies are slices of the mapped segment
               // Rot one byte of the second message's body on disk.
    let bytes = fs::read(segment_path(&dir, 1)).unwrap();
    let at = bytes.windows(6).position(|w| w == b"second").unwrap();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(segment_path(&dir, 1))
        .unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(b"S").unwrap();
    drop(f);
    // One batch runs compaction; a second writes its copies.
    log.append_delivered(1, &key("q"));
    let seq = log.pending.lock().seq;
    sync(&log, seq);
    log.append_delivered(1, &key("q"));
    let seq = log.pending.lock().seq;
    sync(&log, seq);
    {
        let p = log.pending.lock();
        assert_eq!(
            p.index.get(1).unwrap().0,
            3,
            "the record before the corrupt one is copied"
        );
        assert_eq!(
            (p.index.get(2).unwrap().0, p.index.get(3).unwrap().0),
            (1, 1),
            "not copied"
        );
    }
    assert!(segments(&dir).contains(&1), "still pinned by the uncopied");
    let copies = fs::read(segment_path(&dir, 3)).unwrap();
    assert_eq!(decode_segment(&copies).1, copies.len());
    for body in [&b"Second"[..], b"second", b"third"] {
        assert!(!copies.windows(body.len()).any(|w| w == body));
    }
    log.close();
    // Recovery cuts segment 1 at the same record: only the first survives,
    // from its copy or its original, and nothing garbled comes back.
    let (log, mut rec) = Log::open_with(&dir, 1 << 20).unwrap();
    let q = rec.take(&key("q"));
    let bodies: Vec<&[u8]> = q.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"first"[..]]);
    assert!(rec.truncated > 0);
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// A recovered queue reads its messages back a chunk at a time from the
/// segments, in log order across segments, skipping removed ones and other
/// queues' records, with the delivered flags of a clean stop; a queue held
/// by two queues comes back in both. A tail that is dropped unpins its
/// segments, and what it still held can be removed by id alone.
#[test]
fn a_recovered_queue_reads_back_in_chunks_across_segments() {
    let dir = fresh_dir("tail-chunks");
    let (a, b) = (key("a"), key("b"));
    {
        let (log, _) = Log::open_with(&dir, 8192).unwrap();
        let mut last = 0;
        for i in 0..600u64 {
            let id = log.next_id();
            let qs = if i % 10 == 0 {
                vec![a.clone(), b.clone()]
            } else {
                vec![a.clone()]
            };
            let body = format!("m{i:04}").repeat(1 + (i % 7) as usize);
            last = log.enqueue(id, &qs, "x", b"rkprops", 2, body.as_bytes());
            if i % 3 == 1 {
                log.append_remove(id, &a);
            }
            if i % 5 == 0 {
                log.append_delivered(id, &a);
            }
        }
        sync(&log, last);
        log.close();
    }
    assert!(segments(&dir).len() > 5, "several segments");
    let (log, mut rec) = Log::open_with(&dir, 8192).unwrap();
    let tail = rec.queues.get_mut(&a).unwrap();
    let expect: Vec<u64> = (0..600u64).filter(|i| i % 3 != 1).collect();
    assert_eq!(tail.len(), expect.len());
    let mut got = Vec::new();
    loop {
        let chunk = tail.pop_chunk(300).unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() < 60, "chunks follow the byte budget");
        got.extend(chunk);
    }
    assert!(tail.is_empty());
    let ids: Vec<u64> = got.iter().map(|m| m.id - 1).collect();
    assert_eq!(ids, expect);
    for m in &got {
        let i = m.id - 1;
        assert_eq!(
            &m.body[..],
            format!("m{i:04}").repeat(1 + (i % 7) as usize).as_bytes()
        );
        assert_eq!(
            (&m.meta[..], m.key_len, &*m.exchange),
            (&b"rkprops"[..], 2, "x")
        );
        assert_eq!(m.redelivered, i % 5 == 0, "message {i}");
    }
    let tb = rec.queues.remove(&b).unwrap();
    assert_eq!(
        tb.ids().collect::<Vec<_>>(),
        (0..60u64).map(|i| 10 * i + 1).collect::<Vec<_>>()
    );
    let mut last = 0;
    for id in tb.ids() {
        last = log.append_remove(id, &b);
    }
    drop(tb);
    drop(rec);
    for id in got.iter().map(|m| m.id) {
        last = log.append_remove(id, &a);
    }
    sync(&log, last);
    log.close();
    let (log, rec) = Log::open_with(&dir, 8192).unwrap();
    assert!(rec.queues.is_empty(), "everything was removed");
    log.close();
    let _ = fs::remove_dir_all(&dir);
}

/// A recovered message as compared: id, redelivered, body.
type Msg = (u64, bool, Vec<u8>);

/// What recovery finds from segment summaries is what it finds reading the
/// records: the same messages per queue, in the same order, with the same
/// flags, and the same next id.
#[test]
fn summaries_recover_what_the_records_do() {
    let dir = fresh_dir("summaries");
    let (a, b) = (key("a"), key("b"));
    {
        let (log, _) = Log::open_with(&dir, 4096).unwrap();
        let mut last = 0;
        for i in 0..400u64 {
            let id = log.next_id();
            let qs = if i % 7 == 0 {
                vec![a.clone(), b.clone()]
            } else {
                vec![a.clone()]
            };
            last = log.enqueue(id, &qs, "x", b"kp", 1, format!("b{i}").as_bytes());
            match i % 5 {
                1 => last = log.append_remove(id, &a),
                2 => log.append_delivered(id, &a),
                _ => {}
            }
        }
        last = last.max(log.append_remove_range(10, 60, &a));
        sync(&log, last);
        log.close();
    }
    let sums = || {
        fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sum")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sums() + 1 < segments(&dir).len() {
        assert!(Instant::now() < deadline, "sealed segments get summaries");
        std::thread::sleep(Duration::from_millis(5));
    }
    let read = |dir: &Path| {
        let (mut rec, next) = recover_dir(dir).unwrap();
        let mut out: Vec<(String, Vec<Msg>)> = Vec::new();
        for k in [key("a"), key("b")] {
            let ms = rec.take(&k);
            out.push((
                k.queue,
                ms.iter()
                    .map(|m| (m.id, m.redelivered, m.body.to_vec()))
                    .collect(),
            ));
        }
        (out, next, rec.records, rec.summarized > 0)
    };
    let mut with = read(&dir);
    assert!(with.3, "summaries were used");
    with.3 = false;
    for e in fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "sum") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let without = read(&dir);
    assert_eq!(with, without);
    let a_ids: Vec<u64> = with.0[0].1.iter().map(|m| m.0).collect();
    let expect: Vec<u64> = (1..=400u64)
        .filter(|id| (id - 1) % 5 != 1 && !(10..60).contains(id))
        .collect();
    assert_eq!(a_ids, expect);
    assert!(with.0[0].1.iter().any(|m| m.1), "delivered flags come back");
    let _ = fs::remove_dir_all(&dir);
}
