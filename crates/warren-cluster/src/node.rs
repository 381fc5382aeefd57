//! This node's membership in the cluster: the engine, the proposals it
//! makes or forwards to the leader, and the membership changes it asks for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use tokio::net::TcpListener;
use tokio::time::Instant;
use warren_core::replicate::{Change, ClusterStatus, Notice, Replicate};
use warren_core::{Broker, CoreError};

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::link::Links;
use crate::log_store::LogStore;
use crate::network::{Contacts, Network, Peer};
use crate::state_machine::StateMachine;
use crate::types::{node_id, Command, Member, NodeId, Raft};
use crate::wire::{Request, Response};

/// How long to wait between tries while there is no leader.
const RETRY: Duration = Duration::from_millis(100);
/// Idle connections kept per peer for requests outside replication.
const POOL: usize = 4;

/// One node of the cluster.
pub struct Cluster {
    raft: Raft,
    id: NodeId,
    me: Member,
    cfg: ClusterConfig,
    secret: Arc<[u8]>,
    contacts: Arc<Contacts>,
    /// Idle connections for forwarded proposals, membership requests,
    /// status queries and notices, per peer address.
    peers: parking_lot::Mutex<HashMap<String, Vec<Peer>>>,
    runtime: tokio::runtime::Handle,
    /// The broker notices go to (weak: the broker holds this cluster).
    broker: std::sync::Weak<Broker>,
    /// Itself, for tasks it spawns from `&self`.
    this: std::sync::Weak<Cluster>,
    /// The message link to the other nodes (set once at start).
    links: std::sync::OnceLock<Arc<Links>>,
}

