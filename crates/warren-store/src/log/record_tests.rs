//! Unit tests of the record codec and the segment walk.

use super::*;

fn key(v: &str, q: &str) -> QueueKey {
    QueueKey {
        vhost: v.into(),
        queue: q.into(),
    }
}

fn sample<'a>(queues: &'a [QueueKey], body: &'a [u8]) -> Enqueue<'a> {
    Enqueue {
        id: 42,
        queues,
        exchange: "amq.topic",
        meta: b"a.b\x90\x00props",
        key_len: 3,
        body,
        copy: false,
    }
}

/// The old encoder's bytes for id 1, queue "/" "q", empty exchange,
/// meta and body (the first record of a fuzz regression seed).
const OLD_ID_1: &[u8] = b"\x00\x00\x00\x1c\x1b\xac\x7f\xdf\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01/\x00\x01q\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

#[test]
fn encoding_is_unchanged() {
    let q = [key("/", "q")];
    let mut out = Vec::new();
    Enqueue {
        id: 1,
        queues: &q,
        exchange: "",
        meta: b"",
        key_len: 0,
        body: b"",
        copy: false,
    }
    .encode(&mut out);
    assert_eq!(out, OLD_ID_1);
}

#[test]
fn framing_then_write_matches_encode_byte_for_byte() {
    let long = "é".repeat(40_000); // 80,000 bytes: cut at the u16 limit
    let cases: [(Vec<QueueKey>, Vec<u8>); 4] = [
        (vec![], vec![]),
        (vec![key("/", "q")], b"hello".to_vec()),
        (vec![key("/", "a"), key("v", "b\0c")], vec![7; 100_000]),
        (vec![key(&long, "q"), key("/", &long)], vec![1, 2, 3]),
    ];
    for (queues, body) in &cases {
        let rec = sample(queues, body);
        let mut encoded = b"prefix".to_vec();
        rec.encode(&mut encoded);
        let framing = rec.framing();
        let mut written = b"prefix".to_vec();
        rec.write(&mut written, framing);
        assert_eq!(written, encoded);
        assert_eq!(framing.frame_len(), encoded.len() - 6);
        assert_eq!(rec.frame_len(), framing.frame_len());
    }
}

#[test]
fn decode_reads_back_what_was_encoded() {
    let queues = [key("/", "a"), key("v", "b")];
    let mut seg = Vec::new();
    sample(&queues, b"body").encode(&mut seg);
    encode_marker(&mut seg, Kind::Remove, 42, &queues[0]);
    encode_marker(&mut seg, Kind::Delivered, 42, &queues[1]);
    let mut walk = Records::new(&seg);
    let recs: Vec<_> = walk.by_ref().map(|(_, r)| r).collect();
    assert_eq!((walk.valid_to(), walk.stopped()), (seg.len(), None));
    let [Record::Enqueue(e), Record::Remove(r), Record::Delivered(d)] = &recs[..] else {
        panic!("{recs:?}");
    };
    assert_eq!((e.id, e.exchange, e.key_len), (42, "amq.topic", 3));
    assert_eq!((e.meta, e.body), (&b"a.b\x90\x00props"[..], &b"body"[..]));
    let names: Vec<_> = e.queues.iter().collect();
    assert_eq!(names, [(&b"/"[..], &b"a"[..]), (&b"v"[..], &b"b"[..])]);
    assert_eq!((r.id, r.vhost, r.queue), (42, &b"/"[..], &b"a"[..]));
    assert_eq!((d.id, d.vhost, d.queue), (42, &b"v"[..], &b"b"[..]));
}

/// Two good records, then `bad` (a frame of its own), then a good one:
/// the walk yields two and stops at the start of `bad`.
fn stops_at(bad: &[u8], why: RecordError) {
    let q = [key("/", "q")];
    let mut seg = Vec::new();
    sample(&q, b"1").encode(&mut seg);
    encode_marker(&mut seg, Kind::Delivered, 42, &q[0]);
    let at = seg.len();
    seg.extend_from_slice(bad);
    sample(&q, b"after").encode(&mut seg);
    let mut walk = Records::new(&seg);
    assert_eq!(walk.by_ref().count(), 2);
    assert_eq!((walk.valid_to(), walk.stopped()), (at, Some(why)));
    assert!(walk.next().is_none(), "stays stopped");
}

/// A frame around `payload` with a correct checksum.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin(&mut out);
    out.extend_from_slice(payload);
    seal(&mut out, start);
    out
}

#[test]
fn walk_stops_at_the_first_bad_record() {
    let q = [key("/", "q")];
    let mut corrupt = Vec::new();
    sample(&q, b"garbled").encode(&mut corrupt);
    *corrupt.last_mut().unwrap() ^= 0xff;
    stops_at(&corrupt, RecordError::Checksum);
    stops_at(&[0, 0, 0, 0, 0, 0, 0, 0], RecordError::Torn);
    stops_at(
        &framed(&[9, 0, 0, 0, 0, 0, 0, 0, 1]),
        RecordError::UnknownKind(9),
    );
    stops_at(&framed(&[1, 0, 0]), RecordError::Short);
    let mut big = vec![1];
    big.extend_from_slice(&ID_LIMIT.to_be_bytes());
    stops_at(&framed(&big), RecordError::IdOutOfRange(ID_LIMIT));
    let mut not_utf8 = vec![2];
    not_utf8.extend_from_slice(&5u64.to_be_bytes());
    not_utf8.extend_from_slice(b"\x00\x01\xff\x00\x01q");
    stops_at(&framed(&not_utf8), RecordError::NotUtf8);
}

#[test]
fn torn_tail_stops_the_walk() {
    let q = [key("/", "q")];
    let mut seg = Vec::new();
    sample(&q, b"1").encode(&mut seg);
    let at = seg.len();
    sample(&q, b"2").encode(&mut seg);
    for cut in [at + 3, seg.len() - 1] {
        let mut walk = Records::new(&seg[..cut]);
        assert_eq!(walk.by_ref().count(), 1);
        assert_eq!(
            (walk.valid_to(), walk.stopped()),
            (at, Some(RecordError::Torn))
        );
    }
}
