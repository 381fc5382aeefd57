//! Publisher confirms: which publishes are owed an ack or a nack, and the
//! fewest frames that send them. A persistent message is confirmed only
//! once the store has synced it; a publish a queue refused is nacked.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{confirm, AMQPClass, AMQPSoftError};
use warren_core::registry::ConnStats;
use warren_core::remote::{Link, RemoteSeq};
use warren_core::{Routed, SyncState};

use super::Channel;
use crate::codec;
use crate::deliveries::mode;
use crate::error::{AmqpError, AmqpResult};

/// Why a publish's confirm cannot be sent right away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// On disk once the store's synced sequence reaches this.
    Sync(u64),
    /// Forwarded to a queue's home node: confirmed once that link's
    /// confirmed sequence reaches this.
    Remote(RemoteSeq),
    /// Refused by a queue (reject-publish).
    Nack,
}

/// Where a wait stands.
enum Outcome {
    Done,
    Failed,
    Pending,
}

/// `seq` against a group-commit state: synced, lost, or not yet known.
fn outcome(seq: u64, s: SyncState) -> Outcome {
    if seq <= s.synced && seq > s.failed {
        Outcome::Done
    } else if seq <= s.failed {
        Outcome::Failed
    } else {
        Outcome::Pending
    }
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
    /// Count one publish (in confirm mode): refused by a queue, to be
    /// synced by the store, or forwarded to queues' home nodes.
    pub fn record(&mut self, routed: &Routed) {
        if !self.enabled {
            return;
        }
        self.publish_seq += 1;
        let tag = self.publish_seq;
        if routed.rejected {
            self.waits.push_back((tag, Wait::Nack));
            return;
        }
        if let Some(seq) = routed.sync_seq {
            self.waits.push_back((tag, Wait::Sync(seq)));
        }
        for r in &routed.remote {
            self.waits.push_back((tag, Wait::Remote(*r)));
        }
    }

    /// Whether some confirm is still owed to the client.
    pub fn pending(&self) -> bool {
        self.publish_seq > self.sent
    }

    /// Decide the confirms `sync` allows: one multiple-ack for each run of
    /// positive outcomes, a nack for each refused or lost publish.
    pub fn flush(&mut self, sync: SyncState, link: Option<&dyn Link>, mut send: impl FnMut(Sent)) {
        loop {
            let (upto, nack) = match self.waits.front() {
                None => (self.publish_seq, None),
                // A publish with several waits, already nacked by one.
                Some(&(tag, _)) if tag <= self.sent => {
                    self.waits.pop_front();
                    continue;
                }
                Some(&(tag, w)) => {
                    let o = match w {
                        Wait::Sync(s) => outcome(s, sync),
                        Wait::Remote(r) => match link {
                            Some(l) => outcome(r.seq, l.synced(r.link)),
                            None => Outcome::Failed,
                        },
                        Wait::Nack => Outcome::Failed,
                    };
                    match o {
                        Outcome::Done => {
                            self.waits.pop_front();
                            continue;
                        }
                        Outcome::Failed => (tag - 1, Some(tag)),
                        Outcome::Pending => (tag - 1, None),
                    }
                }
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
    pub fn flush_confirms(&mut self, sync: SyncState, link: Option<&dyn Link>) {
        let n = self.shared.number;
        let shared = &self.shared;
        self.confirms.flush(sync, link, |c| {
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

    fn rec(c: &mut Confirms, rejected: bool, sync_seq: Option<u64>) {
        c.record(&Routed {
            rejected,
            sync_seq,
            ..Default::default()
        });
    }

    fn flush(c: &mut Confirms, synced: u64, failed: u64) -> Vec<(u64, bool, bool)> {
        let mut got = Vec::new();
        c.flush(SyncState { synced, failed }, None, |s| {
            got.push((s.tag, s.multiple, s.ack))
        });
        got
    }

    #[test]
    fn nothing_recorded_outside_confirm_mode() {
        let mut c = Confirms::default();
        rec(&mut c, false, None);
        assert!(!c.pending());
        assert!(flush(&mut c, u64::MAX, 0).is_empty());
    }

    #[test]
    fn runs_of_acks_become_one_multiple_ack_and_refusals_nacks() {
        let mut c = Confirms {
            enabled: true,
            ..Default::default()
        };
        rec(&mut c, false, None); // 1
        rec(&mut c, false, None); // 2
        rec(&mut c, true, None); // 3: refused
        rec(&mut c, false, None); // 4
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
        rec(&mut c, false, None); // 1
        rec(&mut c, false, Some(10)); // 2
        rec(&mut c, false, None); // 3
        rec(&mut c, false, Some(11)); // 4
        assert_eq!(flush(&mut c, 9, 0), [(1, false, true)]);
        assert_eq!(flush(&mut c, 10, 0), [(3, true, true)]);
        assert!(c.pending());
        // The store failed to sync 11: nacked.
        assert_eq!(flush(&mut c, 11, 11), [(4, false, false)]);
        assert!(!c.pending());
    }

    /// A link whose confirm progress the test sets.
    struct Progress(std::sync::Mutex<SyncState>);

    impl Link for Progress {
        fn node(&self) -> &str {
            "a"
        }
        fn home(&self, _: &str) -> std::sync::Arc<dyn warren_core::remote::Home> {
            unreachable!("not routed")
        }
        fn confirmations(&self) -> tokio::sync::watch::Receiver<u64> {
            tokio::sync::watch::channel(0).1
        }
        fn synced(&self, _: u16) -> SyncState {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn forwarded_publishes_wait_for_their_home_and_for_the_store() {
        let mut c = Confirms {
            enabled: true,
            ..Default::default()
        };
        let link = Progress(std::sync::Mutex::new(SyncState::default()));
        let remote = |seq| RemoteSeq { link: 0, seq };
        c.record(&Routed {
            remote: [remote(1)].into_iter().collect(),
            ..Default::default()
        }); // 1
        c.record(&Routed {
            sync_seq: Some(5),
            remote: [remote(2)].into_iter().collect(),
            ..Default::default()
        }); // 2: a local durable queue and a remote one
        c.record(&Routed {
            remote: [remote(3)].into_iter().collect(),
            ..Default::default()
        }); // 3
        let mut got = Vec::new();
        let mut flush = |c: &mut Confirms, synced| {
            got.clear();
            let s = SyncState { synced, failed: 0 };
            c.flush(s, Some(&link), |s| got.push((s.tag, s.ack)));
            got.clone()
        };
        assert!(flush(&mut c, 10).is_empty());
        *link.0.lock().unwrap() = SyncState {
            synced: 2,
            failed: 0,
        };
        // 2 is confirmed by its home but not yet synced here.
        assert_eq!(flush(&mut c, 4), [(1, true)]);
        assert_eq!(flush(&mut c, 5), [(2, true)]);
        // The link to the home dropped: what it had not confirmed is nacked.
        *link.0.lock().unwrap() = SyncState {
            synced: 2,
            failed: 3,
        };
        assert_eq!(flush(&mut c, 5), [(3, false)]);
        assert!(!c.pending());
    }
}
