//! set_permissions and clear_permissions in the vhost of `-p`.

use serde_json::json;

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::done;

fn path(cli: &Cli, user: &str) -> String {
    format!("/api/permissions/{}/{}", seg(&cli.vhost), seg(user))
}

/// The three expressions a permission grants.
pub(crate) struct Grant<'a> {
    pub(crate) configure: &'a str,
    pub(crate) write: &'a str,
    pub(crate) read: &'a str,
}

/// `set_permissions USER CONFIGURE WRITE READ`.
pub(crate) fn set(cli: &Cli, c: &Client, user: &str, g: Grant<'_>) -> Result<(), CtlError> {
    let body = json!({"configure": g.configure, "write": g.write, "read": g.read});
    c.call("PUT", &path(cli, user), Some(&body))?;
    done(
        cli,
        format!(
            "Setting permissions for user \"{user}\" in vhost \"{}\" ...",
            cli.vhost
        ),
    );
    Ok(())
}

/// `clear_permissions USER`.
pub(crate) fn clear(cli: &Cli, c: &Client, user: &str) -> Result<(), CtlError> {
    c.call("DELETE", &path(cli, user), None)?;
    done(
        cli,
        format!(
            "Clearing permissions for user \"{user}\" in vhost \"{}\" ...",
            cli.vhost
        ),
    );
    Ok(())
}
