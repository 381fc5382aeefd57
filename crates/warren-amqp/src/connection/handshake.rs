//! The connection handshake: connection.start with our capabilities,
//! start-ok with the client's properties and login (PLAIN or AMQPLAIN
//! against the broker's backends, so the password may be an OAuth 2 token,
//! and EXTERNAL over TLS with a verified client certificate),
//! tune/tune-ok negotiation, and connection.open into a vhost within the
//! connection limits. Also the other connection-class methods.

use amq_protocol::protocol::{connection, AMQPClass, AMQPHardError, AMQPSoftError};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use warren_core::auth::login::ExpiryTimer;
use warren_core::limits::ConnectionLease;
use warren_core::registry::ConnectionInfo;
use warren_core::{Table, VHost};

use super::{truncate, Conn, Phase, Session};
use crate::codec::{ids, MethodId};
use crate::error::{AmqpError, AmqpResult};

/// Smallest frame_max a client may ask for.
const FRAME_MIN: u32 = 4096;

impl Conn {
    /// A method on channel 0, by handshake phase.
    pub(super) fn on_connection_method(&mut self, m: AMQPClass) -> AmqpResult {
        let AMQPClass::Connection(m) = m else {
            return Err(AmqpError::connection(
                AMQPHardError::COMMANDINVALID,
                "non-connection method on channel 0",
            ));
        };
        match (self.phase, m) {
            (Phase::StartOk, connection::AMQPMethod::StartOk(s)) => self.on_start_ok(s),
            (Phase::TuneOk, connection::AMQPMethod::TuneOk(t)) => self.on_tune_ok(t),
            (Phase::Open, connection::AMQPMethod::Open(o)) => self.on_open(o.virtual_host.as_str()),
            (Phase::Running, connection::AMQPMethod::UpdateSecret(u)) => self.on_update_secret(u),
            (_, connection::AMQPMethod::Close(c)) => {
                tracing::debug!(peer = %self.peer, code = c.reply_code, "client closed connection: {}", c.reply_text);
                self.cleanup();
                self.send0(AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                    connection::CloseOk {},
                )));
                self.phase = Phase::Done;
                Ok(())
            }
            (_, connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(())
            }
            (phase, other) => {
                let id = MethodId::of(&AMQPClass::Connection(other));
                Err(AmqpError::connection(
                    AMQPHardError::COMMANDINVALID,
                    format!("unexpected method {id} in state {phase:?}"),
                ))
            }
        }
    }

    /// connection.tune-ok: frame_max, channel_max and heartbeat, each
    /// bounded by ours.
    fn on_tune_ok(&mut self, t: connection::TuneOk) -> AmqpResult {
        let server_max = self.cfg.frame_max;
        let fm = if t.frame_max == 0 {
            server_max
        } else {
            t.frame_max.min(server_max)
        };
        if fm < FRAME_MIN {
            return Err(AmqpError::connection(
                AMQPHardError::NOTALLOWED,
                format!("frame_max={fm} < {FRAME_MIN} min size"),
            )
            .on(ids::CONNECTION_TUNE_OK));
        }
        self.frame_max = fm as usize;
        self.channel_max = if t.channel_max == 0 {
            self.cfg.channel_max
        } else {
            t.channel_max.min(self.cfg.channel_max)
        };
        self.set_heartbeat(t.heartbeat);
        self.phase = Phase::Open;
        Ok(())
    }

    /// connection.open: into vhost `name`, within the limits, with the
    /// user's rights there.
    fn on_open(&mut self, name: &str) -> AmqpResult {
        let Some(vhost) = self.broker.vhost(name) else {
            return Err(AmqpError::connection(
                AMQPHardError::NOTALLOWED,
                format!("vhost '{name}' not found"),
            )
            .on(ids::CONNECTION_OPEN));
        };
        let lease = self.admit(&vhost)?;
        let guard = match &self.token {
            Some(grant) => self.broker.token_guard(grant, name),
            None => self.broker.users.guard(name, &self.user),
        }
        .map_err(|e| AmqpError::from(e).on(ids::CONNECTION_OPEN))?;
        self.lease = Some(lease);
        let registration = self.broker.registry.register(
            ConnectionInfo::new(
                self.id,
                "AMQP 0-9-1",
                (self.peer, self.local),
                guard.user.clone(),
                guard.vhost.clone(),
                std::mem::take(&mut self.client),
            )
            .over_tls(self.tls),
        );
        self.expiry = self
            .token
            .as_ref()
            .map(|g| ExpiryTimer::start(&registration.info, g.time_left()));
        self.registration = Some(registration);
        self.session = Some(Session {
            vhost,
            guard,
            conn_id: self.id,
            cfg: self.cfg.clone(),
        });
        self.phase = Phase::Running;
        tracing::info!(peer = %self.peer, user = %self.user, vhost = %name, "AMQP connection opened");
        self.send0(AMQPClass::Connection(connection::AMQPMethod::OpenOk(
            connection::OpenOk {},
        )));
        Ok(())
    }

    /// Count the connection against the node, vhost and user connection
    /// limits, before the permission check as RabbitMQ does; a refusal is
    /// 530 NOT_ALLOWED on connection.open with RabbitMQ's text.
    fn admit(&self, vhost: &VHost) -> AmqpResult<ConnectionLease> {
        self.broker
            .limits
            .admit((&vhost.name, &vhost.limits), &self.user)
            .map_err(|e| {
                tracing::warn!(peer = %self.peer, user = %self.user, vhost = %vhost.name, "AMQP connection refused: {e}");
                AmqpError::connection(AMQPHardError::NOTALLOWED, e).on(ids::CONNECTION_OPEN)
            })
    }

    /// connection.start-ok: the client's name and capabilities, then login.
    fn on_start_ok(&mut self, s: connection::StartOk) -> AmqpResult {
        self.read_client_properties(&s.client_properties);
        if s.mechanism.as_str() == EXTERNAL && self.cert_name.is_some() {
            return self.on_external();
        }
        let Some((user, pass)) = credentials(s.mechanism.as_str(), s.response.as_bytes()) else {
            return Err(AmqpError::connection(
                AMQPSoftError::ACCESSREFUSED,
                format!("unsupported authentication mechanism '{}'", s.mechanism),
            )
            .on(ids::CONNECTION_START_OK));
        };
        let refused = |why: &str| {
            tracing::warn!(peer = %self.peer, user = %user, "authentication failed: {why}");
            AmqpError::connection(
                AMQPSoftError::ACCESSREFUSED,
                format!("Login was refused using authentication mechanism {}. For details see the broker logfile.", s.mechanism),
            )
            .on(ids::CONNECTION_START_OK)
        };
        let who = match self.broker.login(&user, &pass) {
            Ok(who) => who,
            Err(e) => return Err(refused(&e.to_string())),
        };
        let user = who.name().to_string();
        if self.cfg.loopback_users.iter().any(|u| u == &user) && !self.peer.ip().is_loopback() {
            return Err(refused(&format!(
                "user '{user}' can only connect via localhost"
            )));
        }
        self.token = who.token().cloned();
        self.logged_in(user);
        Ok(())
    }

    /// EXTERNAL (rabbitmq_auth_mechanism_ssl): the user is the verified
    /// client certificate's CN; the response is ignored. The user must
    /// exist; no password is checked (the CA vouched for the client).
    fn on_external(&mut self) -> AmqpResult {
        let user = self.cert_name.clone().unwrap_or_default();
        let refused = |why: &str| {
            tracing::warn!(peer = %self.peer, user = %user, "authentication failed: {why}");
            AmqpError::connection(
                AMQPSoftError::ACCESSREFUSED,
                format!("Login was refused using authentication mechanism {EXTERNAL}. For details see the broker logfile."),
            )
            .on(ids::CONNECTION_START_OK)
        };
        if self.broker.users.get(&user).is_none() {
            return Err(refused(&format!("certificate user '{user}' is not a user")));
        }
        if self.cfg.loopback_users.iter().any(|u| u == &user) && !self.peer.ip().is_loopback() {
            return Err(refused(&format!(
                "user '{user}' can only connect via localhost"
            )));
        }
        self.logged_in(user);
        Ok(())
    }

    /// Login done: propose the connection's limits.
    fn logged_in(&mut self, user: String) {
        self.user = user;
        self.phase = Phase::TuneOk;
        self.send0(AMQPClass::Connection(connection::AMQPMethod::Tune(
            connection::Tune {
                channel_max: self.cfg.channel_max,
                frame_max: self.cfg.frame_max,
                heartbeat: self.cfg.heartbeat,
            },
        )));
    }

    /// The client's name for listings and the notifications it understands.
    fn read_client_properties(&mut self, props: &FieldTable) {
        let p = props.inner();
        self.client = match p.get("connection_name").or_else(|| p.get("product")) {
            Some(AMQPValue::LongString(v)) => truncate(&v.to_string()).to_string(),
            Some(AMQPValue::ShortString(v)) => truncate(v.as_str()).to_string(),
            _ => String::new(),
        };
        if let Some(AMQPValue::FieldTable(caps)) = p.get("capabilities") {
            let on = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.cancel_notify = on("consumer_cancel_notify");
            self.blocked_notify = on("connection.blocked");
        }
    }

    /// connection.start: our version, capabilities and mechanisms.
    pub(super) fn send_start(&self) {
        let mut caps = FieldTable::default();
        for c in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "per_consumer_qos",
            "authentication_failure_close",
            "direct_reply_to",
        ] {
            caps.insert(c.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props.insert("product".into(), s("Warren"));
        props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), s("Rust"));
        props.insert("cluster_name".into(), s("warren@localhost"));
        props.insert(
            "information".into(),
            s("Warren message broker: AMQP 0-9-1 and MQTT over one routing core"),
        );
        props.insert("copyright".into(), s("Warren authors"));
        self.send0(AMQPClass::Connection(connection::AMQPMethod::Start(
            connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: self.mechanisms().into(),
                locales: "en_US".into(),
            },
        )));
    }
}

