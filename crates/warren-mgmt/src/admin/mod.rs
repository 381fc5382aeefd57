//! Changing endpoints: users, vhosts, permissions, exchanges, queues,
//! bindings, test publish and get, closing connections.

mod access;
mod connections;
mod messages;
mod topology;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value as Json_;

pub(crate) use access::*;
pub(crate) use connections::*;
pub(crate) use messages::*;
pub(crate) use topology::*;

use crate::ApiError;

type Done = Result<StatusCode, ApiError>;

fn created(new: bool) -> StatusCode {
    if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

fn flag(body: &Json_, key: &str, default: bool) -> bool {
    body.get(key).and_then(|v| v.as_bool()).unwrap_or(default)
}

#[derive(Deserialize)]
pub(crate) struct IfUnused {
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
    #[serde(rename = "if-empty", default)]
    if_empty: bool,
}
