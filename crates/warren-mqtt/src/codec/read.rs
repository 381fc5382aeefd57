//! Reading packets: the remaining-length framing, then one parser per
//! packet type over a bounds-checked cursor.

use bytes::{Buf, Bytes, BytesMut};

use super::{kind, props, CodecError, Connect, Filter, Packet, Props, Publish, Subscribe, Will};

/// A cursor over one packet's body; every read is bounds-checked.
pub(super) struct Rd<'a> {
    pub(super) b: &'a [u8],
    pub(super) p: usize,
}

impl<'a> Rd<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .p
            .checked_add(n)
            .ok_or(CodecError::Malformed("length"))?;
        let s = self
            .b
            .get(self.p..end)
            .ok_or(CodecError::Malformed("truncated"))?;
        self.p = end;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, CodecError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, CodecError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(super) fn bin(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub(super) fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bin()?;
        let s =
            std::str::from_utf8(b).map_err(|_| CodecError::Malformed("invalid UTF-8 string"))?;
        if s.contains('\0') {
            return Err(CodecError::Malformed("NUL in string"));
        }
        Ok(s.to_string())
    }
    pub(super) fn varint(&mut self) -> Result<usize, CodecError> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            v |= ((b & 0x7f) as usize) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    // MQTT-1.5.5-1: the fewest bytes that hold the value.
                    return Err(CodecError::Malformed("variable byte integer not minimal"));
                }
                return Ok(v);
            }
        }
        Err(CodecError::BadLength)
    }
    pub(super) fn done(&self) -> bool {
        self.p >= self.b.len()
    }

    /// A v5 property list of a packet that may carry `allowed` (see
    /// [`props::allowed`]).
    pub(super) fn props(&mut self, allowed: u64) -> Result<Props, CodecError> {
        props::decode(self, allowed)
    }
}

/// Read one packet. `level` is the connection's protocol level (0 before
/// CONNECT; CONNECT carries its own). Consumes the packet from `buf`.
pub fn read(buf: &mut BytesMut, level: u8, max_size: usize) -> Result<Packet, CodecError> {
    if buf.len() < 2 {
        return Err(CodecError::Incomplete);
    }
    let mut len = 0usize;
    let mut hdr = 1;
    loop {
        let Some(&b) = buf.get(hdr) else {
            return Err(CodecError::Incomplete);
        };
        len |= ((b & 0x7f) as usize) << (7 * (hdr - 1));
        hdr += 1;
        if b & 0x80 == 0 {
            if hdr > 2 && b == 0 {
                // MQTT-1.5.5-1: a remaining length in more bytes than needed.
                return Err(CodecError::BadLength);
            }
            break;
        }
        if hdr > 4 {
            return Err(CodecError::BadLength);
        }
    }
    if hdr + len > max_size {
        return Err(CodecError::TooLarge(hdr + len));
    }
    if buf.len() < hdr + len {
        return Err(CodecError::Incomplete);
    }
    let first = buf[0];
    // Small packets are copied out so that the read buffer is reused; only
    // large payloads are sliced out of it (a slice pins its whole chunk).
    let body = if len < ZERO_COPY_MIN {
        let b = Bytes::copy_from_slice(&buf[hdr..hdr + len]);
        buf.advance(hdr + len);
        b
    } else {
        let mut frame = buf.split_to(hdr + len);
        frame.advance(hdr);
        frame.freeze()
    };
    parse(first, body, level)
}

/// The protocol level a CONNECT at the start of `buf` announces (3.1 is
/// reported as 4, as [`read`] does), when its first bytes are there and
/// name MQTT or MQIsdp: what a refusal of a CONNECT that could not be read
/// may answer in (a v5 CONNACK needs to know the client speaks v5).
pub fn connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != kind::CONNECT {
        return None;
    }
    // Skip the remaining length (at most 4 bytes, checked by `read`).
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let name = rest.get(2..2 + name_len)?;
    let level = *rest.get(2 + name_len)?;
    match name {
        b"MQTT" if level == 5 => Some(5),
        // Other levels are answered the 3.1.1 way (0x01), as mosquitto does.
        b"MQTT" | b"MQIsdp" => Some(4),
        _ => None,
    }
}

