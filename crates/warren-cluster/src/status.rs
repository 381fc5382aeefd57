//! The cluster status an operator sees, from the engine's metrics.

use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use warren_core::replicate::{ClusterStatus, NodeStatus};

use crate::network::Contacts;
use crate::node::Cluster;
use crate::types::{Member, NodeId};

/// A name for a member whose name the group has not learnt.
fn shown(m: &Member) -> String {
    if m.name.is_empty() {
        format!("warren@{}", m.addr)
    } else {
        m.name.clone()
    }
}

/// The status from `m`, as `c` sees it.
pub fn of(c: &Cluster, m: &RaftMetrics<NodeId, Member>, contacts: &Contacts) -> ClusterStatus {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    // Heard from within two election timeouts: heartbeats come far more often.
    let window = c.config().election_timeout * 4 + Duration::from_secs(1);
    let leading = m.state == ServerState::Leader;
    let last = m.last_log_index.unwrap_or(0);
    let nodes = membership
        .nodes()
        .map(|(id, n)| {
            let me = *id == c.id();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map_or(0, |l| l.index));
            NodeStatus {
                name: if me {
                    c.member().name.clone()
                } else {
                    shown(n)
                },
                addr: n.addr.clone(),
                voter: voters.contains(id),
                running: me || contacts.recent(*id, window),
                leader: m.current_leader == Some(*id),
                lag: if leading {
                    matched.map(|i| last.saturating_sub(i))
                } else {
                    None
                },
            }
        })
        .collect();
    ClusterStatus {
        cluster_name: c.config().name.clone(),
        node: c.member().name.clone(),
        leader: m.current_leader.and_then(|l| {
            if l == c.id() {
                return Some(c.member().name.clone());
            }
            membership.get_node(&l).map(shown)
        }),
        term: m.current_term,
        commit_index: m.last_applied.map_or(0, |l| l.index),
        last_log_index: last,
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        nodes,
    }
}
