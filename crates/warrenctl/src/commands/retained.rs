//! list_retained and delete_retained: MQTT retained messages of the vhost.

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::{self, done};

/// `list_retained [COLUMN...]`: the vhost's retained messages (the API's
/// unpaged listing, its first 10,000).
pub(crate) fn list(cli: &Cli, c: &Client, columns: &[String]) -> Result<(), CtlError> {
    let path = format!("/api/mqtt/retained/{}", seg(&cli.vhost));
    let default = ["topic", "qos", "payload_bytes", "expires_in"];
    output::list(cli, c, &path, columns, &default, |_| true)
}

/// `delete_retained TOPIC`: clear the topic's retained message.
pub(crate) fn delete(cli: &Cli, c: &Client, topic: &str) -> Result<(), CtlError> {
    let path = format!("/api/mqtt/retained/{}/{}", seg(&cli.vhost), seg(topic));
    c.call("DELETE", &path, None)?;
    done(
        cli,
        format!(
            "Clearing the retained message of topic '{topic}' in vhost '{}' ...",
            cli.vhost
        ),
    );
    Ok(())
}
