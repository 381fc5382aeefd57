//! The cluster port's decoders on arbitrary bytes: a frame body as a
//! request (what a peer, or anyone reaching the cluster port after the
//! handshake, sends), the same bytes as a stream of message-link frames
//! (publishes, deliveries, settlements, with the messages they carry
//! rebuilt), and the Raft log scan at start-up. None may panic; the scan
//! never claims more than it was given.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_cluster::decode::{
    decode_link_frame, decode_request, intact_len, link_message, split_link_frame, LinkFrame,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    assert!(intact_len(data) <= data.len());
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = split_link_frame(&mut buf) {
        match decode_link_frame(f) {
            Ok(LinkFrame::Publish { msg, .. }) | Ok(LinkFrame::Deliver { msg, .. }) => {
                let _ = link_message(msg);
            }
            _ => {}
        }
    }
});