impl Conn {
    /// The SASL mechanisms offered: EXTERNAL only when a verified client
    /// certificate names the user.
    fn mechanisms(&self) -> &'static str {
        if self.cert_name.is_some() {
            "PLAIN AMQPLAIN EXTERNAL"
        } else {
            "PLAIN AMQPLAIN"
        }
    }
}

/// The certificate login mechanism (RabbitMQ's rabbitmq_auth_mechanism_ssl).
const EXTERNAL: &str = "EXTERNAL";

/// User and password from a start-ok response; `None` for a mechanism we
/// do not offer.
fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next();
            let user = parts.next().unwrap_or_default();
            let pass = parts.next().unwrap_or_default();
            Some((
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            ))
        }
        "AMQPLAIN" => {
            let mut framed = Vec::with_capacity(response.len() + 4);
            framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
            framed.extend_from_slice(response);
            let t = Table::decode(&framed).map(|(t, _)| t).unwrap_or_default();
            let get = |k: &str| {
                t.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            Some((get("LOGIN"), get("PASSWORD")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use warren_core::Value;

    #[test]
    fn plain_and_amqplain_credentials() {
        let plain = credentials("PLAIN", b"\0guest\0secret");
        assert_eq!(plain, Some(("guest".into(), "secret".into())));
        let mut t = Table::default();
        t.insert("LOGIN", Value::str("bob"));
        t.insert("PASSWORD", Value::str("pw"));
        let mut framed = BytesMut::new();
        t.encode(&mut framed);
        let got = credentials("AMQPLAIN", &framed[4..]);
        assert_eq!(got, Some(("bob".into(), "pw".into())));
        assert_eq!(credentials("EXTERNAL", b""), None);
    }
}
