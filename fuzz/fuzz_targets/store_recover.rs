//! Recovery of the message store from a data directory whose segment files
//! hold the fuzz input, written to a directory on tmpfs (/dev/shm, else the
//! temp dir) that is removed after each run.
//!
//! Input: one control byte, then the segment bytes. Control bit 0 set: keep
//! the record checksums as given (otherwise they are fixed up so that
//! mutations reach the record decoder); bit 1 set: split the bytes into two
//! segments (0000000001.seg and 0000000002.seg) at the first record
//! boundary past the middle, so that removals cross segments; bit 2 set:
//! recover with `Log::open_with` (writer thread, dead-segment deletion),
//! else with `log::recover_dir`, the same recovery without starting a log
//! (several times faster).
//!
//! Recovery must not fail on any content (it truncates what it cannot
//! read), the next id must lie above every recovered one, and recovering
//! again must find the same messages (redelivered flags aside after
//! `Log::open_with`, which sets them all when it finds no clean-shutdown
//! marker) and nothing left to truncate.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warren_store::log::recover_dir;
use warren_store::{Log, Recovery};

#[path = "common_store.rs"]
mod common;

fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let root = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        root.join(format!("warren-fuzz-recover-{}", std::process::id()))
    })
}

type Summary = Vec<(
    String,
    String,
    Vec<(u64, bool, String, Vec<u8>, u8, Vec<u8>)>,
)>;

fn summary(r: &mut Recovery) -> Summary {
    let mut v: Summary = r
        .queues
        .iter_mut()
        .map(|(k, tail)| {
            let len = tail.len();
            let ms = tail
                .read_all()
                .iter()
                .map(|m| {
                    (
                        m.id,
                        m.redelivered,
                        m.exchange.to_string(),
                        m.meta.to_vec(),
                        m.key_len,
                        m.body.to_vec(),
                    )
                })
                .collect::<Vec<_>>();
            // Read back: what recovery counted, each message once.
            assert_eq!(ms.len(), len, "queue {k:?} reads back another count");
            let mut ids: Vec<u64> = ms.iter().map(|m| m.0).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), len, "queue {k:?} reads a message twice");
            (k.vhost.clone(), k.queue.clone(), ms)
        })
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, seg)) = data.split_first() else {
        return;
    };
    let mut seg = seg.to_vec();
    if control & 1 == 0 {
        common::fix_crcs(&mut seg);
    }
    let dir = base().clone();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    if control & 2 != 0 {
        let at = common::split_point(&seg);
        fs::write(dir.join("0000000001.seg"), &seg[..at]).unwrap();
        fs::write(dir.join("0000000002.seg"), &seg[at..]).unwrap();
    } else {
        fs::write(dir.join("0000000001.seg"), &seg).unwrap();
    }
    let mut first = if control & 4 != 0 {
        let (log, first) = Log::open_with(&dir, 1 << 20).expect("recovery fails");
        log.close();
        first
    } else {
        let (first, next_id) = recover_dir(&dir).expect("recovery fails");
        let max = first.queues.values().flat_map(|t| t.ids()).max();
        assert!(
            max.is_none_or(|m| m < next_id),
            "next id {next_id} is not new"
        );
        first
    };
    let (mut second, _) = recover_dir(&dir).expect("second recovery fails");
    assert_eq!(second.truncated, 0, "the first recovery left a bad tail");
    let (mut first, mut second) = (summary(&mut first), summary(&mut second));
    if control & 4 != 0 {
        // Log::open_with flags messages redelivered after an unclean stop
        // (no clean-shutdown marker); recover_dir reports the markers only.
        for (_, _, ms) in first.iter_mut().chain(second.iter_mut()) {
            for m in ms {
                m.1 = false;
            }
        }
    }
    assert_eq!(first, second, "recovery is not idempotent");
    let _ = fs::remove_dir_all(&dir);
});
