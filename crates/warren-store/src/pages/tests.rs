use std::path::Path;

use super::*;

fn pages(dir: &Path, segment_size: u64) -> Arc<Pages> {
    let opts = PageOptions {
        segment_size,
        ..PageOptions::default()
    };
    Pages::open(&dir.join("pages"), opts).unwrap()
}

fn record(i: u32) -> Vec<u8> {
    let mut r = i.to_le_bytes().to_vec();
    r.resize(4 + (i as usize % 300), i as u8);
    r
}

fn drain(s: &mut Spill, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = s.pop_chunk(max).unwrap() {
        assert!(!c.is_empty());
        out.extend(c.records().map(|b| b.to_vec()));
    }
    out
}

#[test]
fn records_come_back_in_order_across_segments_and_the_tail() {
    let dir = tempdir();
    let p = pages(&dir, 256 << 10);
    let mut s = p.spill();
    let n = 20_000;
    for i in 0..n {
        s.push(&[&record(i)]).unwrap();
    }
    assert_eq!(s.len(), n as u64);
    assert!(p.disk_bytes() > 1 << 20, "most of it went to disk");
    let got = drain(&mut s, 100_000);
    assert_eq!(got.len(), n as usize);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r, &record(i as u32));
    }
    assert!(s.is_empty());
    assert_eq!(s.bytes(), 0);
    // Read to the end: every page file is gone.
    assert_eq!(fs::read_dir(&s.dir).unwrap().count(), 0);
    assert_eq!(p.disk_bytes(), 0);
    // And the spill works again from empty.
    s.push(&[b"again"]).unwrap();
    assert_eq!(drain(&mut s, 100), [b"again".to_vec()]);
}

#[test]
fn reads_interleave_with_writes() {
    let dir = tempdir();
    let p = pages(&dir, 64 << 10);
    let mut s = p.spill();
    let (mut next_in, mut next_out) = (0u32, 0u32);
    for round in 0..200 {
        for _ in 0..(round % 7) * 50 {
            s.push(&[&record(next_in)]).unwrap();
            next_in += 1;
        }
        if let Some(c) = s.pop_chunk(10_000).unwrap() {
            for r in c.records() {
                assert_eq!(&r[..], &record(next_out)[..]);
                next_out += 1;
            }
        }
    }
    for r in drain(&mut s, 10_000) {
        assert_eq!(r, record(next_out));
        next_out += 1;
    }
    assert_eq!(next_in, next_out);
}

#[test]
fn a_record_larger_than_the_read_size_is_read_whole() {
    let dir = tempdir();
    let p = pages(&dir, 1 << 20);
    let mut s = p.spill();
    let big = vec![7u8; 200_000];
    s.push(&[b"head", &big]).unwrap();
    s.push(&[b"small"]).unwrap();
    let got = drain(&mut s, 1000);
    assert_eq!(got.len(), 2);
    assert_eq!(&got[0][..4], b"head");
    assert_eq!(got[0].len(), 200_004);
    assert_eq!(got[1], b"small");
}

#[test]
fn dropping_a_spill_gives_its_disk_back() {
    let dir = tempdir();
    let p = pages(&dir, 64 << 10);
    let mut s = p.spill();
    for i in 0..5000 {
        s.push(&[&record(i)]).unwrap();
    }
    assert!(p.disk_bytes() > 0);
    let path = s.dir.clone();
    drop(s);
    assert_eq!(p.disk_bytes(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        assert!(std::time::Instant::now() < deadline, "page dir not removed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn open_clears_what_an_earlier_run_left() {
    let dir = tempdir();
    let p = pages(&dir, 64 << 10);
    let mut s = p.spill();
    for i in 0..5000 {
        s.push(&[&record(i)]).unwrap();
    }
    std::mem::forget(s);
    drop(p);
    let p = pages(&dir, 64 << 10);
    assert_eq!(fs::read_dir(dir.join("pages")).unwrap().count(), 0);
    assert_eq!(p.disk_bytes(), 0);
}

#[test]
fn open_is_not_blocked_by_an_aside_left_from_an_earlier_run() {
    let dir = tempdir();
    let p = pages(&dir, 64 << 10);
    let mut s = p.spill();
    s.push(&[b"x"]).unwrap();
    s.pop_chunk(100).unwrap();
    std::mem::forget(s);
    drop(p);
    // What a run killed mid-removal leaves, under the name this one would pick.
    let stale = dir.join(format!("pages.old-{}-0", std::process::id()));
    fs::create_dir_all(stale.join("q00000001")).unwrap();
    fs::write(stale.join("q00000001/00000001.page"), b"stale").unwrap();
    let p = pages(&dir, 64 << 10);
    assert_eq!(p.disk_bytes(), 0);
    assert_eq!(fs::read_dir(dir.join("pages")).unwrap().count(), 0);
    // And the leftover itself is deleted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stale.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "stale aside not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn tempdir() -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "warren-pages-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}
