//! Exchanges, queues and bindings, within the caller's vhost permissions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value as Json_;
use warren_core::auth::{Access, Resource};
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};

use super::{created, flag, Done, IfUnused};
use crate::auth::{Authed, Caller, Write};
use crate::listing::vhost_or_404;
use crate::{json_to_table, ApiError, MgmtState};

pub(crate) async fn exchange_put(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Done {
    caller.check(&s, &vhost, Access::Configure, Resource::Exchange, &name)?;
    warren_core::check_name("exchange", &name)?;
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

pub(crate) async fn queue_put(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Write>,
    Json(body): Json<Json_>,
) -> Done {
    caller.check(&s, &vhost, Access::Configure, Resource::Queue, &name)?;
    warren_core::check_name("queue", &name)?;
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
            // As RabbitMQ's HTTP API: the node the queue lives on.
            home: body
                .get("node")
                .and_then(|n| n.as_str())
                .map(str::to_string),
        },
        0,
    )?;
    Ok(created(new))
}

/// The vhost and queue of a request on a queue, after the permission check.
pub(crate) fn queue_for(
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
