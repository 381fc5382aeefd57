//! Flow of publishes: a publishing connection is blocked (not read) while
//! a memory or disk alarm is on, with connection.blocked/unblocked for
//! clients that asked; publishers are paced when a queue they reach is
//! backlogged; confirms are flushed after each slice of frames.

use amq_protocol::protocol::{connection, AMQPClass};
use tokio::sync::watch;
use warren_core::SyncState;

use super::{Conn, Phase};

impl Conn {
    /// A connection that has published is blocked while an alarm is on.
    pub(super) fn is_blocked(&self) -> bool {
        self.published && self.phase == Phase::Running && self.alarms.blocking()
    }

    /// Send connection.blocked / unblocked on a change of `blocked` to
    /// clients that asked for them; true when the connection was just
    /// unblocked.
    pub(super) fn notify_blocked(&mut self, blocked: bool) -> bool {
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
    pub(super) async fn yield_or_pause(&mut self) {
        let mut backlogged = false;
        for ch in self.channels.iter_mut() {
            backlogged |= std::mem::take(&mut ch.backlogged);
        }
        warren_net::pace_publisher(backlogged).await;
    }

    /// True when some channel still owes confirms (they may wait for a
    /// queue's home node).
    pub(super) fn confirms_pending(&mut self) -> bool {
        self.channels.iter_mut().any(|ch| ch.has_pending_confirms())
    }

    /// Send the confirms the store's sync progress (and, for publishes
    /// forwarded to other nodes, the links' progress) allows, on every channel.
    pub(super) fn flush_confirms(&mut self, sync: Option<&watch::Receiver<SyncState>>) {
        let state = match sync {
            Some(rx) => *rx.borrow(),
            // No store: nothing waits for a sync.
            None => SyncState {
                synced: u64::MAX,
                failed: 0,
            },
        };
        let link = self.broker.link().map(|l| &**l);
        for ch in self.channels.iter_mut() {
            if ch.has_pending_confirms() && !ch.closing {
                ch.flush_confirms(state, link);
            }
        }
    }
}
