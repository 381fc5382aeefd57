//! The command line: global options and one variant per rabbitmqctl-style
//! command, as clap parses them.

use clap::{Parser, Subcommand, ValueEnum};

/// Global options and the command.
#[derive(Parser)]
#[command(
    name = "warrenctl",
    version,
    about = "Operate a Warren broker (rabbitmqctl-style commands over the management API)"
)]
pub(crate) struct Cli {
    /// Management API base URL.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub(crate) url: String,
    /// CA certificate (PEM) that an https:// URL's certificate is verified
    /// against (default: the public web roots).
    #[arg(long, global = true, env = "WARRENCTL_CACERT")]
    pub(crate) cacert: Option<std::path::PathBuf>,
    /// User for the management API.
    #[arg(long, global = true, env = "WARRENCTL_USER", default_value = "guest")]
    pub(crate) user: String,
    /// Password for the management API.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub(crate) password: String,
    /// Output: aligned table or JSON.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Vhost (as rabbitmqctl's -p).
    #[arg(short = 'p', long = "vhost", global = true, default_value = "/")]
    pub(crate) vhost: String,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// The commands, named as rabbitmqctl names them.
#[derive(Subcommand)]
#[command(rename_all = "snake_case")]
pub(crate) enum Cmd {
    /// Queues of the vhost; columns as rabbitmqctl (default: name messages).
    ListQueues { columns: Vec<String> },
    /// Exchanges of the vhost (default: name type).
    ListExchanges { columns: Vec<String> },
    /// Bindings of the vhost.
    ListBindings { columns: Vec<String> },
    /// Client connections, AMQP and MQTT.
    ListConnections { columns: Vec<String> },
    /// Consumers of the vhost's queues.
    ListConsumers { columns: Vec<String> },
    /// Users and their tags.
    ListUsers { columns: Vec<String> },
    /// Vhosts.
    ListVhosts { columns: Vec<String> },
    /// Permissions in the vhost.
    ListPermissions { columns: Vec<String> },
    /// MQTT retained messages of the vhost (default: topic qos payload_bytes expires_in).
    ListRetained { columns: Vec<String> },
    /// Clear the retained message of an MQTT topic in the vhost.
    DeleteRetained { topic: String },
    /// Create a user.
    AddUser {
        name: String,
        // Not `password`: that id belongs to the global --password.
        #[arg(value_name = "PASSWORD")]
        new_password: String,
    },
    /// Delete a user (its connections are closed).
    DeleteUser { name: String },
    /// Set a user's password.
    ChangePassword {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
    },
    /// Replace a user's tags (none clears them).
    SetUserTags { name: String, tags: Vec<String> },
    /// Create a vhost.
    AddVhost { name: String },
    /// Delete a vhost with everything in it.
    DeleteVhost { name: String },
    /// Grant a user configure/write/read expressions in the vhost.
    SetPermissions {
        // Not `user`: that id belongs to the global --user.
        #[arg(value_name = "USER")]
        username: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Revoke a user's permissions in the vhost.
    ClearPermissions {
        #[arg(value_name = "USER")]
        username: String,
    },
    /// Drop the ready messages of a queue.
    PurgeQueue { name: String },
    /// Delete a queue.
    DeleteQueue {
        name: String,
        /// Only if it has no consumers (`--if-unused`, as rabbitmqctl spells it).
        #[arg(long = "if-unused", alias = "if_unused")]
        if_unused: bool,
        /// Only if it is empty (`--if-empty`).
        #[arg(long = "if-empty", alias = "if_empty")]
        if_empty: bool,
    },
    /// Write the definitions (RabbitMQ's JSON format) to a file, or - for stdout.
    ExportDefinitions { path: String },
    /// Load definitions (RabbitMQ's JSON format) from a file, or - for stdin.
    ImportDefinitions { path: String },
    /// Broker version, listeners, totals, memory.
    Status,
    /// Cluster members, which are running, the Raft leader and progress.
    ClusterStatus,
    /// Ask the cluster at ADDR (a cluster address, host:port) to add this node.
    JoinCluster { addr: String },
    /// Remove a member from the cluster, by node name or cluster address.
    ForgetClusterNode { node: String },
    /// Replace the vhost's limits, e.g. '{"max-connections": 10, "max-queues": 100}'
    /// (a negative value means no limit).
    SetVhostLimits { definition: String },
    /// Clear every limit of the vhost.
    ClearVhostLimits,
    /// The vhost's limits as JSON; with --global, every vhost's.
    ListVhostLimits {
        /// Every vhost with a limit.
        #[arg(long)]
        global: bool,
    },
    /// Set limits of a user, e.g. '{"max-connections": 5, "max-channels": 20}'
    /// (merged with the user's other limits).
    SetUserLimits {
        #[arg(value_name = "USER")]
        username: String,
        definition: String,
    },
    /// Clear one limit of a user (max-connections, max-channels) or all.
    ClearUserLimits {
        #[arg(value_name = "USER")]
        username: String,
        #[arg(default_value = "all")]
        limit: String,
    },
    /// A user's limits as JSON; without USER, every user's.
    ListUserLimits {
        #[arg(value_name = "USER")]
        username: Option<String>,
    },
}

#[cfg(test)]
mod tests;
