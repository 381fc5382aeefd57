//! The cluster link's decoders on arbitrary bytes: a frame body as a
//! request (what a peer, or anyone reaching the cluster port after the
//! handshake, sends) and the Raft log scan at start-up. Neither may panic;
//! the scan never claims more than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use warren_cluster::decode::{decode_request, intact_len};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    assert!(intact_len(data) <= data.len());
});
