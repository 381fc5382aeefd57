//! Seeds for `store_record` and `store_recover`: segments written by the
//! message log itself.

use std::fs;
use std::path::Path;

use warren_store::{Log, QueueKey};

use crate::amqp::props;
use crate::write;

fn key(vhost: &str, queue: &str) -> QueueKey {
    QueueKey {
        vhost: vhost.into(),
        queue: queue.into(),
    }
}

/// A segment written by the log itself.
fn segment(f: impl FnOnce(&Log)) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("warren-gen-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let (log, rec) = Log::open_with(&dir, 1 << 20).unwrap();
    assert!(rec.queues.is_empty());
    f(&log);
    log.close();
    let mut segs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let bytes = fs::read(&segs[0]).unwrap();
    let _ = fs::remove_dir_all(&dir);
    bytes
}

fn enqueue(
    log: &Log,
    queues: &[QueueKey],
    exchange: &str,
    key: &str,
    props: &[u8],
    body: &[u8],
) -> u64 {
    let id = log.next_id();
    let mut meta = key.as_bytes().to_vec();
    meta.extend_from_slice(props);
    log.enqueue(id, queues, exchange, &meta, key.len() as u8, body);
    id
}

pub(crate) fn store(root: &Path) {
    let props = props();
    let a = segment(|log| {
        let q1 = key("/", "q1");
        let q2 = key("/", "q2");
        let m1 = enqueue(
            log,
            std::slice::from_ref(&q1),
            "amq.direct",
            "q1",
            &props,
            b"first",
        );
        let m2 = enqueue(
            log,
            &[q1.clone(), q2.clone()],
            "amq.topic",
            "a.b",
            &[0, 0],
            b"second",
        );
        enqueue(log, std::slice::from_ref(&q2), "", "q2", &props, b"");
        log.append_remove(m1, &q1);
        log.append_delivered(m2, &q2);
        log.append_remove(m2, &q1);
    });
    let b = segment(|log| {
        let q = key("team", "work\u{e9}");
        for i in 0..4u8 {
            let id = enqueue(
                log,
                std::slice::from_ref(&q),
                "jobs",
                "job",
                &props,
                &[i; 32],
            );
            if i % 2 == 0 {
                log.append_delivered(id, &q);
            } else {
                log.append_remove(id, &q);
            }
        }
    });
    for (name, seg) in [("three_messages", &a), ("one_queue_churn", &b)] {
        assert_eq!(warren_store::log::decode_segment(seg).1, seg.len());
        write(&root.join("store_record"), name, seg);
        // store_recover: a control byte (see its source), then the segment.
        write(
            &root.join("store_recover"),
            name,
            &[[0u8].as_slice(), seg].concat(),
        );
        write(
            &root.join("store_recover"),
            &format!("{name}_split"),
            &[[2u8].as_slice(), seg].concat(),
        );
        write(
            &root.join("store_recover"),
            &format!("{name}_open"),
            &[[4u8].as_slice(), seg].concat(),
        );
    }
    // A torn tail, as after kill -9 mid-write.
    let torn = &a[..a.len() - 5];
    write(&root.join("store_record"), "torn_tail", torn);
    write(
        &root.join("store_recover"),
        "torn_tail",
        &[[0u8].as_slice(), torn].concat(),
    );
}
