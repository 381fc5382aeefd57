//! AMQP exceptions: a reply code, its text, and whether it closes the channel
//! or the whole connection, following the AMQP 0-9-1 spec's classification.
//! Reply codes are amq-protocol's own: [`AMQPSoftError`] and
//! [`AMQPHardError`], together [`AMQPErrorKind`].

use std::fmt;

pub use amq_protocol::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use warren_core::CoreError;

use crate::codec::MethodId;

/// Which scope an exception closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// channel.close; the connection stays up.
    Channel,
    /// connection.close.
    Connection,
}

/// An AMQP exception to send to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {text}", code = .kind.get_id())]
pub struct AmqpError {
    /// The reply code (NOT_FOUND, PRECONDITION_FAILED, ...).
    pub kind: AMQPErrorKind,
    /// Human-readable text, prefixed with the code's name as RabbitMQ does.
    pub text: String,
    /// The failing method, [`MethodId::NONE`] if none.
    pub method: MethodId,
    /// Channel or connection exception.
    pub scope: Scope,
}

/// The spec's name of a reply code as RabbitMQ writes it in reply texts
/// (`NOT_FOUND`): amq-protocol's name (`NOT-FOUND`) with underscores.
pub struct ReplyName<'a>(pub &'a AMQPErrorKind);

impl fmt::Display for ReplyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            AMQPErrorKind::Soft(e) => e.to_string(),
            AMQPErrorKind::Hard(e) => e.to_string(),
        };
        f.write_str(&name.replace('-', "_"))
    }
}

impl AmqpError {
    fn new(scope: Scope, kind: AMQPErrorKind, text: impl fmt::Display) -> Self {
        AmqpError {
            text: format!("{} - {text}", ReplyName(&kind)),
            kind,
            method: MethodId::NONE,
            scope,
        }
    }

    /// A channel exception.
    pub fn channel(kind: impl Into<AMQPErrorKind>, text: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, kind.into(), text)
    }

    /// A connection exception.
    pub fn connection(kind: impl Into<AMQPErrorKind>, text: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, kind.into(), text)
    }

    /// The numeric reply code for the wire.
    pub fn code(&self) -> u16 {
        self.kind.get_id()
    }

    /// Record which method failed (the first one recorded stays).
    pub fn on(mut self, method: MethodId) -> Self {
        if self.method.class == 0 {
            self.method = method;
        }
        self
    }
}

impl From<CoreError> for AmqpError {
    fn from(e: CoreError) -> Self {
        use AMQPHardError as Hard;
        use AMQPSoftError as Soft;
        match e {
            CoreError::NotFound(t) => AmqpError::channel(Soft::NOTFOUND, t),
            CoreError::PreconditionFailed(t) => AmqpError::channel(Soft::PRECONDITIONFAILED, t),
            // RabbitMQ's code for a vhost queue limit (rabbit_channel.erl).
            CoreError::LimitReached(t) => AmqpError::channel(Soft::PRECONDITIONFAILED, t),
            CoreError::ResourceLocked(t) => AmqpError::channel(Soft::RESOURCELOCKED, t),
            CoreError::AccessRefused(t) => AmqpError::channel(Soft::ACCESSREFUSED, t),
            CoreError::NotAllowed(t) => AmqpError::connection(Hard::NOTALLOWED, t),
            CoreError::CommandInvalid(t) => AmqpError::connection(Hard::COMMANDINVALID, t),
            CoreError::Internal(t) => AmqpError::channel(Hard::INTERNALERROR, t),
            // A channel error: the connection can retry once the cluster heals.
            CoreError::Unavailable(t) => AmqpError::channel(Hard::INTERNALERROR, t),
            other => AmqpError::connection(Hard::INTERNALERROR, other),
        }
    }
}

/// Result of handling one frame.
pub type AmqpResult<T = ()> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ids;

    /// The names the hand-written table gave, now taken from amq-protocol.
    #[test]
    fn reply_names_are_rabbitmq_spelling() {
        let want = [
            (311, "CONTENT_TOO_LARGE"),
            (312, "NO_ROUTE"),
            (313, "NO_CONSUMERS"),
            (320, "CONNECTION_FORCED"),
            (402, "INVALID_PATH"),
            (403, "ACCESS_REFUSED"),
            (404, "NOT_FOUND"),
            (405, "RESOURCE_LOCKED"),
            (406, "PRECONDITION_FAILED"),
            (501, "FRAME_ERROR"),
            (502, "SYNTAX_ERROR"),
            (503, "COMMAND_INVALID"),
            (504, "CHANNEL_ERROR"),
            (505, "UNEXPECTED_FRAME"),
            (506, "RESOURCE_ERROR"),
            (530, "NOT_ALLOWED"),
            (540, "NOT_IMPLEMENTED"),
            (541, "INTERNAL_ERROR"),
        ];
        for (code, name) in want {
            let kind = AMQPErrorKind::from_id(code).expect("a spec reply code");
            assert_eq!(ReplyName(&kind).to_string(), name);
        }
    }

    #[test]
    fn text_scope_and_first_method_kept() {
        let e = AmqpError::channel(AMQPSoftError::NOTFOUND, "no queue 'q'")
            .on(ids::BASIC_PUBLISH)
            .on(ids::BASIC_ACK);
        assert_eq!(e.text, "NOT_FOUND - no queue 'q'");
        assert_eq!(
            (e.code(), e.scope, e.method),
            (404, Scope::Channel, ids::BASIC_PUBLISH)
        );
        let e = AmqpError::from(CoreError::NotAllowed("x".into()));
        assert_eq!((e.code(), e.scope), (530, Scope::Connection));
    }
}
