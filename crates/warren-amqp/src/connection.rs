//! One AMQP connection: the handshake, the frame read loop, connection-class
//! methods, channel lifecycle and exception handling. The reader task owns
//! all channel state; a separate writer task drains the [`Outbox`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::AMQPHardError;
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_core::alarm::Alarms;
use warren_core::auth::Guard;
use warren_core::limits::ConnectionLease;
use warren_core::registry::{ConnectionInfo, Registration};
use warren_core::SyncState;
use warren_core::{Broker, Table, VHost};

use crate::channel::{Channel, Ctx};
use crate::channels::Channels;
use crate::codec::{self, FrameError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use crate::deliveries::ChannelShared;
use crate::error::{AmqpError, AmqpResult, Scope};
use crate::Config;
use warren_net::outbox::Outbox;

/// Body frames at least this large are sliced out of the read buffer
/// instead of copied.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Frames handled before the reader yields to other tasks (about 100
/// publishes of a small message).
const FRAMES_PER_SLICE: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StartOk,
    TuneOk,
    Open,
    Running,
    /// connection.close sent; waiting for close-ok.
    Closing,
    Done,
}

struct Conn {
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    id: u64,
    peer: SocketAddr,
    out: Arc<Outbox>,
    phase: Phase,
    local: SocketAddr,
    user: String,
    /// connection_name or product from the client's properties.
    client: String,
    vhost: Option<Arc<VHost>>,
    guard: Option<Guard>,
    registration: Option<Registration>,
    frame_max: usize,
    channel_max: u16,
    heartbeat: Arc<Mutex<Option<Duration>>>,
    read_timeout: Option<Duration>,
    channels: Channels<Channel>,
    /// The connection's place in the node, vhost and user connection
    /// counts, from connection.open until cleanup.
    lease: Option<ConnectionLease>,
    cancel_notify: bool,
    /// Memory and disk alarms: a publishing connection is not read while one is on.
    alarms: Arc<Alarms>,
    /// Set by the first basic.publish: only publishers are blocked by alarms.
    published: bool,
    /// The client understands connection.blocked (its capabilities say so).
    blocked_notify: bool,
    /// connection.blocked was sent and unblocked not yet.
    blocked_sent: bool,
}

/// Serve one accepted socket until it closes.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let (mut rd, wr) = stream.into_split();
    let heartbeat = Arc::new(Mutex::new(None));
    let out = Outbox::new(Box::new(wr), heartbeat.clone(), codec::write_heartbeat);
    let mut conn = Conn {
        id: broker.next_id(),
        alarms: broker.alarms.clone(),
        published: false,
        blocked_notify: false,
        blocked_sent: false,
        broker,
        frame_max: cfg.frame_max as usize,
        channel_max: cfg.channel_max,
        cfg,
        peer,
        local,
        out: out.clone(),
        phase: Phase::StartOk,
        user: String::new(),
        client: String::new(),
        vhost: None,
        guard: None,
        registration: None,
        heartbeat,
        read_timeout: None,
        channels: Channels::default(),
        lease: None,
        cancel_notify: false,
    };
    tracing::debug!(peer = %peer, "accepting AMQP connection");
    if let Err(e) = conn.run(&mut rd, shutdown).await {
        tracing::info!(peer = %peer, user = %conn.user, "AMQP connection closed: {e}");
    } else if !conn.user.is_empty() {
        tracing::info!(peer = %peer, user = %conn.user, "AMQP connection closed");
    }
    conn.cleanup();
    conn.registration = None;
    out.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), out.flushed()).await;
}

/// Why the read loop ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the socket")]
    Eof,
    #[error("missed heartbeats from client")]
    Timeout,
    #[error("bad protocol header")]
    BadHeader,
    #[error("{0}")]
    Exception(String),
}

