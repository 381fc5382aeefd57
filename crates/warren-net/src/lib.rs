//! Transport code shared by the AMQP and MQTT adapters, kept out of the
//! protocol-agnostic core: the accept loop ([`listener`]), the per-connection
//! outbound buffer that coalesces frames into few write syscalls
//! ([`outbox`]), the pause a publisher takes between reads ([`pacing`]), and
//! what carries a session's bytes ([`transport`]: TCP, [`websocket`], and
//! [`tls`] under either).
//!
//! Arrows: adapters -> warren-net -> warren-core. The core never sees a
//! socket; a queue only knows a consumer may refuse a delivery and wake it
//! later, which is what the outbox does.

pub mod listener;
pub mod outbox;
pub mod pacing;
pub mod tls;
pub mod transport;
pub mod websocket;

pub use outbox::Outbox;
pub use pacing::pace_publisher;