/// Packets at least this large keep their payload in the read buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;

// Inlined into `read` so the packet is built in place rather than copied
// out through each call (a PUBLISH with its properties is large).
#[inline(always)]
fn parse(first: u8, body: Bytes, level: u8) -> Result<Packet, CodecError> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let v5 = level == 5;
    let mut r = Rd { b: &body, p: 0 };
    if !matches!(
        kind,
        kind::PUBLISH | kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE
    ) && flags != 0
    {
        // MQTT-2.1.3-1 (3.1.1: MQTT-2.2.2-1/2): reserved flags are 0.
        return Err(CodecError::Malformed(
            "reserved flags set in the fixed header",
        ));
    }
    Ok(match kind {
        kind::CONNECT => Packet::Connect(Box::new(connect(&mut r)?)),
        kind::PUBLISH => Packet::Publish(publish(&mut r, &body, flags, v5)?),
        kind::PUBACK => Packet::PubAck(r.u16()?, reason_and_props(&mut r, v5)?),
        kind::PUBREC => Packet::PubRec(r.u16()?, reason_and_props(&mut r, v5)?),
        kind::PUBREL => {
            need_flags(flags, "PUBREL flags")?;
            Packet::PubRel(r.u16()?, reason_and_props(&mut r, v5)?)
        }
        kind::PUBCOMP => Packet::PubComp(r.u16()?, reason_and_props(&mut r, v5)?),
        kind::SUBSCRIBE => {
            need_flags(flags, "SUBSCRIBE flags")?;
            subscribe(&mut r, v5)?
        }
        kind::UNSUBSCRIBE => {
            need_flags(flags, "UNSUBSCRIBE flags")?;
            unsubscribe(&mut r, v5)?
        }
        kind::PINGREQ => Packet::PingReq,
        kind::DISCONNECT => disconnect(&mut r, v5)?,
        kind::AUTH if v5 => Packet::Auth(if r.done() { 0 } else { r.u8()? }),
        other => return Err(CodecError::UnknownType(other)),
    })
}

/// PUBREL, SUBSCRIBE and UNSUBSCRIBE must have the flags 0b0010.
fn need_flags(flags: u8, what: &'static str) -> Result<(), CodecError> {
    if flags == 2 {
        Ok(())
    } else {
        Err(CodecError::Malformed(what))
    }
}

/// The optional v5 reason code (and properties) of an acknowledgement.
fn reason_and_props(r: &mut Rd<'_>, v5: bool) -> Result<u8, CodecError> {
    if v5 && !r.done() {
        let code = r.u8()?;
        if !r.done() {
            r.props(props::allowed::ACK)?;
        }
        Ok(code)
    } else {
        Ok(0)
    }
}

#[inline(always)]
fn publish(r: &mut Rd<'_>, body: &Bytes, flags: u8, v5: bool) -> Result<Publish, CodecError> {
    let qos = (flags >> 1) & 3;
    if qos == 3 {
        return Err(CodecError::Malformed("QoS 3"));
    }
    if qos == 0 && flags & 8 != 0 {
        // MQTT-3.3.1-2: DUP must be 0 for QoS 0.
        return Err(CodecError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let pkid = if qos > 0 { r.u16()? } else { 0 };
    if qos > 0 && pkid == 0 {
        return Err(CodecError::Malformed("packet id 0"));
    }
    let props = if v5 {
        r.props(props::allowed::PUBLISH)?
    } else {
        Props::default()
    };
    let start = r.p;
    Ok(Publish {
        dup: flags & 8 != 0,
        qos,
        retain: flags & 1 != 0,
        topic,
        pkid,
        props,
        payload: body.slice(start..),
    })
}

/// SUBSCRIBE and UNSUBSCRIBE: the packet id, the (v5) properties, then at
/// least one entry read by `entry`.
/// No entries is a protocol error (MQTT-3.8.3-2, MQTT-3.10.3-2; 3.1.1
/// closes the connection either way); packet id 0 is malformed
/// (MQTT-2.2.1-3).
fn entries<'a, T>(
    r: &mut Rd<'a>,
    (v5, allowed): (bool, u64),
    empty: &'static str,
    mut entry: impl FnMut(&mut Rd<'a>) -> Result<T, CodecError>,
) -> Result<(u16, Props, Vec<T>), CodecError> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(CodecError::Malformed("packet id 0"));
    }
    let props = if v5 {
        r.props(allowed)?
    } else {
        Props::default()
    };
    let mut out = Vec::new();
    while !r.done() {
        out.push(entry(r)?);
    }
    if out.is_empty() {
        return Err(CodecError::Protocol(empty));
    }
    Ok((pkid, props, out))
}

