//! warrenctl: rabbitmqctl-style commands for a Warren broker, spoken over
//! the management API so that it works from any host that can reach it.

mod cli;
mod client;
mod commands;
mod limits;
mod output;

use clap::Parser;

use cli::{Cli, Cmd};
use client::{Client, CtlError};
use commands::{cluster, definitions, lists, permissions, queues, retained, status, users, vhosts};

fn main() {
    let cli = Cli::parse();
    let client = Client::new(&cli.url, &cli.user, &cli.password, cli.cacert.as_deref());
    match client.and_then(|client| run(&cli, &client)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

/// Hand the command to its function.
fn run(cli: &Cli, c: &Client) -> Result<(), CtlError> {
    match &cli.cmd {
        Cmd::ListQueues { columns } => lists::queues(cli, c, columns),
        Cmd::ListExchanges { columns } => lists::exchanges(cli, c, columns),
        Cmd::ListBindings { columns } => lists::bindings(cli, c, columns),
        Cmd::ListConnections { columns } => lists::connections(cli, c, columns),
        Cmd::ListConsumers { columns } => lists::consumers(cli, c, columns),
        Cmd::ListUsers { columns } => lists::users(cli, c, columns),
        Cmd::ListVhosts { columns } => lists::vhosts(cli, c, columns),
        Cmd::ListPermissions { columns } => lists::permissions(cli, c, columns),
        Cmd::ListRetained { columns } => retained::list(cli, c, columns),
        Cmd::DeleteRetained { topic } => retained::delete(cli, c, topic),
        Cmd::AddUser { name, new_password } => users::add(cli, c, name, new_password),
        Cmd::DeleteUser { name } => users::delete(cli, c, name),
        Cmd::ChangePassword { name, new_password } => {
            users::change_password(cli, c, name, new_password)
        }
        Cmd::SetUserTags { name, tags } => users::set_tags(cli, c, name, tags),
        Cmd::AddVhost { name } => vhosts::add(cli, c, name),
        Cmd::DeleteVhost { name } => vhosts::delete(cli, c, name),
        Cmd::SetPermissions {
            username,
            configure,
            write,
            read,
        } => {
            let grant = permissions::Grant {
                configure,
                write,
                read,
            };
            permissions::set(cli, c, username, grant)
        }
        Cmd::ClearPermissions { username } => permissions::clear(cli, c, username),
        Cmd::PurgeQueue { name } => queues::purge(cli, c, name),
        Cmd::DeleteQueue {
            name,
            if_unused,
            if_empty,
        } => {
            let only = queues::Only {
                if_unused: *if_unused,
                if_empty: *if_empty,
            };
            queues::delete(cli, c, name, only)
        }
        Cmd::ExportDefinitions { path } => definitions::export(c, path),
        Cmd::ImportDefinitions { path } => definitions::import(cli, c, path),
        Cmd::SetVhostLimits { definition } => limits::set_vhost(cli, c, definition),
        Cmd::ClearVhostLimits => limits::clear_vhost(cli, c),
        Cmd::ListVhostLimits { global } => limits::list_vhost(cli, c, *global),
        Cmd::SetUserLimits {
            username,
            definition,
        } => limits::set_user(cli, c, username, definition),
        Cmd::ClearUserLimits { username, limit } => limits::clear_user(cli, c, username, limit),
        Cmd::ListUserLimits { username } => limits::list_user(cli, c, username.as_deref()),
        Cmd::Status => status::status(cli, c),
        Cmd::ClusterStatus => cluster::status(cli, c),
        Cmd::JoinCluster { addr } => cluster::join(cli, c, addr),
        Cmd::ForgetClusterNode { node } => cluster::forget(cli, c, node),
    }
}
