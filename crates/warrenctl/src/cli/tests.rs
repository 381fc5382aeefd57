use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Cli {
    let mut all = vec!["warrenctl"];
    all.extend_from_slice(args);
    match Cli::try_parse_from(all) {
        Ok(c) => c,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn defaults_and_global_options() {
    let c = parse(&["status"]);
    assert_eq!(c.vhost, "/");
    assert!(c.format == Format::Table);
    assert!(matches!(c.cmd, Cmd::Status));
    let c = parse(&[
        "list_queues",
        "-p",
        "v1",
        "--format",
        "json",
        "name",
        "consumers",
    ]);
    assert_eq!(c.vhost, "v1");
    assert!(c.format == Format::Json);
    let Cmd::ListQueues { columns } = c.cmd else {
        panic!("list_queues");
    };
    assert_eq!(columns, ["name", "consumers"]);
}

#[test]
fn positional_user_and_password_do_not_clash_with_globals() {
    let c = parse(&["--user", "admin", "add_user", "bob", "secret"]);
    assert_eq!(c.user, "admin");
    let Cmd::AddUser { name, new_password } = c.cmd else {
        panic!("add_user");
    };
    assert_eq!((name.as_str(), new_password.as_str()), ("bob", "secret"));
    let c = parse(&["set_permissions", "bob", ".*", "", "^q"]);
    let Cmd::SetPermissions {
        username,
        configure,
        write,
        read,
    } = c.cmd
    else {
        panic!("set_permissions");
    };
    assert_eq!([username, configure, write, read], ["bob", ".*", "", "^q"]);
}

#[test]
fn flags_and_defaults_of_commands() {
    // rabbitmqctl's spelling; the snake_case one is accepted too.
    let c = parse(&["delete_queue", "q", "--if-empty"]);
    let Cmd::DeleteQueue {
        if_unused,
        if_empty,
        ..
    } = c.cmd
    else {
        panic!("delete_queue");
    };
    assert!(!if_unused && if_empty);
    let c = parse(&["delete_queue", "q", "--if_unused"]);
    assert!(matches!(
        c.cmd,
        Cmd::DeleteQueue {
            if_unused: true,
            if_empty: false,
            ..
        }
    ));
    let c = parse(&["clear_user_limits", "bob"]);
    let Cmd::ClearUserLimits { limit, .. } = c.cmd else {
        panic!("clear_user_limits");
    };
    assert_eq!(limit, "all");
    assert!(Cli::try_parse_from(["warrenctl", "add_user", "bob"]).is_err());
    assert!(Cli::try_parse_from(["warrenctl", "no_such_command"]).is_err());
}

#[test]
fn retained_commands() {
    let c = parse(&["list_retained", "-p", "v1"]);
    assert_eq!(c.vhost, "v1");
    assert!(matches!(c.cmd, Cmd::ListRetained { ref columns } if columns.is_empty()));
    let c = parse(&["delete_retained", "sensors/1/a b"]);
    let Cmd::DeleteRetained { topic } = c.cmd else {
        panic!("delete_retained");
    };
    assert_eq!(topic, "sensors/1/a b");
}