impl Conn {
    async fn run(
        &mut self,
        rd: &mut OwnedReadHalf,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), End> {
        let mut header = [0u8; 8];
        match tokio::time::timeout(self.cfg.handshake_timeout, rd.read_exact(&mut header)).await {
            Err(_) => return Err(End::Timeout),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        if &header != codec::PROTOCOL_HEADER {
            // The spec: answer with the header we support, then close.
            self.out
                .push(|o| o.extend_from_slice(codec::PROTOCOL_HEADER));
            return Err(End::BadHeader);
        }
        self.send_start();
        let handshake_deadline = tokio::time::Instant::now() + self.cfg.handshake_timeout;
        let mut buf = BytesMut::with_capacity(4096);
        let mut shutting_down = false;
        // Group-commit progress of the store drives publisher confirms.
        let mut sync_rx = self.broker.sync_watch();
        let has_store = sync_rx.is_some();
        let mut close_asked = false;
        let mut alarm_rx = self.alarms.subscribe();
        loop {
            let blocked = self.is_blocked();
            if self.notify_blocked(blocked) {
                // Unblocked: handle the frames that waited in the buffer.
                self.drain(&mut buf, sync_rx.as_ref()).await?;
            }
            let info = self.registration.as_ref().map(|r| r.info.clone());
            let timeout = match self.phase {
                Phase::Running => self.read_timeout,
                Phase::Closing => Some(Duration::from_secs(3)),
                _ => {
                    Some(handshake_deadline.saturating_duration_since(tokio::time::Instant::now()))
                }
            };
            if buf.capacity() - buf.len() < 2048 {
                // Doubles while a busy client keeps it full; idle ones stay at 4 KiB.
                buf.reserve(buf.capacity().clamp(4096, 256 * 1024));
            }
            let n = tokio::select! {
                // While blocked by an alarm the socket is not read (and
                // missed heartbeats are not counted), as in RabbitMQ.
                r = read_with_timeout(rd, &mut buf, timeout), if !blocked => r?,
                _ = alarm_rx.changed() => continue,
                _ = shutdown.changed(), if !shutting_down => {
                    shutting_down = true;
                    if matches!(self.phase, Phase::Running) {
                        self.close_connection(AmqpError::connection(320, "broker forced connection closure with reason 'shutdown'"));
                    } else {
                        return Ok(());
                    }
                    continue;
                }
                reason = async { info.as_ref().expect("registered").close_requested().await }, if info.is_some() && !close_asked => {
                    close_asked = true;
                    tracing::info!(peer = %self.peer, user = %self.user, "closing AMQP connection: {reason}");
                    self.close_connection(AmqpError::connection(320, format!("CONNECTION_FORCED - {reason}")));
                    continue;
                }
                r = async { sync_rx.as_mut().expect("store").changed().await }, if has_store => {
                    if r.is_err() {
                        sync_rx = None;
                    }
                    self.flush_confirms(sync_rx.as_ref());
                    continue;
                }
            };
            if n == 0 {
                return if self.phase == Phase::Done {
                    Ok(())
                } else {
                    Err(End::Eof)
                };
            }
            self.drain(&mut buf, sync_rx.as_ref()).await?;
            if self.phase == Phase::Done {
                return Ok(());
            }
        }
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

    /// A connection that has published is blocked while an alarm is on.
    fn is_blocked(&self) -> bool {
        self.published && self.phase == Phase::Running && self.alarms.blocking()
    }

    /// Send connection.blocked / unblocked on a change of `blocked` to
    /// clients that asked for them; true when the connection was just
    /// unblocked.
    fn notify_blocked(&mut self, blocked: bool) -> bool {
        if blocked == self.blocked_sent {
            return false;
        }
        self.blocked_sent = blocked;
        let reason = self.alarms.current().reason();
        if blocked {
            tracing::info!(peer = %self.peer, user = %self.user, "blocking publishing connection: {reason}");
        } else {
            tracing::info!(peer = %self.peer, user = %self.user, "unblocking publishing connection");
        }
        if self.blocked_notify {
            let m = if blocked {
                connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: reason.into(),
                })
            } else {
                connection::AMQPMethod::Unblocked(connection::Unblocked {})
            };
            self.send0(AMQPClass::Connection(m));
        }
        !blocked
    }