fn subscribe(r: &mut Rd<'_>, v5: bool) -> Result<Packet, CodecError> {
    let allowed = (v5, props::allowed::SUBSCRIBE);
    let (pkid, props, filters) = entries(r, allowed, "SUBSCRIBE without filters", |r| {
        let filter = r.string()?;
        let o = r.u8()?;
        if o & 0xC0 != 0 || (!v5 && o & 0xFC != 0) {
            return Err(CodecError::Malformed("subscription options"));
        }
        if o & 3 == 3 || (o >> 4) & 3 == 3 {
            // MQTT-3.8.3-4 / 3.8.3.1: QoS 3 and retain handling 3 are errors.
            return Err(CodecError::Malformed(
                "subscription QoS or retain handling 3",
            ));
        }
        Ok(Filter {
            filter,
            qos: o & 3,
            no_local: o & 4 != 0,
            retain_as_published: o & 8 != 0,
            retain_handling: (o >> 4) & 3,
        })
    })?;
    let id = props.subscription_ids.first().copied();
    Ok(Packet::Subscribe(Subscribe { pkid, id, filters }))
}

fn unsubscribe(r: &mut Rd<'_>, v5: bool) -> Result<Packet, CodecError> {
    let allowed = (v5, props::allowed::UNSUBSCRIBE);
    let (pkid, _, filters) = entries(r, allowed, "UNSUBSCRIBE without filters", |r| r.string())?;
    Ok(Packet::Unsubscribe(pkid, filters))
}

fn disconnect(r: &mut Rd<'_>, v5: bool) -> Result<Packet, CodecError> {
    let (code, props) = if v5 && !r.done() {
        let c = r.u8()?;
        let p = if r.done() {
            Props::default()
        } else {
            r.props(props::allowed::DISCONNECT)?
        };
        (c, p)
    } else {
        (0, Props::default())
    };
    Ok(Packet::Disconnect(code, Box::new(props)))
}

fn connect(r: &mut Rd<'_>) -> Result<Connect, CodecError> {
    let name = r.bin()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 4 | 5) | (b"MQIsdp", 3) => {}
        (b"MQTT" | b"MQIsdp", l) => return Err(CodecError::BadProtocol(l)),
        _ => return Err(CodecError::Malformed("protocol name")),
    }
    let level = if level == 3 { 4 } else { level };
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(CodecError::Malformed("reserved connect flag"));
    }
    let keep_alive = r.u16()?;
    let props = if level == 5 {
        r.props(props::allowed::CONNECT)?
    } else {
        Props::default()
    };
    if level == 4 && flags & 0xC0 == 0x40 {
        // 3.1.1 MQTT-3.1.2-22: a password needs a user name (5.0 drops it).
        return Err(CodecError::Malformed(
            "password flag without user name flag",
        ));
    }
    let client_id = r.string()?;
    let will = if flags & 4 != 0 {
        let wp = if level == 5 {
            r.props(props::allowed::WILL)?
        } else {
            Props::default()
        };
        let topic = r.string()?;
        let payload = Bytes::copy_from_slice(r.bin()?);
        let qos = (flags >> 3) & 3;
        if qos == 3 {
            return Err(CodecError::Malformed("will QoS 3"));
        }
        Some(Will {
            topic,
            payload,
            qos,
            retain: flags & 0x20 != 0,
            props: wp,
        })
    } else {
        if flags & 0x38 != 0 {
            return Err(CodecError::Malformed("will flags without will"));
        }
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(Bytes::copy_from_slice(r.bin()?))
    } else {
        None
    };
    if !r.done() {
        return Err(CodecError::Malformed("bytes after the CONNECT payload"));
    }
    Ok(Connect {
        level,
        clean: flags & 2 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        props,
    })
}
