//! Publisher confirms: which publishes are owed an ack or a nack, and the
//! fewest frames that send them. A persistent message is confirmed only
//! once the store has synced it; a publish a queue refused is nacked.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{confirm, AMQPClass, AMQPSoftError};
use warren_core::registry::ConnStats;
use warren_core::SyncState;

use super::Channel;
use crate::codec;
use crate::deliveries::mode;
use crate::error::{AmqpError, AmqpResult};

/// Why a publish's confirm cannot be sent right away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// On disk once the store's synced sequence reaches this.
    Sync(u64),
    /// Refused by a queue (reject-publish).
    Nack,
}

/// One confirm frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sent {
    /// Delivery tag (publish sequence number) confirmed.
    pub tag: u64,
    /// Covers every tag up to `tag` not confirmed before.
    pub multiple: bool,
    /// basic.ack, or basic.nack.
    pub ack: bool,
    /// Publishes this frame acks (0 for a nack).
    pub acked: u64,
}

/// Confirm-mode bookkeeping of one channel.
#[derive(Default)]
pub(super) struct Confirms {
    /// confirm.select was received.
    pub enabled: bool,
    publish_seq: u64,
    /// Every confirm up to this tag has been sent.
    sent: u64,
    /// Publishes whose confirm is not a plain immediate ack: waiting for
    /// the store's group commit, or to be nacked. In tag order.
    waits: VecDeque<(u64, Wait)>,
}

impl Confirms {
    /// Count one publish (in confirm mode): refused by a queue, or to be
    /// synced by the store at `sync_seq`.
    pub fn record(&mut self, rejected: bool, sync_seq: Option<u64>) {
        if !self.enabled {
            return;
        }
        self.publish_seq += 1;
        if rejected {
            self.waits.push_back((self.publish_seq, Wait::Nack));
        } else if let Some(seq) = sync_seq {
            self.waits.push_back((self.publish_seq, Wait::Sync(seq)));
        }
    }

    /// Whether some confirm is still owed to the client.
    pub fn pending(&self) -> bool {
        self.publish_seq > self.sent
    }

    /// Decide the confirms `sync` allows: one multiple-ack for each run of
    /// positive outcomes, a nack for each refused or lost publish.
    pub fn flush(&mut self, sync: SyncState, mut send: impl FnMut(Sent)) {
        loop {
            let (upto, nack) = match self.waits.front() {
                None => (self.publish_seq, None),
                Some(&(_, Wait::Sync(s))) if s <= sync.synced && s > sync.failed => {
                    self.waits.pop_front();
                    continue;
                }
                Some(&(tag, Wait::Sync(s))) if s <= sync.failed => (tag - 1, Some(tag)),
                Some(&(tag, Wait::Nack)) => (tag - 1, Some(tag)),
                Some(&(tag, Wait::Sync(_))) => (tag - 1, None),
            };
            if upto > self.sent {
                let multiple = upto > self.sent + 1;
                let acked = upto - self.sent;
                send(Sent {
                    tag: upto,
                    multiple,
                    ack: true,
                    acked,
                });
                self.sent = upto;
            }
            let Some(tag) = nack else { return };
            send(Sent {
                tag,
                multiple: false,
                ack: false,
                acked: 0,
            });
            self.sent = tag;
            self.waits.pop_front();
        }
    }
}

impl Channel {
    /// Send the confirms decided so far (see [`Confirms::flush`]).
    pub fn flush_confirms(&mut self, sync: SyncState) {
        let n = self.shared.number;
        let shared = &self.shared;
        self.confirms.flush(sync, |c| {
            shared
                .out
                .push(|out| codec::write_confirm(out, n, c.tag, c.multiple, c.ack));
            if c.ack {
                ConnStats::add(&shared.stats.confirmed, c.acked);
            }
        });
    }

    /// Whether some confirm is still owed to the client.
    pub fn has_pending_confirms(&self) -> bool {
        self.confirms.pending()
    }

    /// confirm.select: refused on a transactional channel.
    pub(super) fn confirm_select(&mut self, nowait: bool) -> AmqpResult {
        if self.tx.is_some() {
            return Err(AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                "cannot switch from tx to confirm mode",
            ));
        }
        self.confirms.enabled = true;
        self.shared.mode.store(mode::CONFIRM, Ordering::Relaxed);
        self.reply_unless(
            nowait,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(c: &mut Confirms, synced: u64, failed: u64) -> Vec<(u64, bool, bool)> {
        let mut got = Vec::new();
        c.flush(SyncState { synced, failed }, |s| {
            got.push((s.tag, s.multiple, s.ack))
        });
        got
    }

    #[test]
    fn nothing_recorded_outside_confirm_mode() {
        let mut c = Confirms::default();
        c.record(false, None);
        assert!(!c.pending());
        assert!(flush(&mut c, u64::MAX, 0).is_empty());
    }

    #[test]
    fn runs_of_acks_become_one_multiple_ack_and_refusals_nacks() {
        let mut c = Confirms {
            enabled: true,
            ..Default::default()
        };
        c.record(false, None); // 1
        c.record(false, None); // 2
        c.record(true, None); // 3: refused
        c.record(false, None); // 4
        assert!(c.pending());
        assert_eq!(
            flush(&mut c, 0, 0),
            [(2, true, true), (3, false, false), (4, false, true)]
        );
        assert!(!c.pending());
    }

    #[test]
    fn persistent_publishes_wait_for_the_sync_and_failed_syncs_nack() {
        let mut c = Confirms {
            enabled: true,
            ..Default::default()
        };
        c.record(false, None); // 1
        c.record(false, Some(10)); // 2
        c.record(false, None); // 3
        c.record(false, Some(11)); // 4
        assert_eq!(flush(&mut c, 9, 0), [(1, false, true)]);
        assert_eq!(flush(&mut c, 10, 0), [(3, true, true)]);
        assert!(c.pending());
        // The store failed to sync 11: nacked.
        assert_eq!(flush(&mut c, 11, 11), [(4, false, false)]);
        assert!(!c.pending());
    }
}
