//! MQTT return and reason codes that the adapter sends when it refuses
//! something, by name (3.1.1 CONNACK return codes and SUBACK failure,
//! 5.0 reason codes).

/// 3.1.1 CONNACK return code 3: the server is unavailable (RabbitMQ's
/// answer for failures without a more precise code).
pub const V4_SERVER_UNAVAILABLE: u8 = 3;
/// 3.1.1 CONNACK return code 5: not authorised. RabbitMQ answers a
/// reached connection or queue limit with it: 3.10 maps the direct
/// connection's not_allowed to it, 3.13+ maps quota exceeded to it.
pub const V4_NOT_AUTHORIZED: u8 = 5;
/// 3.1.1 SUBACK return code: the subscription failed.
pub const V4_SUBACK_FAILURE: u8 = 0x80;
/// 5.0 reason code 0x80: unspecified error.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
/// 5.0 reason code 0x97: quota exceeded (a connection or queue limit).
pub const QUOTA_EXCEEDED: u8 = 0x97;
