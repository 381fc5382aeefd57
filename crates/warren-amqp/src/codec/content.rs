//! Content frames: the content header parsed, and a message's header and
//! body frames written, split at the negotiated frame_max.

use bytes::{BufMut, BytesMut};

use super::frame::{begin_frame, end_frame, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_OVERHEAD};
use super::ids::class;
use super::{Cur, SyntaxError};

/// Content header: class, body size and the raw property bytes.
pub fn parse_content_header(payload: &[u8]) -> Result<(u16, u64, &[u8]), SyntaxError> {
    let mut c = Cur {
        b: payload,
        p: 0,
        what: "content header",
    };
    let class = c.u16()?;
    c.u16()?; // weight
    let size = c.u64()?;
    Ok((class, size, &payload[c.p..]))
}

/// Append a content header and body frames split at `frame_max`.
pub fn write_content(
    out: &mut BytesMut,
    channel: u16,
    props: &[u8],
    body: &[u8],
    frame_max: usize,
) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(class::BASIC);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(props);
    end_frame(out, at);
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
        out.put_u8(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::peek_frame;
    use crate::codec::tests::reference;
    use amq_protocol::frame::AMQPFrame;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldTable, LongString};

    #[test]
    fn content_matches_amq_protocol() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_headers(headers)
            .with_correlation_id("c1".into())
            .with_reply_to("rq".into());
        let header = reference(AMQPFrame::Header(
            5,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 10,
                properties: props.clone(),
            },
        ));
        // Property bytes start after type(1) channel(2) size(4) class(2) weight(2) size(8).
        let raw_props = &header[19..header.len() - 1];
        let body = b"0123456789";
        let mut out = BytesMut::new();
        write_content(&mut out, 5, raw_props, body, 4 + FRAME_OVERHEAD);
        let mut want = header.clone();
        for part in body.chunks(4) {
            want.extend(reference(AMQPFrame::Body(5, part.to_vec())));
        }
        assert_eq!(&out[..], &want[..]);
        // And our parser reads what amq-protocol wrote.
        let f = peek_frame(&header, 1 << 20).unwrap().unwrap();
        let (class, size, p) = parse_content_header(&header[7..7 + f.size]).unwrap();
        assert_eq!((class, size, p), (class::BASIC, 10, raw_props));
        let ours = warren_core::props::Properties::decode(p).unwrap();
        assert_eq!(ours.correlation_id.as_deref(), Some("c1"));
        assert_eq!(ours.headers.unwrap().get("k").unwrap().as_str(), Some("v"));
    }
}
