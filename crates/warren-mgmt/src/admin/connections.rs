//! Closing a client connection.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::Done;
use crate::auth::{Admin, Authed};
use crate::listing::connection_or_404;
use crate::MgmtState;

pub(crate) async fn connection_delete(
    State(s): State<MgmtState>,
    Path(name): Path<String>,
    caller: Authed<Admin>,
    h: HeaderMap,
) -> Done {
    let c = connection_or_404(&s, &name)?;
    let reason = h
        .get("x-reason")
        .and_then(|r| r.to_str().ok())
        .unwrap_or("Closed via management plugin");
    tracing::info!(
        user = caller.name,
        connection = name,
        "closing connection: {reason}"
    );
    c.request_close(reason);
    Ok(StatusCode::NO_CONTENT)
}
