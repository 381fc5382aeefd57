//! The HTTP management API (default port 15672): RabbitMQ-shaped JSON so
//! that scripts written for RabbitMQ's management plugin keep working.
//! Authentication is HTTP basic auth against the broker's users; reading
//! needs one of the tags `administrator`, `monitoring` or `management`, and
//! the user list needs `administrator`, as in RabbitMQ.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value as Json_};
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::{Broker, Table, VHost, Value};

/// A loaded exchange-type plugin, as listed by `/api/plugins`.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Library file.
    pub file: String,
    /// Exchange types it registered.
    pub exchange_types: Vec<String>,
}

/// What the handlers read.
#[derive(Clone)]
pub struct MgmtState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Loaded plugins.
    pub plugins: Arc<Vec<PluginInfo>>,
}

/// The API routes.
pub fn router(state: MgmtState) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/vhosts", get(vhosts))
        .route("/api/users", get(users))
        .route("/api/exchanges", get(exchanges_all))
        .route("/api/exchanges/{vhost}", get(exchanges_vhost))
        .route("/api/queues", get(queues_all))
        .route("/api/queues/{vhost}", get(queues_vhost))
        .route("/api/queues/{vhost}/{name}", delete(queue_delete))
        .route("/api/queues/{vhost}/{name}/contents", delete(queue_purge))
        .route("/api/bindings", get(bindings_all))
        .route("/api/plugins", get(plugins))
        .with_state(state)
}

/// Serve until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: MgmtState, mut shutdown: watch::Receiver<bool>) {
    let app = router(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!("management listener failed: {e}");
    }
}

/// The listener's local address, for the start-up log.
pub fn local_addr(l: &TcpListener) -> std::io::Result<SocketAddr> {
    l.local_addr()
}

struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1, "reason": self.2}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"Warren Management\"".parse().expect("static"),
            );
        }
        r
    }
}

/// Check basic auth and that the user has one of `tags`.
fn auth(state: &MgmtState, headers: &HeaderMap, tags: &[&str]) -> Result<String, ApiError> {
    let unauthorized = || {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "not_authorised",
            "Login failed".into(),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (user, pass) = text.split_once(':').ok_or_else(unauthorized)?;
    let u = state.broker.users.authenticate(user, pass).map_err(|_| {
        tracing::warn!(user, "management API: authentication failed");
        unauthorized()
    })?;
    if !u.tags.iter().any(|t| tags.contains(&t.as_str())) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "not_authorised",
            "Not management user".into(),
        ));
    }
    Ok(u.name)
}

const READ: &[&str] = &["administrator", "monitoring", "management"];

/// AMQP field values as JSON, the way RabbitMQ shows arguments.
pub fn value_json(v: &Value) -> Json_ {
    match v {
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Str(b) | Value::Bytes(b) => json!(String::from_utf8_lossy(b)),
        Value::Array(a) => Json_::Array(a.iter().map(value_json).collect()),
        Value::Table(t) => table_json(t),
        Value::Void => Json_::Null,
        Value::Decimal(s, x) => json!(f64::from(*x) / 10f64.powi(i32::from(*s))),
        other => other.as_i64().map_or(Json_::Null, |i| json!(i)),
    }
}

/// A field table as a JSON object.
pub fn table_json(t: &Table) -> Json_ {
    Json_::Object(
        t.iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

async fn overview(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    let user = auth(&s, &h, READ)?;
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
    Ok(Json(json!({
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "management_version": env!("CARGO_PKG_VERSION"),
        "node": "warren@localhost",
        "user": user,
        "exchange_types": s.broker.types.names().into_iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "object_totals": {"queues": queues, "exchanges": exchanges, "consumers": consumers},
        "queue_totals": {"messages": messages, "messages_ready": ready, "messages_unacknowledged": unacked},
    })))
}

async fn vhosts(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    auth(&s, &h, READ)?;
    Ok(Json(Json_::Array(
        s.broker
            .vhosts()
            .iter()
            .map(|v| json!({"name": v.name.as_ref()}))
            .collect(),
    )))
}

async fn users(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    auth(&s, &h, &["administrator"])?;
    Ok(Json(Json_::Array(
        s.broker
            .users
            .list()
            .into_iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "password_hash": u.password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": u.tags,
                })
            })
            .collect(),
    )))
}

fn vhost_or_404(s: &MgmtState, name: &str) -> Result<Arc<VHost>, ApiError> {
    s.broker.vhost(name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "Object Not Found",
            "Not Found".into(),
        )
    })
}

