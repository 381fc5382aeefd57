//! Vhosts, users and permissions.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::auth::PermissionEntry;
use warren_core::VHost;

use super::{vhost_or_404, Reply};
use crate::auth::{Admin, Authed, Read};
use crate::limits::limits_json;
use crate::{ApiError, MgmtState};

fn vhost_json(v: &VHost) -> Json_ {
    let (mut messages, mut ready, mut unacked) = (0, 0, 0);
    for q in v.queues() {
        let st = q.stats();
        messages += st.ready + st.unacked;
        ready += st.ready;
        unacked += st.unacked;
    }
    json!({
        "name": v.name.as_ref(),
        "tracing": false,
        "messages": messages,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

pub(crate) async fn vhosts(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    Ok(Json(Json_::Array(
        s.broker.vhosts().iter().map(|v| vhost_json(v)).collect(),
    )))
}

pub(crate) async fn vhost_one(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    _caller: Authed<Read>,
) -> Reply {
    Ok(Json(vhost_json(&*vhost_or_404(&s, &vhost)?)))
}

/// A user as RabbitMQ lists and exports it, limits included.
pub(crate) fn user_json(s: &MgmtState, u: &warren_core::auth::User) -> Json_ {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": warren_core::auth::hash_algorithm(&u.password_hash),
        "tags": u.tags,
        "limits": limits_json(&s.broker.limits.user_map(&u.name)),
    })
}

pub(crate) async fn users(State(s): State<MgmtState>, _caller: Authed<Admin>) -> Reply {
    Ok(Json(Json_::Array(
        s.broker
            .users
            .list()
            .iter()
            .map(|u| user_json(&s, u))
            .collect(),
    )))
}

pub(crate) async fn user_one(
    State(s): State<MgmtState>,
    Path(user): Path<String>,
    _caller: Authed<Admin>,
) -> Reply {
    let u = s
        .broker
        .users
        .get(&user)
        .ok_or_else(|| ApiError::no("user", &user))?;
    Ok(Json(user_json(&s, &u)))
}

pub(crate) fn permission_json(p: &PermissionEntry) -> Json_ {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

fn permissions_where(s: &MgmtState, keep: impl Fn(&PermissionEntry) -> bool) -> Json_ {
    Json_::Array(
        s.broker
            .users
            .permissions()
            .iter()
            .filter(|p| keep(p))
            .map(permission_json)
            .collect(),
    )
}

pub(crate) async fn permissions(State(s): State<MgmtState>, _caller: Authed<Admin>) -> Reply {
    Ok(Json(permissions_where(&s, |_| true)))
}

pub(crate) async fn permissions_of_vhost(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    _caller: Authed<Admin>,
) -> Reply {
    vhost_or_404(&s, &vhost)?;
    Ok(Json(permissions_where(&s, |p| p.vhost == vhost)))
}

pub(crate) async fn permissions_of_user(
    State(s): State<MgmtState>,
    Path(user): Path<String>,
    _caller: Authed<Admin>,
) -> Reply {
    Ok(Json(permissions_where(&s, |p| p.user == user)))
}

pub(crate) async fn permission_one(
    State(s): State<MgmtState>,
    Path((vhost, user)): Path<(String, String)>,
    _caller: Authed<Admin>,
) -> Reply {
    s.broker
        .users
        .permissions()
        .iter()
        .find(|p| p.vhost == vhost && p.user == user)
        .map(|p| Json(permission_json(p)))
        .ok_or_else(|| ApiError::not_found("no such permission"))
}
