//! GET endpoints: RabbitMQ-shaped listings of the broker's objects.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::auth::PermissionEntry;
use warren_core::registry::ConnectionInfo;
use warren_core::VHost;

use crate::auth::{Admin, Authed, Read};
use crate::limits::limits_json;
use crate::process::fds;
use crate::rates::{QueueRates, TotalRates};
use crate::{table_json, ApiError, MgmtState};

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
    Ok(Json(json!([{
        "name": NODE,
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
    }])))
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

/// One listing, across all vhosts or for the one named in the path.
fn listing(s: &MgmtState, vhost: Option<&str>, of: impl Fn(&VHost) -> Vec<Json_>) -> Reply {
    let items = match vhost {
        Some(v) => of(&*vhost_or_404(s, v)?),
        None => s.broker.vhosts().iter().flat_map(|v| of(v)).collect(),
    };
    Ok(Json(Json_::Array(items)))
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
        "node": NODE,
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
        "memory": st.ready_bytes,
        "message_bytes_ready": st.ready_bytes,
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

fn connection_json(s: &MgmtState, c: &ConnectionInfo) -> Json_ {
    let r = s.rates.connection(c.id);
    let channels = c.channels().len();
    json!({
        "name": c.name(),
        "node": NODE,
        "vhost": &*c.vhost,
        "user": &*c.user,
        "protocol": c.protocol,
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
