//! warrenctl: rabbitmqctl-style commands for a Warren broker, spoken over
//! the management API so that it works from any host that can reach it.

mod client;
mod limits;

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use client::{seg, Client, CtlError};

#[derive(Parser)]
#[command(
    name = "warrenctl",
    version,
    about = "Operate a Warren broker (rabbitmqctl-style commands over the management API)"
)]
struct Cli {
    /// Management API base URL.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    url: String,
    /// User for the management API.
    #[arg(long, global = true, env = "WARRENCTL_USER", default_value = "guest")]
    user: String,
    /// Password for the management API.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    password: String,
    /// Output: aligned table or JSON.
    #[arg(long, global = true, value_enum, default_value = "table")]
    format: Format,
    /// Vhost (as rabbitmqctl's -p).
    #[arg(short = 'p', long = "vhost", global = true, default_value = "/")]
    vhost: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
#[command(rename_all = "snake_case")]
enum Cmd {
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
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
        /// Only if it is empty.
        #[arg(long)]
        if_empty: bool,
    },
    /// Write the definitions (RabbitMQ's JSON format) to a file, or - for stdout.
    ExportDefinitions { path: String },
    /// Load definitions (RabbitMQ's JSON format) from a file, or - for stdin.
    ImportDefinitions { path: String },
    /// Broker version, listeners, totals, memory.
    Status,
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

fn main() {
    let cli = Cli::parse();
    let client = Client::new(&cli.url, &cli.user, &cli.password);
    match run(&cli, &client) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

/// The value of a column: a top-level key, or rabbitmqctl's alias for a
/// nested one.
fn column(item: &Value, col: &str) -> Value {
    let nested = |a: &str, b: &str| item.get(a).and_then(|v| v.get(b)).cloned();
    let found = match col {
        "source_name" => item.get("source").cloned(),
        "source_kind" => Some(json!("exchange")),
        "destination_name" => item.get("destination").cloned(),
        "destination_kind" => item.get("destination_type").cloned(),
        "queue_name" => nested("queue", "name"),
        "channel_pid" | "channel" => nested("channel_details", "name"),
        "connection" => nested("channel_details", "connection_name"),
        "user" if item.get("user").is_none() => item.get("name").cloned(),
        _ => item.get(col).cloned(),
    };
    found.unwrap_or(Value::Null)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(cell).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Print rows as an aligned table (header first) or as JSON objects.
fn print(format: Format, items: &[Value], columns: &[&str]) {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        let rows: Vec<Value> = items
            .iter()
            .map(|i| {
                Value::Object(
                    columns
                        .iter()
                        .map(|c| (c.to_string(), column(i, c)))
                        .collect(),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|c| cell(&column(i, c))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            rows.iter()
                .map(|r| r[n].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (n, c) in cells.iter().enumerate() {
            if n + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[n]));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(columns.to_vec()));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// List a collection with the chosen or default columns.
fn list(
    cli: &Cli,
    client: &Client,
    path: &str,
    columns: &[String],
    default: &[&str],
    keep: impl Fn(&Value) -> bool,
) -> Result<(), CtlError> {
    let all = client.get(path)?;
    let items: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| keep(i))
        .collect();
    let cols: Vec<&str> = if columns.is_empty() {
        default.to_vec()
    } else {
        columns.iter().map(String::as_str).collect()
    };
    print(cli.format, &items, &cols);
    Ok(())
}

fn done(cli: &Cli, what: String) {
    if cli.format == Format::Json {
        println!("{}", json!({"result": "ok", "message": what}));
    } else {
        println!("{what}");
    }
}

fn run(cli: &Cli, c: &Client) -> Result<(), CtlError> {
    let vh = seg(&cli.vhost);
    let in_vhost = |i: &Value| i.get("vhost").and_then(|v| v.as_str()) == Some(&cli.vhost);
    match &cli.cmd {
        Cmd::ListQueues { columns } => list(
            cli,
            c,
            &format!("/api/queues/{vh}"),
            columns,
            &["name", "messages"],
            |_| true,
        ),
        Cmd::ListExchanges { columns } => list(
            cli,
            c,
            &format!("/api/exchanges/{vh}"),
            columns,
            &["name", "type"],
            |_| true,
        ),
        Cmd::ListBindings { columns } => list(
            cli,
            c,
            &format!("/api/bindings/{vh}"),
            columns,
            &[
                "source_name",
                "source_kind",
                "destination_name",
                "destination_kind",
                "routing_key",
                "arguments",
            ],
            |_| true,
        ),
        Cmd::ListConnections { columns } => list(
            cli,
            c,
            "/api/connections",
            columns,
            &["user", "peer_host", "peer_port", "protocol", "state"],
            |_| true,
        ),
        Cmd::ListConsumers { columns } => list(
            cli,
            c,
            "/api/consumers",
            columns,
            &[
                "queue_name",
                "channel_pid",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ],
            |i| i.get("queue").is_some_and(in_vhost),
        ),
        Cmd::ListUsers { columns } => {
            list(cli, c, "/api/users", columns, &["user", "tags"], |_| true)
        }
        Cmd::ListVhosts { columns } => list(cli, c, "/api/vhosts", columns, &["name"], |_| true),
        Cmd::ListPermissions { columns } => list(
            cli,
            c,
            &format!("/api/vhosts/{vh}/permissions"),
            columns,
            &["user", "configure", "write", "read"],
            |_| true,
        ),
        Cmd::AddUser {
            name,
            new_password: password,
        } => {
            if c.get(&format!("/api/users/{}", seg(name))).is_ok() {
                return Err(CtlError::Api {
                    status: 409,
                    reason: format!("user '{name}' already exists"),
                });
            }
            c.call(
                "PUT",
                &format!("/api/users/{}", seg(name)),
                Some(&json!({"password": password, "tags": ""})),
            )?;
            done(cli, format!("Adding user \"{name}\" ..."));
            Ok(())
        }
        Cmd::DeleteUser { name } => {
            c.call("DELETE", &format!("/api/users/{}", seg(name)), None)?;
            done(cli, format!("Deleting user \"{name}\" ..."));
            Ok(())
        }
        Cmd::ChangePassword {
            name,
            new_password: password,
        } => {
            let u = c.get(&format!("/api/users/{}", seg(name)))?;
            let tags = u.get("tags").cloned().unwrap_or(json!([]));
            c.call(
                "PUT",
                &format!("/api/users/{}", seg(name)),
                Some(&json!({"password": password, "tags": tags})),
            )?;
            done(cli, format!("Changing password for user \"{name}\" ..."));
            Ok(())
        }
        Cmd::SetUserTags { name, tags } => {
            let u = c.get(&format!("/api/users/{}", seg(name)))?;
            let hash = u.get("password_hash").cloned().unwrap_or(Value::Null);
            c.call(
                "PUT",
                &format!("/api/users/{}", seg(name)),
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
        Cmd::AddVhost { name } => {
            c.call("PUT", &format!("/api/vhosts/{}", seg(name)), None)?;
            done(cli, format!("Adding vhost \"{name}\" ..."));
            Ok(())
        }
        Cmd::DeleteVhost { name } => {
            c.call("DELETE", &format!("/api/vhosts/{}", seg(name)), None)?;
            done(cli, format!("Deleting vhost \"{name}\" ..."));
            Ok(())
        }
        Cmd::SetPermissions {
            username: user,
            configure,
            write,
            read,
        } => {
            c.call(
                "PUT",
                &format!("/api/permissions/{vh}/{}", seg(user)),
                Some(&json!({"configure": configure, "write": write, "read": read})),
            )?;
            done(
                cli,
                format!(
                    "Setting permissions for user \"{user}\" in vhost \"{}\" ...",
                    cli.vhost
                ),
            );
            Ok(())
        }
        Cmd::ClearPermissions { username: user } => {
            c.call(
                "DELETE",
                &format!("/api/permissions/{vh}/{}", seg(user)),
                None,
            )?;
            done(
                cli,
                format!(
                    "Clearing permissions for user \"{user}\" in vhost \"{}\" ...",
                    cli.vhost
                ),
            );
            Ok(())
        }
        Cmd::PurgeQueue { name } => {
            c.call(
                "DELETE",
                &format!("/api/queues/{vh}/{}/contents", seg(name)),
                None,
            )?;
            done(
                cli,
                format!("Purging queue '{name}' in vhost '{}' ...", cli.vhost),
            );
            Ok(())
        }
        Cmd::DeleteQueue {
            name,
            if_unused,
            if_empty,
        } => {
            c.call(
                "DELETE",
                &format!(
                    "/api/queues/{vh}/{}?if-unused={if_unused}&if-empty={if_empty}",
                    seg(name)
                ),
                None,
            )?;
            done(
                cli,
                format!("Deleting queue '{name}' on vhost '{}' ...", cli.vhost),
            );
            Ok(())
        }
        Cmd::ExportDefinitions { path } => {
            let d = c.get("/api/definitions")?;
            let text = serde_json::to_string_pretty(&d).unwrap_or_default();
            if path == "-" {
                println!("{text}");
            } else {
                std::fs::write(path, text + "\n")
                    .map_err(|e| CtlError::Usage(format!("cannot write {path}: {e}")))?;
                eprintln!("Exported definitions to {path}");
            }
            Ok(())
        }
        Cmd::ImportDefinitions { path } => {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| CtlError::Usage(format!("cannot read stdin: {e}")))?
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| CtlError::Usage(format!("cannot read {path}: {e}")))?
            };
            let d: Value = serde_json::from_str(&text)
                .map_err(|e| CtlError::Usage(format!("{path} is not JSON: {e}")))?;
            c.call("POST", "/api/definitions", Some(&d))?;
            done(cli, format!("Imported definitions from {path}"));
            Ok(())
        }
        Cmd::SetVhostLimits { definition } => limits::set_vhost(cli, c, definition),
        Cmd::ClearVhostLimits => limits::clear_vhost(cli, c),
        Cmd::ListVhostLimits { global } => limits::list_vhost(cli, c, *global),
        Cmd::SetUserLimits {
            username,
            definition,
        } => limits::set_user(cli, c, username, definition),
        Cmd::ClearUserLimits { username, limit } => limits::clear_user(cli, c, username, limit),
        Cmd::ListUserLimits { username } => limits::list_user(cli, c, username.as_deref()),
        Cmd::Status => {
            let o = c.get("/api/overview")?;
            let n = c.get("/api/nodes")?;
            let node = n.get(0).cloned().unwrap_or(Value::Null);
            if cli.format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"overview": o, "node": node}))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            let t = &o["object_totals"];
            let q = &o["queue_totals"];
            println!("Status of node {}", cell(&o["node"]));
            println!(
                "Product: {} {}",
                cell(&o["product_name"]),
                cell(&o["product_version"])
            );
            println!(
                "Uptime (seconds): {}",
                node["uptime"].as_u64().unwrap_or(0) / 1000
            );
            println!("Memory used (bytes): {}", cell(&node["mem_used"]));
            println!(
                "File descriptors: {} of {}",
                cell(&node["fd_used"]),
                cell(&node["fd_total"])
            );
            println!("Store bytes: {}", cell(&node["store_bytes"]));
            println!("Listeners:");
            for l in o["listeners"].as_array().into_iter().flatten() {
                println!(
                    "  {} on {}:{}",
                    cell(&l["protocol"]),
                    cell(&l["ip_address"]),
                    cell(&l["port"])
                );
            }
            println!(
                "Totals: {} connections, {} channels, {} queues, {} consumers, {} messages ({} ready, {} unacknowledged)",
                cell(&t["connections"]),
                cell(&t["channels"]),
                cell(&t["queues"]),
                cell(&t["consumers"]),
                cell(&q["messages"]),
                cell(&q["messages_ready"]),
                cell(&q["messages_unacknowledged"])
            );
            Ok(())
        }
    }
}