fn exchanges_of(v: &VHost) -> Vec<Json_> {
    v.exchanges()
        .iter()
        .map(|x| {
            json!({
                "name": x.name.as_ref(),
                "vhost": v.name.as_ref(),
                "type": x.kind,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": table_json(&x.args),
            })
        })
        .collect()
}

/// One listing, across all vhosts or for the one named in the path.
fn listing(
    s: &MgmtState,
    h: &HeaderMap,
    vhost: Option<&str>,
    of: fn(&VHost) -> Vec<Json_>,
) -> Result<Json<Json_>, ApiError> {
    auth(s, h, READ)?;
    let items = match vhost {
        Some(v) => of(&*vhost_or_404(s, v)?),
        None => s.broker.vhosts().iter().flat_map(|v| of(v)).collect(),
    };
    Ok(Json(Json_::Array(items)))
}

async fn exchanges_all(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    listing(&s, &h, None, exchanges_of)
}

async fn exchanges_vhost(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    h: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    listing(&s, &h, Some(&vhost), exchanges_of)
}

fn queues_of(v: &VHost) -> Vec<Json_> {
    v.queues()
        .iter()
        .map(|q| {
            let st = q.stats();
            json!({
                "name": q.name.as_ref(),
                "vhost": v.name.as_ref(),
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "exclusive": q.exclusive(),
                "arguments": table_json(&q.args),
                "messages": st.ready + st.unacked,
                "messages_ready": st.ready,
                "messages_unacknowledged": st.unacked,
                "consumers": st.consumers,
                "memory": st.ready_bytes,
                "message_stats": {
                    "publish": st.published,
                    "deliver_get": st.delivered,
                    "ack": st.acked,
                },
            })
        })
        .collect()
}

async fn queues_all(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    listing(&s, &h, None, queues_of)
}

async fn queues_vhost(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    h: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    listing(&s, &h, Some(&vhost), queues_of)
}

/// Who may change things: RabbitMQ's administrator and management tags.
const WRITE: &[&str] = &["administrator", "management"];

fn core_error(e: warren_core::CoreError) -> ApiError {
    use warren_core::CoreError as E;
    match e {
        E::NotFound(t) => ApiError(StatusCode::NOT_FOUND, "Object Not Found", t),
        E::PreconditionFailed(t) => ApiError(StatusCode::BAD_REQUEST, "bad_request", t),
        E::ResourceLocked(t) | E::AccessRefused(t) => {
            ApiError(StatusCode::FORBIDDEN, "not_authorised", t)
        }
        other => ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            other.to_string(),
        ),
    }
}

/// The user, vhost and queue of a queue write request.
fn queue_for_write(
    s: &MgmtState,
    h: &HeaderMap,
    vhost: &str,
    name: &str,
) -> Result<(String, Arc<VHost>, Arc<warren_core::Queue>), ApiError> {
    let user = auth(s, h, WRITE)?;
    let v = vhost_or_404(s, vhost)?;
    let q = v.queue(name).map_err(core_error)?;
    Ok((user, v, q))
}

/// DELETE /api/queues/{vhost}/{name}: delete a queue (as RabbitMQ, 204).
async fn queue_delete(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (user, v, q) = queue_for_write(&s, &h, &vhost, &name)?;
    if q.exclusive() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "not_authorised",
            "exclusive queue".into(),
        ));
    }
    v.remove_queue(&q);
    tracing::info!(user, vhost, queue = %name, "queue deleted through the management API");
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/queues/{vhost}/{name}/contents: purge (as RabbitMQ, 204).
async fn queue_purge(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (user, _, q) = queue_for_write(&s, &h, &vhost, &name)?;
    let n = q.purge();
    tracing::info!(user, vhost, queue = %name, messages = n, "queue purged through the management API");
    Ok(StatusCode::NO_CONTENT)
}

async fn bindings_all(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    auth(&s, &h, READ)?;
    let mut out = Vec::new();
    for v in s.broker.vhosts() {
        for b in v.bindings() {
            out.push(json!({
                "source": b.source,
                "vhost": v.name.as_ref(),
                "destination": b.destination,
                "destination_type": b.destination_kind,
                "routing_key": b.key,
                "arguments": table_json(&b.args),
            }));
        }
    }
    Ok(Json(Json_::Array(out)))
}

async fn plugins(State(s): State<MgmtState>, h: HeaderMap) -> Result<Json<Json_>, ApiError> {
    auth(&s, &h, READ)?;
    Ok(Json(serde_json::to_value(&*s.plugins).unwrap_or_default()))
}
