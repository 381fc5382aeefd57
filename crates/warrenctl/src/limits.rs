//! rabbitmqctl's limit commands (set/clear/list_vhost_limits and
//! set/clear/list_user_limits) over RabbitMQ's limit endpoints only, so
//! they work against RabbitMQ's management API as well.

use serde_json::{json, Map, Value};

use crate::cli::{Cli, Format};
use crate::client::{seg, Client, CtlError};
use crate::output::{done, print};

/// A definition such as `{"max-connections": 10}`: an object of integers.
fn parse_definition(definition: &str) -> Result<Map<String, Value>, CtlError> {
    let bad =
        |why: String| CtlError::Usage(format!("invalid limits definition '{definition}': {why}"));
    let v: Value = serde_json::from_str(definition).map_err(|e| bad(e.to_string()))?;
    let Value::Object(m) = v else {
        return Err(bad("expected a JSON object".into()));
    };
    if let Some((k, _)) = m.iter().find(|(_, v)| v.as_i64().is_none()) {
        return Err(bad(format!("{k} should be an integer")));
    }
    Ok(m)
}

/// The limits object of a one-row listing (empty when there is no row).
fn limits_of(rows: &Value) -> Map<String, Value> {
    rows.get(0)
        .and_then(|r| r.get("value"))
        .and_then(|v| v.as_object())
        .cloned()
        .unwrap_or_default()
}

/// Rows as rabbitmqctl's --global listings show them: the limits as JSON.
fn print_rows(cli: &Cli, rows: &Value, key: &str) {
    let items: Vec<Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({ key: r[key], "limits": r["value"].to_string() }))
        .collect();
    print(cli.format, &items, &[key, "limits"]);
}

/// Print one set of limits as JSON (rabbitmqctl prints the object).
fn print_one(cli: &Cli, limits: Map<String, Value>) {
    if cli.format == Format::Json || !limits.is_empty() {
        println!("{}", Value::Object(limits));
    }
}

/// `set_vhost_limits -p VHOST DEFINITION`: the definition becomes the
/// vhost's whole set of limits, as in rabbitmqctl.
pub(crate) fn set_vhost(cli: &Cli, c: &Client, definition: &str) -> Result<(), CtlError> {
    let new = parse_definition(definition)?;
    let base = format!("/api/vhost-limits/{}", seg(&cli.vhost));
    for name in limits_of(&c.get(&base)?).keys() {
        if !new.contains_key(name) {
            c.call("DELETE", &format!("{base}/{}", seg(name)), None)?;
        }
    }
    for (name, value) in &new {
        let body = json!({ "value": value });
        c.call("PUT", &format!("{base}/{}", seg(name)), Some(&body))?;
    }
    let what = format!(
        "Setting vhost limits to \"{definition}\" for vhost \"{}\" ...",
        cli.vhost
    );
    done(cli, what);
    Ok(())
}

/// `clear_vhost_limits -p VHOST`.
pub(crate) fn clear_vhost(cli: &Cli, c: &Client) -> Result<(), CtlError> {
    let base = format!("/api/vhost-limits/{}", seg(&cli.vhost));
    for name in limits_of(&c.get(&base)?).keys() {
        c.call("DELETE", &format!("{base}/{}", seg(name)), None)?;
    }
    done(cli, format!("Clearing vhost \"{}\" limits ...", cli.vhost));
    Ok(())
}

/// `list_vhost_limits [-p VHOST] [--global]`.
pub(crate) fn list_vhost(cli: &Cli, c: &Client, global: bool) -> Result<(), CtlError> {
    if global {
        print_rows(cli, &c.get("/api/vhost-limits")?, "vhost");
    } else {
        let rows = c.get(&format!("/api/vhost-limits/{}", seg(&cli.vhost)))?;
        print_one(cli, limits_of(&rows));
    }
    Ok(())
}

/// `set_user_limits USER DEFINITION`: merged into the user's limits, as
/// in rabbitmqctl.
pub(crate) fn set_user(
    cli: &Cli,
    c: &Client,
    user: &str,
    definition: &str,
) -> Result<(), CtlError> {
    let new = parse_definition(definition)?;
    let base = format!("/api/user-limits/{}", seg(user));
    for (name, value) in &new {
        let body = json!({ "value": value });
        c.call("PUT", &format!("{base}/{}", seg(name)), Some(&body))?;
    }
    done(
        cli,
        format!("Setting user limits to \"{definition}\" for user \"{user}\" ..."),
    );
    Ok(())
}

/// `clear_user_limits USER [NAME|all]` (all when no name is given).
pub(crate) fn clear_user(cli: &Cli, c: &Client, user: &str, name: &str) -> Result<(), CtlError> {
    c.call(
        "DELETE",
        &format!("/api/user-limits/{}/{}", seg(user), seg(name)),
        None,
    )?;
    let what = if name == "all" {
        format!("Clearing all limits for user \"{user}\" ...")
    } else {
        format!("Clearing \"{name}\" limit for user \"{user}\" ...")
    };
    done(cli, what);
    Ok(())
}

/// `list_user_limits [USER]`: one user's limits, or every user's.
pub(crate) fn list_user(cli: &Cli, c: &Client, user: Option<&str>) -> Result<(), CtlError> {
    match user {
        None => print_rows(cli, &c.get("/api/user-limits")?, "user"),
        Some(u) => {
            let rows = c.get(&format!("/api/user-limits/{}", seg(u)))?;
            print_one(cli, limits_of(&rows));
        }
    }
    Ok(())
}
