//! Packet dispatch: one method per packet type, and the server-side
//! DISCONNECT that ends a connection on a protocol violation.

use std::time::Duration;

use warren_core::session_ids::IdKind;

use super::{Conn, End};
use crate::codec::{self, AckKind, Packet};
use crate::reason::ReasonCode;

/// Bytes of a DISCONNECT besides its reason string's text (fixed header,
/// reason code, property length, property id, string length).
const DISCONNECT_OVERHEAD: usize = 8;

impl Conn {
    /// Handle one packet. Not async, so the session loop's future stays
    /// small; a QoS 1/2 publish whose acknowledgement must wait for the
    /// store leaves it in `Publisher::pending` for the loop to send.
    pub(super) fn on_packet(&mut self, p: Packet) -> Option<End> {
        match p {
            Packet::Connect(_) => {
                Some(self.disconnect(ReasonCode::ProtocolError, "second CONNECT"))
            }
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubRel(pkid, _) => {
                self.on_pubrel(pkid);
                None
            }
            Packet::PubAck(pkid, _) => {
                self.settle_outbound(pkid, false);
                None
            }
            Packet::PubRec(pkid, code) => {
                self.on_pubrec(pkid, code);
                None
            }
            Packet::PubComp(pkid, _) => {
                self.on_pubcomp(pkid);
                None
            }
            Packet::Subscribe(s) => self.on_subscribe(&s),
            Packet::Unsubscribe(pkid, filters) => {
                self.on_unsubscribe(pkid, &filters);
                None
            }
            Packet::PingReq => {
                self.out.push(codec::write_pingresp);
                None
            }
            Packet::Disconnect(code, props) => {
                Some(self.on_disconnect(code, props.session().session_expiry))
            }
            // No CONNECT is accepted with an authentication method, so an
            // AUTH is always out of place (MQTT-4.12.0-1).
            Packet::Auth(_) => Some(self.disconnect(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            )),
        }
    }

    /// PUBREL for a QoS 2 publish of the client: its id may be used again.
    /// An id with no publish pending gets 0x92 (5.0).
    fn on_pubrel(&mut self, pkid: u16) {
        let known = self
            .extras
            .as_mut()
            .is_some_and(|e| e.qos2_seen.remove(&pkid));
        if known && self.persistent {
            let ids = &self.vhost.session_ids;
            ids.remove(self.client_id(), IdKind::Received, pkid);
        }
        let code = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        let level = self.level;
        self.out
            .push(|o| codec::write_ack(o, level, AckKind::PubComp, pkid, code));
    }

    /// A client's DISCONNECT: clean, unless v5 reason 0x04 asks for the
    /// will. It may change the session expiry interval, except from 0
    /// (MQTT-3.14.2-2, a protocol error).
    fn on_disconnect(&mut self, code: u8, session_expiry: Option<u32>) -> End {
        if let Some(secs) = session_expiry {
            if self.expiry == Some(Duration::ZERO) && secs != 0 {
                return self.disconnect(
                    ReasonCode::ProtocolError,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                );
            }
            self.set_expiry(match secs {
                u32::MAX => None,
                s => Some(Duration::from_secs(u64::from(s))),
            });
        }
        if code == ReasonCode::DisconnectWithWill.code() {
            End::Abnormal("client asked for its will".into())
        } else {
            End::Clean
        }
    }

    /// The session now ends `expiry` after the connection (the queue's
    /// x-expires; 0 removes it at cleanup).
    fn set_expiry(&mut self, expiry: Option<Duration>) {
        self.expiry = expiry;
        let Some(q) = self.queue.as_ref().filter(|q| q.durable) else {
            return;
        };
        if expiry != Some(Duration::ZERO) && q.expires() != expiry {
            q.set_expires(expiry);
            self.vhost.queue_changed(q);
        }
    }

    /// QoS 2, step 2: the client has the message; it will not be sent
    /// again, only PUBREL until PUBCOMP. A failure code ends the flow
    /// there: the id is free, and no PUBREL follows (4.3.3).
    fn on_pubrec(&self, pkid: u16, code: u8) {
        let failed = code >= ReasonCode::UnspecifiedError.code();
        self.settle_outbound(pkid, !failed);
        if failed {
            return;
        }
        let level = self.level;
        self.out
            .push(|o| codec::write_ack(o, level, AckKind::PubRel, pkid, ReasonCode::Success));
    }

    /// End the connection for `why`: v5 gets a DISCONNECT with `code`,
    /// 3.1.1 (which has none) is just closed.
    pub(super) fn disconnect(&self, code: ReasonCode, why: &str) -> End {
        tracing::warn!(peer = %self.peer(), client_id = %self.client_id(), "MQTT: {why}; disconnecting");
        if self.level == 5 {
            // The reason string is left out where it would make the packet
            // larger than the client accepts (3.14.2.2.3).
            let text = if why.len() + DISCONNECT_OVERHEAD <= self.consumer.max_packet {
                why
            } else {
                ""
            };
            self.out.push(|o| codec::write_disconnect(o, code, text));
        }
        End::Abnormal(why.to_string())
    }
}
