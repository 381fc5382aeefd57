//! The read loop: read what the socket has, handle complete frames in
//! slices, and dispatch each by frame type and channel. Also watched while
//! waiting: shutdown, a forced close, alarms, and the store's sync progress.

use amq_protocol::protocol::{connection, AMQPClass, AMQPHardError};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;
use warren_core::SyncState;

use super::heartbeat::read_with_timeout;
use super::{Conn, End, Phase};
use crate::codec::{self, ids, MethodId, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use crate::error::{AmqpError, AmqpResult};

/// Body frames at least this large are sliced out of the read buffer
/// instead of copied.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Frames handled before the reader yields to other tasks (about 100
/// publishes of a small message).
const FRAMES_PER_SLICE: usize = 300;

/// What the read loop watches besides the socket.
struct Watches {
    shutdown: watch::Receiver<bool>,
    shutting_down: bool,
    /// Group-commit progress of the store drives publisher confirms.
    sync: Option<watch::Receiver<SyncState>>,
    has_store: bool,
    /// Confirms from the homes of queues on other nodes (clustered only).
    remote: Option<watch::Receiver<u64>>,
    close_asked: bool,
    alarms: watch::Receiver<warren_core::alarm::AlarmSet>,
    handshake_deadline: Instant,
}

/// What ended a wait of the read loop.
enum Woke {
    /// This many bytes were read (0: end of stream).
    Read(usize),
    /// Something watched changed and was handled.
    Watched,
    /// Shut down before the connection was open: end quietly.
    Stop,
}

impl Conn {
    /// Serve the connection until it ends.
    pub(super) async fn run(
        &mut self,
        rd: &mut (impl AsyncRead + Unpin),
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), End> {
        self.read_protocol_header(rd).await?;
        self.send_start();
        let sync = self.broker.sync_watch();
        let mut w = Watches {
            shutdown,
            shutting_down: false,
            has_store: sync.is_some(),
            sync,
            remote: self.broker.link().map(|l| l.confirmations()),
            close_asked: false,
            alarms: self.alarms.subscribe(),
            handshake_deadline: Instant::now() + self.cfg.handshake_timeout,
        };
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let blocked = self.is_blocked();
            if self.notify_blocked(blocked) {
                // Unblocked: handle the frames that waited in the buffer.
                self.drain(&mut buf, w.sync.as_ref()).await?;
            }
            if buf.capacity() - buf.len() < 2048 {
                // Doubles while a busy client keeps it full; idle ones stay at 4 KiB.
                buf.reserve(buf.capacity().clamp(4096, 256 * 1024));
            }
            let n = match self.wait(rd, &mut buf, &mut w, blocked).await? {
                Woke::Read(n) => n,
                Woke::Watched => continue,
                Woke::Stop => return Ok(()),
            };
            if n == 0 {
                return if self.phase == Phase::Done {
                    Ok(())
                } else {
                    Err(End::Eof)
                };
            }
            self.drain(&mut buf, w.sync.as_ref()).await?;
            if self.phase == Phase::Done {
                return Ok(());
            }
        }
    }

    /// Wait for bytes or for something watched (handled here).
    async fn wait(
        &mut self,
        rd: &mut (impl AsyncRead + Unpin),
        buf: &mut BytesMut,
        w: &mut Watches,
        blocked: bool,
    ) -> Result<Woke, End> {
        let info = self.registration.as_ref().map(|r| r.info.clone());
        let timeout = self.read_timeout_in(self.phase, w.handshake_deadline);
        let forced = AMQPHardError::CONNECTIONFORCED;
        let remote_pending = w.remote.is_some() && self.confirms_pending();
        tokio::select! {
            // While blocked by an alarm the socket is not read (and
            // missed heartbeats are not counted), as in RabbitMQ.
            r = read_with_timeout(rd, buf, timeout), if !blocked => return Ok(Woke::Read(r?)),
            _ = w.alarms.changed() => {}
            _ = w.shutdown.changed(), if !w.shutting_down => {
                w.shutting_down = true;
                if !matches!(self.phase, Phase::Running) {
                    return Ok(Woke::Stop);
                }
                self.close_connection(AmqpError::connection(forced, "broker forced connection closure with reason 'shutdown'"));
            }
            reason = async { info.as_ref().expect("registered").close_requested().await }, if info.is_some() && !w.close_asked => {
                w.close_asked = true;
                tracing::info!(peer = %self.peer, user = %self.user, "closing AMQP connection: {reason}");
                self.close_connection(AmqpError::connection(forced, reason));
            }
            r = async { w.remote.as_mut().expect("link").changed().await }, if remote_pending => {
                if r.is_err() {
                    w.remote = None;
                }
                self.flush_confirms(w.sync.as_ref());
            }
            r = async { w.sync.as_mut().expect("store").changed().await }, if w.has_store => {
                if r.is_err() {
                    w.sync = None;
                }
                self.flush_confirms(w.sync.as_ref());
            }
        }
        Ok(Woke::Watched)
    }

    /// The 8-byte protocol header, within the handshake timeout; a wrong
    /// one is answered with ours, as the spec asks, before closing.
    async fn read_protocol_header(&mut self, rd: &mut (impl AsyncRead + Unpin)) -> Result<(), End> {
        let mut header = [0u8; 8];
        match tokio::time::timeout(self.cfg.handshake_timeout, rd.read_exact(&mut header)).await {
            Err(_) => return Err(End::Timeout),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        if &header != codec::PROTOCOL_HEADER {
            self.out
                .push(|o| o.extend_from_slice(codec::PROTOCOL_HEADER));
            return Err(End::BadHeader);
        }
        Ok(())
    }

    /// Handle what was read in slices of FRAMES_PER_SLICE frames, yielding
    /// between slices: a busy publisher always finds its socket readable,
    /// so without this its task would keep the worker to itself, and the
    /// consumers' writers it woke would wait.
    async fn drain(
        &mut self,
        buf: &mut BytesMut,
        sync: Option<&watch::Receiver<SyncState>>,
    ) -> Result<(), End> {
        while self.process(buf)? {
            self.flush_confirms(sync);
            self.yield_or_pause().await;
        }
        self.flush_confirms(sync);
        self.yield_or_pause().await;
        Ok(())
    }

    /// Handle up to FRAMES_PER_SLICE complete frames from `buf`; true when
    /// more complete frames may remain.
    fn process(&mut self, buf: &mut BytesMut) -> Result<bool, End> {
        for _ in 0..FRAMES_PER_SLICE {
            // An alarm stops a publisher at the next frame; the rest waits
            // in the buffer until the alarm clears.
            if self.phase == Phase::Done || self.is_blocked() {
                return Ok(false);
            }
            let frame = match codec::peek_frame(buf, self.frame_max) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(false),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, "frame error: {e}");
                    self.close_connection(AmqpError::connection(AMQPHardError::FRAMEERROR, &e));
                    // The stream cannot be re-synchronised; stop reading.
                    self.phase = Phase::Done;
                    return Err(End::Frame(e));
                }
            };
            let total = frame.size + codec::FRAME_OVERHEAD;
            let result = if frame.kind == FRAME_BODY
                && frame.size >= ZERO_COPY_MIN
                && self.phase == Phase::Running
            {
                let mut f = buf.split_to(total);
                f.advance(7);
                f.truncate(frame.size);
                self.on_body_bytes(frame.channel, f.freeze())
            } else {
                let r = self.on_frame(frame.kind, frame.channel, &buf[7..7 + frame.size]);
                buf.advance(total);
                r
            };
            if let Err(e) = result {
                self.on_error(frame.channel, e);
            }
        }
        Ok(true)
    }

    /// One frame other than a zero-copy body.
    fn on_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> AmqpResult {
        if self.phase == Phase::Closing {
            self.while_closing(kind, channel, payload);
            return Ok(());
        }
        match kind {
            FRAME_HEARTBEAT if channel != 0 => Err(AmqpError::connection(
                AMQPHardError::FRAMEERROR,
                "heartbeat frame on a non-zero channel",
            )),
            FRAME_HEARTBEAT => Ok(()),
            FRAME_METHOD if channel == 0 => {
                let m = parse_method(payload)?;
                self.on_connection_method(m)
            }
            _ if channel == 0 => Err(AmqpError::connection(
                AMQPHardError::CHANNELERROR,
                "content frame on channel 0",
            )),
            _ if self.phase != Phase::Running => Err(AmqpError::connection(
                AMQPHardError::CHANNELERROR,
                "channel frame before connection.open",
            )),
            FRAME_METHOD => self.on_channel_method(channel, payload),
            FRAME_HEADER => self.with_channel(channel, |ch, ctx| ch.on_header(ctx, payload)),
            FRAME_BODY => self.with_channel(channel, |ch, ctx| ch.on_body(ctx, payload)),
            _ => Err(AmqpError::connection(
                AMQPHardError::FRAMEERROR,
                format!("unexpected frame type {kind}"),
            )),
        }
    }

    /// After connection.close was sent only close-ok (or a crossing
    /// close, answered) matters.
    fn while_closing(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        if kind != FRAME_METHOD || channel != 0 {
            return;
        }
        match MethodId::read(payload) {
            Some(ids::CONNECTION_CLOSE) => {
                self.send0(AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                    connection::CloseOk {},
                )));
                self.phase = Phase::Done;
            }
            Some(ids::CONNECTION_CLOSE_OK) => self.phase = Phase::Done,
            _ => {}
        }
    }

    fn on_body_bytes(&mut self, channel: u16, payload: bytes::Bytes) -> AmqpResult {
        if channel == 0 {
            return Err(AmqpError::connection(
                AMQPHardError::CHANNELERROR,
                "content frame on channel 0",
            ));
        }
        self.with_channel(channel, |ch, ctx| ch.on_body_bytes(ctx, payload))
    }

    /// A method frame on a channel: publish and settlements hand-parsed,
    /// the channel class here, the rest to the channel.
    fn on_channel_method(&mut self, number: u16, payload: &[u8]) -> AmqpResult {
        let Some(id) = MethodId::read(payload) else {
            return Err(AmqpError::connection(
                AMQPHardError::SYNTAXERROR,
                "method frame too short",
            ));
        };
        // While a publish awaits its content, only content frames may come.
        if let Some(ch) = self.channels.get(number) {
            if ch.expects_content() && !ch.closing {
                return Err(AmqpError::connection(
                    AMQPHardError::UNEXPECTEDFRAME,
                    format!("expected content header for class 60, got non content header frame instead ({id})"),
                ));
            }
        }
        let syntax = |e| AmqpError::connection(AMQPHardError::SYNTAXERROR, e).on(id);
        match id {
            ids::BASIC_PUBLISH => {
                self.published = true;
                let p = codec::parse_publish(payload).map_err(syntax)?;
                self.with_channel(number, |ch, _| ch.on_publish(p))
            }
            ids::BASIC_ACK | ids::BASIC_REJECT | ids::BASIC_NACK => {
                let s = codec::parse_settle(payload, id.method).map_err(syntax)?;
                self.with_channel(number, |ch, _| ch.on_settle(s))
            }
            MethodId {
                class: ids::class::CHANNEL,
                ..
            } => {
                let m = parse_method(payload)?;
                self.on_channel_class(number, m)
            }
            _ => {
                let m = parse_method(payload)?;
                self.with_channel(number, |ch, ctx| ch.on_method(ctx, m))
            }
        }
    }
}

/// Parse a control-plane method with amq-protocol: unknown methods are 540,
/// malformed arguments 502, both connection exceptions.
fn parse_method(payload: &[u8]) -> AmqpResult<AMQPClass> {
    let Some(id) = MethodId::read(payload) else {
        return Err(AmqpError::connection(
            AMQPHardError::SYNTAXERROR,
            "method frame too short",
        ));
    };
    if !ids::known_method(id) {
        return Err(AmqpError::connection(
            AMQPHardError::NOTIMPLEMENTED,
            format!("unknown method {id}"),
        )
        .on(id));
    }
    match codec::parse_class(payload) {
        Ok((_, m)) => Ok(m),
        Err(_) => Err(AmqpError::connection(
            AMQPHardError::SYNTAXERROR,
            format!("malformed arguments for method {id}"),
        )
        .on(id)),
    }
}
