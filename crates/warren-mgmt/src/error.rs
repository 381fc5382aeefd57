//! The API's error reply: HTTP status, RabbitMQ's `error` word and a reason,
//! as `{"error": ..., "reason": ...}`; 401 carries the basic-auth challenge.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API error: HTTP status, RabbitMQ's `error` word and a reason.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct ApiError {
    status: StatusCode,
    word: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, word: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            word,
            reason: reason.into(),
        }
    }

    /// 404, for objects that do not exist.
    pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Object Not Found", what)
    }

    /// 404 for the named object of a kind: "no vhost 'x'".
    pub(crate) fn no(kind: &str, name: &str) -> ApiError {
        ApiError::not_found(format!("no {kind} '{name}'"))
    }

    /// 400, for a request the broker cannot apply.
    pub(crate) fn bad_request(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", why)
    }

    /// 403, for a caller without the right tag or permission.
    pub(crate) fn forbidden(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "not_authorised", why)
    }

    /// 401, for missing or wrong credentials.
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not_authorised", "Login failed")
    }

    /// The HTTP status of the reply.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.word, "reason": self.reason}));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
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
            E::Unavailable(t) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", t),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                other.to_string(),
            ),
        }
    }
}
