//! The HTTP management API (default port 15672): RabbitMQ-shaped JSON so
//! that scripts written for RabbitMQ's management plugin keep working, a
//! Prometheus endpoint and a small web page. Authentication is HTTP basic
//! auth against the broker's users and their tags, as in RabbitMQ:
//! `monitoring` and `management` read, `management` changes queues and
//! exchanges within the user's vhost permissions, `administrator` does
//! everything, including users, vhosts, permissions and definitions.

#![deny(missing_docs)]

mod admin;
mod definitions;
mod json;
mod limits;
mod listing;
mod metrics;
mod rates;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::auth::{Access, Resource};
use warren_core::Broker;

pub use json::{json_to_table, table_json, value_json};
pub use rates::Rates;

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
    /// Message rates, sampled in the background.
    pub rates: Arc<Rates>,
    /// Listener addresses, for /api/overview.
    pub listeners: Arc<Vec<(&'static str, SocketAddr)>>,
    /// When the broker started, for uptime.
    pub started: Instant,
}

impl MgmtState {
    /// State for a broker with its plugins and listener addresses.
    pub fn new(
        broker: Arc<Broker>,
        plugins: Vec<PluginInfo>,
        listeners: Vec<(&'static str, SocketAddr)>,
    ) -> MgmtState {
        MgmtState {
            broker,
            plugins: Arc::new(plugins),
            rates: Arc::default(),
            listeners: Arc::new(listeners),
            started: Instant::now(),
        }
    }
}

/// The routes: API, metrics and the web page.
pub fn router(state: MgmtState) -> Router {
    use axum::routing::delete;
    let api = Router::new()
        .route("/api/overview", get(listing::overview))
        .route("/api/nodes", get(listing::nodes))
        .route("/api/whoami", get(listing::whoami))
        .route("/api/vhosts", get(listing::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(listing::vhost_one)
                .put(admin::vhost_put)
                .delete(admin::vhost_delete),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(listing::permissions_of_vhost),
        )
        .route("/api/users", get(listing::users))
        .route(
            "/api/users/{user}",
            get(listing::user_one)
                .put(admin::user_put)
                .delete(admin::user_delete),
        )
        .route(
            "/api/users/{user}/permissions",
            get(listing::permissions_of_user),
        )
        .route("/api/permissions", get(listing::permissions))
        .route("/api/vhost-limits", get(limits::vhost_all))
        .route("/api/vhost-limits/{vhost}", get(limits::vhost_one))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(limits::vhost_put).delete(limits::vhost_delete),
        )
        .route("/api/user-limits", get(limits::user_all))
        .route("/api/user-limits/{user}", get(limits::user_one))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(limits::user_put).delete(limits::user_delete),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            get(listing::permission_one)
                .put(admin::permission_put)
                .delete(admin::permission_delete),
        )
        .route("/api/exchanges", get(listing::exchanges))
        .route("/api/exchanges/{vhost}", get(listing::exchanges))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(listing::exchange_one)
                .put(admin::exchange_put)
                .delete(admin::exchange_delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(admin::exchange_publish),
        )
        .route("/api/queues", get(listing::queues))
        .route("/api/queues/{vhost}", get(listing::queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(listing::queue_one)
                .put(admin::queue_put)
                .delete(admin::queue_delete),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            delete(admin::queue_purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(admin::queue_get))
        .route("/api/bindings", get(listing::bindings))
        .route("/api/bindings/{vhost}", get(listing::bindings))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            post(admin::binding_post).get(listing::bindings_between),
        )
        .route("/api/connections", get(listing::connections))
        .route(
            "/api/connections/{name}",
            get(listing::connection_one).delete(admin::connection_delete),
        )
        .route("/api/channels", get(listing::channels))
        .route("/api/consumers", get(listing::consumers))
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route("/api/plugins", get(listing::plugins))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(page))
        .route("/index.html", get(page));
    api.layer(DefaultBodyLimit::max(64 << 20)).with_state(state)
}

/// Serve until `shutdown` turns true; message rates are sampled meanwhile.
pub async fn serve(listener: TcpListener, state: MgmtState, mut shutdown: watch::Receiver<bool>) {
    let sampler = tokio::spawn(rates::run(state.clone(), shutdown.clone()));
    let app = router(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!("management listener failed: {e}");
    }
    sampler.abort();
}

/// The listener's local address, for the start-up log.
pub fn local_addr(l: &TcpListener) -> std::io::Result<SocketAddr> {
    l.local_addr()
}

/// The web page: plain HTML and JavaScript, no build step. The browser's
/// own basic-auth prompt logs in; the page then calls the API.
async fn page(
    axum::extract::State(s): axum::extract::State<MgmtState>,
    h: HeaderMap,
) -> Result<Html<&'static str>, ApiError> {
    auth(&s, &h, READ)?;
    Ok(Html(include_str!("../assets/index.html")))
}

/// An API error: HTTP status, RabbitMQ's `error` word and a reason.
pub(crate) struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, "Object Not Found", what.into())
    }

    pub(crate) fn bad_request(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", why.into())
    }

    pub(crate) fn forbidden(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::FORBIDDEN, "not_authorised", why.into())
    }
}

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

impl From<warren_core::CoreError> for ApiError {
    fn from(e: warren_core::CoreError) -> Self {
        use warren_core::CoreError as E;
        match e {
            E::NotFound(t) => ApiError::not_found(t),
            E::PreconditionFailed(t) | E::CommandInvalid(t) | E::LimitReached(t) => {
                ApiError::bad_request(t)
            }
            E::ResourceLocked(t) | E::AccessRefused(t) | E::NotAllowed(t) => ApiError::forbidden(t),
            other => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                other.to_string(),
            ),
        }
    }
}

/// Who is calling.
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) admin: bool,
}

impl Caller {
    /// Non-administrators act within their vhost permissions, as on AMQP.
    pub(crate) fn check(
        &self,
        s: &MgmtState,
        vhost: &str,
        access: Access,
        kind: Resource,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        let g = s.broker.users.guard(vhost, &self.name)?;
        g.check(access, kind, name)?;
        Ok(())
    }
}

/// Check basic auth and that the user has one of `tags`.
pub(crate) fn auth(s: &MgmtState, headers: &HeaderMap, tags: &[&str]) -> Result<Caller, ApiError> {
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
    let u = s.broker.users.authenticate(user, pass).map_err(|_| {
        tracing::warn!(user, "management API: authentication failed");
        unauthorized()
    })?;
    if !u.tags.iter().any(|t| tags.contains(&t.as_str())) {
        tracing::warn!(user, "management API: access refused (tags {:?})", u.tags);
        return Err(ApiError::forbidden("Not management user"));
    }
    Ok(Caller {
        admin: u.tags.iter().any(|t| t == "administrator"),
        name: u.name,
    })
}

/// Tags that may read.
pub(crate) const READ: &[&str] = &["administrator", "monitoring", "management"];
/// Tags that may change queues, exchanges and bindings.
pub(crate) const WRITE: &[&str] = &["administrator", "management"];
/// Tags that may manage users, vhosts, permissions and definitions.
pub(crate) const ADMIN: &[&str] = &["administrator"];
