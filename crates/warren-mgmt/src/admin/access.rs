//! Users, vhosts and permissions (administrator only).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value as Json_;
use warren_core::auth::Permission;

use super::{created, Done};
use crate::auth::{Admin, Authed};
use crate::{ApiError, MgmtState};

/// RabbitMQ sends tags as "a,b" (3.10) or as a list (3.12+); take both.
pub(crate) fn parse_tags(v: Option<&Json_>) -> Vec<String> {
    match v {
        Some(Json_::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        Some(Json_::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) async fn vhost_put(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    caller: Authed<Admin>,
) -> Done {
    warren_core::check_name("vhost", &vhost)?;
    let new = s.broker.vhost(&vhost).is_none();
    s.broker.add_vhost(&vhost)?;
    if new {
        tracing::info!(
            user = caller.name,
            vhost,
            "vhost created through the management API"
        );
    }
    Ok(created(new))
}

pub(crate) async fn vhost_delete(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    caller: Authed<Admin>,
) -> Done {
    if !s.broker.delete_vhost(&vhost)? {
        return Err(ApiError::no("vhost", &vhost));
    }
    tracing::info!(
        user = caller.name,
        vhost,
        "vhost deleted through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// PUT /api/users/{name}: `password` (hashed here) or `password_hash`
/// (RabbitMQ's salted SHA-256), `tags` and optionally `limits`. Without either, an existing
/// user keeps its password and only the tags change.
pub(crate) async fn user_put(
    State(s): State<MgmtState>,
    Path(user): Path<String>,
    caller: Authed<Admin>,
    Json(body): Json<Json_>,
) -> Done {
    let tags = parse_tags(body.get("tags"));
    // RabbitMQ takes the user's limits in the same body; checked first.
    let limits = crate::limits::user_limits_in(&user, &body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let existing = s.broker.users.get(&user);
    let new = existing.is_none();
    if let Some(pw) = body.get("password").and_then(|p| p.as_str()) {
        let hash = warren_core::auth::hash_password(pw);
        s.broker.try_put_user_hash(&user, &hash, tags)?;
    } else if let Some(hash) = body.get("password_hash").and_then(|p| p.as_str()) {
        check_hash_algorithm(&body)?;
        s.broker.try_put_user_hash(&user, hash, tags)?;
    } else if let Some(u) = existing {
        s.broker.try_put_user_hash(&user, &u.password_hash, tags)?;
    } else {
        return Err(ApiError::bad_request(
            "a new user needs 'password' or 'password_hash'",
        ));
    }
    if let Some(m) = limits {
        s.broker.merge_user_limits(&user, &m)?;
    }
    tracing::info!(
        user = caller.name,
        target = user,
        "user {} through the management API",
        if new { "created" } else { "updated" }
    );
    Ok(created(new))
}

/// RabbitMQ's salted SHA-256 and SHA-512 are understood; refusing others
/// (the legacy MD5 one) beats importing users who can never log in.
pub(crate) fn check_hash_algorithm(body: &Json_) -> Result<(), ApiError> {
    match body.get("hashing_algorithm").and_then(|a| a.as_str()) {
        None | Some("rabbit_password_hashing_sha256" | "rabbit_password_hashing_sha512") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported hashing_algorithm '{other}' (rabbit_password_hashing_sha256 or _sha512)"
        ))),
    }
}

pub(crate) async fn user_delete(
    State(s): State<MgmtState>,
    Path(user): Path<String>,
    caller: Authed<Admin>,
) -> Done {
    if !s.broker.delete_user(&user)? {
        return Err(ApiError::no("user", &user));
    }
    tracing::info!(
        user = caller.name,
        target = user,
        "user deleted through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct PermissionBody {
    #[serde(default)]
    configure: String,
    #[serde(default)]
    write: String,
    #[serde(default)]
    read: String,
}

pub(crate) async fn permission_put(
    State(s): State<MgmtState>,
    Path((vhost, user)): Path<(String, String)>,
    caller: Authed<Admin>,
    Json(p): Json<PermissionBody>,
) -> Done {
    let new = !s
        .broker
        .users
        .permissions()
        .iter()
        .any(|e| e.vhost == vhost && e.user == user);
    let perm = Permission::new(&p.configure, &p.write, &p.read)?;
    s.broker.set_permissions(&vhost, &user, perm)?;
    tracing::info!(
        user = caller.name,
        target = user,
        vhost,
        "permissions set to configure '{}' write '{}' read '{}'",
        p.configure,
        p.write,
        p.read
    );
    Ok(created(new))
}

pub(crate) async fn permission_delete(
    State(s): State<MgmtState>,
    Path((vhost, user)): Path<(String, String)>,
    caller: Authed<Admin>,
) -> Done {
    if !s.broker.clear_permissions(&vhost, &user)? {
        return Err(ApiError::not_found("no such permission"));
    }
    tracing::info!(
        user = caller.name,
        target = user,
        vhost,
        "permissions cleared"
    );
    Ok(StatusCode::NO_CONTENT)
}
