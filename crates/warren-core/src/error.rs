//! Typed errors of the core. Adapters map each kind to their protocol's code
//! (AMQP reply codes, MQTT reason codes), so the kinds follow AMQP's classes.

use thiserror::Error;

/// Malformed wire data inside a table or property list.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated field")]
    Truncated,
    /// A string that must be UTF-8 was not.
    #[error("invalid UTF-8 in field")]
    BadUtf8,
    /// A field-table type letter that no AMQP dialect defines.
    #[error("unknown field type {0:#04x}")]
    UnknownFieldType(u8),
    /// Nesting deep enough to be an attack rather than data.
    #[error("field table nested too deeply")]
    TooDeep,
    /// The expiration property is not a non-negative integer.
    #[error("invalid expiration property")]
    BadExpiration,
    /// A routing key longer than AMQP's short string allows (255 bytes);
    /// cutting it would route the message under another key.
    #[error("routing key of {0} bytes is longer than 255")]
    RoutingKeyTooLong(usize),
}

/// Why a core operation was refused. The message is the text a client sees.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// AMQP 404: the named entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// AMQP 406: the request conflicts with the entity's current state.
    #[error("{0}")]
    PreconditionFailed(String),
    /// AMQP 405: another connection owns the entity.
    #[error("{0}")]
    ResourceLocked(String),
    /// AMQP 403: the user may not do this.
    #[error("{0}")]
    AccessRefused(String),
    /// AMQP 530: forbidden by the server's rules (e.g. unknown vhost).
    #[error("{0}")]
    NotAllowed(String),
    /// AMQP 503: the command is invalid in this context (e.g. unknown type).
    #[error("{0}")]
    CommandInvalid(String),
    /// An operator-set limit (vhost `max-queues`) is reached: AMQP 406, as
    /// RabbitMQ answers; MQTT 0x97 quota exceeded.
    #[error("{0}")]
    LimitReached(String),
    /// The cluster cannot commit a definitions change (no quorum on this
    /// side of a partition, or no leader in time): AMQP 541, HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    /// AMQP 541: an internal fault such as a failing plugin.
    #[error("{0}")]
    Internal(String),
}

/// Shorthand for core results.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
