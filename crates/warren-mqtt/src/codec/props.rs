//! The MQTT 5 properties Warren reads or writes, and their wire form.

use bytes::{BufMut, Bytes, BytesMut};

use super::read::Rd;
use super::write::{put_str, put_varint};
use super::CodecError;

/// MQTT 5 properties Warren reads or writes; others are skipped. Those a
/// PUBLISH can carry are inline; the connection-level ones (CONNECT,
/// CONNACK, DISCONNECT) are boxed in [`SessionProps`], so a publish, which
/// is moved from the codec to the session by value, stays small.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props {
    /// 0x01
    pub payload_format: Option<u8>,
    /// 0x02, seconds
    pub message_expiry: Option<u32>,
    /// 0x23
    pub topic_alias: Option<u16>,
    /// 0x03
    pub content_type: Option<String>,
    /// 0x08
    pub response_topic: Option<String>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    /// 0x26
    pub user: Vec<(String, String)>,
    /// 0x0B: one in a SUBSCRIBE; in a PUBLISH to a client, one per
    /// matching subscription that has one.
    pub subscription_ids: Vec<u32>,
    /// The connection-level properties, when any was given.
    pub session: Option<Box<SessionProps>>,
}

/// The properties of CONNECT, CONNACK, DISCONNECT and wills.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionProps {
    /// 0x11, seconds
    pub session_expiry: Option<u32>,
    /// 0x12
    pub assigned_client_id: Option<String>,
    /// 0x13
    pub server_keep_alive: Option<u16>,
    /// 0x15: set when the client asks for enhanced authentication.
    pub authentication_method: Option<String>,
    /// 0x17
    pub request_problem_information: Option<u8>,
    /// 0x18, seconds
    pub will_delay: Option<u32>,
    /// 0x1F
    pub reason_string: Option<String>,
    /// 0x21
    pub receive_maximum: Option<u16>,
    /// 0x22
    pub topic_alias_maximum: Option<u16>,
    /// 0x24
    pub maximum_qos: Option<u8>,
    /// 0x25
    pub retain_available: Option<u8>,
    /// 0x27
    pub maximum_packet_size: Option<u32>,
    /// 0x28
    pub wildcard_available: Option<u8>,
    /// 0x29
    pub subscription_ids_available: Option<u8>,
    /// 0x2A
    pub shared_available: Option<u8>,
}

/// What [`Props::session`] reads when none were given.
static NO_SESSION_PROPS: SessionProps = SessionProps {
    session_expiry: None,
    assigned_client_id: None,
    server_keep_alive: None,
    authentication_method: None,
    request_problem_information: None,
    will_delay: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    maximum_qos: None,
    retain_available: None,
    maximum_packet_size: None,
    wildcard_available: None,
    subscription_ids_available: None,
    shared_available: None,
};

impl Props {
    /// The connection-level properties (all absent if none were given).
    pub fn session(&self) -> &SessionProps {
        self.session.as_deref().unwrap_or(&NO_SESSION_PROPS)
    }

    /// The connection-level properties, made on first use.
    pub fn session_mut(&mut self) -> &mut SessionProps {
        self.session.get_or_insert_with(Box::default)
    }
}

/// The longest string or binary data an MQTT length prefix (two bytes)
/// can carry.
pub const MAX_STRING: usize = u16::MAX as usize;

/// MQTT 5.0 property identifiers, named as in the specification's table 2-4.
pub(crate) mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Which properties each packet a server reads may carry (spec 2.2.2.2:
/// any other identifier makes the packet malformed), as identifier bits.
pub(super) mod allowed {
    use super::id::*;

    const fn bits(ids: &[u8]) -> u64 {
        let mut m = 1u64 << USER_PROPERTY;
        let mut i = 0;
        while i < ids.len() {
            m |= 1 << ids[i];
            i += 1;
        }
        m
    }

    pub const CONNECT: u64 = bits(&[
        SESSION_EXPIRY_INTERVAL,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        MAXIMUM_PACKET_SIZE,
    ]);
    pub const WILL: u64 = bits(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY_INTERVAL,
    ]);
    /// The Subscription Identifier is let through so that the session can
    /// answer it as the protocol error it is from a client (MQTT-3.3.4-6).
    pub const PUBLISH: u64 = bits(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        TOPIC_ALIAS,
    ]);
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    pub const ACK: u64 = bits(&[REASON_STRING]);
    pub const SUBSCRIBE: u64 = bits(&[SUBSCRIPTION_IDENTIFIER]);
    pub const UNSUBSCRIBE: u64 = bits(&[]);
    pub const DISCONNECT: u64 = bits(&[SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING]);
}

