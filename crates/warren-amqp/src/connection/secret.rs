//! connection.update-secret (RabbitMQ 3.8+, for credential rotation): the
//! new secret is checked as the connection's user's password, the user's
//! permissions in the vhost are looked up again, and update-secret-ok
//! answers. After a token login the secret is a new token for the same
//! user: its scopes replace the connection's rights and its `exp` the
//! expiry timer; a token naming no scope for the connection's vhost closes
//! it with 530 "access to vhost refused", as RabbitMQ re-checks vhost access.
//! A refused secret closes the connection as RabbitMQ does:
//! 530 NOT_ALLOWED "New secret was refused by one of the backends".

use amq_protocol::protocol::{connection, AMQPClass, AMQPHardError};
use warren_core::auth::login::ExpiryTimer;

use super::Conn;
use crate::codec::ids;
use crate::error::{AmqpError, AmqpResult};

/// RabbitMQ's reply text for a refused secret.
const REFUSED: &str = "New secret was refused by one of the backends";

impl Conn {
    /// connection.update-secret on an open connection.
    pub(super) fn on_update_secret(&mut self, u: connection::UpdateSecret) -> AmqpResult {
        let secret = String::from_utf8_lossy(u.new_secret.as_bytes());
        let refused = |why: &str| {
            tracing::error!(peer = %self.peer, user = %self.user, "secret update was refused for user '{}': {why}", self.user);
            AmqpError::connection(AMQPHardError::NOTALLOWED, REFUSED)
                .on(ids::CONNECTION_UPDATE_SECRET)
        };
        if let Some(current) = &self.token {
            let grant = self
                .broker
                .refresh_token(current, &secret)
                .map_err(|e| refused(&e.to_string()))?;
            if let Some(session) = &self.session {
                // RabbitMQ re-checks vhost access with the new token.
                let vhost = &session.vhost.name;
                if !grant.scopes.vhost_access(vhost) {
                    let text =
                        format!("access to vhost '{vhost}' refused for user '{}'", self.user);
                    tracing::error!(peer = %self.peer, user = %self.user, "secret update: {text}");
                    return Err(AmqpError::connection(AMQPHardError::NOTALLOWED, text)
                        .on(ids::CONNECTION_UPDATE_SECRET));
                }
                session.guard.regrant(&grant);
            }
            if let Some(r) = &self.registration {
                self.expiry = Some(ExpiryTimer::start(&r.info, grant.time_left()));
            }
            self.token = Some(grant);
        } else if let Err(e) = self.broker.users.authenticate(&self.user, &secret) {
            return Err(refused(&e.to_string()));
        } else if let Some(session) = &self.session {
            let guard = self
                .broker
                .users
                .guard(&session.vhost.name, &self.user)
                .map_err(|e| refused(&e.to_string()))?;
            if let Some(session) = &mut self.session {
                session.guard = guard;
            }
        }
        tracing::info!(peer = %self.peer, user = %self.user, "user '{}' updated secret, reason: {}", self.user, u.reason);
        self.send0(AMQPClass::Connection(
            connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {}),
        ));
        Ok(())
    }
}
