//! The message store's record decoder (the `Records` walk of
//! crates/warren-store/src/log/record.rs that recovery and compaction
//! share, through `log::decode_segment`) on a segment's bytes: once with
//! the checksums fixed up so that mutations reach the decoder, once as
//! given. The decoder must stop at the first bad record, never past the
//! end, and compaction's copy of every enqueue record recovery accepted
//! must decode to the same message (checked inside `decode_segment`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_store::log::decode_segment;

#[path = "common_store.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (_, cut) = decode_segment(data);
    assert!(cut <= data.len());
    let mut fixed = data.to_vec();
    common::fix_crcs(&mut fixed);
    let (records, cut) = decode_segment(&fixed);
    assert!(cut <= fixed.len());
    assert!(records as usize * 9 <= cut, "more records than bytes");
});
