//! Framing: frame type octets, locating a complete frame in the read
//! buffer, and starting and ending frames written by hand.

use amq_protocol::protocol::constants;
use bytes::{BufMut, BytesMut};

/// Method frame.
pub const FRAME_METHOD: u8 = constants::FRAME_METHOD;
/// Content header frame.
pub const FRAME_HEADER: u8 = constants::FRAME_HEADER;
/// Content body frame.
pub const FRAME_BODY: u8 = constants::FRAME_BODY;
/// Heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = constants::FRAME_HEARTBEAT;
/// Every frame ends with this octet.
pub const FRAME_END: u8 = constants::FRAME_END;
/// Frame header (type, channel, size) plus end octet.
pub const FRAME_OVERHEAD: usize = 8;

/// The protocol header a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A complete frame located in the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    /// Frame type octet.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload length.
    pub size: usize,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The declared size exceeds the negotiated frame_max.
    #[error("frame size {size} exceeds frame_max {max}")]
    TooLarge {
        /// Declared payload size.
        size: usize,
        /// Negotiated limit.
        max: usize,
    },
    /// The frame does not end with 0xCE.
    #[error("frame end octet missing")]
    BadEnd,
    /// A frame type octet the spec does not define.
    #[error("unknown frame type {0}")]
    BadType(u8),
}

/// Locate the next frame: `Ok(None)` until the buffer holds all of it.
pub fn peek_frame(buf: &[u8], frame_max: usize) -> Result<Option<RawFrame>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::BadType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size + FRAME_OVERHEAD > frame_max {
        return Err(FrameError::TooLarge {
            size,
            max: frame_max,
        });
    }
    if buf.len() < size + FRAME_OVERHEAD {
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(FrameError::BadEnd);
    }
    Ok(Some(RawFrame {
        kind,
        channel,
        size,
    }))
}

/// Start a frame; returns the offset of its size field for [`end_frame`].
pub(super) fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

pub(super) fn end_frame(out: &mut BytesMut, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Append a heartbeat frame.
pub fn write_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_errors() {
        assert_eq!(peek_frame(&[1, 0, 0, 0, 0], 4096), Ok(None));
        assert_eq!(
            peek_frame(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 4096),
            Err(FrameError::BadType(9))
        );
        assert_eq!(
            peek_frame(&[8, 0, 0, 0, 0, 0, 0, 0xCD], 4096),
            Err(FrameError::BadEnd)
        );
        assert!(matches!(
            peek_frame(&[3, 0, 1, 0, 1, 0, 0], 4096),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(crate::codec::parse_publish(&[0, 60, 0, 40, 0]).is_err());
    }
}
