//! Heartbeats: the interval the client chose in connection.tune-ok, which
//! the writer uses to send ours, and the read timeouts that follow from it
//! (two missed intervals close the connection, as the spec suggests).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{Conn, End, Phase};

/// How long a peer that started closing has to answer close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

impl Conn {
    /// Use the heartbeat interval `secs` (0: none) from connection.tune-ok.
    pub(super) fn set_heartbeat(&mut self, secs: u16) {
        if secs > 0 {
            let hb = Duration::from_secs(u64::from(secs));
            *self.heartbeat.lock() = Some(hb);
            self.read_timeout = Some(hb * 2);
        }
    }

    /// How long the next read may wait in `phase`: the heartbeat timeout
    /// when running, what is left of the handshake before that.
    pub(super) fn read_timeout_in(
        &self,
        phase: Phase,
        handshake_deadline: Instant,
    ) -> Option<Duration> {
        match phase {
            Phase::Running => self.read_timeout,
            Phase::Closing => Some(CLOSE_TIMEOUT),
            _ => Some(handshake_deadline.saturating_duration_since(Instant::now())),
        }
    }
}

/// Read into `buf`, giving up after `timeout`.
pub(super) async fn read_with_timeout(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    timeout: Option<Duration>,
) -> Result<usize, End> {
    match timeout {
        None => Ok(rd.read_buf(buf).await?),
        Some(t) => match tokio::time::timeout(t, rd.read_buf(buf)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(End::Timeout),
        },
    }
}