/// Read a property list (length, then identifier/value pairs) of a packet
/// that may carry the properties in `allowed`; properties Warren does not
/// use are skipped, unknown or misplaced identifiers are malformed, and a
/// property given twice that may appear once is a protocol error.
pub(super) fn decode(rd: &mut Rd<'_>, allowed: u64) -> Result<Props, CodecError> {
    let len = rd.varint()?;
    let body = rd.take(len)?;
    let mut r = Rd { b: body, p: 0 };
    let mut p = Props::default();
    // One bit per property identifier seen (all are below 64).
    let mut seen = 0u64;
    while !r.done() {
        let Ok(id) = u8::try_from(r.varint()?) else {
            return Err(CodecError::Malformed("unknown property"));
        };
        if id >= 64 || allowed & (1 << id) == 0 {
            return Err(CodecError::Malformed("property not valid in this packet"));
        }
        if id != id::USER_PROPERTY {
            if seen & (1 << id) != 0 {
                return Err(CodecError::Protocol("property included twice"));
            }
            seen |= 1 << id;
        }
        match id {
            id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry = Some(r.u32()?),
            id::CONTENT_TYPE => p.content_type = Some(r.string()?),
            id::RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            id::CORRELATION_DATA => p.correlation_data = Some(Bytes::copy_from_slice(r.bin()?)),
            id::SUBSCRIPTION_IDENTIFIER => {
                let v = r.varint()? as u32;
                if v == 0 {
                    return Err(CodecError::Protocol("subscription identifier 0"));
                }
                p.subscription_ids.push(v);
            }
            id::SESSION_EXPIRY_INTERVAL => p.session_mut().session_expiry = Some(r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => {
                p.session_mut().assigned_client_id = Some(r.string()?)
            }
            id::SERVER_KEEP_ALIVE => p.session_mut().server_keep_alive = Some(r.u16()?),
            id::AUTHENTICATION_METHOD => p.session_mut().authentication_method = Some(r.string()?),
            id::RESPONSE_INFORMATION | id::SERVER_REFERENCE => {
                r.string()?;
            }
            id::AUTHENTICATION_DATA => {
                r.bin()?;
            }
            id::REQUEST_PROBLEM_INFORMATION => {
                p.session_mut().request_problem_information = Some(zero_or_one(r.u8()?)?)
            }
            id::PAYLOAD_FORMAT_INDICATOR => p.payload_format = Some(zero_or_one(r.u8()?)?),
            id::REQUEST_RESPONSE_INFORMATION => {
                zero_or_one(r.u8()?)?;
            }
            id::MAXIMUM_QOS
            | id::RETAIN_AVAILABLE
            | id::WILDCARD_SUBSCRIPTION_AVAILABLE
            | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | id::SHARED_SUBSCRIPTION_AVAILABLE => {
                r.u8()?;
            }
            id::WILL_DELAY_INTERVAL => p.session_mut().will_delay = Some(r.u32()?),
            id::REASON_STRING => p.session_mut().reason_string = Some(r.string()?),
            id::RECEIVE_MAXIMUM => match r.u16()? {
                0 => return Err(CodecError::Protocol("receive maximum 0")),
                v => p.session_mut().receive_maximum = Some(v),
            },
            id::TOPIC_ALIAS_MAXIMUM => p.session_mut().topic_alias_maximum = Some(r.u16()?),
            id::TOPIC_ALIAS => p.topic_alias = Some(r.u16()?),
            id::USER_PROPERTY => {
                let k = r.string()?;
                let v = r.string()?;
                p.user.push((k, v));
            }
            id::MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => return Err(CodecError::Protocol("maximum packet size 0")),
                v => p.session_mut().maximum_packet_size = Some(v),
            },
            _ => return Err(CodecError::Malformed("unknown property")),
        }
    }
    Ok(p)
}

