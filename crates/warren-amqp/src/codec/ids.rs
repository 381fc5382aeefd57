//! Class and method ids of AMQP 0-9-1 (with RabbitMQ's extensions) as
//! named typed constants. amq-protocol only gives ids of parsed methods
//! (`AMQPClass::get_amqp_class_id`); the hand-framed hot path and the
//! exception replies need them before parsing, so they are defined here,
//! once.

/// A method's class and method id, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodId {
    /// Class id (10 connection, 60 basic, ...).
    pub class: u16,
    /// Method id within the class.
    pub method: u16,
}

impl MethodId {
    /// The pair `(class, method)`.
    pub const fn new(class: u16, method: u16) -> Self {
        MethodId { class, method }
    }

    /// No method: an exception not caused by a particular method.
    pub const NONE: MethodId = MethodId::new(0, 0);

    /// The ids at the start of a method frame payload.
    pub fn read(payload: &[u8]) -> Option<MethodId> {
        if payload.len() < 4 {
            return None;
        }
        Some(MethodId::new(
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        ))
    }

    /// The ids of a parsed method.
    pub fn of(m: &amq_protocol::protocol::AMQPClass) -> MethodId {
        MethodId::new(m.get_amqp_class_id(), m.get_amqp_method_id())
    }
}

impl std::fmt::Display for MethodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.class, self.method)
    }
}

/// Class ids.
pub mod class {
    /// connection
    pub const CONNECTION: u16 = 10;
    /// channel
    pub const CHANNEL: u16 = 20;
    /// access (deprecated, still parsed)
    pub const ACCESS: u16 = 30;
    /// exchange
    pub const EXCHANGE: u16 = 40;
    /// queue
    pub const QUEUE: u16 = 50;
    /// basic: also the class of every content header
    pub const BASIC: u16 = 60;
    /// confirm (RabbitMQ extension)
    pub const CONFIRM: u16 = 85;
    /// tx
    pub const TX: u16 = 90;
}

use class::*;

/// connection.start
pub const CONNECTION_START: MethodId = MethodId::new(CONNECTION, 10);
/// connection.start-ok
pub const CONNECTION_START_OK: MethodId = MethodId::new(CONNECTION, 11);
/// connection.tune-ok
pub const CONNECTION_TUNE_OK: MethodId = MethodId::new(CONNECTION, 31);
/// connection.open
pub const CONNECTION_OPEN: MethodId = MethodId::new(CONNECTION, 40);
/// connection.close
pub const CONNECTION_CLOSE: MethodId = MethodId::new(CONNECTION, 50);
/// connection.close-ok
pub const CONNECTION_CLOSE_OK: MethodId = MethodId::new(CONNECTION, 51);
/// connection.update-secret (RabbitMQ's extension).
pub const CONNECTION_UPDATE_SECRET: MethodId = MethodId::new(CONNECTION, 70);
/// channel.open
pub const CHANNEL_OPEN: MethodId = MethodId::new(CHANNEL, 10);
/// channel.flow
pub const CHANNEL_FLOW: MethodId = MethodId::new(CHANNEL, 20);
/// exchange.declare
pub const EXCHANGE_DECLARE: MethodId = MethodId::new(EXCHANGE, 10);
/// exchange.bind
pub const EXCHANGE_BIND: MethodId = MethodId::new(EXCHANGE, 30);
/// exchange.unbind
pub const EXCHANGE_UNBIND: MethodId = MethodId::new(EXCHANGE, 40);
/// queue.declare
pub const QUEUE_DECLARE: MethodId = MethodId::new(QUEUE, 10);
/// queue.bind
pub const QUEUE_BIND: MethodId = MethodId::new(QUEUE, 20);
/// queue.unbind
pub const QUEUE_UNBIND: MethodId = MethodId::new(QUEUE, 50);
/// basic.consume
pub const BASIC_CONSUME: MethodId = MethodId::new(BASIC, 20);
/// basic.publish
pub const BASIC_PUBLISH: MethodId = MethodId::new(BASIC, 40);
/// basic.return
pub const BASIC_RETURN: MethodId = MethodId::new(BASIC, 50);
/// basic.deliver
pub const BASIC_DELIVER: MethodId = MethodId::new(BASIC, 60);
/// basic.get-ok
pub const BASIC_GET_OK: MethodId = MethodId::new(BASIC, 71);
/// basic.ack (both directions)
pub const BASIC_ACK: MethodId = MethodId::new(BASIC, 80);
/// basic.reject
pub const BASIC_REJECT: MethodId = MethodId::new(BASIC, 90);
/// basic.nack (both directions)
pub const BASIC_NACK: MethodId = MethodId::new(BASIC, 120);

/// Whether AMQP 0-9-1 (with RabbitMQ's extensions) defines this method:
/// an undefined one is 540 NOT_IMPLEMENTED, a defined but malformed one
/// 502 SYNTAX_ERROR. The method ids of each class, from the spec.
pub fn known_method(id: MethodId) -> bool {
    let methods: &[u16] = match id.class {
        CONNECTION => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        CHANNEL => &[10, 11, 20, 21, 40, 41],
        ACCESS => &[10, 11],
        EXCHANGE => &[10, 11, 20, 21, 30, 31, 40, 51],
        QUEUE => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        BASIC => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        CONFIRM => &[10, 11],
        TX => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&id.method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, channel, connection, exchange, queue, AMQPClass};

    #[test]
    fn constants_agree_with_amq_protocol() {
        let pairs = [
            (
                CONNECTION_CLOSE,
                AMQPClass::Connection(connection::AMQPMethod::Close(Default::default())),
            ),
            (
                CONNECTION_CLOSE_OK,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(Default::default())),
            ),
            (
                CONNECTION_OPEN,
                AMQPClass::Connection(connection::AMQPMethod::Open(Default::default())),
            ),
            (
                CONNECTION_TUNE_OK,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(Default::default())),
            ),
            (
                CHANNEL_FLOW,
                AMQPClass::Channel(channel::AMQPMethod::Flow(Default::default())),
            ),
            (
                EXCHANGE_UNBIND,
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(Default::default())),
            ),
            (
                QUEUE_UNBIND,
                AMQPClass::Queue(queue::AMQPMethod::Unbind(Default::default())),
            ),
            (
                BASIC_PUBLISH,
                AMQPClass::Basic(basic::AMQPMethod::Publish(Default::default())),
            ),
            (
                BASIC_GET_OK,
                AMQPClass::Basic(basic::AMQPMethod::GetOk(Default::default())),
            ),
            (
                BASIC_NACK,
                AMQPClass::Basic(basic::AMQPMethod::Nack(Default::default())),
            ),
        ];
        for (id, m) in pairs {
            assert_eq!(id, MethodId::of(&m));
            assert!(known_method(id), "{id}");
        }
        assert!(!known_method(MethodId::new(BASIC, 41)));
        assert!(!known_method(MethodId::new(70, 10)));
    }
}
