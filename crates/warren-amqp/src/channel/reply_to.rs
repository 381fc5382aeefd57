//! RabbitMQ's direct reply-to: a no-ack consumer on the pseudo-queue
//! `amq.rabbitmq.reply-to` gets a hidden per-channel queue, and a publish
//! whose reply-to names the pseudo-queue is rewritten to name it.

use std::sync::Arc;

use amq_protocol::protocol::AMQPSoftError;
use warren_core::props::Properties;
use warren_core::{Message, Queue, Table};

use super::content::invalid_header;
use super::{Channel, Ctx};
use crate::codec::ids;
use crate::error::{AmqpError, AmqpResult};

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Channel {
    /// Point the reply-to of a publish at this channel's reply queue.
    pub(super) fn rewrite_reply_to(&self, msg: Message) -> AmqpResult<Message> {
        let Some(q) = &self.reply_queue else {
            return Err(AmqpError::channel(
                AMQPSoftError::PRECONDITIONFAILED,
                "fast reply consumer does not exist",
            )
            .on(ids::BASIC_PUBLISH));
        };
        let mut props = Properties::decode(msg.raw_properties()).map_err(invalid_header)?;
        props.reply_to = Some(q.name.to_string());
        msg.with_properties(&props.encode()).map_err(invalid_header)
    }

    /// The hidden queue a basic.consume of [`REPLY_TO`] consumes from.
    pub(super) fn reply_consumer_queue(
        &mut self,
        ctx: &Ctx<'_>,
        no_ack: bool,
    ) -> AmqpResult<Arc<Queue>> {
        let refused = |why| AmqpError::channel(AMQPSoftError::PRECONDITIONFAILED, why);
        if !no_ack {
            return Err(refused("reply consumer cannot acknowledge"));
        }
        if self.reply_queue.is_some() {
            return Err(refused("reply consumer already set"));
        }
        let name = ctx.vhost.generate_name(&format!("{REPLY_TO}."));
        let q = Queue::new(
            &ctx.vhost.name,
            &name,
            false,
            Some(ctx.conn_id),
            false,
            Table::default(),
        )?
        .hidden();
        let q = ctx.vhost.add_hidden_queue(q)?;
        self.reply_queue = Some(q.clone());
        Ok(q)
    }

    /// After a cancel: remove the reply queue if `q` is it.
    pub(super) fn drop_reply_queue_of(&mut self, ctx: &Ctx<'_>, q: &Arc<Queue>) {
        if self.reply_queue.as_ref().is_some_and(|r| Arc::ptr_eq(r, q)) {
            if let Some(q) = self.reply_queue.take() {
                ctx.vhost.remove_queue(&q);
            }
        }
    }
}
