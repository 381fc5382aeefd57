//! Password logins across the backends, as RabbitMQ's `auth_backends`:
//! the internal user database, then (when `auth_oauth2` is configured) the
//! password as an OAuth 2 token, or the token alone. Every adapter (AMQP
//! start-ok and update-secret, MQTT CONNECT, HTTP Basic and Bearer) logs in
//! here, and builds its [`Guard`] from the [`Identity`] it got.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::oauth2::{TokenGrant, TokenVerifier};
use super::{Guard, PermSlot, User};
use crate::error::{CoreError, Result};
use crate::registry::ConnectionInfo;
use crate::Broker;

/// The close reason of a connection whose token expired: AMQP sends it
/// with 320 CONNECTION_FORCED (RabbitMQ's text), MQTT 5 DISCONNECT 0xA0.
pub const CREDENTIAL_EXPIRED: &str = "credential expired";

/// The OAuth 2 backend and whether internal users are tried first.
pub struct OAuth2Backend {
    /// The token verifier.
    pub verifier: TokenVerifier,
    /// Try the user database before the token (RabbitMQ's
    /// `auth_backends.1 = internal, auth_backends.2 = oauth2`).
    pub internal_users: bool,
}

/// Who logged in, and through which backend.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A user of the database.
    Internal(User),
    /// A verified token.
    Token(TokenGrant),
}

impl Identity {
    /// The user name.
    pub fn name(&self) -> &str {
        match self {
            Identity::Internal(u) => &u.name,
            Identity::Token(g) => &g.user,
        }
    }

    /// The user's tags (a token's `tag:` scopes).
    pub fn tags(&self) -> &[String] {
        match self {
            Identity::Internal(u) => &u.tags,
            Identity::Token(g) => g.scopes.tags(),
        }
    }

    /// The token, for a token login.
    pub fn token(&self) -> Option<&TokenGrant> {
        match self {
            Identity::Token(g) => Some(g),
            Identity::Internal(_) => None,
        }
    }
}

impl Broker {
    /// Turn on token login (once, at start-up).
    pub fn set_oauth2(&self, backend: OAuth2Backend) {
        if self.oauth2.set(backend).is_err() {
            tracing::warn!("OAuth 2 backend configured twice; the first one stays");
        }
    }

    /// Is token login on?
    pub fn oauth2_enabled(&self) -> bool {
        self.oauth2.get().is_some()
    }

    /// Check a user name and password against the backends in order. The
    /// error text says why (for the log); clients get a generic refusal.
    pub fn login(&self, user: &str, password: &str) -> Result<Identity> {
        let Some(backend) = self.oauth2.get() else {
            return self
                .users
                .authenticate(user, password)
                .map(Identity::Internal);
        };
        let internal = if backend.internal_users {
            match self.users.authenticate(user, password) {
                Ok(u) => return Ok(Identity::Internal(u)),
                Err(e) => Some(e),
            }
        } else {
            None
        };
        match backend.verifier.verify(password) {
            Ok(grant) => Ok(Identity::Token(grant)),
            // A password that is no token at all: the internal refusal says more.
            Err(super::oauth2::TokenError::NotAJwt) if internal.is_some() => {
                Err(internal.expect("checked"))
            }
            Err(e) => Err(CoreError::AccessRefused(format!(
                "Authentication using an OAuth 2/JWT token failed: {e}"
            ))),
        }
    }

    /// A token alone (HTTP `Authorization: Bearer`); refused when token
    /// login is off.
    pub fn token_login(&self, token: &str) -> Result<Identity> {
        let backend = self.oauth2.get().ok_or_else(|| {
            CoreError::AccessRefused("bearer token given but OAuth 2 is not configured".into())
        })?;
        backend
            .verifier
            .verify(token)
            .map(Identity::Token)
            .map_err(|e| {
                CoreError::AccessRefused(format!(
                    "Authentication using an OAuth 2/JWT token failed: {e}"
                ))
            })
    }

    /// Verify a token sent to replace `current` (AMQP update-secret): it
    /// must name the same user, as RabbitMQ requires.
    pub fn refresh_token(&self, current: &TokenGrant, token: &str) -> Result<TokenGrant> {
        let refused = |why: String| CoreError::AccessRefused(why);
        let backend = self
            .oauth2
            .get()
            .ok_or_else(|| refused("OAuth 2 is not configured".into()))?;
        let grant = backend.verifier.verify(token).map_err(|e| {
            refused(format!(
                "Authentication using an OAuth 2/JWT token failed: {e}"
            ))
        })?;
        if grant.user != current.user {
            return Err(refused(
                "Not allowed to change username on refreshed token".into(),
            ));
        }
        Ok(grant)
    }

    /// The guard for `who` in `vhost`: the database's permission slot for a
    /// user, or a slot of its own holding the token's rights (refused, as
    /// RabbitMQ, when no scope names the vhost).
    pub fn guard_for(&self, who: &Identity, vhost: &str) -> Result<Guard> {
        match who {
            Identity::Internal(u) => self.users.guard(vhost, &u.name),
            Identity::Token(g) => self.token_guard(g, vhost),
        }
    }

    /// The guard of a token login in `vhost` (see [`Broker::guard_for`]).
    pub fn token_guard(&self, grant: &TokenGrant, vhost: &str) -> Result<Guard> {
        if !grant.scopes.vhost_access(vhost) {
            tracing::warn!(user = %grant.user, vhost, "access to vhost refused: no token scope names it");
            return Err(CoreError::NotAllowed(format!(
                "access to vhost '{vhost}' refused for user '{}'",
                grant.user
            )));
        }
        let slot = PermSlot::default();
        slot.set(Some(Arc::new(grant.scopes.permission(vhost))));
        Ok(Guard {
            user: grant.user.as_str().into(),
            vhost: vhost.into(),
            slot: Arc::new(slot),
            token: true,
        })
    }
}

impl Guard {
    /// Replace a token guard's rights with a refreshed token's (its slot is
    /// its own, so no other connection sees the change; the generation
    /// bump drops cached checks). A database guard is left alone.
    pub fn regrant(&self, grant: &TokenGrant) {
        if !self.token {
            return;
        }
        self.slot
            .set(Some(Arc::new(grant.scopes.permission(&self.vhost))));
    }
}

/// Asks a connection to close with [`CREDENTIAL_EXPIRED`] when its token
/// runs out; dropping it (connection ended, token refreshed) cancels that.
pub struct ExpiryTimer(tokio::task::AbortHandle);

impl ExpiryTimer {
    /// Start the timer for a connection whose token has `left` to live.
    pub fn start(info: &Arc<ConnectionInfo>, left: Duration) -> ExpiryTimer {
        let conn: Weak<ConnectionInfo> = Arc::downgrade(info);
        let task = tokio::spawn(async move {
            tokio::time::sleep(left).await;
            if let Some(info) = conn.upgrade() {
                tracing::warn!(user = %info.user, "closing connection of user '{}': credential has expired", info.user);
                info.request_close(CREDENTIAL_EXPIRED);
            }
        });
        ExpiryTimer(task.abort_handle())
    }
}

impl Drop for ExpiryTimer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