impl Cluster {
    /// Start this node's part: open the log, start the engine, listen on the
    /// cluster port, found or join the cluster, and install the replicator
    /// in `broker`. Call after start-up recovery.
    pub async fn start(
        cfg: ClusterConfig,
        broker: Arc<Broker>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let listener = TcpListener::bind(&cfg.bind).await?;
        let log = LogStore::open(&cfg.dir)?;
        let sm = StateMachine::open(broker.clone(), &cfg.dir)?;
        let id = node_id(&cfg.advertise);
        let secret: Arc<[u8]> = cfg.secret.clone().into();
        let contacts = Arc::new(Contacts::default());
        let network = Network {
            secret: secret.clone(),
            contacts: contacts.clone(),
        };
        let raft = Raft::new(id, Arc::new(engine_config(&cfg)?), network, log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let cluster = Arc::new_cyclic(|this| Cluster {
            raft,
            id,
            me: Member {
                addr: cfg.advertise.clone(),
                name: cfg.node_name.clone(),
            },
            cfg,
            secret,
            contacts,
            peers: parking_lot::Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            broker: Arc::downgrade(&broker),
            this: this.clone(),
            links: std::sync::OnceLock::new(),
        });
        let links = Links::new(&cluster, &broker);
        let _ = cluster.links.set(links.clone());
        broker.set_link(links);
        tracing::info!(
            node = %cluster.me, id, seeds = ?cluster.cfg.seeds,
            "cluster '{}': listening on {}", cluster.cfg.name, cluster.cfg.bind
        );
        tokio::spawn(crate::server::serve(listener, cluster.clone()));
        tokio::spawn(crate::watch::leader_changes(
            cluster.clone(),
            broker.clone(),
        ));
        cluster.clone().form().await;
        broker.set_replicator(cluster.clone());
        Ok(cluster)
    }

    /// Found the cluster with the other seeds, or ask the seeds to add us.
    async fn form(self: Arc<Self>) {
        if self.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        match self.cfg.founders() {
            Some(founders) => {
                // Every founder initializes with the same members (names
                // are learnt later), which openraft allows.
                let members: BTreeMap<NodeId, Member> = founders
                    .iter()
                    .map(|a| {
                        (
                            node_id(a),
                            Member {
                                addr: a.clone(),
                                name: String::new(),
                            },
                        )
                    })
                    .collect();
                tracing::info!("founding cluster '{}' with {:?}", self.cfg.name, founders);
                if let Err(e) = self.raft.initialize(members).await {
                    tracing::info!("cluster already formed: {e}");
                }
            }
            None => {
                tokio::spawn(async move { self.join_seeds().await });
            }
        }
    }

    /// Keep asking the seeds to add this node until one does.
    async fn join_seeds(&self) {
        loop {
            for seed in &self.cfg.seeds {
                match self.join_at(seed).await {
                    Ok(()) => return,
                    Err(e) => tracing::debug!(seed, "join through seed failed: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Ask `addr` (following it to the leader) to add this node as a voter.
    async fn join_at(&self, addr: &str) -> Result<(), ClusterError> {
        let req = Request::Join(self.id, self.me.clone());
        match self
            .ask_leader(addr, &req, Instant::now() + self.cfg.commit_timeout * 4)
            .await?
        {
            Response::Joined => {
                tracing::info!("joined the cluster through {addr}");
                Ok(())
            }
            other => Err(ClusterError::Remote(format!("{other:?}"))),
        }
    }

    /// Send `req` to `addr`, then to whichever node it names as leader.
    async fn ask_leader(
        &self,
        addr: &str,
        req: &Request,
        deadline: Instant,
    ) -> Result<Response, ClusterError> {
        let mut at = addr.to_string();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClusterError::Timeout("no leader answered"));
            }
            match self.call(&at, req, left).await? {
                Response::NotLeader(Some(leader)) => at = leader,
                Response::NotLeader(None) => tokio::time::sleep(RETRY).await,
                Response::Failed(t) => return Err(ClusterError::Remote(t)),
                r => return Ok(r),
            }
        }
    }

    /// One request to `addr` on an idle pooled connection (or a new one),
    /// so a slow forwarded proposal does not hold up a status query.
    async fn call(
        &self,
        addr: &str,
        req: &Request,
        ttl: Duration,
    ) -> Result<Response, ClusterError> {
        let idle = self.peers.lock().get_mut(addr).and_then(Vec::pop);
        let mut peer = idle
            .unwrap_or_else(|| Peer::new(addr, None, self.secret.clone(), self.contacts.clone()));
        let r = peer.call(req, ttl).await;
        if r.is_ok() {
            let mut pool = self.peers.lock();
            let idle = pool.entry(addr.to_string()).or_default();
            if idle.len() < POOL {
                idle.push(peer);
            }
        }
        r
    }

    /// Tell the leader this node's name, when the membership lacks it (the
    /// founders are named by address only until then).
    pub(crate) async fn announce(&self) {
        let named = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .get_node(&self.id)
                .map(|n| n.name.clone())
        };
        if named.is_none_or(|n| n == self.me.name) {
            return;
        }
        let Some(leader) = self.leader_addr() else {
            return;
        };
        let deadline = Instant::now() + self.cfg.commit_timeout;
        let req = Request::Join(self.id, self.me.clone());
        let r = if leader == self.me.addr {
            Ok(self.add_member(self.id, self.me.clone()).await)
        } else {
            self.ask_leader(&leader, &req, deadline).await
        };
        if let Err(e) = r {
            tracing::debug!("announcing this node's name: {e}");
        }
    }

    /// A notice from another node reaches the adapters.
    pub(crate) fn notice_received(&self, n: Notice) {
        if let Some(b) = self.broker.upgrade() {
            b.notice_received(n);
        }
    }

    /// Send `n` to every other member, each in turn, bounded per member.
    async fn send_notice(&self, mut n: Notice) {
        if let Notice::MqttClientConnected { node, .. } = &mut n {
            if node.is_empty() {
                node.clone_from(&self.me.name);
            }
        }
        let others: Vec<String> = {
            let m = self.raft.metrics().borrow().clone();
            let ms = m.membership_config.membership();
            ms.nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(_, n)| n.addr.clone())
                .collect()
        };
        let req = Request::Notice(n);
        for addr in others {
            if let Err(e) = self.call(&addr, &req, Duration::from_secs(2)).await {
                tracing::debug!(peer = addr, "notice not delivered: {e}");
            }
        }
    }

    /// The engine.
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The shared secret.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Record that `id` was heard from.
    pub(crate) fn saw(&self, id: Option<&NodeId>) {
        if let Some(id) = id {
            self.contacts.saw(*id);
        }
    }

    /// This node's name.
    pub(crate) fn member(&self) -> &Member {
        &self.me
    }

    /// The message link.
    pub(crate) fn links(&self) -> &Arc<Links> {
        self.links.get().expect("set at start")
    }

    /// The cluster address of the member named `name`.
    pub(crate) fn addr_of(&self, name: &str) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let ms = m.membership_config.membership();
        let addr = ms
            .nodes()
            .find(|(_, n)| n.name == name)
            .map(|(_, n)| n.addr.clone());
        addr
    }

