//! Replicated definitions: in a cluster, a change to vhosts, users,
//! permissions or durable exchanges, queues and bindings is not made here
//! directly. It goes to the cluster's consensus group as a [`Change`], and
//! takes effect on every node when the group's state machine hands it back
//! to [`Broker::apply_change`]. The caller is answered once its own node has
//! applied it, so a `declare-ok` means every live node will have it.
//!
//! A single node has no [`Replicate`] installed: each public change method
//! makes its change directly, at the cost of one atomic load.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use warren_store::{BindingDef, ExchangeDef, PermissionDef, QueueDef, UserDef};

use crate::{auth, vhost, Broker, CoreError, Result};

mod import;

/// One definitions change, as the cluster's log carries it. Records are the
/// store's definition records, so a snapshot and a change speak alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Create a vhost.
    AddVhost(String),
    /// Delete a vhost with everything in it.
    DeleteVhost(String),
    /// Add or replace a user (the hash is made once, by the proposer).
    PutUser(UserDef),
    /// Delete a user.
    DeleteUser(String),
    /// Grant a user rights in a vhost.
    SetPermission(PermissionDef),
    /// Revoke a user's rights in a vhost.
    ClearPermission {
        /// The vhost.
        vhost: String,
        /// The user.
        user: String,
    },
    /// Declare a durable exchange.
    DeclareExchange(ExchangeDef),
    /// Delete an exchange.
    DeleteExchange {
        /// The vhost.
        vhost: String,
        /// The exchange.
        name: String,
    },
    /// Declare a durable, non-exclusive queue.
    DeclareQueue(QueueDef),
    /// Delete a queue.
    DeleteQueue {
        /// The vhost.
        vhost: String,
        /// The queue.
        name: String,
    },
    /// Add a binding between durable ends.
    Bind(BindingDef),
    /// Remove a binding.
    Unbind(BindingDef),
    /// The whole set of a vhost's limits.
    VhostLimits {
        /// The vhost.
        vhost: String,
        /// Limit name to value (a negative value: no limit).
        limits: crate::limits::LimitMap,
    },
    /// The whole set of a user's limits.
    UserLimits {
        /// The user.
        user: String,
        /// Limit name to value.
        limits: crate::limits::LimitMap,
    },
}

/// Where definitions changes go in a cluster: the consensus group. The
/// cluster crate implements it; the core proposes and waits, and the
/// management API shows and changes membership through it.
pub trait Replicate: Send + Sync {
    /// Commit `change` through the group and return once this node has
    /// applied it. Blocks the calling thread (definitions changes are rare
    /// and the callers are synchronous); an error means it was not made
    /// (no quorum, timeout) and says why.
    fn commit(&self, change: Change) -> Result<()>;
    /// Membership, leader and progress, as this node (or the leader, when
    /// reachable) sees them.
    fn status(&self) -> ClusterStatus;
    /// Ask the cluster at `addr` to add this node (`warrenctl join_cluster`).
    fn join(&self, addr: &str) -> Result<()>;
    /// Remove a member, named by node name or cluster address
    /// (`warrenctl forget_cluster_node`).
    fn forget(&self, node: &str) -> Result<()>;
    /// Tell every other node, without waiting (client-id takeover).
    fn broadcast(&self, notice: Notice);
}

/// An event other nodes act on at once, not a replicated change: sent to
/// every member over the cluster link, lost for a member that is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Notice {
    /// An MQTT client connected on `node`: any older session of the same
    /// client id on another node ends (client-id takeover across nodes).
    MqttClientConnected {
        /// The session's vhost.
        vhost: String,
        /// The client id.
        client_id: String,
        /// The node the client connected to.
        node: String,
    },
}

/// A cluster as operators see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `cluster.name`.
    pub cluster_name: String,
    /// The node answering.
    pub node: String,
    /// The leader's node name, when there is one.
    pub leader: Option<String>,
    /// The current Raft term.
    pub term: u64,
    /// The highest log index this node knows committed (its applied index).
    pub commit_index: u64,
    /// The last index in this node's log.
    pub last_log_index: u64,
    /// The log index of this node's latest snapshot (0: none).
    pub snapshot_index: u64,
    /// Every member.
    pub nodes: Vec<NodeStatus>,
}

