//! MQTT 3.1.1 (level 4) and 5.0 (level 5) packets, server side: one
//! [`Packet`] enum for both versions with optional v5 properties, read from a
//! byte buffer with an "incomplete" answer that drives the read loop, payloads
//! as `Bytes`. The shape follows rumqttd's protocol module; mqttbytes itself
//! has been frozen at 0.6 since 2022, so Warren keeps its own codec.
//!
//! `read.rs` parses packets, `write.rs` writes the server's packets,
//! `props.rs` holds the v5 property list both share.

use bytes::Bytes;

mod props;
mod read;
mod write;

#[cfg(test)]
mod tests;

pub use props::{Props, SessionProps};
pub use read::{connect_level, read};
pub use write::{
    write_ack, write_connack, write_delivery, write_disconnect, write_pingresp, write_publish,
    write_suback, write_unsuback,
};

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Need more bytes.
    #[error("incomplete packet")]
    Incomplete,
    /// Remaining length encoding over 4 bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// Larger than the configured maximum packet size.
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
    /// Structure does not match the packet type.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed, but against a rule of the protocol (5.0: 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Reserved or unknown packet type.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// CONNECT with an unsupported protocol level.
    #[error("unsupported protocol level {0}")]
    BadProtocol(u8),
}

/// MQTT control packet types (the high four bits of a packet's first byte).
pub(crate) mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// The four acknowledgement packets of the QoS 1 and 2 flows, by their
/// MQTT packet type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AckKind {
    /// QoS 1 acknowledgement.
    PubAck = kind::PUBACK,
    /// QoS 2, step 1: received.
    PubRec = kind::PUBREC,
    /// QoS 2, step 2: release.
    PubRel = kind::PUBREL,
    /// QoS 2, step 3: complete.
    PubComp = kind::PUBCOMP,
}

impl AckKind {
    /// The acknowledgement a publish of `qos` (1 or 2) gets first.
    pub fn for_qos(qos: u8) -> AckKind {
        if qos == 1 {
            AckKind::PubAck
        } else {
            AckKind::PubRec
        }
    }
}

/// A will message from CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0-2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Will properties (v5).
    pub props: Props,
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    /// 4 (3.1.1) or 5; 3 (3.1) is treated as 4.
    pub level: u8,
    /// Clean session (v4) / clean start (v5).
    pub clean: bool,
    /// Seconds.
    pub keep_alive: u16,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Will.
    pub will: Option<Will>,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Properties (v5).
    pub props: Props,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (empty when a v5 topic alias stands for it).
    pub topic: String,
    /// Present for QoS > 0.
    pub pkid: u16,
    /// Properties (v5).
    pub props: Props,
    /// Payload.
    pub payload: Bytes,
}

/// One SUBSCRIBE entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// v5 no-local.
    pub no_local: bool,
    /// v5 retain-as-published.
    pub retain_as_published: bool,
    /// v5 retain handling (0, 1, 2).
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// The v5 Subscription Identifier, given back on matching PUBLISHes.
    pub id: Option<u32>,
    /// The filters, at least one.
    pub filters: Vec<Filter>,
}

/// Packets a server receives.
// PUBLISH is the large variant and the common one: boxing it would cost an
// allocation per message, and a packet lives only while it is handled.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// CONNECT (boxed: it is large and comes once per connection)
    Connect(Box<Connect>),
    /// PUBLISH
    Publish(Publish),
    /// PUBACK (packet id, reason)
    PubAck(u16, u8),
    /// PUBREC
    PubRec(u16, u8),
    /// PUBREL
    PubRel(u16, u8),
    /// PUBCOMP
    PubComp(u16, u8),
    /// SUBSCRIBE
    Subscribe(Subscribe),
    /// UNSUBSCRIBE (packet id, filters)
    Unsubscribe(u16, Vec<String>),
    /// PINGREQ
    PingReq,
    /// DISCONNECT (reason code, properties; boxed, it comes once)
    Disconnect(u8, Box<Props>),
    /// AUTH (v5): reason code
    Auth(u8),
}
