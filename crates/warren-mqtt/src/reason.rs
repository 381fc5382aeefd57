//! MQTT return and reason codes that the adapter sends when it refuses
//! something, by name (3.1.1 CONNACK return codes and SUBACK failure,
//! 5.0 reason codes).

/// 3.1.1 CONNACK return code 3: the server is unavailable (also the answer
/// to a reached connection or queue limit, which 3.1.1 has no code for).
pub const V4_SERVER_UNAVAILABLE: u8 = 3;
/// 3.1.1 SUBACK return code: the subscription failed.
pub const V4_SUBACK_FAILURE: u8 = 0x80;
/// 5.0 reason code 0x80: unspecified error.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
/// 5.0 reason code 0x97: quota exceeded (a connection or queue limit).
pub const QUOTA_EXCEEDED: u8 = 0x97;
