//! RabbitMQ's limit endpoints: `/api/vhost-limits[/{vhost}[/{name}]]` and
//! `/api/user-limits[/{user}[/{name}]]`. Listings are
//! `[{"vhost": V, "value": {"max-connections": N}}]` (`"user"` for users);
//! PUT takes `{"value": N}` (a negative N means no limit) and, like
//! DELETE, needs the administrator tag.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::limits::LimitMap;

use crate::auth::{Admin, Authed, Read};
use crate::listing::vhost_or_404;
use crate::{ApiError, MgmtState};

type Reply = Result<Json<Json_>, ApiError>;

/// A limit map as RabbitMQ writes it: an object of names to numbers.
pub(crate) fn limits_json(m: &LimitMap) -> Json_ {
    Json_::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// A limits object from JSON (PUT bodies, definitions): every value must be
/// an integer, as RabbitMQ's validation requires.
pub(crate) fn limits_from_json(v: &Json_) -> Result<LimitMap, ApiError> {
    let Some(o) = v.as_object() else {
        return Err(ApiError::bad_request(format!(
            "limits should be an object, actually was {v}"
        )));
    };
    o.iter()
        .map(|(k, v)| match v.as_i64() {
            Some(n) => Ok((k.clone(), n)),
            None => Err(ApiError::bad_request(format!(
                "{k} should be a number, actually was {v}"
            ))),
        })
        .collect()
}

fn rows(key: &str, items: Vec<(String, LimitMap)>) -> Json_ {
    Json_::Array(
        items
            .into_iter()
            .map(|(n, m)| json!({ key: n, "value": limits_json(&m) }))
            .collect(),
    )
}

/// The one limit of a PUT body `{"value": N}`.
fn one_limit(name: &str, body: &Json_) -> Result<LimitMap, ApiError> {
    let value = body
        .get("value")
        .ok_or_else(|| ApiError::bad_request("Key \"value\" not found in the request body"))?;
    limits_from_json(&json!({ name: value }))
}

/// GET /api/vhost-limits: every vhost with a limit.
pub(crate) async fn vhost_all(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    Ok(Json(rows("vhost", s.broker.vhost_limits())))
}

/// GET /api/vhost-limits/{vhost}: one row, or none without limits.
pub(crate) async fn vhost_one(
    State(s): State<MgmtState>,
    Path(vhost): Path<String>,
    _caller: Authed<Read>,
) -> Reply {
    let v = vhost_or_404(&s, &vhost)?;
    let m = warren_core::limits::NamedLimits::to_map(&*v.limits);
    let found = (!m.is_empty()).then_some((vhost, m));
    Ok(Json(rows("vhost", found.into_iter().collect())))
}

/// PUT /api/vhost-limits/{vhost}/{name}.
pub(crate) async fn vhost_put(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Admin>,
    Json(body): Json<Json_>,
) -> Result<StatusCode, ApiError> {
    s.broker
        .merge_vhost_limits(&vhost, &one_limit(&name, &body)?)?;
    tracing::info!(
        user = caller.name,
        vhost,
        "vhost limit {name} set through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/vhost-limits/{vhost}/{name}.
pub(crate) async fn vhost_delete(
    State(s): State<MgmtState>,
    Path((vhost, name)): Path<(String, String)>,
    caller: Authed<Admin>,
) -> Result<StatusCode, ApiError> {
    s.broker.clear_vhost_limit(&vhost, &name)?;
    tracing::info!(
        user = caller.name,
        vhost,
        "vhost limit {name} cleared through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/user-limits: every user with a limit.
pub(crate) async fn user_all(State(s): State<MgmtState>, _caller: Authed<Read>) -> Reply {
    Ok(Json(rows("user", s.broker.user_limits())))
}

/// GET /api/user-limits/{user}: one row, or none without limits.
pub(crate) async fn user_one(
    State(s): State<MgmtState>,
    Path(user): Path<String>,
    _caller: Authed<Read>,
) -> Reply {
    let m = s.broker.limits_of_user(&user)?;
    let found = (!m.is_empty()).then_some((user, m));
    Ok(Json(rows("user", found.into_iter().collect())))
}

/// PUT /api/user-limits/{user}/{name}.
pub(crate) async fn user_put(
    State(s): State<MgmtState>,
    Path((user, name)): Path<(String, String)>,
    caller: Authed<Admin>,
    Json(body): Json<Json_>,
) -> Result<StatusCode, ApiError> {
    s.broker
        .merge_user_limits(&user, &one_limit(&name, &body)?)?;
    tracing::info!(
        user = caller.name,
        target = user,
        "user limit {name} set through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/user-limits/{user}/{name}; the name `all` clears them all.
pub(crate) async fn user_delete(
    State(s): State<MgmtState>,
    Path((user, name)): Path<(String, String)>,
    caller: Authed<Admin>,
) -> Result<StatusCode, ApiError> {
    s.broker.clear_user_limit(&user, &name)?;
    tracing::info!(
        user = caller.name,
        target = user,
        "user limit {name} cleared through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Vhost limits as RabbitMQ 3.10 exports them: runtime parameters of
/// component `vhost-limits`, name `limits`.
pub(crate) fn vhost_limit_parameters(s: &MgmtState) -> Vec<Json_> {
    use warren_core::limits::{VHOST_LIMITS, VHOST_LIMITS_NAME};
    s.broker
        .vhost_limits()
        .into_iter()
        .map(|(vhost, m)| {
            json!({
                "vhost": vhost, "component": VHOST_LIMITS,
                "name": VHOST_LIMITS_NAME, "value": limits_json(&m),
            })
        })
        .collect()
}

/// Why the limits of a definitions entry or a user body cannot apply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitsError {
    /// The limits of a user.
    #[error("limits of user '{user}': {source}")]
    User {
        /// The user.
        user: String,
        /// What is wrong.
        source: Invalid,
    },
    /// The limits of a vhost.
    #[error("vhost limits of '{vhost}': {source}")]
    Vhost {
        /// The vhost.
        vhost: String,
        /// What is wrong.
        source: Invalid,
    },
}

/// What is wrong with a limits object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    /// Not an object of integers.
    #[error(transparent)]
    Json(#[from] ApiError),
    /// A limit the core refuses (unknown name).
    #[error(transparent)]
    Limit(#[from] warren_core::limits::LimitError),
    /// The broker cannot apply it (no such vhost or user).
    #[error(transparent)]
    Core(#[from] warren_core::CoreError),
}

impl LimitsError {
    fn user(user: &str) -> impl FnOnce(Invalid) -> LimitsError + '_ {
        move |source| LimitsError::User {
            user: user.into(),
            source,
        }
    }

    fn vhost(vhost: &str) -> impl FnOnce(Invalid) -> LimitsError + '_ {
        move |source| LimitsError::Vhost {
            vhost: vhost.into(),
            source,
        }
    }
}

/// Apply one `parameters` entry of a definitions file if it holds vhost
/// limits (true then); other components are not Warren's.
pub(crate) fn import_parameter(s: &MgmtState, p: &Json_) -> Result<bool, LimitsError> {
    use warren_core::limits::VHOST_LIMITS;
    if p.get("component").and_then(|c| c.as_str()) != Some(VHOST_LIMITS) {
        return Ok(false);
    }
    let vhost = p.get("vhost").and_then(|v| v.as_str()).unwrap_or_default();
    let apply = || -> Result<(), Invalid> {
        let m = limits_from_json(p.get("value").unwrap_or(&Json_::Null))?;
        s.broker.replace_vhost_limits(vhost, &m)?;
        Ok(())
    };
    apply().map_err(LimitsError::vhost(vhost))?;
    Ok(true)
}

/// The `limits` of a user entry (PUT /api/users body, definitions file),
/// checked; None when absent or empty.
pub(crate) fn user_limits_in(user: &str, u: &Json_) -> Result<Option<LimitMap>, LimitsError> {
    let Some(v) = u.get("limits") else {
        return Ok(None);
    };
    // RabbitMQ writes an empty proplist as [] in some versions.
    if v.as_array().is_some_and(|a| a.is_empty()) {
        return Ok(None);
    }
    let check = || -> Result<LimitMap, Invalid> {
        let m = limits_from_json(v)?;
        warren_core::limits::UserLimits::validate(&m)?;
        Ok(m)
    };
    let m = check().map_err(LimitsError::user(user))?;
    Ok((!m.is_empty()).then_some(m))
}

/// Apply the `limits` of a user entry of a definitions file.
pub(crate) fn import_user_limits(s: &MgmtState, user: &str, u: &Json_) -> Result<(), LimitsError> {
    if let Some(m) = user_limits_in(user, u)? {
        s.broker
            .merge_user_limits(user, &m)
            .map_err(|e| LimitsError::user(user)(e.into()))?;
    }
    Ok(())
}