/// A byte property that may only be 0 or 1 (anything else is a protocol
/// error, spec 3.1.2.11 and 3.3.2.3.2).
fn zero_or_one(v: u8) -> Result<u8, CodecError> {
    if v <= 1 {
        Ok(v)
    } else {
        Err(CodecError::Protocol("property value other than 0 or 1"))
    }
}

/// A string property, left out (with a debug line) when it is longer than
/// a length prefix can say: writing it would corrupt the packet.
fn put_str_prop(b: &mut BytesMut, id: u8, v: &[u8]) {
    if v.len() > MAX_STRING {
        tracing::debug!(
            property = id,
            len = v.len(),
            "MQTT property longer than 65,535 bytes left out"
        );
        return;
    }
    b.put_u8(id);
    put_str(b, v);
}

/// Write `p` as a property list (length, then the properties).
pub(super) fn encode(p: &Props, out: &mut BytesMut) {
    let mut b = BytesMut::new();
    let q = p.session();
    if let Some(v) = p.payload_format {
        b.put_u8(id::PAYLOAD_FORMAT_INDICATOR);
        b.put_u8(v);
    }
    if let Some(v) = p.message_expiry {
        b.put_u8(id::MESSAGE_EXPIRY_INTERVAL);
        b.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        put_str_prop(&mut b, id::CONTENT_TYPE, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        put_str_prop(&mut b, id::RESPONSE_TOPIC, v.as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        put_str_prop(&mut b, id::CORRELATION_DATA, v);
    }
    for &v in &p.subscription_ids {
        b.put_u8(id::SUBSCRIPTION_IDENTIFIER);
        put_varint(&mut b, v as usize);
    }
    if let Some(v) = q.session_expiry {
        b.put_u8(id::SESSION_EXPIRY_INTERVAL);
        b.put_u32(v);
    }
    if let Some(v) = &q.assigned_client_id {
        put_str_prop(&mut b, id::ASSIGNED_CLIENT_IDENTIFIER, v.as_bytes());
    }
    if let Some(v) = q.server_keep_alive {
        b.put_u8(id::SERVER_KEEP_ALIVE);
        b.put_u16(v);
    }
    if let Some(v) = &q.reason_string {
        put_str_prop(&mut b, id::REASON_STRING, v.as_bytes());
    }
    if let Some(v) = q.receive_maximum {
        b.put_u8(id::RECEIVE_MAXIMUM);
        b.put_u16(v);
    }
    if let Some(v) = q.topic_alias_maximum {
        b.put_u8(id::TOPIC_ALIAS_MAXIMUM);
        b.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        b.put_u8(id::TOPIC_ALIAS);
        b.put_u16(v);
    }
    if let Some(v) = q.maximum_qos {
        b.put_u8(id::MAXIMUM_QOS);
        b.put_u8(v);
    }
    if let Some(v) = q.retain_available {
        b.put_u8(id::RETAIN_AVAILABLE);
        b.put_u8(v);
    }
    for (k, v) in &p.user {
        // A user property (often an AMQP header) that a length prefix
        // cannot hold is left out rather than written corrupt.
        if k.len() > MAX_STRING || v.len() > MAX_STRING {
            tracing::debug!(
                key_len = k.len(),
                value_len = v.len(),
                "MQTT user property longer than 65,535 bytes left out"
            );
            continue;
        }
        b.put_u8(id::USER_PROPERTY);
        put_str(&mut b, k.as_bytes());
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = q.maximum_packet_size {
        b.put_u8(id::MAXIMUM_PACKET_SIZE);
        b.put_u32(v);
    }
    if let Some(v) = q.wildcard_available {
        b.put_u8(id::WILDCARD_SUBSCRIPTION_AVAILABLE);
        b.put_u8(v);
    }
    if let Some(v) = q.subscription_ids_available {
        b.put_u8(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE);
        b.put_u8(v);
    }
    if let Some(v) = q.shared_available {
        b.put_u8(id::SHARED_SUBSCRIPTION_AVAILABLE);
        b.put_u8(v);
    }
    put_varint(out, b.len());
    out.put_slice(&b);
}
