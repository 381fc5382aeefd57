//! AMQP 0-9-1 framing. Control-plane methods go through amq-protocol's
//! generated parser and generator; the per-message path (publish, content
//! header, body, deliver, get-ok, return, ack/nack/reject) is framed by hand
//! on byte slices so that a message costs no allocation beyond its body.
//! The hand framing is checked byte for byte against amq-protocol in tests.

mod content;
mod control;
mod frame;
pub mod ids;
mod methods;

pub use content::{parse_content_header, write_content};
pub use control::{check_table_depth, parse_class, write_method, MAX_TABLE_DEPTH};
pub use frame::{
    peek_frame, write_heartbeat, FrameError, RawFrame, FRAME_BODY, FRAME_END, FRAME_HEADER,
    FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD, PROTOCOL_HEADER,
};
pub use ids::MethodId;
pub use methods::{
    parse_publish, parse_settle, write_confirm, write_deliver, write_get_ok, write_return, Publish,
    Settle,
};

use bytes::{BufMut, BytesMut};

/// A malformed method or content payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {0}")]
pub struct SyntaxError(pub &'static str);

/// A reading position in a payload; errors name `what` is read.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    what: &'static str,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SyntaxError> {
        let s = self
            .b
            .get(self.p..self.p + n)
            .ok_or(SyntaxError(self.what))?;
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SyntaxError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SyntaxError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Result<u64, SyntaxError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn short(&mut self) -> Result<&'a [u8], SyntaxError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
}

/// Class and method ids of a method frame payload, as a plain pair for
/// tools (warren-bench); the broker itself uses [`MethodId::read`].
pub fn method_id(payload: &[u8]) -> Option<(u16, u16)> {
    MethodId::read(payload).map(|m| (m.class, m.method))
}

/// Append a short string, cut at 255 bytes.
fn put_short(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

#[cfg(test)]
pub(crate) mod tests {
    use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};

    /// amq-protocol's encoding of a frame, to compare ours with.
    pub(crate) fn reference(frame: AMQPFrame) -> Vec<u8> {
        gen_frame(&frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }
}