    /// The leader's address, if this node knows one.
    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Commit `cmd`: directly when this node leads, else through the
    /// leader. Returns the log index it was committed at.
    pub(crate) async fn propose(&self, cmd: Command, deadline: Instant) -> Result<u64, CoreError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let written = tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await;
            let err = match written {
                Err(_) => return Err(self.no_quorum()),
                Ok(Ok(r)) => return Ok(r.log_id.index),
                Ok(Err(e)) => e,
            };
            let Some(fwd) = err.forward_to_leader() else {
                return Err(CoreError::Unavailable(format!("cluster: {err}")));
            };
            if let Some(leader) = fwd.leader_node.as_ref().filter(|n| n.addr != self.me.addr) {
                match self
                    .call(&leader.addr, &Request::Propose(cmd.clone()), left)
                    .await
                {
                    Ok(Response::Committed(i)) => return Ok(i),
                    Ok(Response::Failed(t)) => return Err(CoreError::Unavailable(t)),
                    _ => {}
                }
            }
            if Instant::now() + RETRY >= deadline {
                return Err(self.no_quorum());
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn no_quorum(&self) -> CoreError {
        let s = self.local_status();
        let up = s.nodes.iter().filter(|n| n.voter && n.running).count();
        let voters = s.nodes.iter().filter(|n| n.voter).count();
        CoreError::Unavailable(format!(
            "cluster '{}' has no quorum: node {} cannot commit definition changes ({up} of {voters} members reachable, leader {})",
            self.cfg.name,
            self.me.name,
            s.leader.as_deref().unwrap_or("unknown")
        ))
    }

    /// A forwarded proposal: commit it if this node leads.
    pub(crate) async fn propose_here(&self, cmd: Command) -> Response {
        match self.raft.client_write(cmd).await {
            Ok(r) => Response::Committed(r.log_id.index),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Response::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone())),
                None => Response::Failed(e.to_string()),
            },
        }
    }

    /// A join request: add the node as a learner, then as a voter.
    pub(crate) async fn add_member(&self, id: NodeId, member: Member) -> Response {
        if let Some(r) = self.not_leader() {
            return r;
        }
        tracing::info!(node = %member, "adding cluster member");
        let (known, voter) = {
            let m = self.raft.metrics().borrow().clone();
            let ms = m.membership_config.membership();
            (ms.get_node(&id).cloned(), ms.voter_ids().any(|v| v == id))
        };
        match known {
            // A founder announcing its name: the members learn it.
            Some(n) if n != member => {
                let nodes = BTreeMap::from([(id, member)]);
                if let Err(e) = self
                    .raft
                    .change_membership(ChangeMembers::SetNodes(nodes), true)
                    .await
                {
                    return Response::Failed(e.to_string());
                }
            }
            Some(_) => {}
            None => {
                // Blocks until the learner has caught up with the log.
                if let Err(e) = self.raft.add_learner(id, member, true).await {
                    return Response::Failed(e.to_string());
                }
            }
        }
        if voter {
            return Response::Joined;
        }
        match self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
        {
            Ok(_) => Response::Joined,
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    /// A forget request: remove the node from the voters and the members.
    pub(crate) async fn remove_member(&self, id: NodeId) -> Response {
        if let Some(r) = self.not_leader() {
            return r;
        }
        let remove = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        if let Err(e) = self.raft.change_membership(remove, false).await {
            return Response::Failed(e.to_string());
        }
        tracing::info!(id, "cluster member removed");
        Response::Joined
    }

    fn not_leader(&self) -> Option<Response> {
        let m = self.raft.metrics().borrow().clone();
        (m.state != ServerState::Leader).then(|| Response::NotLeader(self.leader_addr()))
    }

    /// The cluster as this node sees it.
    pub(crate) fn local_status(&self) -> ClusterStatus {
        crate::status::of(self, &self.raft.metrics().borrow(), &self.contacts)
    }

    pub(crate) fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// This node's Raft id.
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// Run `f` to completion from synchronous code: the core's change
    /// methods are synchronous, and a definitions change is rare enough to
    /// hold a thread (tokio hands this worker's other tasks to another).
    fn block<T>(&self, f: impl Future<Output = Result<T, CoreError>>) -> Result<T, CoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(f))
            }
            Ok(_) => Err(CoreError::Internal(
                "a cluster change cannot wait on a single-threaded runtime".into(),
            )),
            Err(_) => self.runtime.block_on(f),
        }
    }

    async fn commit_and_wait(&self, cmd: Command) -> Result<(), CoreError> {
        let deadline = Instant::now() + self.cfg.commit_timeout;
        let index = self.propose(cmd, deadline).await?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(RETRY);
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "change applied here")
            .await
            .map(drop)
            .map_err(|e| {
                CoreError::Unavailable(format!("cluster: committed but not yet applied here: {e}"))
            })
    }

    fn find(&self, node: &str) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        let found = m
            .membership_config
            .membership()
            .nodes()
            .find(|(id, n)| n.addr == node || n.name == node || id.to_string() == node)
            .map(|(id, _)| *id);
        found
    }
}

