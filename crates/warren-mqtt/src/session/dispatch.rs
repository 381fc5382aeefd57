//! Packet dispatch: one method per packet type, and the server-side
//! DISCONNECT that ends a connection on a protocol violation.

use super::{Conn, End};
use crate::codec::{self, AckKind, Packet};
use crate::reason::ReasonCode;

impl Conn {
    /// Handle one packet. Not async, so the session loop's future stays
    /// small; a QoS 1/2 publish whose acknowledgement must wait for the
    /// store leaves it in `ack_after_sync` for the loop to send.
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
            Packet::PubRec(pkid, _) => {
                self.on_pubrec(pkid);
                None
            }
            Packet::PubComp(pkid, _) => {
                self.on_pubcomp(pkid);
                None
            }
            Packet::Subscribe(pkid, filters) => {
                self.on_subscribe(pkid, &filters);
                None
            }
            Packet::Unsubscribe(pkid, filters) => {
                self.on_unsubscribe(pkid, &filters);
                None
            }
            Packet::PingReq => {
                self.out.push(codec::write_pingresp);
                None
            }
            Packet::Disconnect(code, _) => Some(on_disconnect(code)),
            Packet::Auth(_) => Some(self.disconnect(
                ReasonCode::BadAuthenticationMethod,
                "enhanced authentication is not supported",
            )),
        }
    }

    /// PUBREL for a QoS 2 publish of the client: its id may be used again.
    fn on_pubrel(&mut self, pkid: u16) {
        if let Some(e) = self.extras.as_mut() {
            e.qos2_seen.remove(&pkid);
        }
        let level = self.level;
        self.out
            .push(|o| codec::write_ack(o, level, AckKind::PubComp, pkid, ReasonCode::Success));
    }

    /// QoS 2, step 2: the client has the message; it will not be sent
    /// again, only PUBREL until PUBCOMP.
    fn on_pubrec(&self, pkid: u16) {
        self.settle_outbound(pkid, true);
        let level = self.level;
        self.out
            .push(|o| codec::write_ack(o, level, AckKind::PubRel, pkid, ReasonCode::Success));
    }

    /// End the connection for `why`: v5 gets a DISCONNECT with `code`,
    /// 3.1.1 (which has none) is just closed.
    pub(super) fn disconnect(&self, code: ReasonCode, why: &str) -> End {
        tracing::warn!(peer = %self.peer, client_id = %self.client_id, "MQTT: {why}; disconnecting");
        if self.level == 5 {
            self.out.push(|o| codec::write_disconnect(o, code, why));
        }
        End::Abnormal(why.to_string())
    }
}

/// A client's DISCONNECT: clean, unless v5 reason 0x04 asks for the will.
fn on_disconnect(code: u8) -> End {
    if code == ReasonCode::DisconnectWithWill.code() {
        End::Abnormal("client asked for its will".into())
    } else {
        End::Clean
    }
}
