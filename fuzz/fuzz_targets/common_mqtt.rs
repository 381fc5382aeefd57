//! The read loop shared by the MQTT targets: packets are read from one
//! buffer as a session's reader does, until `Incomplete` or an error.

use bytes::BytesMut;
use warren_mqtt::codec::{read, write_publish, CodecError, Packet};

/// The session's default maximum packet size (mqtt.max_packet_size).
pub const MAX_SIZE: usize = 16 << 20;

/// Read `data` as one connection's stream: the first packet at
/// `first_level` (a session reads CONNECT at level 0), the rest at `level`.
/// Returns what was read and the error that ended it.
pub fn read_all(data: &[u8], first_level: u8, level: u8) -> (Vec<Packet>, CodecError) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    let mut l = first_level;
    loop {
        let before = buf.len();
        match read(&mut buf, l, MAX_SIZE) {
            Ok(p) => {
                assert!(buf.len() < before, "a packet consumed no bytes");
                if let Packet::Publish(p) = &p {
                    republish(p, level);
                }
                packets.push(p);
            }
            Err(e) => {
                if e == CodecError::Incomplete {
                    assert_eq!(buf.len(), before, "Incomplete consumed bytes");
                }
                return (packets, e);
            }
        }
        l = level;
    }
}

/// A publish the broker forwards is written with the codec's writer: what
/// it writes must read back as the same publish (properties aside: the
/// writer emits only those Warren forwards), and stably.
fn republish(p: &warren_mqtt::codec::Publish, level: u8) {
    let mut out = BytesMut::new();
    write_publish(&mut out, level, p);
    let Ok(Packet::Publish(q)) = read(&mut out, level, usize::MAX) else {
        panic!("written publish does not read back");
    };
    assert!(out.is_empty());
    assert_eq!(
        (&q.topic, q.qos, q.pkid, q.dup, q.retain, &q.payload),
        (&p.topic, p.qos, p.pkid, p.dup, p.retain, &p.payload)
    );
    let mut again = BytesMut::new();
    write_publish(&mut again, level, &q);
    let Ok(Packet::Publish(r)) = read(&mut again, level, usize::MAX) else {
        panic!("rewritten publish does not read back");
    };
    assert_eq!(q, r, "publish encoding is not stable");
}
