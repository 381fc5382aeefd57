//! cluster_status, join_cluster and forget_cluster_node, as rabbitmqctl
//! has them, over /api/cluster.

use serde_json::{json, Value};

use crate::cli::{Cli, Format};
use crate::client::{seg, Client, CtlError};
use crate::output::{cell, done};

/// `cluster_status`: members, which are running, the leader and progress.
pub(crate) fn status(cli: &Cli, c: &Client) -> Result<(), CtlError> {
    let s = c.get("/api/cluster")?;
    if cli.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!("Cluster status of node {} ...", cell(&s["node"]));
    println!("Cluster name: {}", cell(&s["cluster_name"]));
    println!("Leader: {}", cell(&s["leader"]));
    println!(
        "Raft term {}, commit index {}",
        cell(&s["term"]),
        cell(&s["commit_index"])
    );
    println!("Nodes:");
    for n in s["nodes"].as_array().into_iter().flatten() {
        println!("  {}", node_line(n));
    }
    Ok(())
}

fn node_line(n: &Value) -> String {
    let flag = |k: &str, word: &str| {
        if n[k].as_bool() == Some(true) {
            format!(" {word}")
        } else {
            String::new()
        }
    };
    let lag = n["lag"]
        .as_u64()
        .map_or(String::new(), |l| format!(" lag {l}"));
    format!(
        "{} ({}){}{}{}{lag}",
        cell(&n["name"]),
        cell(&n["addr"]),
        if n["running"].as_bool() == Some(true) {
            " running"
        } else {
            " not running"
        },
        flag("leader", "leader"),
        if n["voter"].as_bool() == Some(false) {
            " learner"
        } else {
            ""
        },
    )
}

/// `join_cluster ADDR`: ask the cluster at ADDR to add this node.
pub(crate) fn join(cli: &Cli, c: &Client, addr: &str) -> Result<(), CtlError> {
    c.call("POST", "/api/cluster/join", Some(&json!({ "addr": addr })))?;
    done(cli, format!("Clustering node with {addr} ..."));
    Ok(())
}

/// `forget_cluster_node NODE`: remove a member (by name or address).
pub(crate) fn forget(cli: &Cli, c: &Client, node: &str) -> Result<(), CtlError> {
    c.call("DELETE", &format!("/api/cluster/nodes/{}", seg(node)), None)?;
    done(cli, format!("Removing node {node} from the cluster ..."));
    Ok(())
}
