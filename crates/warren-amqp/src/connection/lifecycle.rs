//! Channel lifecycle: channel.open (within channel_max and the user's
//! limit), close, close-ok and flow, and handing frames to open channels.

use std::sync::Arc;

use amq_protocol::protocol::{channel, AMQPClass, AMQPHardError};

use super::Conn;
use crate::channel::{Channel, Ctx};
use crate::codec::ids;
use crate::deliveries::ChannelShared;
use crate::error::{AmqpError, AmqpResult};

/// A frame for a channel that is not open.
fn not_open(number: u16) -> AmqpError {
    AmqpError::connection(
        AMQPHardError::CHANNELERROR,
        format!("expected 'channel.open' on channel {number}"),
    )
}

impl Conn {
    /// Run `f` on an open channel; frames for closing channels are dropped.
    pub(super) fn with_channel(
        &mut self,
        number: u16,
        f: impl FnOnce(&mut Channel, &Ctx<'_>) -> AmqpResult,
    ) -> AmqpResult {
        // Borrowed, not cloned: this runs for every frame.
        let ctx = self
            .session
            .as_ref()
            .expect("running connection has a session")
            .ctx();
        match self.channels.get_mut(number) {
            Some(ch) if ch.closing => Ok(()),
            Some(ch) => f(ch, &ctx),
            _ => Err(not_open(number)),
        }
    }

    /// The channel class: open, close, close-ok, flow.
    pub(super) fn on_channel_class(&mut self, number: u16, m: AMQPClass) -> AmqpResult {
        let AMQPClass::Channel(m) = m else {
            unreachable!("class 20")
        };
        let open = self.channels.get(number).is_some();
        let closing = matches!(self.channels.get(number), Some(ch) if ch.closing);
        match m {
            channel::AMQPMethod::Open(_) if open => Err(AmqpError::connection(
                AMQPHardError::CHANNELERROR,
                "second 'channel.open' seen",
            )
            .on(ids::CHANNEL_OPEN)),
            channel::AMQPMethod::Open(_) => self.open_channel(number),
            _ if !open => Err(not_open(number)),
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
            channel::AMQPMethod::Flow(f) => self.flow(number, f.active),
            _ => Err(AmqpError::connection(
                AMQPHardError::COMMANDINVALID,
                "unexpected channel method",
            )),
        }
    }

    /// channel.flow: only active=true (RabbitMQ refuses to stop sending).
    fn flow(&mut self, number: u16, active: bool) -> AmqpResult {
        if !active {
            return Err(AmqpError::channel(
                AMQPHardError::NOTIMPLEMENTED,
                "channel.flow active=false",
            )
            .on(ids::CHANNEL_FLOW));
        }
        self.send(
            number,
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                active: true,
            })),
        );
        Ok(())
    }

    /// channel.open: any number is accepted, but no more channels than the
    /// negotiated channel_max (nor the user's `max-channels`) may be open,
    /// as in RabbitMQ 3.10; both refusals are 530 connection errors.
    fn open_channel(&mut self, number: u16) -> AmqpResult {
        let not_allowed = AMQPHardError::NOTALLOWED;
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
                AmqpError::connection(AMQPHardError::NOTALLOWED, e)
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

    /// Close channel `number` at once: its consumers, unacked messages
    /// and lease are given back.
    fn drop_channel(&mut self, number: u16) {
        if let Some(mut ch) = self.channels.remove(number) {
            if let Some(r) = &self.registration {
                r.info.remove_channel(number);
            }
            if let Some(s) = &self.session {
                ch.shutdown(&s.ctx());
            }
        }
    }
}
