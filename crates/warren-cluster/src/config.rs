//! What a node needs to take part in a cluster (built by the binary from
//! the `[cluster]` settings).

use std::path::PathBuf;
use std::time::Duration;

/// One node's cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `cluster.name`: nodes of another name refuse each other's votes.
    pub name: String,
    /// `cluster.node_name`, shown to operators.
    pub node_name: String,
    /// `cluster.bind`: where the cluster link listens.
    pub bind: String,
    /// The address peers reach this node at (the bind address unless set).
    pub advertise: String,
    /// `cluster.seeds`: the founding members' cluster addresses. A node
    /// whose own address is among them founds the cluster with the others;
    /// one that is not joins through them. Empty: a cluster of one.
    pub seeds: Vec<String>,
    /// The shared secret (`cluster.secret_file`).
    pub secret: Vec<u8>,
    /// Where the Raft log, vote, progress and snapshot live.
    pub dir: PathBuf,
    /// Raft heartbeat period.
    pub heartbeat: Duration,
    /// Raft election timeout (the lower bound; the upper is twice it).
    pub election_timeout: Duration,
    /// How long a definitions change may wait for a commit before it is
    /// refused as unavailable.
    pub commit_timeout: Duration,
    /// Entries between snapshots; the log before a snapshot is purged
    /// (keeping a tenth), so a node that was down long gets the snapshot.
    pub snapshot_logs: u64,
}

impl ClusterConfig {
    /// The founding members: the seeds, when this node is one of them.
    pub fn founders(&self) -> Option<Vec<String>> {
        if self.seeds.is_empty() {
            return Some(vec![self.advertise.clone()]);
        }
        self.seeds
            .contains(&self.advertise)
            .then(|| self.seeds.clone())
    }
}
