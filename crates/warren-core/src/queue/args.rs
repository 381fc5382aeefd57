//! A queue's `x-` arguments, read and validated once at declare into
//! [`Limits`] (RabbitMQ's names, values and error texts).

use std::time::Duration;

use crate::dead_letter::DeadLetter;
use crate::error::{CoreError, Result};
use crate::value::{Table, Value};

/// What happens when a queue reaches its length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest ready message (RabbitMQ's default).
    DropHead,
    /// Refuse the new message (publisher gets a nack).
    RejectPublish,
    /// Refuse it and dead-letter it (reason `maxlen`).
    RejectPublishDlx,
}

/// Limits from the queue's `x-` arguments.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `x-message-ttl`.
    pub message_ttl: Option<Duration>,
    /// `x-max-length`.
    pub max_length: Option<usize>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<usize>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-expires`: the queue is deleted after being unused this long.
    pub expires: Option<Duration>,
    /// `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
    pub dead_letter: Option<DeadLetter>,
    /// `x-max-priority`: 0 for a plain FIFO queue.
    pub max_priority: u8,
}

fn invalid(k: &str, v: &Value) -> CoreError {
    CoreError::PreconditionFailed(format!("invalid arg '{k}' for queue: {v:?}"))
}

/// A non-negative integer argument.
fn int(args: &Table, k: &str) -> Result<Option<i64>> {
    match args.get(k) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(Some(n)),
            _ => Err(invalid(k, v)),
        },
    }
}

/// A string argument.
fn text(args: &Table, k: &str) -> Result<Option<String>> {
    match args.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| invalid(k, v)),
    }
}

fn millis(args: &Table, k: &str) -> Result<Option<Duration>> {
    Ok(int(args, k)?.map(|n| Duration::from_millis(n as u64)))
}

fn overflow(args: &Table) -> Result<Overflow> {
    let Some(v) = args.get("x-overflow") else {
        return Ok(Overflow::DropHead);
    };
    match v.as_str() {
        Some("drop-head") => Ok(Overflow::DropHead),
        Some("reject-publish") => Ok(Overflow::RejectPublish),
        Some("reject-publish-dlx") => Ok(Overflow::RejectPublishDlx),
        _ => Err(invalid("x-overflow", v)),
    }
}

fn expires(args: &Table) -> Result<Option<Duration>> {
    match int(args, "x-expires")? {
        Some(0) => Err(CoreError::PreconditionFailed(
            "invalid arg 'x-expires' for queue: must be positive".into(),
        )),
        other => Ok(other.map(|n| Duration::from_millis(n as u64))),
    }
}

fn dead_letter(args: &Table) -> Result<Option<DeadLetter>> {
    match (
        text(args, "x-dead-letter-exchange")?,
        text(args, "x-dead-letter-routing-key")?,
    ) {
        (Some(exchange), routing_key) => Ok(Some(DeadLetter {
            exchange,
            routing_key,
        })),
        (None, Some(_)) => Err(CoreError::PreconditionFailed(
            "invalid arg 'x-dead-letter-routing-key' for queue: needs x-dead-letter-exchange"
                .into(),
        )),
        (None, None) => Ok(None),
    }
}

fn max_priority(args: &Table) -> Result<u8> {
    match int(args, "x-max-priority")? {
        None => Ok(0),
        Some(n @ 1..=255) => Ok(n as u8),
        Some(_) => Err(CoreError::PreconditionFailed(
            "invalid arg 'x-max-priority' for queue: must be between 1 and 255".into(),
        )),
    }
}

impl Limits {
    /// Read and validate RabbitMQ's queue arguments.
    pub fn from_args(args: &Table) -> Result<Limits> {
        // The order of the checks decides which error a client sees first.
        let overflow = overflow(args)?;
        let expires = expires(args)?;
        let dead_letter = dead_letter(args)?;
        let max_priority = max_priority(args)?;
        Ok(Limits {
            max_priority,
            dead_letter,
            expires,
            message_ttl: millis(args, "x-message-ttl")?,
            max_length: int(args, "x-max-length")?.map(|n| n as usize),
            max_length_bytes: int(args, "x-max-length-bytes")?.map(|n| n as usize),
            overflow,
        })
    }
}
