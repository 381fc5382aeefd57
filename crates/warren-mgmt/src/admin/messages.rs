//! Test publish and get, with AMQP properties to and from JSON.

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value as Json_};
use warren_core::auth::{Access, Resource};
use warren_core::props::Properties;
use warren_core::{Message, RouteScratch};

use super::topology::queue_for;
use crate::auth::{Authed, Write};
use crate::listing::vhost_or_404;
use crate::{json_to_table, table_json, ApiError, MgmtState};

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
