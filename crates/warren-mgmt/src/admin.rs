//! Changing endpoints: users, vhosts, permissions, exchanges, queues,
//! bindings, test publish and get, closing connections.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use warren_core::auth::{Access, Permission, Resource};
use warren_core::props::Properties;
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};
use warren_core::{Message, RouteScratch};

use crate::auth::{Admin, Authed, Caller, Write};
use crate::listing::{connection_or_404, vhost_or_404};
use crate::{json_to_table, table_json, ApiError, MgmtState};

type Done = Result<StatusCode, ApiError>;

fn created(new: bool) -> StatusCode {
    if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

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
    let new = s.broker.vhost(&vhost).is_none();
    s.broker.add_vhost(&vhost);
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
    if !s.broker.delete_vhost(&vhost) {
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
        s.broker.put_user(&user, pw, tags);
    } else if let Some(hash) = body.get("password_hash").and_then(|p| p.as_str()) {
        check_hash_algorithm(&body)?;
        s.broker.put_user_hash(&user, hash, tags);
    } else if let Some(u) = existing {
        s.broker.put_user_hash(&user, &u.password_hash, tags);
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
    if !s.broker.delete_user(&user) {
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
    if !s.broker.clear_permissions(&vhost, &user) {
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

fn flag(body: &Json_, key: &str, default: bool) -> bool {
    body.get(key).and_then(|v| v.as_bool()).unwrap_or(default)
}

pub(crate) async fn exchange_put(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Done {
    caller.check(&s, &vhost, Access::Configure, Resource::Exchange, &name)?;
    let v = vhost_or_404(&s, &vhost)?;
    let new = v.exchange(&name).is_err();
    let kind = body
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| ApiError::bad_request("'type' is required"))?;
    v.declare_exchange(&ExchangeDeclare {
        name: name.clone(),
        kind: kind.into(),
        passive: false,
        durable: flag(&body, "durable", true),
        auto_delete: flag(&body, "auto_delete", false),
        internal: flag(&body, "internal", false),
        args: json_to_table(body.get("arguments")),
    })?;
    Ok(created(new))
}

#[derive(Deserialize)]
pub(crate) struct IfUnused {
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
    #[serde(rename = "if-empty", default)]
    if_empty: bool,
}

pub(crate) async fn exchange_delete(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<IfUnused>,
    caller: Authed<Write>,
) -> Done {
    caller.check(&s, &vhost, Access::Configure, Resource::Exchange, &name)?;
    let v = vhost_or_404(&s, &vhost)?;
    v.exchange(&name)?;
    v.delete_exchange(&name, q.if_unused)?;
    tracing::info!(
        user = caller.name,
        vhost,
        exchange = name,
        "exchange deleted through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// AMQP properties from the API's JSON object.
fn properties(p: Option<&Json_>) -> Properties {
    let Some(p) = p else {
        return Properties::default();
    };
    let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
    let num = |k: &str| p.get(k).and_then(|v| v.as_u64());
    Properties {
        content_type: text("content_type"),
        content_encoding: text("content_encoding"),
        headers: p
            .get("headers")
            .filter(|h| h.is_object())
            .map(|h| json_to_table(Some(h))),
        delivery_mode: num("delivery_mode").map(|d| d as u8),
        priority: num("priority").map(|d| d as u8),
        correlation_id: text("correlation_id"),
        reply_to: text("reply_to"),
        expiration: text("expiration"),
        message_id: text("message_id"),
        timestamp: num("timestamp"),
        kind: text("type"),
        user_id: text("user_id"),
        app_id: text("app_id"),
        cluster_id: None,
    }
}

fn properties_json(p: &Properties) -> Json_ {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Json_>| {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    };
    put("content_type", p.content_type.clone().map(Json_::from));
    put(
        "content_encoding",
        p.content_encoding.clone().map(Json_::from),
    );
    put("headers", p.headers.as_ref().map(table_json));
    put("delivery_mode", p.delivery_mode.map(Json_::from));
    put("priority", p.priority.map(Json_::from));
    put("correlation_id", p.correlation_id.clone().map(Json_::from));
    put("reply_to", p.reply_to.clone().map(Json_::from));
    put("expiration", p.expiration.clone().map(Json_::from));
    put("message_id", p.message_id.clone().map(Json_::from));
    put("timestamp", p.timestamp.map(Json_::from));
    put("type", p.kind.clone().map(Json_::from));
    put("user_id", p.user_id.clone().map(Json_::from));
    put("app_id", p.app_id.clone().map(Json_::from));
    Json_::Object(o)
}

/// POST /api/exchanges/{vhost}/{name}/publish, for testing: answers
/// whether the message reached a queue.
pub(crate) async fn exchange_publish(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Result<Json<Json_>, ApiError> {
    caller.check(&s, &vhost, Access::Write, Resource::Exchange, &name)?;
    let v = vhost_or_404(&s, &vhost)?;
    let lookup = if name == "amq.default" { "" } else { &name };
    let x = v.exchange(lookup)?;
    let key = body
        .get("routing_key")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let payload = body
        .get("payload")
        .and_then(|p| p.as_str())
        .unwrap_or_default();
    let payload = match body.get("payload_encoding").and_then(|e| e.as_str()) {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        _ => payload.as_bytes().to_vec(),
    };
    let props = properties(body.get("properties")).encode();
    let msg = Message::from_parts(&x.name, key, &props, Bytes::from(payload))
        .map_err(|e| ApiError::bad_request(format!("bad message: {e}")))?;
    let routed = v.publish(&x, msg, &mut RouteScratch::default())?;
    Ok(Json(json!({"routed": routed.queues > 0})))
}

pub(crate) async fn queue_put(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Done {
    caller.check(&s, &vhost, Access::Configure, Resource::Queue, &name)?;
    let v = vhost_or_404(&s, &vhost)?;
    let new = v.queue(&name).is_err();
    v.declare_queue(
        &QueueDeclare {
            name,
            passive: false,
            durable: flag(&body, "durable", true),
            exclusive: false,
            auto_delete: flag(&body, "auto_delete", false),
            args: json_to_table(body.get("arguments")),
            server_named: false,
        },
        0,
    )?;
    Ok(created(new))
}

/// The vhost and queue of a request on a queue, after the permission check.
fn queue_for(
    s: &MgmtState,
    caller: &Caller,
    vhost: &str,
    name: &str,
    access: Access,
) -> Result<
    (
        std::sync::Arc<warren_core::VHost>,
        std::sync::Arc<warren_core::Queue>,
    ),
    ApiError,
> {
    caller.check(s, vhost, access, Resource::Queue, name)?;
    let v = vhost_or_404(s, vhost)?;
    let q = v.queue(name)?;
    Ok((v, q))
}

/// DELETE /api/queues/{vhost}/{name}: delete a queue (as RabbitMQ, 204).
pub(crate) async fn queue_delete(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q_opts): Query<IfUnused>,
    caller: Authed<Write>,
) -> Done {
    let (v, q) = queue_for(&s, &caller, &vhost, &name, Access::Configure)?;
    if q.exclusive() {
        return Err(ApiError::forbidden("exclusive queue"));
    }
    if q_opts.if_unused && q.consumer_count() > 0 {
        return Err(ApiError::bad_request("queue in use"));
    }
    if q_opts.if_empty && q.message_count() > 0 {
        return Err(ApiError::bad_request("queue not empty"));
    }
    v.remove_queue(&q);
    tracing::info!(user = caller.name, vhost, queue = %name, "queue deleted through the management API");
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/queues/{vhost}/{name}/contents: purge (as RabbitMQ, 204).
pub(crate) async fn queue_purge(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
) -> Done {
    let (_, q) = queue_for(&s, &caller, &vhost, &name, Access::Read)?;
    let n = q.purge();
    tracing::info!(user = caller.name, vhost, queue = %name, messages = n, "queue purged through the management API");
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/queues/{vhost}/{name}/get, for testing: `count` messages,
/// `ackmode` ack_requeue_true|reject_requeue_true|ack_requeue_false|
/// reject_requeue_false, `encoding` auto|base64, `truncate` bytes.
pub(crate) async fn queue_get(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Result<Json<Json_>, ApiError> {
    let (_, q) = queue_for(&s, &caller, &vhost, &name, Access::Read)?;
    let count = body.get("count").and_then(|c| c.as_u64()).unwrap_or(1) as usize;
    // (requeue, reject): a reject without requeue dead-letters, as on AMQP.
    let (requeue, reject) = match body.get("ackmode").and_then(|a| a.as_str()) {
        Some("ack_requeue_true" | "reject_requeue_true") | None => (true, false),
        Some("ack_requeue_false") => (false, false),
        Some("reject_requeue_false") => (false, true),
        Some(other) => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let base64_out = body.get("encoding").and_then(|e| e.as_str()) == Some("base64");
    let truncate = body
        .get("truncate")
        .and_then(|t| t.as_u64())
        .map(|t| t as usize);
    let mut taken = Vec::new();
    let mut out = Vec::new();
    while taken.len() < count {
        let Some((d, remaining)) = q.get(false) else {
            break;
        };
        let m = &d.message;
        let body = &m.body[..truncate.unwrap_or(usize::MAX).min(m.body.len())];
        let (payload, encoding) = match std::str::from_utf8(body) {
            Ok(t) if !base64_out => (t.to_string(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(body),
                "base64",
            ),
        };
        let props = Properties::decode(m.raw_properties()).unwrap_or_default();
        out.push(json!({
            "payload_bytes": m.body.len(),
            "redelivered": d.redelivered,
            "exchange": m.exchange.as_ref(),
            "routing_key": m.routing_key(),
            "message_count": remaining,
            "properties": properties_json(&props),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        taken.push(d);
    }
    if requeue {
        q.requeue(taken);
    } else if reject {
        q.reject(taken.iter());
    } else {
        q.settle(taken.iter());
    }
    Ok(Json(Json_::Array(out)))
}

/// POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}.
pub(crate) async fn binding_post(
    State(s): State<MgmtState>,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Done {
    let dest_kind = match kind.as_str() {
        "q" => Resource::Queue,
        "e" => Resource::Exchange,
        _ => return Err(ApiError::not_found("destination kind must be q or e")),
    };
    caller.check(&s, &vhost, Access::Write, dest_kind, &dest)?;
    caller.check(&s, &vhost, Access::Read, Resource::Exchange, &source)?;
    let v = vhost_or_404(&s, &vhost)?;
    let key = body
        .get("routing_key")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let args = json_to_table(body.get("arguments"));
    if dest_kind == Resource::Queue {
        v.bind_queue(&dest, &source, key, &args, 0)?;
    } else {
        v.bind_exchange(&dest, &source, key, &args)?;
    }
    Ok(StatusCode::CREATED)
}

pub(crate) async fn connection_delete(
    State(s): State<MgmtState>,
    Path(name): Path<String>,
    caller: Authed<Admin>,
    h: HeaderMap,
) -> Done {
    let c = connection_or_404(&s, &name)?;
    let reason = h
        .get("x-reason")
        .and_then(|r| r.to_str().ok())
        .unwrap_or("closed via management API");
    tracing::info!(
        user = caller.name,
        connection = name,
        "closing connection: {reason}"
    );
    c.request_close(reason);
    Ok(StatusCode::NO_CONTENT)
}
