//! The session loop: handle the complete packets in the read buffer, wait
//! for the store before a QoS 1/2 acknowledgement, stop reading publishers
//! while an alarm is on, then read more (with the keep-alive timeout) until
//! the connection ends, is closed or the server shuts down.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use warren_core::auth::login::CREDENTIAL_EXPIRED;
use warren_core::registry::{ConnStats, ConnectionInfo};
use warren_core::SyncState;

use super::{Conn, End};
use crate::codec::{self, CodecError};
use crate::keepalive::KEEP_ALIVE_TIMEOUT;
use crate::reason::ReasonCode;
use crate::takeover::{SHUTTING_DOWN, TAKEOVER};

/// What the session loop does after handling buffered packets.
enum Step {
    /// Read more from the socket.
    Read,
    /// Wait for the store, then acknowledge (`Publisher::pending`).
    Sync,
    /// The connection ends.
    End(End),
}

impl Conn {
    /// The session loop. Keep-alive, takeover, operator closes and server
    /// shutdown all arrive as close requests, so an idle connection waits
    /// on two futures only: its read and its close request.
    ///
    /// Not an `async fn`, which would keep a copy of its arguments beside
    /// the ones the loop uses: this future is most of every idle
    /// connection's task, so the rare waits in it are boxed too.
    // Written so on purpose (see above); clippy would make it an async fn.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<'a, R: AsyncRead + Unpin>(
        &'a mut self,
        rd: &'a mut R,
        buf: &'a mut BytesMut,
    ) -> impl std::future::Future<Output = End> + 'a {
        async move {
            // Small while idle; doubles while a busy client keeps filling it.
            let mut read_hint = 64usize;
            let info = self.registration.info.clone();
            loop {
                match self.drain(buf) {
                    Step::End(end) => return end,
                    Step::Sync => {
                        if let Some(end) = self.ack_when_synced().await {
                            return end;
                        }
                        continue;
                    }
                    Step::Read => {}
                }
                if self.blocked() {
                    // Boxed, as the other rare waits: the task of every idle
                    // connection would otherwise reserve room for it.
                    if let Some(end) = Box::pin(self.wait_unblocked(&info)).await {
                        return end;
                    }
                    continue;
                }
                if std::mem::take(&mut self.backlogged) {
                    // Boxed: its timer would be part of every task.
                    Box::pin(warren_net::pace_publisher(true)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                // The read size doubles while a busy client keeps filling it;
                // idle clients keep a small buffer.
                if buf.capacity() - buf.len() < read_hint / 2 {
                    buf.reserve(read_hint);
                }
                let spare = buf.capacity() - buf.len();
                tokio::select! {
                    r = rd.read_buf(buf) => match r {
                        Ok(0) => return End::Abnormal("socket closed without DISCONNECT".into()),
                        Err(e) => return End::Abnormal(e.to_string()),
                        Ok(n) => {
                            if self.keepalive.is_some() {
                                self.shared.keepalive.touch(&info);
                            }
                            if n >= spare {
                                read_hint = (read_hint * 2).min(256 * 1024);
                            }
                        }
                    },
                    reason = info.close_requested() => {
                        // What the client sent before it was asked to go still
                        // counts: a DISCONNECT there (say, with session expiry
                        // 0) must not lose to the takeover it raced with.
                        if let Some(end) = Box::pin(self.read_what_is_there(rd, buf)).await {
                            return end;
                        }
                        return self.close_requested(&reason);
                    }
                }
            }
        }
    }

    /// An alarm is on and this connection publishes: it is not read (nor
    /// is its keep-alive counted) until the alarm clears or it is closed.
    async fn wait_unblocked(&mut self, info: &ConnectionInfo) -> Option<End> {
        tracing::info!(peer = %self.peer(), client_id = %self.client_id(), "blocking MQTT publisher: {}", self.shared.alarms.current().reason());
        let mut alarms = self.shared.alarms.subscribe();
        self.shared.keepalive.pause(info);
        tokio::select! {
            _ = alarms.wait_for(|a| !a.any()) => {}
            reason = info.close_requested() => return Some(self.close_requested(&reason)),
        }
        self.shared.keepalive.touch(info);
        tracing::info!(peer = %self.peer(), client_id = %self.client_id(), "unblocking MQTT publisher");
        None
    }

    /// Read what the socket already holds, without waiting, and handle the
    /// complete packets in it; the end they bring, if any.
    async fn read_what_is_there(
        &mut self,
        rd: &mut (impl AsyncRead + Unpin),
        buf: &mut BytesMut,
    ) -> Option<End> {
        buf.reserve(128);
        // A zero timeout still polls the read once: data the reactor has
        // seen is read, nothing is waited for.
        let _ = tokio::time::timeout(Duration::ZERO, rd.read_buf(buf)).await;
        match self.drain(buf) {
            Step::End(end) => Some(end),
            Step::Read | Step::Sync => None,
        }
    }

    /// Send the acknowledgements left in `Publisher::pending` once the
    /// store has synced up to their sequence, and the homes of queues on
    /// other nodes have confirmed. A publish a home lost is answered 0x80
    /// in 5.0; 3.1.1 has no failed PUBACK, so the connection ends and the
    /// client sends it again.
    async fn ack_when_synced(&mut self) -> Option<End> {
        let pb = self.publisher.as_deref_mut()?;
        if pb.pending.is_empty() {
            return None;
        }
        let seq = pb.sync_seq;
        if let Some(rx) = pb.sync_rx.as_mut() {
            if rx.borrow_and_update().synced < seq {
                // Boxed: the wait's future would be part of every
                // connection's task.
                Box::pin(wait_synced(rx, seq)).await;
            }
        }
        let remote = std::mem::take(&mut pb.remote);
        let lost = match self.vhost.cluster_link() {
            Some(link) if !remote.is_empty() => !Box::pin(wait_remote(link, &remote)).await,
            _ => false,
        };
        let level = self.level;
        let pb = self.publisher.as_deref_mut()?;
        if lost {
            if level != 5 {
                pb.pending.clear();
                return Some(self.disconnect(
                    ReasonCode::UnspecifiedError,
                    "a queue's home node did not confirm a publish",
                ));
            }
            for p in pb.pending.iter_mut().filter(|p| !p.2.is_failure()) {
                p.2 = ReasonCode::UnspecifiedError;
            }
        }
        let n = pb.pending.len() as u64;
        self.out.push(|o| {
            for &(kind, pkid, code) in &pb.pending {
                codec::write_ack(o, level, kind, pkid, code);
            }
        });
        pb.pending.clear();
        ConnStats::add(&self.registration.info.stats.confirmed, n);
        None
    }

    /// The connection was asked to close: by a takeover, the keep-alive
    /// sweeper, server shutdown, or an operator.
    fn close_requested(&self, reason: &str) -> End {
        if reason == KEEP_ALIVE_TIMEOUT {
            tracing::info!(peer = %self.peer(), client_id = %self.client_id(), "MQTT keep-alive timeout");
            if self.level == 5 {
                self.out.push(|o| {
                    codec::write_disconnect(o, ReasonCode::KeepAliveTimeout, "keep alive timeout")
                });
            }
            return End::Abnormal("keep-alive timeout".into());
        }
        if reason == SHUTTING_DOWN {
            if self.level == 5 {
                self.out.push(|o| {
                    codec::write_disconnect(
                        o,
                        ReasonCode::ServerShuttingDown,
                        "server shutting down",
                    )
                });
            }
            return End::Clean;
        }
        if reason == CREDENTIAL_EXPIRED {
            // Connected longer than the token allows: 0xA0 Maximum connect
            // time, as RabbitMQ's rabbit_mqtt_reader; 3.1.1 is just closed.
            if self.level == 5 {
                self.out.push(|o| {
                    codec::write_disconnect(o, ReasonCode::MaximumConnectTime, CREDENTIAL_EXPIRED)
                });
            }
            return End::Abnormal("credential has expired".into());
        }
        if reason == TAKEOVER {
            if self.level == 5 {
                self.out.push(|o| {
                    codec::write_disconnect(o, ReasonCode::SessionTakenOver, "session taken over")
                });
            }
            return End::Abnormal("session taken over by a new connection".into());
        }
        tracing::info!(peer = %self.peer(), client_id = %self.client_id(), "closing MQTT connection: {reason}");
        if self.level == 5 {
            self.out
                .push(|o| codec::write_disconnect(o, ReasonCode::AdministrativeAction, reason));
        }
        End::Clean
    }

    /// Handle the complete packets in `buf`, without awaiting (so that no
    /// packet is held in the session loop's future). Acknowledgements
    /// that wait for the store collect while packets are there, so that
    /// the publishes of one read wait for one sync.
    fn drain(&mut self, buf: &mut BytesMut) -> Step {
        loop {
            if self.blocked() {
                return self.read_or_sync();
            }
            match codec::read(buf, self.level, self.cfg.max_packet_size) {
                Ok(p) => {
                    self.published |= matches!(p, codec::Packet::Publish(_));
                    if let Some(end) = self.on_packet(p) {
                        return Step::End(end);
                    }
                }
                Err(CodecError::Incomplete) => return self.read_or_sync(),
                Err(e) => return Step::End(self.protocol_error(&e)),
            }
        }
    }

    /// Wait for the store first when acknowledgements are pending.
    fn read_or_sync(&self) -> Step {
        match &self.publisher {
            Some(p) if !p.pending.is_empty() => Step::Sync,
            _ => Step::Read,
        }
    }

    /// A connection that has published is blocked while an alarm is on.
    fn blocked(&self) -> bool {
        self.published && self.shared.alarms.blocking()
    }

    fn protocol_error(&self, e: &CodecError) -> End {
        tracing::warn!(peer = %self.peer(), client_id = %self.client_id(), "MQTT protocol error: {e}");
        if self.level == 5 {
            let code = match e {
                CodecError::TooLarge(_) => ReasonCode::PacketTooLarge,
                CodecError::Protocol(_) => ReasonCode::ProtocolError,
                _ => ReasonCode::MalformedPacket,
            };
            let text = e.to_string();
            self.out.push(|o| codec::write_disconnect(o, code, &text));
        }
        End::Abnormal(e.to_string())
    }
}

/// Until the store has synced up to `seq` (or is gone).
/// How long a publish waits for the homes of queues on other nodes.
const REMOTE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Wait until every link in `waits` confirmed up to its sequence; false
/// when one lost it (or did not answer in time).
async fn wait_remote(
    link: &std::sync::Arc<dyn warren_core::remote::Link>,
    waits: &[warren_core::remote::RemoteSeq],
) -> bool {
    let mut rx = link.confirmations();
    let check = || {
        let mut done = true;
        for w in waits {
            let s = link.synced(w.link);
            if w.seq <= s.failed {
                return Some(false);
            }
            done &= w.seq <= s.synced;
        }
        done.then_some(true)
    };
    let wait = async {
        loop {
            rx.borrow_and_update();
            if let Some(ok) = check() {
                return ok;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::time::timeout(REMOTE_CONFIRM_TIMEOUT, wait)
        .await
        .unwrap_or(false)
}

async fn wait_synced(rx: &mut watch::Receiver<SyncState>, seq: u64) {
    while rx.borrow_and_update().synced < seq {
        if rx.changed().await.is_err() {
            break;
        }
    }
}
