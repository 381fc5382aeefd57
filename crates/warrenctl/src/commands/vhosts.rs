//! add_vhost and delete_vhost.

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::done;

/// `add_vhost NAME`.
pub(crate) fn add(cli: &Cli, c: &Client, name: &str) -> Result<(), CtlError> {
    c.call("PUT", &format!("/api/vhosts/{}", seg(name)), None)?;
    done(cli, format!("Adding vhost \"{name}\" ..."));
    Ok(())
}

/// `delete_vhost NAME`, with everything in it.
pub(crate) fn delete(cli: &Cli, c: &Client, name: &str) -> Result<(), CtlError> {
    c.call("DELETE", &format!("/api/vhosts/{}", seg(name)), None)?;
    done(cli, format!("Deleting vhost \"{name}\" ..."));
    Ok(())
}
