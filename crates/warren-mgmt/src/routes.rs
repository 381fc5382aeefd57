//! The URL table: which handler answers which path and method.

use axum::extract::DefaultBodyLimit;
use axum::response::Html;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::auth::{Authed, Read};
use crate::{admin, cluster, definitions, limits, listing, metrics, retained, MgmtState};

/// The routes: API, metrics and the web page.
pub fn router(state: MgmtState) -> Router {
    let api = Router::new()
        .route("/api/overview", get(listing::overview))
        .route("/api/nodes", get(listing::nodes))
        .route("/api/cluster", get(cluster::status))
        .route("/api/cluster/join", post(cluster::join))
        .route("/api/cluster/nodes/{node}", delete(cluster::forget))
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
            put(limits::vhost_put).delete(limits::vhost_delete),
        )
        .route("/api/user-limits", get(limits::user_all))
        .route("/api/user-limits/{user}", get(limits::user_one))
        .route(
            "/api/user-limits/{user}/{name}",
            put(limits::user_put).delete(limits::user_delete),
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
        .route("/api/mqtt/retained", get(retained::all))
        .route("/api/mqtt/retained/{vhost}", get(retained::of_vhost))
        .route(
            "/api/mqtt/retained/{vhost}/{topic}",
            delete(retained::delete),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/", get(page))
        .route("/index.html", get(page));
    api.layer(DefaultBodyLimit::max(64 << 20)).with_state(state)
}

/// The web page: plain HTML and JavaScript, no build step. The browser's
/// own basic-auth prompt logs in; the page then calls the API.
async fn page(_caller: Authed<Read>) -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}
