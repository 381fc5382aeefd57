//! purge_queue and delete_queue.

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::done;

/// `purge_queue NAME`: drop its ready messages.
pub(crate) fn purge(cli: &Cli, c: &Client, name: &str) -> Result<(), CtlError> {
    let path = format!("/api/queues/{}/{}/contents", seg(&cli.vhost), seg(name));
    c.call("DELETE", &path, None)?;
    done(
        cli,
        format!("Purging queue '{name}' in vhost '{}' ...", cli.vhost),
    );
    Ok(())
}

/// When `delete_queue` may delete.
pub(crate) struct Only {
    pub(crate) if_unused: bool,
    pub(crate) if_empty: bool,
}

/// `delete_queue NAME [--if-unused] [--if-empty]`.
pub(crate) fn delete(cli: &Cli, c: &Client, name: &str, only: Only) -> Result<(), CtlError> {
    let Only {
        if_unused,
        if_empty,
    } = only;
    let path = format!(
        "/api/queues/{}/{}?if-unused={if_unused}&if-empty={if_empty}",
        seg(&cli.vhost),
        seg(name)
    );
    c.call("DELETE", &path, None)?;
    done(
        cli,
        format!("Deleting queue '{name}' on vhost '{}' ...", cli.vhost),
    );
    Ok(())
}
