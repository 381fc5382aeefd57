//! Exceptions and closing: a channel exception closes its channel, any
//! other the connection; cleanup gives back what the connection holds.

use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::ShortString;

use super::{truncate, Conn, Phase};
use crate::codec;
use crate::error::{AmqpError, Scope};

/// The fields channel.close and connection.close both carry.
fn reply(e: &AmqpError) -> (u16, ShortString, u16, u16) {
    let text = truncate(&e.text).into();
    (e.code(), text, e.method.class, e.method.method)
}

impl Conn {
    /// Answer a failed frame on `channel` with channel.close or
    /// connection.close.
    pub(super) fn on_error(&mut self, channel: u16, e: AmqpError) {
        match e.scope {
            Scope::Channel if channel != 0 => {
                let vhost = self.session.as_ref().map_or("", |s| &*s.vhost.name);
                tracing::warn!(peer = %self.peer, user = %self.user, vhost, channel, code = e.code(), "channel error: {}", e.text);
                if let Some(ch) = self.channels.get_mut(channel) {
                    if let Some(s) = &self.session {
                        ch.shutdown(&s.ctx());
                    }
                    ch.closing = true;
                }
                let (reply_code, reply_text, class_id, method_id) = reply(&e);
                let m = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code,
                    reply_text,
                    class_id,
                    method_id,
                }));
                self.out.push(|o| codec::write_method(o, channel, m));
            }
            _ => {
                tracing::warn!(peer = %self.peer, code = e.code(), "connection error: {}", e.text);
                self.close_connection(e);
            }
        }
    }

    /// Send connection.close (once) and release everything.
    pub(super) fn close_connection(&mut self, e: AmqpError) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        let (reply_code, reply_text, class_id, method_id) = reply(&e);
        let m = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code,
            reply_text,
            class_id,
            method_id,
        }));
        self.out.push(|o| codec::write_method(o, 0, m));
        self.cleanup();
        self.phase = Phase::Closing;
    }

    /// Release everything the connection holds: consumers, unacked
    /// messages (requeued), exclusive queues.
    pub(super) fn cleanup(&mut self) {
        // Given back before close-ok goes out: a client that reconnects at
        // once finds its place free.
        self.lease = None;
        let Some(s) = &self.session else {
            return;
        };
        let ctx = s.ctx();
        for ch in self.channels.iter_mut() {
            ch.shutdown(&ctx);
        }
        self.channels.clear();
        s.vhost.connection_closed(self.id);
    }
}
