//! Watching the engine: leader changes go to the log, and the first leader
//! of a new cluster offers its own definitions as the cluster's first state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::ServerState;
use warren_core::Broker;

use crate::node::Cluster;
use crate::state_machine::StateMachine;
use crate::types::Command;

/// Log every change of leader or term; import once, as the first leader;
/// keep a message link to every member.
pub async fn leader_changes(cluster: Arc<Cluster>, broker: Arc<Broker>) {
    let mut rx = cluster.raft().metrics();
    let mut last: (Option<u64>, u64) = (None, 0);
    // Known once seen, so the progress file is not read at every heartbeat.
    let mut imported = false;
    let announcing = Arc::new(AtomicBool::new(false));
    loop {
        let (leader, term, leading, unnamed, members) = {
            let m = rx.borrow_and_update();
            let members: Vec<String> = m
                .membership_config
                .membership()
                .nodes()
                .map(|(_, n)| n.name.clone())
                .collect();
            let me = m
                .membership_config
                .membership()
                .get_node(&cluster.id())
                .cloned();
            (
                m.current_leader,
                m.current_term,
                m.state == ServerState::Leader,
                me.is_some_and(|n| n.name != cluster.member().name),
                members,
            )
        };
        // Message links to every named member, before a queue needs one.
        cluster.links().connect_all(members);
        if (leader, term) != last {
            last = (leader, term);
            let s = cluster.local_status();
            match &s.leader {
                Some(l) => tracing::info!(term, "cluster leader is {l}; members: {}", names(&s)),
                None => tracing::warn!(term, "cluster has no leader; members: {}", names(&s)),
            }
        }
        if leading && !imported {
            imported =
                StateMachine::imported(&cluster.config().dir) || import(&cluster, &broker).await;
        }
        if leader.is_some() && unnamed && !announcing.swap(true, Ordering::AcqRel) {
            let (c, flag) = (cluster.clone(), announcing.clone());
            tokio::spawn(async move {
                c.announce().await;
                flag.store(false, Ordering::Release);
            });
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn names(s: &warren_core::replicate::ClusterStatus) -> String {
    s.nodes
        .iter()
        .map(|n| {
            format!(
                "{} ({})",
                n.name,
                if n.running { "up" } else { "not heard from" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The founding leader's definitions become the cluster's (the state
/// machine applies only the first import in the log). True once committed.
async fn import(cluster: &Cluster, broker: &Broker) -> bool {
    let mut defs = broker.definitions();
    // Queues of the single node that founds the cluster live on it.
    for q in defs.queues.iter_mut().filter(|q| q.home.is_none()) {
        q.home = Some(cluster.member().name.clone());
    }
    let deadline = tokio::time::Instant::now() + cluster.config().commit_timeout;
    match cluster
        .propose(Command::Import(Box::new(defs)), deadline)
        .await
    {
        Ok(i) => {
            tracing::info!("this node's definitions are the cluster's first state (log index {i})");
            true
        }
        Err(e) => {
            tracing::warn!("founding import not committed yet: {e}");
            false
        }
    }
}
