//! AMQP exceptions: a reply code, its text, and whether it closes the channel
//! or the whole connection, following the AMQP 0-9-1 spec's classification.

use warren_core::CoreError;

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
#[error("{code} {text}")]
pub struct AmqpError {
    /// Reply code (404, 406, ...).
    pub code: u16,
    /// Human-readable text, prefixed with the code's name as RabbitMQ does.
    pub text: String,
    /// Class of the failing method, 0 if none.
    pub class_id: u16,
    /// Method of the failing method, 0 if none.
    pub method_id: u16,
    /// Channel or connection exception.
    pub scope: Scope,
}

/// The spec's name for a reply code.
pub fn code_name(code: u16) -> &'static str {
    match code {
        200 => "REPLY_SUCCESS",
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

impl AmqpError {
    fn new(scope: Scope, code: u16, text: impl std::fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {text}", code_name(code)),
            class_id: 0,
            method_id: 0,
            scope,
        }
    }

    /// A channel exception.
    pub fn channel(code: u16, text: impl std::fmt::Display) -> Self {
        Self::new(Scope::Channel, code, text)
    }

    /// A connection exception.
    pub fn connection(code: u16, text: impl std::fmt::Display) -> Self {
        Self::new(Scope::Connection, code, text)
    }

    /// Record which method failed.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }
}

impl From<CoreError> for AmqpError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(t) => AmqpError::channel(404, t),
            CoreError::PreconditionFailed(t) => AmqpError::channel(406, t),
            // RabbitMQ's code for a vhost queue limit (rabbit_channel.erl).
            CoreError::LimitReached(t) => AmqpError::channel(406, t),
            CoreError::ResourceLocked(t) => AmqpError::channel(405, t),
            CoreError::AccessRefused(t) => AmqpError::channel(403, t),
            CoreError::NotAllowed(t) => AmqpError::connection(530, t),
            CoreError::CommandInvalid(t) => AmqpError::connection(503, t),
            CoreError::Internal(t) => AmqpError::channel(541, t),
            other => AmqpError::connection(541, other),
        }
    }
}

/// Result of handling one frame.
pub type AmqpResult<T = ()> = Result<T, AmqpError>;