impl Replicate for Cluster {
    fn broadcast(&self, notice: Notice) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        self.runtime
            .spawn(async move { this.send_notice(notice).await });
    }

    fn commit(&self, change: Change) -> Result<(), CoreError> {
        self.block(self.commit_and_wait(Command::Change(change)))
    }

    fn status(&self) -> ClusterStatus {
        let leader = self.leader_addr().filter(|a| *a != self.me.addr);
        let Some(leader) = leader else {
            return self.local_status();
        };
        let asked = self.block(async {
            match self
                .call(&leader, &Request::Status, Duration::from_secs(1))
                .await
            {
                Ok(Response::Status(s)) => Ok(Some(*s)),
                _ => Ok(None),
            }
        });
        let mut s = asked.ok().flatten().unwrap_or_else(|| self.local_status());
        s.node = self.me.name.clone();
        s
    }

    fn join(&self, addr: &str) -> Result<(), CoreError> {
        let initialized =
            self.block(async { Ok(self.raft.is_initialized().await.unwrap_or(true)) })?;
        if initialized {
            return Err(CoreError::PreconditionFailed(format!(
                "node {} is already a member of cluster '{}'; only a node started without founding one (its address not among cluster.seeds) can join another",
                self.me.name, self.cfg.name
            )));
        }
        self.block(async {
            self.join_at(addr)
                .await
                .map_err(|e| CoreError::Unavailable(format!("join through {addr} failed: {e}")))
        })
    }

    fn forget(&self, node: &str) -> Result<(), CoreError> {
        let id = self
            .find(node)
            .ok_or_else(|| CoreError::NotFound(format!("no cluster member '{node}'")))?;
        let addr = self.leader_addr().unwrap_or_else(|| self.me.addr.clone());
        let deadline = Instant::now() + self.cfg.commit_timeout;
        self.block(async {
            match self.ask_leader(&addr, &Request::Leave(id), deadline).await {
                Ok(_) => Ok(()),
                Err(e) => Err(CoreError::Unavailable(format!("forget {node}: {e}"))),
            }
        })
    }
}

/// The engine's timing and snapshot policy from our settings.
fn engine_config(cfg: &ClusterConfig) -> Result<openraft::Config, ClusterError> {
    let election = cfg.election_timeout.as_millis() as u64;
    openraft::Config {
        cluster_name: cfg.name.clone(),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs.max(1)),
        max_in_snapshot_log_to_keep: cfg.snapshot_logs / 10,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ClusterError::Config(e.to_string()))
}
