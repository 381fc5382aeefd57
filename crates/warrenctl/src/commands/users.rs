//! add_user, delete_user, change_password and set_user_tags.

use serde_json::{json, Value};

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::done;

type Done = Result<(), CtlError>;

fn path(name: &str) -> String {
    format!("/api/users/{}", seg(name))
}

/// `add_user NAME PASSWORD`: refuses an existing user, as rabbitmqctl.
pub(crate) fn add(cli: &Cli, c: &Client, name: &str, password: &str) -> Done {
    if c.get(&path(name)).is_ok() {
        return Err(CtlError::Api {
            status: 409,
            reason: format!("user '{name}' already exists"),
        });
    }
    c.call(
        "PUT",
        &path(name),
        Some(&json!({"password": password, "tags": ""})),
    )?;
    done(cli, format!("Adding user \"{name}\" ..."));
    Ok(())
}

/// `delete_user NAME`.
pub(crate) fn delete(cli: &Cli, c: &Client, name: &str) -> Done {
    c.call("DELETE", &path(name), None)?;
    done(cli, format!("Deleting user \"{name}\" ..."));
    Ok(())
}

/// `change_password NAME PASSWORD`: the user keeps its tags.
pub(crate) fn change_password(cli: &Cli, c: &Client, name: &str, password: &str) -> Done {
    let u = c.get(&path(name))?;
    let tags = u.get("tags").cloned().unwrap_or(json!([]));
    c.call(
        "PUT",
        &path(name),
        Some(&json!({"password": password, "tags": tags})),
    )?;
    done(cli, format!("Changing password for user \"{name}\" ..."));
    Ok(())
}

/// `set_user_tags NAME [TAG...]`: the user keeps its password.
pub(crate) fn set_tags(cli: &Cli, c: &Client, name: &str, tags: &[String]) -> Done {
    let u = c.get(&path(name))?;
    let hash = u.get("password_hash").cloned().unwrap_or(Value::Null);
    c.call(
        "PUT",
        &path(name),
        Some(&json!({"password_hash": hash, "tags": tags})),
    )?;
    done(
        cli,
        format!(
            "Setting tags for user \"{name}\" to [{}] ...",
            tags.join(", ")
        ),
    );
    Ok(())
}
