//! The engine's type configuration: what a log entry carries (a
//! definitions [`Change`]), what applying one answers, and what a member is.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use warren_core::replicate::Change;

/// A node's id in the group: a hash of its cluster address, so every node
/// started with the same seeds knows every founder's id before any contact.
pub type NodeId = u64;

/// What the group knows of a member: where its cluster link listens and
/// its operator-facing name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of its cluster listener.
    pub addr: String,
    /// `cluster.node_name`, for logs, `cluster_status` and `/api/nodes`.
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// One replicated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A definitions change proposed by some node.
    Change(Change),
    /// Make this node's durable definitions equal to these (the first
    /// leader's own definitions when a cluster forms).
    Import(Box<warren_store::Definitions>),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Change(c) => write!(f, "{c:?}"),
            Command::Import(_) => f.write_str("import definitions"),
        }
    }
}

/// What applying a command answers (nothing: a change either applies or
/// is logged as not applicable on that node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied;

openraft::declare_raft_types!(
    /// Warren's definitions group.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The engine, typed for the definitions group.
pub type Raft = openraft::Raft<TypeConfig>;

/// The id a cluster address stands for (FNV-1a; stable across builds and
/// platforms, unlike the standard hasher). Never 0, which openraft tools
/// sometimes treat as unset.
pub fn node_id(addr: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}