    /// Yield to other tasks; pause for a millisecond when a publish on this
    /// connection reached a queue whose consumers are far behind, so that
    /// publishers slow to the rate consumers keep up with.
    async fn yield_or_pause(&mut self) {
        let mut backlogged = false;
        for ch in self.channels.iter_mut() {
            backlogged |= std::mem::take(&mut ch.backlogged);
        }
        warren_net::pace_publisher(backlogged).await;
    }

    fn flush_confirms(&mut self, sync: Option<&tokio::sync::watch::Receiver<SyncState>>) {
        let state = match sync {
            Some(rx) => *rx.borrow(),
            // No store: nothing waits for a sync.
            None => SyncState {
                synced: u64::MAX,
                failed: 0,
            },
        };
        for ch in self.channels.iter_mut() {
            if ch.has_pending_confirms() && !ch.closing {
                ch.flush_confirms(state);
            }
        }
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
                    let text = e.to_string();
                    let code = match e {
                        FrameError::TooLarge { .. }
                        | FrameError::BadEnd
                        | FrameError::BadType(_) => 501,
                    };
                    tracing::warn!(peer = %self.peer, "frame error: {text}");
                    self.close_connection(AmqpError::connection(code, text.clone()));
                    // The stream cannot be re-synchronised; stop reading.
                    self.phase = Phase::Done;
                    return Err(End::Exception(text));
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

    fn on_error(&mut self, channel: u16, e: AmqpError) {
        match e.scope {
            Scope::Channel if channel != 0 => {
                let vhost = self.vhost.as_ref().map_or("", |v| &*v.name);
                tracing::warn!(peer = %self.peer, user = %self.user, vhost, channel, code = e.code, "channel error: {}", e.text);
                let ctx_vhost = self.vhost.clone();
                let ctx_guard = self.guard.clone();
                if let Some(ch) = self.channels.get_mut(channel) {
                    if let (Some(vhost), Some(guard)) = (&ctx_vhost, &ctx_guard) {
                        let ctx = Ctx {
                            vhost,
                            conn_id: self.id,
                            cfg: &self.cfg,
                            guard,
                        };
                        ch.shutdown(&ctx);
                    }
                    ch.closing = true;
                }
                let m = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: e.code,
                    reply_text: truncate(&e.text).into(),
                    class_id: e.class_id,
                    method_id: e.method_id,
                }));
                self.out.push(|o| codec::write_method(o, channel, m));
            }
            _ => {
                tracing::warn!(peer = %self.peer, code = e.code, "connection error: {}", e.text);
                self.close_connection(e);
            }
        }
    }

    fn close_connection(&mut self, e: AmqpError) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        let m = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: truncate(&e.text).into(),
            class_id: e.class_id,
            method_id: e.method_id,
        }));
        self.out.push(|o| codec::write_method(o, 0, m));
        self.cleanup();
        self.phase = Phase::Closing;
    }

    fn on_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> AmqpResult {
        if self.phase == Phase::Closing {
            // Only connection.close-ok (or a crossing close) matters now.
            if kind == FRAME_METHOD && channel == 0 {
                if let Some((10, 50 | 51)) = codec::method_id(payload) {
                    if codec::method_id(payload) == Some((10, 50)) {
                        self.send0(AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )));
                    }
                    self.phase = Phase::Done;
                }
            }
            return Ok(());
        }
        match kind {
            FRAME_HEARTBEAT => {
                if channel != 0 {
                    return Err(AmqpError::connection(
                        501,
                        "heartbeat frame on a non-zero channel",
                    ));
                }
                Ok(())
            }
            FRAME_METHOD if channel == 0 => {
                let m = parse_method(payload)?;
                self.on_connection_method(m)
            }
            _ if channel == 0 => Err(AmqpError::connection(504, "content frame on channel 0")),
            _ if self.phase != Phase::Running => Err(AmqpError::connection(
                504,
                "channel frame before connection.open",
            )),
            FRAME_METHOD => self.on_channel_method(channel, payload),
            FRAME_HEADER => self.with_channel(channel, |ch, ctx| ch.on_header(ctx, payload)),
            FRAME_BODY => self.with_channel(channel, |ch, ctx| ch.on_body(ctx, payload)),
            _ => Err(AmqpError::connection(
                501,
                format!("unexpected frame type {kind}"),
            )),
        }
    }

    fn on_body_bytes(&mut self, channel: u16, payload: bytes::Bytes) -> AmqpResult {
        if channel == 0 {
            return Err(AmqpError::connection(504, "content frame on channel 0"));
        }
        self.with_channel(channel, |ch, ctx| ch.on_body_bytes(ctx, payload))
    }

    /// Run `f` on an open channel; frames for closing channels are dropped.
    fn with_channel(
        &mut self,
        number: u16,
        f: impl FnOnce(&mut Channel, &Ctx<'_>) -> AmqpResult,
    ) -> AmqpResult {
        // Borrowed field by field, not cloned: this runs for every frame.
        let ctx = Ctx {
            vhost: self.vhost.as_ref().expect("running connection has a vhost"),
            conn_id: self.id,
            cfg: &self.cfg,
            guard: self.guard.as_ref().expect("running connection has a guard"),
        };
        match self.channels.get_mut(number) {
            Some(ch) if ch.closing => Ok(()),
            Some(ch) => f(ch, &ctx),
            _ => Err(AmqpError::connection(
                504,
                format!("expected 'channel.open' on channel {number}"),
            )),
        }
    }

    fn on_channel_method(&mut self, number: u16, payload: &[u8]) -> AmqpResult {
        let Some((class, method)) = codec::method_id(payload) else {
            return Err(AmqpError::connection(502, "method frame too short"));
        };
        // While a publish awaits its content, only content frames may come.
        if let Some(ch) = self.channels.get(number) {
            if ch.expects_content() && !ch.closing {
                return Err(AmqpError::connection(
                    505,
                    format!("expected content header for class 60, got non content header frame instead ({class}.{method})"),
                ));
            }
        }
        match (class, method) {
            (60, 40) => {
                self.published = true;
                let p = codec::parse_publish(payload)
                    .map_err(|e| AmqpError::connection(502, e).on(60, 40))?;
                self.with_channel(number, |ch, _| ch.on_publish(p))
            }
            (60, 80 | 90 | 120) => {
                let s = codec::parse_settle(payload, method)
                    .map_err(|e| AmqpError::connection(502, e).on(60, method))?;
                self.with_channel(number, |ch, _| ch.on_settle(s))
            }
            (20, _) => {
                let m = parse_method(payload)?;
                self.on_channel_class(number, m)
            }
            _ => {
                let m = parse_method(payload)?;
                self.with_channel(number, |ch, ctx| ch.on_method(ctx, m))
            }
        }
    }

    fn on_channel_class(&mut self, number: u16, m: AMQPClass) -> AmqpResult {
        let AMQPClass::Channel(m) = m else {
            unreachable!("class 20")
        };
        let open = self.channels.get(number).is_some();
        let closing = matches!(self.channels.get(number), Some(ch) if ch.closing);
        match m {
            channel::AMQPMethod::Open(_) => {
                if open {
                    return Err(AmqpError::connection(504, "second 'channel.open' seen").on(20, 10));
                }
                self.open_channel(number)
            }
            _ if !open => Err(AmqpError::connection(
                504,
                format!("expected 'channel.open' on channel {number}"),
            )),
            channel::AMQPMethod::Close(_) => {
                self.drop_channel(number);
                self.send(
                    number,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::CloseOk(_) => {
                if closing {
                    self.drop_channel(number);
                }
                Ok(())
            }
            _ if closing => Ok(()),
            channel::AMQPMethod::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::channel(540, "channel.flow active=false").on(20, 20));
                }
                self.send(
                    number,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                );
                Ok(())
            }
            _ => Err(AmqpError::connection(503, "unexpected channel method")),
        }
    }

    /// channel.open: any number is accepted, but no more channels than the
    /// negotiated channel_max (nor the user's `max-channels`) may be open,
    /// as in RabbitMQ 3.10; both refusals are 530 connection errors.
    fn open_channel(&mut self, number: u16) -> AmqpResult {
        let not_allowed = AMQPHardError::NOTALLOWED.get_id();
        let open = self.channels.len();
        if self.channel_max != 0 && open >= usize::from(self.channel_max) {
            let why = format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            );
            tracing::warn!(peer = %self.peer, user = %self.user, "channel.open refused: {why}");
            return Err(AmqpError::connection(not_allowed, why));
        }
        let channel_lease = match &self.lease {
            Some(lease) => Some(lease.open_channel().map_err(|e| {
                tracing::warn!(peer = %self.peer, user = %self.user, "channel.open refused: {e}");
                AmqpError::connection(not_allowed, e)
            })?),
            None => None,
        };
        let reg = self
            .registration
            .as_ref()
            .expect("open connection is registered");
        let shared = Arc::new(ChannelShared::new(
            number,
            self.broker.next_id(),
            self.frame_max,
            self.out.clone(),
            self.cancel_notify,
            reg.info.stats.clone(),
        ));
        reg.info.add_channel(number, shared.clone());
        self.channels
            .insert(number, Channel::new(shared), channel_lease);
        self.send(
            number,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        Ok(())
    }

    fn drop_channel(&mut self, number: u16) {
        if let Some(mut ch) = self.channels.remove(number) {
            if let Some(r) = &self.registration {
                r.info.remove_channel(number);
            }
            if let (Some(vhost), Some(guard)) = (&self.vhost, &self.guard) {
                let ctx = Ctx {
                    vhost,
                    conn_id: self.id,
                    cfg: &self.cfg,
                    guard,
                };
                ch.shutdown(&ctx);
            }
        }
    }

    fn on_connection_method(&mut self, m: AMQPClass) -> AmqpResult {
        let AMQPClass::Connection(m) = m else {
            return Err(AmqpError::connection(
                503,
                "non-connection method on channel 0",
            ));
        };
        match (self.phase, m) {
            (Phase::StartOk, connection::AMQPMethod::StartOk(s)) => self.on_start_ok(s),
            (Phase::TuneOk, connection::AMQPMethod::TuneOk(t)) => {
                let server_max = self.cfg.frame_max;
                let fm = if t.frame_max == 0 {
                    server_max
                } else {
                    t.frame_max.min(server_max)
                };
                if fm < 4096 {
                    return Err(AmqpError::connection(
                        530,
                        format!("frame_max={fm} < 4096 min size"),
                    )
                    .on(10, 31));
                }
                self.frame_max = fm as usize;
                self.channel_max = if t.channel_max == 0 {
                    self.cfg.channel_max
                } else {
                    t.channel_max.min(self.cfg.channel_max)
                };
                if t.heartbeat > 0 {
                    let hb = Duration::from_secs(t.heartbeat as u64);
                    *self.heartbeat.lock() = Some(hb);
                    self.read_timeout = Some(hb * 2);
                }
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, connection::AMQPMethod::Open(o)) => {
                let name = o.virtual_host.as_str();
                let Some(vhost) = self.broker.vhost(name) else {
                    return Err(
                        AmqpError::connection(530, format!("vhost '{name}' not found")).on(10, 40),
                    );
                };
                let lease = self.admit(&vhost)?;
                let guard = self
                    .broker
                    .users
                    .guard(name, &self.user)
                    .map_err(|e| AmqpError::from(e).on(10, 40))?;
                self.lease = Some(lease);
                self.registration = Some(self.broker.registry.register(ConnectionInfo::new(
                    self.id,
                    "AMQP 0-9-1",
                    (self.peer, self.local),
                    guard.user.clone(),
                    guard.vhost.clone(),
                    std::mem::take(&mut self.client),
                )));
                self.vhost = Some(vhost);
                self.guard = Some(guard);
                self.phase = Phase::Running;
                tracing::info!(peer = %self.peer, user = %self.user, vhost = %name, "AMQP connection opened");
                self.send0(AMQPClass::Connection(connection::AMQPMethod::OpenOk(
                    connection::OpenOk {},
                )));
                Ok(())
            }
            (_, connection::AMQPMethod::Close(c)) => {
                tracing::debug!(peer = %self.peer, code = c.reply_code, "client closed connection: {}", c.reply_text);
                self.cleanup();
                self.send0(AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                    connection::CloseOk {},
                )));
                self.phase = Phase::Done;
                Ok(())
            }
            (_, connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(())
            }
            (phase, other) => Err(AmqpError::connection(
                503,
                format!(
                    "unexpected method {}.{} in state {phase:?}",
                    10,
                    method_of(&other)
                ),
            )),
        }
    }

    /// Count the connection against the node, vhost and user connection
    /// limits, before the permission check as RabbitMQ does; a refusal is
    /// 530 NOT_ALLOWED on connection.open with RabbitMQ's text.
    fn admit(&self, vhost: &VHost) -> AmqpResult<ConnectionLease> {
        self.broker
            .limits
            .admit((&vhost.name, &vhost.limits), &self.user)
            .map_err(|e| {
                tracing::warn!(peer = %self.peer, user = %self.user, vhost = %vhost.name, "AMQP connection refused: {e}");
                AmqpError::connection(AMQPHardError::NOTALLOWED.get_id(), e).on(10, 40)
            })
    }

    fn on_start_ok(&mut self, s: connection::StartOk) -> AmqpResult {
        let props = s.client_properties.inner();
        self.client = match props
            .get("connection_name")
            .or_else(|| props.get("product"))
        {
            Some(AMQPValue::LongString(v)) => truncate(&v.to_string()).to_string(),
            Some(AMQPValue::ShortString(v)) => truncate(v.as_str()).to_string(),
            _ => String::new(),
        };
        if let Some(AMQPValue::FieldTable(caps)) = s.client_properties.inner().get("capabilities") {
            self.cancel_notify = matches!(
                caps.inner().get("consumer_cancel_notify"),
                Some(AMQPValue::Boolean(true))
            );
            self.blocked_notify = matches!(
                caps.inner().get("connection.blocked"),
                Some(AMQPValue::Boolean(true))
            );
        }
        let (user, pass) = match s.mechanism.as_str() {
            "PLAIN" => {
                let mut parts = s.response.as_bytes().split(|b| *b == 0);
                let _authzid = parts.next();
                let user = parts.next().unwrap_or_default();
                let pass = parts.next().unwrap_or_default();
                (
                    String::from_utf8_lossy(user).into_owned(),
                    String::from_utf8_lossy(pass).into_owned(),
                )
            }
            "AMQPLAIN" => {
                let raw = s.response.as_bytes();
                let mut framed = Vec::with_capacity(raw.len() + 4);
                framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
                framed.extend_from_slice(raw);
                let t = Table::decode(&framed).map(|(t, _)| t).unwrap_or_default();
                let get = |k: &str| {
                    t.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                (get("LOGIN"), get("PASSWORD"))
            }
            other => {
                return Err(AmqpError::connection(
                    403,
                    format!("unsupported authentication mechanism '{other}'"),
                )
                .on(10, 11));
            }
        };
        let refused = |why: &str| {
            tracing::warn!(peer = %self.peer, user = %user, "authentication failed: {why}");
            AmqpError::connection(
                403,
                format!("Login was refused using authentication mechanism {}. For details see the broker logfile.", s.mechanism),
            )
            .on(10, 11)
        };
        if let Err(e) = self.broker.users.authenticate(&user, &pass) {
            return Err(refused(&e.to_string()));
        }
        if self.cfg.loopback_users.iter().any(|u| u == &user) && !self.peer.ip().is_loopback() {
            return Err(refused(&format!(
                "user '{user}' can only connect via localhost"
            )));
        }
        self.user = user;
        self.phase = Phase::TuneOk;
        self.send0(AMQPClass::Connection(connection::AMQPMethod::Tune(
            connection::Tune {
                channel_max: self.cfg.channel_max,
                frame_max: self.cfg.frame_max,
                heartbeat: self.cfg.heartbeat,
            },
        )));
        Ok(())
    }

    fn send_start(&self) {
        let mut caps = FieldTable::default();
        for c in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "per_consumer_qos",
            "authentication_failure_close",
            "direct_reply_to",
        ] {
            caps.insert(c.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props.insert("product".into(), s("Warren"));
        props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), s("Rust"));
        props.insert("cluster_name".into(), s("warren@localhost"));
        props.insert(
            "information".into(),
            s("Warren message broker: AMQP 0-9-1 and MQTT over one routing core"),
        );
        props.insert("copyright".into(), s("Warren authors"));
        self.send0(AMQPClass::Connection(connection::AMQPMethod::Start(
            connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            },
        )));
    }

    fn send0(&self, m: AMQPClass) {
        self.send(0, m);
    }

    fn send(&self, channel: u16, m: AMQPClass) {
        self.out.push(|o| codec::write_method(o, channel, m));
    }

    /// Release everything the connection holds: consumers, unacked
    /// messages (requeued), exclusive queues.
    fn cleanup(&mut self) {
        // Given back before close-ok goes out: a client that reconnects at
        // once finds its place free.
        self.lease = None;
        let (Some(vhost), Some(guard)) = (self.vhost.clone(), self.guard.clone()) else {
            return;
        };
        let ctx = Ctx {
            vhost: &vhost,
            conn_id: self.id,
            cfg: &self.cfg,
            guard: &guard,
        };
        for ch in self.channels.iter_mut() {
            ch.shutdown(&ctx);
        }
        self.channels.clear();
        vhost.connection_closed(self.id);
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= 255 {
        return s;
    }
    let mut end = 255;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn method_of(m: &connection::AMQPMethod) -> u16 {
    AMQPClass::Connection(m.clone()).get_amqp_method_id()
}

/// Methods defined by AMQP 0-9-1 (with RabbitMQ's extensions), by class.
fn known_method(class: u16, method: u16) -> bool {
    match class {
        10 => matches!(
            method,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method, 10 | 11),
        40 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method, 10 | 11),
        90 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// Parse a control-plane method with amq-protocol: unknown methods are 540,
/// malformed arguments 502, both connection exceptions.
fn parse_method(payload: &[u8]) -> AmqpResult<AMQPClass> {
    let Some((class, method)) = codec::method_id(payload) else {
        return Err(AmqpError::connection(502, "method frame too short"));
    };
    if !known_method(class, method) {
        return Err(
            AmqpError::connection(540, format!("unknown method {class}.{method}"))
                .on(class, method),
        );
    }
    match codec::parse_class(payload) {
        Ok((_, m)) => Ok(m),
        Err(_) => Err(AmqpError::connection(
            502,
            format!("malformed arguments for method {class}.{method}"),
        )
        .on(class, method)),
    }
}

async fn read_with_timeout(
    rd: &mut OwnedReadHalf,
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
