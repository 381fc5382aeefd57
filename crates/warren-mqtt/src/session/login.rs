//! Who a CONNECT logs in as: user name and password (or an OAuth 2 token
//! as the password), a verified client certificate's CN, or anonymous from
//! loopback; and the vhost (`vhost:user` as in RabbitMQ).

use std::sync::Arc;

use warren_core::auth::oauth2::TokenGrant;
use warren_core::VHost;

use super::connect::{Ctx, Refused, BAD_CREDENTIALS, NOT_AUTHORIZED};
use crate::codec::Connect;

/// The vhost, the user (None for anonymous) and, for a token login, the
/// token.
pub(super) type Login = (Arc<VHost>, Option<String>, Option<TokenGrant>);

/// Check the credentials (username may carry the vhost as `vhost:user`, as
/// in RabbitMQ; the password may be an OAuth 2 token, whose user wins).
/// As RabbitMQ: a user name and password win; without either,
/// `ssl_cert_login` takes the user from the verified client certificate's CN.
pub(super) fn authenticate(ctx: &Ctx<'_>, c: &Connect) -> Result<Login, Refused> {
    let cert_user = match (&c.username, &c.password, &ctx.cert_name) {
        (None, None, Some(cn)) if ctx.cfg.ssl_cert_login => Some(cn),
        _ => None,
    };
    if let Some(u) = cert_user {
        return cert_login(ctx, u);
    }
    let (vhost_name, mut user) = match &c.username {
        Some(u) => match u.split_once(':') {
            Some((v, u)) => (v.to_string(), Some(u.to_string())),
            None => ("/".to_string(), Some(u.clone())),
        },
        None => ("/".to_string(), None),
    };
    let (peer, cfg) = (ctx.peer, ctx.cfg);
    let (na4, na5) = NOT_AUTHORIZED;
    let (bad4, bad5) = BAD_CREDENTIALS;
    let mut token = None;
    match (&user, &c.password) {
        (Some(u), Some(p)) => {
            let password = String::from_utf8_lossy(p);
            let who = ctx.broker.login(u, &password).map_err(|e| {
                tracing::warn!(peer = %peer, user = %u, "MQTT authentication failed: {e}");
                Refused::connack(bad4, bad5, "bad user name or password")
            })?;
            let u = who.name().to_string();
            token = who.token().cloned();
            if cfg.loopback_users.contains(&u) && !peer.ip().is_loopback() {
                let why = format!("user '{u}' can only connect via localhost");
                return Err(Refused::connack(na4, na5, why));
            }
            user = Some(u);
        }
        (None, None) if cfg.allow_anonymous_loopback && peer.ip().is_loopback() => {}
        (None, None) => {
            let why = "anonymous access is only allowed from loopback";
            return Err(Refused::connack(na4, na5, why));
        }
        _ => {
            let why = "password without user name or the reverse";
            return Err(Refused::connack(bad4, bad5, why));
        }
    }
    match ctx.broker.vhost(&vhost_name) {
        Some(v) => Ok((v, user, token)),
        None => Err(Refused::connack(
            na4,
            na5,
            format!("vhost '{vhost_name}' not found"),
        )),
    }
}

/// `ssl_cert_login`: the certificate's CN must name a user (no password;
/// the CA vouched for it), who gets vhost `/`.
fn cert_login(ctx: &Ctx<'_>, user: &str) -> Result<Login, Refused> {
    let (na4, na5) = NOT_AUTHORIZED;
    if ctx.broker.users.get(user).is_none() {
        let why = format!("certificate user '{user}' is not a user");
        return Err(Refused::connack(na4, na5, why));
    }
    match ctx.broker.vhost("/") {
        Some(v) => Ok((v, Some(user.to_string()), None)),
        None => Err(Refused::connack(na4, na5, "vhost '/' not found")),
    }
}
