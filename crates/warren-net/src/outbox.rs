//! A connection's outbound buffer, shared by every protocol adapter. Every
//! producer of frames for a connection (its own reader task, and the queues
//! delivering to its consumers on other tasks) appends encoded frames here;
//! one writer task swaps the buffer out and writes it with a single syscall,
//! so frames are coalesced under load.
//!
//! The writer task starts with the first frames and ends after [`LINGER`]
//! without anything to write (unless it owes keep-alives), handing the
//! socket back to the outbox; the next push starts a new one. An idle
//! connection (a sleeping MQTT device) thus holds no writer task.
//!
//! When the buffer holds more than [`HIGH_WATER`] bytes, consumers refuse
//! deliveries and leave their queue here; the writer wakes those queues once
//! the buffer has drained, which is how a slow client pushes back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use warren_core::queue::Queue;

/// Writes a keep-alive frame (AMQP heartbeat) into the buffer.
pub type KeepAlive = fn(&mut BytesMut);

/// Above this many buffered bytes consumers stop taking deliveries.
pub const HIGH_WATER: usize = 4 << 20;

/// How long a writer task waits for more frames before it ends.
pub const LINGER: Duration = Duration::from_secs(1);

/// The write side of a connection, whatever the transport.
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

struct Inner {
    buf: BytesMut,
    waiters: Vec<Weak<Queue>>,
    closed: bool,
    /// The socket while no writer task runs.
    socket: Option<Sink>,
    /// A writer task runs (it owns the socket).
    writing: bool,
}

/// The shared outbound buffer of one connection.
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    /// Signalled when a writer task ends.
    ended: Notify,
    /// Signalled after each flush and on close, for producers that wait
    /// for room ([`Outbox::room`]) rather than leave a queue behind.
    drained: Notify,
    /// Keep-alive interval (AMQP heartbeat); a writer with one never lingers out.
    heartbeat: Arc<Mutex<Option<Duration>>>,
    keepalive: KeepAlive,
    runtime: tokio::runtime::Handle,
    me: Weak<Outbox>,
}

impl Outbox {
    /// An outbox writing to `socket`. Must be called inside a tokio runtime
    /// (writer tasks are spawned on it). `keepalive` is written when nothing
    /// else was for the `heartbeat` interval, once one is set.
    pub fn new(
        socket: Sink,
        heartbeat: Arc<Mutex<Option<Duration>>>,
        keepalive: KeepAlive,
    ) -> Arc<Outbox> {
        Arc::new_cyclic(|me| Outbox {
            inner: Mutex::new(Inner {
                // Grows on first use; idle connections stay small.
                buf: BytesMut::new(),
                waiters: Vec::new(),
                closed: false,
                socket: Some(socket),
                writing: false,
            }),
            notify: Notify::new(),
            ended: Notify::new(),
            drained: Notify::new(),
            heartbeat,
            keepalive,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        })
    }

    /// After frames were appended to an empty buffer: wake the writer, or
    /// start one with the socket.
    fn wake(&self, mut inner: parking_lot::MutexGuard<'_, Inner>) {
        if inner.writing {
            drop(inner);
            self.notify.notify_one();
            return;
        }
        let (Some(socket), Some(me)) = (inner.socket.take(), self.me.upgrade()) else {
            return;
        };
        inner.writing = true;
        drop(inner);
        self.runtime.spawn(me.run_writer(socket));
    }

