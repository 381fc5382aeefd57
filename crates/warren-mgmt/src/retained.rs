//! MQTT retained messages: list them (all vhosts or one, paged as
//! RabbitMQ pages listings) and delete one topic's.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use warren_core::auth::{Access, Resource};
use warren_core::retained::{key_of, topic_of, Hit};
use warren_core::VHost;

use crate::auth::{Authed, Read, Write};
use crate::listing::vhost_or_404;
use crate::{ApiError, MgmtState};

/// Messages listed without `page` (a million retained topics must not make
/// one reply); `page` and `page_size` reach the rest.
const UNPAGED_LIMIT: usize = 10_000;
/// `page_size` when not given, and its largest value (RabbitMQ's).
const PAGE_SIZE: usize = 100;
/// See [`PAGE_SIZE`].
const MAX_PAGE_SIZE: usize = 500;
/// Bytes of the payload shown in a listing.
const PREVIEW: usize = 64;
/// The exchange whose write permission deleting needs (the MQTT default).
const MQTT_EXCHANGE: &str = "amq.topic";

/// Query of a listing.
#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    vhost: Option<String>,
    /// 1-based page, as RabbitMQ.
    page: Option<usize>,
    page_size: Option<usize>,
}

fn hit_json(vhost: &str, h: &Hit) -> Json_ {
    let body = &h.message.body;
    let preview = String::from_utf8_lossy(&body[..body.len().min(PREVIEW)]).into_owned();
    json!({
        "vhost": vhost,
        "topic": topic_of(h.message.routing_key()),
        "qos": h.qos(),
        "payload_bytes": body.len(),
        "payload": preview,
        "payload_truncated": body.len() > PREVIEW,
        "expires_in": h.remaining.map(|d| d.as_secs_f64()),
    })
}

/// `take` messages after skipping `skip`, across `vhosts` in order.
fn collect(vhosts: &[std::sync::Arc<VHost>], mut skip: usize, take: usize) -> Vec<Json_> {
    let mut out = Vec::new();
    for v in vhosts {
        if out.len() >= take {
            break;
        }
        let n = v.retained.len();
        if skip >= n {
            skip -= n;
            continue;
        }
        let hits = v.retained.range(skip, take - out.len());
        skip = 0;
        out.extend(hits.iter().map(|h| hit_json(&v.name, h)));
    }
    out
}

fn list(s: &MgmtState, vhost: Option<&str>, q: &ListQuery) -> Result<Json<Json_>, ApiError> {
    let vhosts = match vhost {
        Some(v) => vec![vhost_or_404(s, v)?],
        None => s.broker.vhosts(),
    };
    let Some(page) = q.page else {
        return Ok(Json(Json_::Array(collect(&vhosts, 0, UNPAGED_LIMIT))));
    };
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    let size = q.page_size.unwrap_or(PAGE_SIZE);
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(ApiError::bad_request(format!(
            "page_size must be 1 to {MAX_PAGE_SIZE}"
        )));
    }
    let total: usize = vhosts.iter().map(|v| v.retained.len()).sum();
    let items = collect(&vhosts, (page - 1).saturating_mul(size), size);
    Ok(Json(json!({
        "total_count": total,
        "filtered_count": total,
        "item_count": items.len(),
        "page": page,
        "page_size": size,
        "page_count": total.div_ceil(size),
        "items": items,
    })))
}

/// GET /api/mqtt/retained (optionally `?vhost=`).
pub(crate) async fn all(
    State(s): State<MgmtState>,
    Query(q): Query<ListQuery>,
    _caller: Authed<Read>,
) -> Result<Json<Json_>, ApiError> {
    list(&s, q.vhost.as_deref(), &q)
}

/// GET /api/mqtt/retained/{vhost}.
pub(crate) async fn of_vhost(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
    _caller: Authed<Read>,
) -> Result<Json<Json_>, ApiError> {
    list(&s, Some(&vhost), &q)
}

/// DELETE /api/mqtt/retained/{vhost}/{topic}: clear one topic (204, or 404
/// when it holds none). Needs write permission on the MQTT exchange.
pub(crate) async fn delete(
    State(s): State<MgmtState>,
    Path((vhost, topic)): Path<(String, String)>,
    caller: Authed<Write>,
) -> Result<StatusCode, ApiError> {
    caller.check(&s, &vhost, Access::Write, Resource::Exchange, MQTT_EXCHANGE)?;
    let v = vhost_or_404(&s, &vhost)?;
    let (found, _) = v.retained.clear(&key_of(&topic));
    if !found {
        return Err(ApiError::no("retained message for topic", &topic));
    }
    tracing::info!(
        user = caller.name,
        vhost,
        topic,
        "retained message deleted through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}
