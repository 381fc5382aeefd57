//! A connection's outbound buffer, shared by every protocol adapter. Every producer of frames for a connection
//! (its own reader task, and the queues delivering to its consumers on other
//! tasks) appends encoded frames here; one writer task swaps the buffer out
//! and writes it with a single syscall, so frames are coalesced under load.
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

use crate::queue::Queue;

/// Writes a keep-alive frame (AMQP heartbeat) into the buffer.
pub type KeepAlive = fn(&mut BytesMut);

/// Above this many buffered bytes consumers stop taking deliveries.
pub const HIGH_WATER: usize = 4 << 20;

struct Inner {
    buf: BytesMut,
    waiters: Vec<Weak<Queue>>,
    closed: bool,
}

/// The shared outbound buffer of one connection.
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                // Grows on first use; idle connections stay small.
                buf: BytesMut::new(),
                waiters: Vec::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl Outbox {
    /// Append frames with `f`; wakes the writer if it was idle.
    pub fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        let was_empty = inner.buf.is_empty();
        f(&mut inner.buf);
        drop(inner);
        if was_empty {
            self.notify.notify_one();
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
        drop(inner);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Stop accepting frames; the writer flushes what is there and ends.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.notify.notify_one();
    }

    /// Writer task: flush batches until closed or the socket fails. Writes
    /// `keepalive` when nothing was written for the `heartbeat` interval.
    pub async fn run_writer<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut socket: W,
        heartbeat: Arc<Mutex<Option<Duration>>>,
        keepalive: KeepAlive,
    ) {
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
                if let Err(e) = socket.write_all(&chunk).await {
                    tracing::debug!(error = %e, "write failed; closing connection");
                    self.close();
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
            if closed {
                let pending = { !self.inner.lock().buf.is_empty() };
                if !pending {
                    let _ = socket.flush().await;
                    let _ = socket.shutdown().await;
                    return;
                }
                continue;
            }
            if !self.inner.lock().buf.is_empty() {
                continue;
            }
            let hb = *heartbeat.lock();
            match hb {
                Some(interval) => {
                    if tokio::time::timeout(interval, self.notify.notified())
                        .await
                        .is_err()
                    {
                        self.push(keepalive);
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}
