//! GET endpoints: RabbitMQ-shaped listings of the broker's objects.

mod access;
mod clients;
mod topology;

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::registry::ConnectionInfo;
use warren_core::VHost;

use crate::auth::{Authed, Read};
use crate::process::fds;
use crate::rates::TotalRates;
use crate::{ApiError, MgmtState};

pub(crate) use access::*;
pub(crate) use clients::*;
pub(crate) use topology::*;

type Reply = Result<Json<Json_>, ApiError>;

const NODE: &str = "warren@localhost";

fn details(rate: f64) -> Json_ {
    json!({ "rate": (rate * 10.0).round() / 10.0 })
}

fn total_stats(count: warren_core::registry::Totals, r: TotalRates) -> Json_ {
    json!({
        "publish": count.published, "publish_details": details(r.publish),
        "deliver_get": count.delivered, "deliver_get_details": details(r.deliver_get),
        "ack": count.acked, "ack_details": details(r.ack),
        "confirm": count.confirmed, "confirm_details": details(r.confirm),
    })
}

pub(crate) async fn overview(State(s): State<MgmtState>, caller: Authed<Read>) -> Reply {
    let (mut queues, mut messages, mut ready, mut unacked, mut consumers, mut exchanges) =
        (0, 0, 0, 0, 0, 0);
    for v in s.broker.vhosts() {
        exchanges += v.exchanges().len();
        for q in v.queues() {
            let st = q.stats();
            queues += 1;
            ready += st.ready;
            unacked += st.unacked;
            messages += st.ready + st.unacked;
            consumers += st.consumers;
        }
    }
    let conns = s.broker.registry.list();
    let channels: usize = conns.iter().map(|c| c.channels().len()).sum();
    Ok(Json(json!({
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "management_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "3.10.0",
        "cluster_name": NODE,
        "node": NODE,
        "user": caller.name,
        "exchange_types": s.broker.types.names().into_iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "listeners": s.listeners.iter().map(|(p, a)| json!({"node": NODE, "protocol": p, "ip_address": a.ip().to_string(), "port": a.port()})).collect::<Vec<_>>(),
        "object_totals": {"queues": queues, "exchanges": exchanges, "consumers": consumers, "connections": conns.len(), "channels": channels},
        "queue_totals": {"messages": messages, "messages_ready": ready, "messages_unacknowledged": unacked},
        "message_stats": total_stats(s.broker.registry.totals(), s.rates.totals()),
    })))
}

pub(crate) async fn nodes(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    let p = fds();
    let a = s.broker.alarms.figures();
    let me = s
        .broker
        .cluster()
        .map_or(NODE.to_string(), |c| c.status().node);
    let others = crate::cluster::other_nodes(&s.broker, &me);
    let mut nodes = vec![json!({
        "name": me,
        "type": "disc",
        "running": true,
        "mem_used": a.mem_used,
        "mem_limit": a.mem_limit,
        "mem_alarm": a.alarms.memory,
        "disk_free": a.disk_free,
        "disk_free_limit": a.disk_limit,
        "disk_free_alarm": a.alarms.disk,
        "fd_used": p.open,
        "fd_total": p.max,
        "uptime": s.started.elapsed().as_millis() as u64,
        "store_bytes": s.broker.store().map_or(0, |st| st.log.disk_bytes()),
        "exchange_types": s.broker.types.names().into_iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
    })];
    nodes.extend(others);
    Ok(Json(json!(nodes)))
}

pub(crate) async fn whoami(State(s): State<MgmtState>, caller: Authed<Read>) -> Reply {
    let tags = s
        .broker
        .users
        .get(&caller.name)
        .map(|u| u.tags)
        .unwrap_or_default();
    Ok(Json(json!({"name": caller.name, "tags": tags})))
}

pub(crate) fn vhost_or_404(s: &MgmtState, name: &str) -> Result<Arc<VHost>, ApiError> {
    s.broker
        .vhost(name)
        .ok_or_else(|| ApiError::no("vhost", name))
}

/// The open connection of that name, or 404.
pub(crate) fn connection_or_404(
    s: &MgmtState,
    name: &str,
) -> Result<Arc<ConnectionInfo>, ApiError> {
    s.broker
        .registry
        .by_name(name)
        .ok_or_else(|| ApiError::no("connection", name))
}

/// One listing, across all vhosts or for the one named in the path.
fn listing(s: &MgmtState, vhost: Option<&str>, of: impl Fn(&VHost) -> Vec<Json_>) -> Reply {
    let items = match vhost {
        Some(v) => of(&*vhost_or_404(s, v)?),
        None => s.broker.vhosts().iter().flat_map(|v| of(v)).collect(),
    };
    Ok(Json(Json_::Array(items)))
}
