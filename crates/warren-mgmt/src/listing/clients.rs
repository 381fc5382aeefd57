//! Connections, channels, consumers and loaded plugins.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::registry::ConnectionInfo;

use super::{connection_or_404, total_stats, Reply, NODE};
use crate::auth::{Authed, Read};
use crate::MgmtState;

fn connection_json(s: &MgmtState, c: &ConnectionInfo) -> Json_ {
    let r = s.rates.connection(c.id);
    let channels = c.channels().len();
    json!({
        "name": c.name(),
        "node": NODE,
        "vhost": &*c.vhost,
        "user": &*c.user,
        "protocol": c.protocol,
        "ssl": c.tls,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "channels": channels,
        "connected_at": c.connected_at,
        "state": "running",
        "type": "network",
        "client_properties": {"connection_name": c.client},
        "message_stats": total_stats(c.stats.totals(), r),
    })
}

pub(crate) async fn connections(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    Ok(Json(Json_::Array(
        s.broker
            .registry
            .list()
            .iter()
            .map(|c| connection_json(&s, c))
            .collect(),
    )))
}

pub(crate) async fn connection_one(
    State(s): State<MgmtState>,
    Path(name): Path<String>,
    _caller: Authed<Read>,
) -> Reply {
    let c = connection_or_404(&s, &name)?;
    Ok(Json(connection_json(&s, &c)))
}

pub(crate) async fn channels(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    let mut out = Vec::new();
    for c in s.broker.registry.list() {
        for ch in c.channels() {
            out.push(json!({
                "name": format!("{} ({})", c.name(), ch.number),
                "number": ch.number,
                "node": NODE,
                "vhost": &*c.vhost,
                "user": &*c.user,
                "connection_details": {"name": c.name(), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
                "prefetch_count": ch.prefetch,
                "global_prefetch_count": ch.global_prefetch,
                "messages_unacknowledged": ch.unacked,
                "consumer_count": ch.consumers,
                "confirm": ch.confirm,
                "transactional": ch.transactional,
                "state": "running",
            }));
        }
    }
    Ok(Json(Json_::Array(out)))
}

pub(crate) async fn consumers(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    // Consumers name their channel by its id (MQTT sessions: the connection id).
    let mut owners: HashMap<u64, (Arc<ConnectionInfo>, u16, u32)> = HashMap::new();
    for c in s.broker.registry.list() {
        owners.insert(c.id, (c.clone(), 0, 0));
        for ch in c.channels() {
            owners.insert(ch.uid, (c.clone(), ch.number, ch.prefetch));
        }
    }
    let mut out = Vec::new();
    for v in s.broker.vhosts() {
        for q in v.queues() {
            for (tag, channel, no_ack, exclusive) in q.consumers() {
                let owner = owners.get(&channel);
                out.push(json!({
                    "consumer_tag": tag.as_ref(),
                    "queue": {"name": q.name.as_ref(), "vhost": v.name.as_ref()},
                    "channel_details": owner.map(|(c, n, _)| json!({
                        "name": format!("{} ({n})", c.name()),
                        "number": n,
                        "connection_name": c.name(),
                        "peer_host": c.peer.ip().to_string(),
                        "peer_port": c.peer.port(),
                        "user": &*c.user,
                    })),
                    "ack_required": !no_ack,
                    "exclusive": exclusive,
                    "prefetch_count": owner.map_or(0, |o| o.2),
                    "active": true,
                    "arguments": {},
                }));
            }
        }
    }
    Ok(Json(Json_::Array(out)))
}

pub(crate) async fn plugins(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    Ok(Json(serde_json::to_value(&*s.plugins).unwrap_or_default()))
}
