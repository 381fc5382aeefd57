//! Who is calling: HTTP basic auth against the broker's users, then the
//! user's tags against what the endpoint needs. Handlers take an
//! [`Authed`] extractor naming the role (`Authed<Read>`, `Authed<Write>`,
//! `Authed<Admin>`) instead of checking headers themselves.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
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
        let g = s.broker.users.guard(vhost, &self.name)?;
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

/// User and password of a basic `Authorization` header.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Check basic auth and that the user has one of `tags`.
fn authenticate(s: &MgmtState, headers: &HeaderMap, tags: &[&str]) -> Result<Caller, ApiError> {
    let (user, pass) = credentials(headers).ok_or_else(ApiError::unauthorized)?;
    let user = user.as_str();
    let u = s.broker.users.authenticate(user, &pass).map_err(|_| {
        tracing::warn!(user, "management API: authentication failed");
        ApiError::unauthorized()
    })?;
    if !u.tags.iter().any(|t| tags.contains(&t.as_str())) {
        tracing::warn!(user, "management API: access refused (tags {:?})", u.tags);
        return Err(ApiError::forbidden("Not management user"));
    }
    Ok(Caller {
        admin: u.tags.iter().any(|t| t == ADMINISTRATOR),
        name: u.name,
    })
}

#[cfg(test)]
mod tests;
