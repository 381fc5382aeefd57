//! MQTT return and reason codes by name: the 5.0 reason codes (spec table
//! 2-6), the 3.1.1 CONNACK return codes, and the pair a CONNACK refusal
//! needs so that one call site answers either protocol level.

/// An MQTT 5.0 reason code (spec table 2-6), as the adapter sends it in
/// CONNACK, PUBACK/PUBREC/PUBREL/PUBCOMP, SUBACK, UNSUBACK and DISCONNECT.
/// Codes under 0x80 are successes; the rest are failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00: success, normal disconnection, granted QoS 0.
    Success = 0x00,
    /// 0x01: SUBACK, granted QoS 1.
    GrantedQos1 = 0x01,
    /// 0x02: SUBACK, granted QoS 2.
    GrantedQos2 = 0x02,
    /// 0x04: DISCONNECT from the client, publish the will anyway.
    DisconnectWithWill = 0x04,
    /// 0x10: PUBACK/PUBREC, accepted but no subscriber matched.
    NoMatchingSubscribers = 0x10,
    /// 0x11: UNSUBACK, no such subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18: AUTH, continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19: AUTH, re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80: unspecified error (also the 3.1.1 SUBACK failure code).
    UnspecifiedError = 0x80,
    /// 0x81: malformed packet.
    MalformedPacket = 0x81,
    /// 0x82: protocol error.
    ProtocolError = 0x82,
    /// 0x83: implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: unsupported protocol version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: client identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: bad user name or password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: not authorized.
    NotAuthorized = 0x87,
    /// 0x88: server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: server busy.
    ServerBusy = 0x89,
    /// 0x8A: banned.
    Banned = 0x8A,
    /// 0x8B: server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: keep alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: topic filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: topic name invalid (also CONNACK: the will topic is not accepted).
    TopicNameInvalid = 0x90,
    /// 0x91: packet identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: packet identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: receive maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: topic alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: quota exceeded (a connection or queue limit).
    QuotaExceeded = 0x97,
    /// 0x98: administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QosNotSupported = 0x9B,
    /// 0x9C: use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: server moved.
    ServerMoved = 0x9D,
    /// 0x9E: shared subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: subscription identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: wildcard subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// The 3.1.1 SUBACK failure return code (the same byte as 0x80).
    pub const V4_SUBACK_FAILURE: ReasonCode = ReasonCode::UnspecifiedError;

    /// The SUBACK code granting `qos` (0, 1 or 2; higher is taken as 2).
    pub fn granted(qos: u8) -> ReasonCode {
        match qos {
            0 => ReasonCode::Success,
            1 => ReasonCode::GrantedQos1,
            _ => ReasonCode::GrantedQos2,
        }
    }

    /// The byte on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A failure code (0x80 and above).
    pub fn is_failure(self) -> bool {
        self.code() >= 0x80
    }
}

impl From<ReasonCode> for u8 {
    fn from(c: ReasonCode) -> u8 {
        c.code()
    }
}

/// A 3.1.1 CONNACK return code (spec 3.2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectReturn {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: unacceptable protocol version.
    UnacceptableProtocolVersion = 1,
    /// 2: identifier rejected.
    IdentifierRejected = 2,
    /// 3: server unavailable (also the answer to a reached connection or
    /// queue limit, which 3.1.1 has no code for).
    ServerUnavailable = 3,
    /// 4: bad user name or password.
    BadUserNameOrPassword = 4,
    /// 5: not authorized.
    NotAuthorized = 5,
}

/// The CONNACK answer for both protocol levels: a refusal names its 3.1.1
/// return code and its 5.0 reason code once, and the writer picks by level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnackCode {
    /// Sent to a 3.1.1 client.
    pub v4: ConnectReturn,
    /// Sent to a 5.0 client.
    pub v5: ReasonCode,
}

impl ConnackCode {
    /// Connection accepted.
    pub const ACCEPTED: ConnackCode =
        ConnackCode::new(ConnectReturn::Accepted, ReasonCode::Success);

    /// The pair of codes.
    pub const fn new(v4: ConnectReturn, v5: ReasonCode) -> ConnackCode {
        ConnackCode { v4, v5 }
    }

    /// A refusal only a v5 client can be told (its 3.1.1 half, server
    /// unavailable, is never sent).
    pub const fn v5_only(v5: ReasonCode) -> ConnackCode {
        ConnackCode::new(ConnectReturn::ServerUnavailable, v5)
    }

    /// The byte a client of protocol `level` gets.
    pub fn for_level(self, level: u8) -> u8 {
        if level == 5 {
            self.v5.code()
        } else {
            self.v4 as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_spec_bytes() {
        assert_eq!(ReasonCode::NotAuthorized.code(), 0x87);
        assert_eq!(ReasonCode::TopicNameInvalid.code(), 0x90);
        assert_eq!(ReasonCode::QuotaExceeded.code(), 0x97);
        assert_eq!(ReasonCode::V4_SUBACK_FAILURE.code(), 0x80);
        assert_eq!(ReasonCode::granted(1), ReasonCode::GrantedQos1);
        assert!(!ReasonCode::GrantedQos2.is_failure() && ReasonCode::UnspecifiedError.is_failure());
        let c = ConnackCode::new(ConnectReturn::ServerUnavailable, ReasonCode::QuotaExceeded);
        assert_eq!((c.for_level(4), c.for_level(5)), (3, 0x97));
    }
}
