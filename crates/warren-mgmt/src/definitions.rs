//! /api/definitions in RabbitMQ's JSON format, both ways: a file exported
//! from RabbitMQ imports here (users keep their salted SHA-256 password
//! hashes) and Warren's export imports into RabbitMQ.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value as Json_};
use warren_core::auth::Permission;
use warren_core::vhost::{ExchangeDeclare, QueueDeclare};

use crate::admin::{check_hash_algorithm, parse_tags};
use crate::auth::{Admin, Authed};
use crate::limits::{import_parameter, import_user_limits, limits_json, vhost_limit_parameters};
use crate::listing::{permission_json, user_json};
use crate::{json_to_table, table_json, ApiError, MgmtState};

/// GET /api/definitions: users, vhosts, permissions and the durable
/// topology (predeclared exchanges and exclusive queues left out, as RabbitMQ).
pub(crate) async fn export(
    State(s): State<MgmtState>,
    _caller: Authed<Admin>,
) -> Result<Json<Json_>, ApiError> {
    let b = &s.broker;
    let (mut exchanges, mut queues, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in b.vhosts() {
        for x in v.exchanges() {
            if x.name.is_empty() || x.name.starts_with("amq.") || !x.durable {
                continue;
            }
            exchanges.push(json!({
                "name": x.name.as_ref(), "vhost": v.name.as_ref(), "type": x.kind,
                "durable": true, "auto_delete": x.auto_delete, "internal": x.internal,
                "arguments": table_json(&x.args),
            }));
        }
        for q in v.queues() {
            if !q.durable || q.exclusive() {
                continue;
            }
            queues.push(json!({
                "name": q.name.as_ref(), "vhost": v.name.as_ref(), "durable": true,
                "auto_delete": q.auto_delete, "arguments": table_json(&q.current_args()),
            }));
        }
        for bi in v.bindings() {
            if bi.source.is_empty() {
                continue;
            }
            let dest_durable = match bi.destination_kind {
                "queue" => v
                    .queue(&bi.destination)
                    .is_ok_and(|q| q.durable && !q.exclusive()),
                _ => v.exchange(&bi.destination).is_ok_and(|x| x.durable),
            };
            let source_durable = v.exchange(&bi.source).is_ok_and(|x| x.durable);
            if !(dest_durable && source_durable) {
                continue;
            }
            bindings.push(json!({
                "source": bi.source, "vhost": v.name.as_ref(), "destination": bi.destination,
                "destination_type": bi.destination_kind, "routing_key": bi.key,
                "arguments": table_json(&bi.args),
            }));
        }
    }
    Ok(Json(json!({
        "rabbit_version": "3.10.0",
        "rabbitmq_version": "3.10.0",
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": b.users.list().iter().map(|u| user_json(&s, u)).collect::<Vec<_>>(),
        "vhosts": b.vhosts().iter().map(|v| json!({"name": v.name.as_ref(), "limits": vhost_limits_field(v), "metadata": {"description": "", "tags": []}})).collect::<Vec<_>>(),
        "permissions": b.users.permissions().iter().map(permission_json).collect::<Vec<_>>(),
        "topic_permissions": [],
        "parameters": vhost_limit_parameters(&s),
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// A vhost's `limits` as rabbit_definitions writes it: an object, or an
/// empty list when there is none.
fn vhost_limits_field(v: &warren_core::VHost) -> Json_ {
    let m = warren_core::limits::NamedLimits::to_map(&*v.limits);
    if m.is_empty() {
        json!([])
    } else {
        limits_json(&m)
    }
}

fn text<'a>(o: &'a Json_, k: &str) -> &'a str {
    o.get(k).and_then(|v| v.as_str()).unwrap_or_default()
}

fn items<'a>(d: &'a Json_, k: &str) -> impl Iterator<Item = &'a Json_> {
    d.get(k)
        .and_then(|v| v.as_array())
        .into_iter()
        .flat_map(|a| a.iter())
}

/// POST /api/definitions: create what is missing, in dependency order.
/// Items that cannot be applied are reported together (400) after the
/// rest was applied; RabbitMQ-only sections (policies, parameters other
/// than vhost limits) are ignored with a log line.
pub(crate) async fn import(
    State(s): State<MgmtState>,
    caller: Authed<Admin>,
    Json(d): Json<Json_>,
) -> Result<StatusCode, ApiError> {
    let mut run = Import::default();
    import_vhosts(&mut run, &s, &d);
    import_users(&mut run, &s, &d);
    // Vhost limits before queues, so that max-queues applies to the import.
    import_parameters(&mut run, &s, &d);
    import_permissions(&mut run, &s, &d);
    import_exchanges(&mut run, &s, &d);
    import_queues(&mut run, &s, &d);
    import_bindings(&mut run, &s, &d);
    run.finish(&caller.name, &d)
}

/// What an import applied and what it could not.
#[derive(Default)]
struct Import {
    count: usize,
    errors: Vec<String>,
    ignored_parameters: usize,
}

impl Import {
    /// Count an applied item, or keep why it failed under `what`.
    fn applied<T, E: std::fmt::Display>(&mut self, r: Result<T, E>, what: impl FnOnce() -> String) {
        match r {
            Ok(_) => self.count += 1,
            Err(e) => self.errors.push(format!("{}: {e}", what())),
        }
    }

    /// Log the outcome; 204, or 400 with every error.
    fn finish(self, user: &str, d: &Json_) -> Result<StatusCode, ApiError> {
        let ignored = self.ignored_parameters;
        if ignored > 0 {
            tracing::warn!(
                "definitions import: {ignored} parameters ignored (only vhost-limits are supported)"
            );
        }
        for section in ["policies", "global_parameters", "topic_permissions"] {
            let n = items(d, section).count();
            if n > 0 {
                tracing::warn!("definitions import: {n} {section} ignored (not supported)");
            }
        }
        tracing::info!(
            user,
            "definitions imported: {} items, {} errors",
            self.count,
            self.errors.len()
        );
        if self.errors.is_empty() {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::bad_request(self.errors.join("; ")))
        }
    }
}

fn import_vhosts(run: &mut Import, s: &MgmtState, d: &Json_) {
    for v in items(d, "vhosts") {
        let name = text(v, "name");
        let r = warren_core::check_name("vhost", name).and_then(|()| s.broker.add_vhost(name));
        run.applied(r, || format!("vhost '{name}'"));
    }
}

fn import_users(run: &mut Import, s: &MgmtState, d: &Json_) {
    let b = &s.broker;
    for u in items(d, "users") {
        let name = text(u, "name");
        let tags = parse_tags(u.get("tags"));
        let saved = if let Some(pw) = u.get("password").and_then(|p| p.as_str()) {
            b.try_put_user_hash(name, &warren_core::auth::hash_password(pw), tags)
        } else if let Err(why) = check_hash_algorithm(u) {
            run.errors.push(format!("user '{name}': {why}"));
            continue;
        } else {
            b.try_put_user_hash(name, text(u, "password_hash"), tags)
        };
        if let Err(e) = saved {
            run.errors.push(format!("user '{name}': {e}"));
            continue;
        }
        if let Err(e) = import_user_limits(s, name, u) {
            run.errors.push(e.to_string());
        }
        run.count += 1;
    }
}

fn import_parameters(run: &mut Import, s: &MgmtState, d: &Json_) {
    for p in items(d, "parameters") {
        match import_parameter(s, p) {
            Ok(true) => run.count += 1,
            Ok(false) => run.ignored_parameters += 1,
            Err(e) => run.errors.push(e.to_string()),
        }
    }
}

fn import_permissions(run: &mut Import, s: &MgmtState, d: &Json_) {
    for p in items(d, "permissions") {
        let (user, vhost) = (text(p, "user"), text(p, "vhost"));
        let r = Permission::new(text(p, "configure"), text(p, "write"), text(p, "read"))
            .and_then(|perm| s.broker.set_permissions(vhost, user, perm));
        run.applied(r, || format!("permission of '{user}' in '{vhost}'"));
    }
}

fn flag(o: &Json_, key: &str, default: bool) -> bool {
    o.get(key).and_then(|f| f.as_bool()).unwrap_or(default)
}

fn import_exchanges(run: &mut Import, s: &MgmtState, d: &Json_) {
    for x in items(d, "exchanges") {
        let (name, vhost) = (text(x, "name"), text(x, "vhost"));
        let Some(v) = s.broker.vhost(vhost) else {
            run.errors
                .push(format!("exchange '{name}': no vhost '{vhost}'"));
            continue;
        };
        let r = warren_core::check_name("exchange", name).and_then(|()| {
            v.declare_exchange(&ExchangeDeclare {
                name: name.into(),
                kind: text(x, "type").into(),
                passive: false,
                durable: flag(x, "durable", true),
                auto_delete: flag(x, "auto_delete", false),
                internal: flag(x, "internal", false),
                args: json_to_table(x.get("arguments")),
            })
        });
        run.applied(r, || format!("exchange '{name}' in '{vhost}'"));
    }
}

fn import_queues(run: &mut Import, s: &MgmtState, d: &Json_) {
    for q in items(d, "queues") {
        let (name, vhost) = (text(q, "name"), text(q, "vhost"));
        let Some(v) = s.broker.vhost(vhost) else {
            run.errors
                .push(format!("queue '{name}': no vhost '{vhost}'"));
            continue;
        };
        let mut args = json_to_table(q.get("arguments"));
        // RabbitMQ 3.10 exports x-queue-type: classic; Warren's queues are that kind.
        if args.get("x-queue-type").and_then(|t| t.as_str()) == Some("classic") {
            args.0.retain(|(k, _)| k != "x-queue-type");
        }
        let declare = QueueDeclare {
            name: name.into(),
            passive: false,
            durable: flag(q, "durable", true),
            exclusive: false,
            auto_delete: flag(q, "auto_delete", false),
            args,
            server_named: false,
            // RabbitMQ's HTTP API places a queue on the node named here.
            home: q.get("node").and_then(|n| n.as_str()).map(str::to_string),
        };
        let r = warren_core::check_name("queue", name).and_then(|()| v.declare_queue(&declare, 0));
        run.applied(r, || format!("queue '{name}' in '{vhost}'"));
    }
}

fn import_bindings(run: &mut Import, s: &MgmtState, d: &Json_) {
    for bi in items(d, "bindings") {
        let vhost = text(bi, "vhost");
        let (src, dst, key) = (
            text(bi, "source"),
            text(bi, "destination"),
            text(bi, "routing_key"),
        );
        let Some(v) = s.broker.vhost(vhost) else {
            run.errors
                .push(format!("binding {src} -> {dst}: no vhost '{vhost}'"));
            continue;
        };
        let args = json_to_table(bi.get("arguments"));
        let r = if text(bi, "destination_type") == "exchange" {
            v.bind_exchange(dst, src, key, &args)
        } else {
            v.bind_queue(dst, src, key, &args, 0)
        };
        run.applied(r, || format!("binding {src} -> {dst} in '{vhost}'"));
    }
}
