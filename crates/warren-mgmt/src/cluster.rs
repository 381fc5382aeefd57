//! The cluster as the management API shows and changes it: GET
//! /api/cluster (membership, leader, Raft progress), POST
//! /api/cluster/join, DELETE /api/cluster/nodes/{node}, and the Raft
//! families of /metrics.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use warren_core::replicate::{ClusterStatus, NodeStatus};
use warren_core::Broker;

use crate::auth::{Admin, Authed, Read};
use crate::metrics::{label, Out};
use crate::{ApiError, MgmtState};

fn not_clustered() -> ApiError {
    ApiError::bad_request("this node is not in a cluster (cluster.bind is not set)")
}

/// GET /api/cluster: the status `warrenctl cluster_status` prints.
pub(crate) async fn status(
    State(s): State<MgmtState>,
    _caller: Authed<Read>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let c = s.broker.cluster().ok_or_else(not_clustered)?;
    Ok(Json(c.status()))
}

/// POST /api/cluster/join `{"addr": "host:port"}`: ask that cluster to add
/// this node (`warrenctl join_cluster`).
pub(crate) async fn join(
    State(s): State<MgmtState>,
    caller: Authed<Admin>,
    Json(body): Json<Value>,
) -> Result<StatusCode, ApiError> {
    let c = s.broker.cluster().ok_or_else(not_clustered)?;
    let addr = body
        .get("addr")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("'addr' (a cluster address) is required"))?;
    c.join(addr)?;
    tracing::info!(
        user = caller.name,
        addr,
        "joined a cluster through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/cluster/nodes/{node}: remove a member
/// (`warrenctl forget_cluster_node`).
pub(crate) async fn forget(
    State(s): State<MgmtState>,
    Path(node): Path<String>,
    caller: Authed<Admin>,
) -> Result<StatusCode, ApiError> {
    let c = s.broker.cluster().ok_or_else(not_clustered)?;
    c.forget(&node)?;
    tracing::info!(
        user = caller.name,
        node,
        "cluster member removed through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The other members, for /api/nodes (this node's own row has its figures).
pub(crate) fn other_nodes(b: &Broker, me: &str) -> Vec<Value> {
    let Some(c) = b.cluster() else {
        return Vec::new();
    };
    c.status()
        .nodes
        .into_iter()
        .filter(|n| n.name != me)
        .map(|n| json!({"name": n.name, "type": "disc", "running": n.running, "cluster_addr": n.addr, "voter": n.voter, "leader": n.leader}))
        .collect()
}

/// Raft term, commit index, leader and each peer's lag.
pub(crate) fn metrics(o: &mut Out, b: &Broker) {
    let Some(c) = b.cluster() else { return };
    let s = c.status();
    o.family(
        "warren_raft_term",
        "gauge",
        "Current Raft term of the definitions group.",
    );
    o.sample("warren_raft_term", "", s.term);
    o.family(
        "warren_raft_commit_index",
        "gauge",
        "Highest log index applied on this node.",
    );
    o.sample("warren_raft_commit_index", "", s.commit_index);
    o.family(
        "warren_raft_last_log_index",
        "gauge",
        "Last index in this node's Raft log.",
    );
    o.sample("warren_raft_last_log_index", "", s.last_log_index);
    per_node(
        o,
        "warren_raft_leader",
        "1 for the member that is the Raft leader.",
        &s.nodes,
        |n| Some(u64::from(n.leader)),
    );
    per_node(
        o,
        "warren_raft_peer_lag",
        "Entries a member lags behind the leader's log.",
        &s.nodes,
        |n| n.lag,
    );
    per_node(
        o,
        "warren_cluster_node_running",
        "1 for a member heard from recently.",
        &s.nodes,
        |n| Some(u64::from(n.running)),
    );
}

/// One gauge family with a sample per member (`node` label); members
/// `value` gives nothing for are left out.
fn per_node(
    o: &mut Out,
    name: &str,
    help: &str,
    nodes: &[NodeStatus],
    value: impl Fn(&NodeStatus) -> Option<u64>,
) {
    o.family(name, "gauge", help);
    for n in nodes {
        if let Some(v) = value(n) {
            o.sample(name, &format!("node=\"{}\"", label(&n.name)), v);
        }
    }
}
