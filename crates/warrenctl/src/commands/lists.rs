//! The list_* commands: a management API collection, filtered to the
//! vhost where the API does not, with rabbitmqctl's default columns.

use serde_json::Value;

use crate::cli::Cli;
use crate::client::{seg, Client, CtlError};
use crate::output::list;

type Done = Result<(), CtlError>;

fn all(_: &Value) -> bool {
    true
}

/// `list_queues [COLUMN...]`.
pub(crate) fn queues(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let path = format!("/api/queues/{}", seg(&cli.vhost));
    list(cli, c, &path, columns, &["name", "messages"], all)
}

/// `list_exchanges [COLUMN...]`.
pub(crate) fn exchanges(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let path = format!("/api/exchanges/{}", seg(&cli.vhost));
    list(cli, c, &path, columns, &["name", "type"], all)
}

/// `list_bindings [COLUMN...]`.
pub(crate) fn bindings(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let path = format!("/api/bindings/{}", seg(&cli.vhost));
    let default = [
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ];
    list(cli, c, &path, columns, &default, all)
}

/// `list_connections [COLUMN...]`: every vhost's, as rabbitmqctl.
pub(crate) fn connections(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let default = ["user", "peer_host", "peer_port", "protocol", "state"];
    list(cli, c, "/api/connections", columns, &default, all)
}

/// `list_consumers [COLUMN...]`: consumers of the vhost's queues.
pub(crate) fn consumers(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let default = [
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ];
    let in_vhost = |i: &Value| i.get("vhost").and_then(|v| v.as_str()) == Some(&cli.vhost);
    list(cli, c, "/api/consumers", columns, &default, |i| {
        i.get("queue").is_some_and(in_vhost)
    })
}

/// `list_users [COLUMN...]`.
pub(crate) fn users(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    list(cli, c, "/api/users", columns, &["user", "tags"], all)
}

/// `list_vhosts [COLUMN...]`.
pub(crate) fn vhosts(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    list(cli, c, "/api/vhosts", columns, &["name"], all)
}

/// `list_permissions [COLUMN...]` in the vhost.
pub(crate) fn permissions(cli: &Cli, c: &Client, columns: &[String]) -> Done {
    let path = format!("/api/vhosts/{}/permissions", seg(&cli.vhost));
    let default = ["user", "configure", "write", "read"];
    list(cli, c, &path, columns, &default, all)
}