/// One member of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its node name.
    pub name: String,
    /// Its cluster address.
    pub addr: String,
    /// A voter (false: a learner catching up).
    pub voter: bool,
    /// Heard from recently (by the leader, or by this node).
    pub running: bool,
    /// It is the leader.
    pub leader: bool,
    /// Entries it lags behind the leader's log, when the leader knows.
    pub lag: Option<u64>,
}

/// The slot a cluster installs its [`Replicate`] into, shared by the broker
/// and every vhost.
pub(crate) type Slot = Arc<OnceLock<Arc<dyn Replicate>>>;

thread_local! {
    /// True while this thread applies a committed change: the change
    /// methods then act locally instead of proposing again.
    static APPLYING: Cell<bool> = const { Cell::new(false) };
}

/// The replicator to propose through, unless there is none (a single node)
/// or this thread is applying a committed change.
pub(crate) fn proposer(slot: &Slot) -> Option<&Arc<dyn Replicate>> {
    let r = slot.get()?;
    if APPLYING.with(Cell::get) {
        return None;
    }
    Some(r)
}

/// True while this thread applies a committed change.
pub(crate) fn is_applying() -> bool {
    APPLYING.with(Cell::get)
}

/// Run `f` as the application of a committed change.
fn applying<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            APPLYING.with(|a| a.set(self.0));
        }
    }
    let _reset = Reset(APPLYING.with(|a| a.replace(true)));
    f()
}

impl Broker {
    /// Install the cluster's replicator; from now on definitions changes go
    /// through it. Set once, after start-up recovery.
    pub fn set_replicator(&self, r: Arc<dyn Replicate>) {
        if self.replicator.set(r).is_err() {
            tracing::warn!("a replicator was already installed");
        }
    }

    /// The cluster, when this node is in one.
    pub fn cluster(&self) -> Option<&Arc<dyn Replicate>> {
        self.replicator.get()
    }

    /// Notices from other nodes, for the adapter that acts on them.
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// A notice arrived from another node.
    pub fn notice_received(&self, n: Notice) {
        // No receiver (no MQTT listener) is fine: nobody acts on it.
        let _ = self.notices.send(n);
    }

    /// Apply a committed change on this node (the cluster's state machine
    /// calls this for every entry, in log order, on every node). Errors are
    /// logged, not returned: the change is committed, and a node that cannot
    /// apply it (a plugin type it lacks) says so.
    pub fn apply_change(&self, change: &Change) {
        if let Err(e) = applying(|| self.apply_locally(change)) {
            tracing::warn!("committed definitions change not applied here: {e} ({change:?})");
        }
    }

    fn apply_locally(&self, change: &Change) -> Result<()> {
        match change {
            Change::AddVhost(v) => {
                self.add_vhost(v)?;
            }
            Change::DeleteVhost(v) => {
                self.delete_vhost(v)?;
            }
            Change::PutUser(u) => self.put_user_hash(&u.name, &u.password_hash, u.tags.clone()),
            Change::DeleteUser(u) => {
                self.delete_user(u)?;
            }
            Change::SetPermission(p) => {
                let perm = auth::Permission::new(&p.configure, &p.write, &p.read)?;
                self.set_permissions(&p.vhost, &p.user, perm)?;
            }
            Change::ClearPermission { vhost, user } => {
                self.clear_permissions(vhost, user)?;
            }
            Change::DeclareExchange(x) => {
                let v = self.known_vhost(&x.vhost)?;
                v.declare_exchange(&vhost::exchange_declare_of(x))?;
            }
            Change::DeleteExchange { vhost, name } => {
                self.known_vhost(vhost)?.delete_exchange(name, false)?;
            }
            Change::DeclareQueue(q) => {
                self.known_vhost(&q.vhost)?
                    .declare_queue(&vhost::queue_declare_of(q), 0)?;
            }
            Change::DeleteQueue { vhost, name } => {
                self.known_vhost(vhost)?
                    .delete_queue(name, false, false, 0)?;
            }
            Change::Bind(b) => self.known_vhost(&b.vhost)?.bind_def(b)?,
            Change::Unbind(b) => self.known_vhost(&b.vhost)?.unbind_def(b)?,
            Change::VhostLimits { vhost, limits } => self.replace_vhost_limits(vhost, limits)?,
            Change::UserLimits { user, limits } => self.replace_user_limits(user, limits)?,
        }
        Ok(())
    }

    fn known_vhost(&self, name: &str) -> Result<Arc<vhost::VHost>> {
        self.vhost(name)
            .ok_or_else(|| CoreError::NotFound(format!("no vhost '{name}'")))
    }
}
