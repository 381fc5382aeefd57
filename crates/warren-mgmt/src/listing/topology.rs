//! Exchanges, queues and bindings, per vhost or across all.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::VHost;

use super::{details, listing, vhost_or_404, Reply, NODE};
use crate::auth::{Authed, Read};
use crate::rates::QueueRates;
use crate::{table_json, ApiError, MgmtState};

fn exchange_json(v: &VHost, x: &warren_core::Exchange) -> Json_ {
    json!({
        "name": x.name.as_ref(),
        "vhost": v.name.as_ref(),
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_json(&x.args),
    })
}

fn exchanges_of(v: &VHost) -> Vec<Json_> {
    v.exchanges().iter().map(|x| exchange_json(v, x)).collect()
}

/// GET /api/exchanges and /api/exchanges/{vhost}.
pub(crate) async fn exchanges(
    State(s): State<MgmtState>,
    vhost: Option<Path<String>>,
    _caller: Authed<Read>,
) -> Reply {
    listing(&s, vhost.as_deref().map(String::as_str), exchanges_of)
}

pub(crate) async fn exchange_one(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    _caller: Authed<Read>,
) -> Reply {
    let v = vhost_or_404(&s, &vhost)?;
    let x = v.exchange(&name)?;
    Ok(Json(exchange_json(&v, &x)))
}

fn queue_json(v: &VHost, q: &warren_core::Queue, r: QueueRates) -> Json_ {
    let st = q.stats();
    json!({
        "name": q.name.as_ref(),
        "vhost": v.name.as_ref(),
        // In a cluster, the node the queue lives on.
        "node": q.home_node().unwrap_or(NODE),
        "type": "classic",
        "state": "running",
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive(),
        "arguments": table_json(&q.current_args()),
        "messages": st.ready + st.unacked,
        "messages_ready": st.ready,
        "messages_unacknowledged": st.unacked,
        "consumers": st.consumers,
        "memory": st.ready_bytes - st.paged_bytes,
        "message_bytes_ready": st.ready_bytes,
        "messages_ram": st.ready_ram + st.unacked,
        "messages_ready_ram": st.ready_ram,
        "messages_paged_out": st.ready - st.ready_ram,
        "message_bytes_ram": st.ready_bytes - st.paged_bytes,
        "message_bytes_paged_out": st.paged_bytes,
        "messages_details": details(0.0),
        "message_stats": {
            "publish": st.published,
            "publish_details": details(r.publish),
            "deliver_get": st.delivered,
            "deliver_get_details": details(r.deliver_get),
            "ack": st.acked,
            "ack_details": details(r.ack),
        },
    })
}

fn queues_with_rates(s: &MgmtState) -> impl Fn(&VHost) -> Vec<Json_> + '_ {
    move |v: &VHost| {
        v.queues()
            .iter()
            .map(|q| queue_json(v, q, s.rates.queue(&v.name, &q.name)))
            .collect()
    }
}

/// GET /api/queues and /api/queues/{vhost}.
pub(crate) async fn queues(
    State(s): State<MgmtState>,
    vhost: Option<Path<String>>,
    _caller: Authed<Read>,
) -> Reply {
    listing(
        &s,
        vhost.as_deref().map(String::as_str),
        queues_with_rates(&s),
    )
}

pub(crate) async fn queue_one(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    _caller: Authed<Read>,
) -> Reply {
    let v = vhost_or_404(&s, &vhost)?;
    let q = v.queue(&name)?;
    Ok(Json(queue_json(&v, &q, s.rates.queue(&vhost, &name))))
}

fn bindings_of(v: &VHost) -> Vec<Json_> {
    v.bindings()
        .iter()
        .map(|b| {
            json!({
                "source": b.source,
                "vhost": v.name.as_ref(),
                "destination": b.destination,
                "destination_type": b.destination_kind,
                "routing_key": b.key,
                "arguments": table_json(&b.args),
                "properties_key": if b.key.is_empty() { "~".to_string() } else { b.key.clone() },
            })
        })
        .collect()
}

/// GET /api/bindings and /api/bindings/{vhost}.
pub(crate) async fn bindings(
    State(s): State<MgmtState>,
    vhost: Option<Path<String>>,
    _caller: Authed<Read>,
) -> Reply {
    listing(&s, vhost.as_deref().map(String::as_str), bindings_of)
}

pub(crate) async fn bindings_between(
    State(s): State<MgmtState>,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    _caller: Authed<Read>,
) -> Reply {
    let kind = match kind.as_str() {
        "q" => "queue",
        "e" => "exchange",
        _ => return Err(ApiError::not_found("destination kind must be q or e")),
    };
    listing(&s, Some(&vhost), |v| {
        bindings_of(v)
            .into_iter()
            .filter(|b| {
                b["source"] == source.as_str()
                    && b["destination"] == dest.as_str()
                    && b["destination_type"] == kind
            })
            .collect()
    })
}
