//! Transactions: tx.select, tx.commit and tx.rollback. A transactional
//! channel holds its publishes and settlements until commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::protocol::{tx, AMQPClass, AMQPSoftError};
use warren_core::{Exchange, Message};

use super::{Channel, Ctx};
use crate::codec::Settle;
use crate::deliveries::mode;
use crate::error::{AmqpError, AmqpResult};

/// What a transaction holds until commit.
#[derive(Default)]
pub(super) struct TxBuffer {
    /// Exchange, message, mandatory flag.
    pub publishes: Vec<(Arc<Exchange>, Message, bool)>,
    pub settles: Vec<Settle>,
}

fn not_transactional() -> AmqpError {
    AmqpError::channel(
        AMQPSoftError::PRECONDITIONFAILED,
        "channel is not transactional",
    )
}

impl Channel {
    /// tx.select: refused on a confirm channel.
    pub(super) fn tx_select(&mut self) -> AmqpResult {
        if self.confirms.enabled {
            return Err(AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                "cannot switch from confirm to tx mode",
            ));
        }
        if self.tx.is_none() {
            self.shared.mode.store(mode::TX, Ordering::Relaxed);
            self.tx = Some(TxBuffer::default());
        }
        self.reply(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
        Ok(())
    }

    /// tx.commit: route the held publishes, then apply the settlements.
    pub(super) fn tx_commit(&mut self, ctx: &Ctx<'_>) -> AmqpResult {
        let buf = self.tx.as_mut().ok_or_else(not_transactional)?;
        let publishes = std::mem::take(&mut buf.publishes);
        let settles = std::mem::take(&mut buf.settles);
        for (x, msg, mandatory) in publishes {
            self.route(ctx, &x, msg, mandatory)?;
        }
        for s in settles {
            self.settle(s)?;
        }
        self.reply(AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
        Ok(())
    }

    /// tx.rollback: drop what the transaction held.
    pub(super) fn tx_rollback(&mut self) -> AmqpResult {
        let buf = self.tx.as_mut().ok_or_else(not_transactional)?;
        buf.publishes.clear();
        buf.settles.clear();
        self.reply(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
        Ok(())
    }
}
