//! Who is calling: HTTP basic auth against the broker's backends (the
//! password may be an OAuth 2 token), or `Authorization: Bearer <token>`
//! as RabbitMQ's management plugin takes it, then the user's tags (a
//! token's `tag:` scopes) against what the endpoint needs. Handlers take an
//! [`Authed`] extractor naming the role (`Authed<Read>`, `Authed<Write>`,
//! `Authed<Admin>`) instead of checking headers themselves.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use warren_core::auth::login::Identity;
use warren_core::auth::oauth2::TokenGrant;
use warren_core::auth::{Access, Resource};

use crate::{ApiError, MgmtState};

/// The tag that may do everything.
const ADMINISTRATOR: &str = "administrator";

/// What an endpoint needs: the tags any one of which lets a user in.
pub(crate) trait Role {
    /// The accepted tags.
    const TAGS: &'static [&'static str];
}

/// Reading: listings, overview, metrics page.
pub(crate) struct Read;
/// Changing queues, exchanges and bindings.
pub(crate) struct Write;
/// Users, vhosts, permissions, limits and definitions.
pub(crate) struct Admin;

impl Role for Read {
    const TAGS: &'static [&'static str] = &[ADMINISTRATOR, "monitoring", "management"];
}
impl Role for Write {
    const TAGS: &'static [&'static str] = &[ADMINISTRATOR, "management"];
}
impl Role for Admin {
    const TAGS: &'static [&'static str] = &[ADMINISTRATOR];
}

/// Who is calling.
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) admin: bool,
    /// A token login's rights (no database permissions to look up).
    token: Option<TokenGrant>,
}

impl Caller {
    /// Non-administrators act within their vhost permissions, as on AMQP.
    pub(crate) fn check(
        &self,
        s: &MgmtState,
        vhost: &str,
        access: Access,
        kind: Resource,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        let g = match &self.token {
            Some(grant) => s.broker.token_guard(grant, vhost)?,
            None => s.broker.users.guard(vhost, &self.name)?,
        };
        g.check(access, kind, name)?;
        Ok(())
    }
}

/// A request whose caller logged in with one of `R`'s tags; rejects with
/// 401 (bad or missing credentials) or 403 (no such tag).
pub(crate) struct Authed<R> {
    caller: Caller,
    role: PhantomData<R>,
}

impl<R> Deref for Authed<R> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: Role> FromRequestParts<MgmtState> for Authed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &MgmtState) -> Result<Self, ApiError> {
        let caller = authenticate(s, &parts.headers, R::TAGS)?;
        Ok(Authed {
            caller,
            role: PhantomData,
        })
    }
}

/// What an `Authorization` header carries.
enum Credentials {
    /// `Basic`: user and password.
    Basic(String, String),
    /// `Bearer`: a token.
    Bearer(String),
}

/// The credentials of the `Authorization` header.
fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(Credentials::Bearer(token.trim().to_string()));
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(Credentials::Basic(user.to_string(), pass.to_string()))
}

/// Log in and check that the caller has one of `tags`.
fn authenticate(s: &MgmtState, headers: &HeaderMap, tags: &[&str]) -> Result<Caller, ApiError> {
    let creds = credentials(headers).ok_or_else(ApiError::unauthorized)?;
    let (user, login) = match &creds {
        Credentials::Basic(user, pass) => (user.as_str(), s.broker.login(user, pass)),
        Credentials::Bearer(token) => ("(bearer token)", s.broker.token_login(token)),
    };
    let who: Identity = login.map_err(|e| {
        tracing::warn!(user, "management API: authentication failed: {e}");
        ApiError::unauthorized()
    })?;
    let (name, had) = (who.name().to_string(), who.tags());
    if !had.iter().any(|t| tags.contains(&t.as_str())) {
        tracing::warn!(user = %name, "management API: access refused (tags {had:?})");
        return Err(ApiError::forbidden("Not management user"));
    }
    Ok(Caller {
        admin: had.iter().any(|t| t == ADMINISTRATOR),
        token: who.token().cloned(),
        name,
    })
}

#[cfg(test)]
mod tests;