    /// Append frames with `f`; wakes (or starts) the writer.
    pub fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        let was_empty = inner.buf.is_empty();
        f(&mut inner.buf);
        if was_empty {
            self.wake(inner);
        }
    }

    /// Append frames unless the buffer is over its limit; in that case
    /// remember `queue` so it is dispatched again after the next flush.
    pub fn try_push(&self, queue: &Arc<Queue>, f: impl FnOnce(&mut BytesMut)) -> bool {
        let mut inner = self.inner.lock();
        if inner.closed {
            return false;
        }
        if inner.buf.len() > HIGH_WATER {
            if !inner
                .waiters
                .iter()
                .any(|w| w.as_ptr() == Arc::as_ptr(queue))
            {
                inner.waiters.push(Arc::downgrade(queue));
            }
            return false;
        }
        let was_empty = inner.buf.is_empty();
        f(&mut inner.buf);
        if was_empty {
            self.wake(inner);
        }
        true
    }

    /// True while the buffer is under its limit and the outbox open: a
    /// producer that streams (retained messages) may push more.
    pub fn has_room(&self) -> bool {
        let inner = self.inner.lock();
        !inner.closed && inner.buf.len() <= HIGH_WATER
    }

    /// True once closed: nothing pushed is sent any more.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Wait until [`Outbox::has_room`] holds or the outbox is closed.
    pub async fn room(&self) {
        loop {
            let mut drained = std::pin::pin!(self.drained.notified());
            drained.as_mut().enable();
            {
                let inner = self.inner.lock();
                if inner.closed || inner.buf.len() <= HIGH_WATER {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Stop accepting frames; a running writer flushes what is there and
    /// ends. Without one, the socket is dropped here, which sends FIN.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let socket = inner.socket.take();
        drop(inner);
        drop(socket);
        self.notify.notify_one();
        self.drained.notify_waiters();
    }

    /// Wait until no writer task runs (after [`Outbox::close`]: everything
    /// was written, or the socket failed).
    pub async fn flushed(&self) {
        loop {
            let ended = self.ended.notified();
            if !self.inner.lock().writing {
                return;
            }
            ended.await;
        }
    }

    /// Writer task: flush batches until closed, the socket fails, or
    /// nothing came for [`LINGER`] (the socket then goes back to the outbox).
    async fn run_writer(self: Arc<Self>, mut socket: Sink) {
        let mut spare = BytesMut::new();
        loop {
            let (mut chunk, waiters, closed) = {
                let mut inner = self.inner.lock();
                std::mem::swap(&mut inner.buf, &mut spare);
                let waiters = if inner.waiters.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(&mut inner.waiters)
                };
                (std::mem::take(&mut spare), waiters, inner.closed)
            };
            if !chunk.is_empty() {
                // The flush is free on TCP; a WebSocket sends its message.
                let written = async {
                    socket.write_all(&chunk).await?;
                    socket.flush().await
                };
                if let Err(e) = written.await {
                    tracing::debug!(error = %e, "write failed; closing connection");
                    self.close();
                    self.end();
                    return;
                }
            }
            chunk.clear();
            // Keep one buffer of bounded size for reuse.
            spare = if chunk.capacity() > 1 << 20 {
                BytesMut::new()
            } else {
                chunk
            };
            for w in waiters {
                if let Some(q) = w.upgrade() {
                    q.dispatch();
                }
            }
            self.drained.notify_waiters();
            if closed {
                let pending = { !self.inner.lock().buf.is_empty() };
                if !pending {
                    let _ = socket.flush().await;
                    let _ = socket.shutdown().await;
                    self.end();
                    return;
                }
                continue;
            }
            if !self.inner.lock().buf.is_empty() {
                continue;
            }
            let hb = *self.heartbeat.lock();
            match hb {
                Some(interval) => {
                    if tokio::time::timeout(interval, self.notify.notified())
                        .await
                        .is_err()
                    {
                        self.push(self.keepalive);
                    }
                }
                None => {
                    if tokio::time::timeout(LINGER, self.notify.notified())
                        .await
                        .is_err()
                    {
                        let mut inner = self.inner.lock();
                        if inner.buf.is_empty() && !inner.closed {
                            inner.socket = Some(socket);
                            inner.writing = false;
                            drop(inner);
                            self.ended.notify_waiters();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn end(&self) {
        self.inner.lock().writing = false;
        self.ended.notify_waiters();
    }
}
