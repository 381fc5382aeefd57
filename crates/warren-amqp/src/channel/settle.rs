//! Settling deliveries: basic.ack, nack and reject from the client,
//! basic.recover, and the requeue of everything unacked on close. Credit
//! is given back and consumers of the channel are woken to use it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass, AMQPHardError, AMQPSoftError};
use warren_core::registry::ConnStats;
use warren_core::Queue;

use super::Channel;
use crate::codec::{ids, Settle};
use crate::deliveries::Unacked;
use crate::error::{AmqpError, AmqpResult};

/// What happens to settled deliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ack,
    Requeue,
    /// Rejected without requeue: dropped, or dead-lettered.
    Reject,
}

impl Channel {
    /// basic.ack / nack / reject from the client.
    pub fn on_settle(&mut self, s: Settle) -> AmqpResult {
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.push(s);
            return Ok(());
        }
        self.settle(s)
    }

    /// Take the deliveries `s` names off `unacked` and settle them.
    pub(super) fn settle(&mut self, s: Settle) -> AmqpResult {
        self.take_settled(s)?;
        let mut settled = std::mem::take(&mut self.settled);
        if !s.negative {
            ConnStats::add(&self.shared.stats.acked, settled.len() as u64);
        }
        let outcome = match (s.negative, s.requeue) {
            (false, _) => Outcome::Ack,
            (true, true) => Outcome::Requeue,
            (true, false) => Outcome::Reject,
        };
        self.release(&mut settled, outcome);
        self.settled = settled;
        Ok(())
    }

    /// Move the deliveries `s` covers from `unacked` to `self.settled`;
    /// an unknown tag is 406 PRECONDITION_FAILED.
    fn take_settled(&mut self, s: Settle) -> AmqpResult {
        let unknown = || {
            // A reject is reported as a nack.
            let method = if s.negative {
                ids::BASIC_NACK
            } else {
                ids::BASIC_ACK
            };
            AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                format!("unknown delivery tag {}", s.tag),
            )
            .on(method)
        };
        let mut st = self.shared.state.lock();
        if !s.multiple {
            let i = st
                .unacked
                .binary_search_by_key(&s.tag, |u| u.tag)
                .map_err(|_| unknown())?;
            self.settled.push(st.unacked.remove(i).expect("index"));
        } else if s.tag == 0 {
            self.settled.extend(st.unacked.drain(..));
        } else {
            while st.unacked.front().is_some_and(|u| u.tag <= s.tag) {
                self.settled.push(st.unacked.pop_front().expect("front"));
            }
            if self.settled.is_empty() {
                return Err(unknown());
            }
        }
        Ok(())
    }

    /// Return credit and settle or requeue messages taken off `unacked`.
    pub(super) fn release(&self, settled: &mut Vec<Unacked>, outcome: Outcome) {
        for u in settled.iter() {
            if let Some(c) = &u.consumer {
                c.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let mut i = 0;
        while i < settled.len() {
            let q = settled[i].queue.clone();
            let mut j = i + 1;
            while j < settled.len() && Arc::ptr_eq(&settled[j].queue, &q) {
                j += 1;
            }
            match outcome {
                Outcome::Requeue => q.requeue(settled[i..j].iter().map(|u| u.delivery.clone())),
                Outcome::Ack => q.settle(settled[i..j].iter().map(|u| &u.delivery)),
                // Dead-lettered when the queue has a DLX.
                Outcome::Reject => q.reject(settled[i..j].iter().map(|u| &u.delivery)),
            }
            i = j;
        }
        settled.clear();
        // Freed credit may let consumers of this channel take more.
        let global = self.shared.state.lock().global_prefetch > 0;
        let mut seen: Vec<*const Queue> = Vec::new();
        for c in self.consumers.values() {
            if !c.no_ack && (global || c.prefetch > 0) && !seen.contains(&Arc::as_ptr(&c.queue)) {
                seen.push(Arc::as_ptr(&c.queue));
                c.queue.dispatch();
            }
        }
    }

    /// basic.recover-async: requeue every unacked delivery.
    pub(super) fn recover(&mut self, requeue: bool) -> AmqpResult {
        if !requeue {
            return Err(AmqpError::connection(
                AMQPHardError::NOTIMPLEMENTED,
                "requeue=false",
            ));
        }
        let mut all: Vec<Unacked> = self.shared.state.lock().unacked.drain(..).collect();
        self.release(&mut all, Outcome::Requeue);
        Ok(())
    }

    /// basic.recover: as recover-async, then recover-ok.
    pub(super) fn recover_sync(&mut self, requeue: bool) -> AmqpResult {
        self.recover(requeue)?;
        self.reply(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(
            basic::RecoverOk {},
        )));
        Ok(())
    }
}
