//! The dialing side of the cluster link: one connection per peer, used for
//! one request at a time (openraft drives each peer's replication from one
//! task), re-dialed after any failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::error::ClusterError;
use crate::handshake;
use crate::types::{Member, NodeId, TypeConfig};
use crate::wire::{read_frame, write_frame, Request, Response};

/// When each peer last answered; `running` in the cluster status.
#[derive(Default)]
pub struct Contacts {
    seen: Mutex<HashMap<NodeId, Instant>>,
}

impl Contacts {
    /// Record an answer (or a request) from `id`.
    pub fn saw(&self, id: NodeId) {
        self.seen.lock().insert(id, Instant::now());
    }

    /// True when `id` was heard from within `window`.
    pub fn recent(&self, id: NodeId, window: Duration) -> bool {
        self.seen
            .lock()
            .get(&id)
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// A connection to one peer.
pub struct Peer {
    addr: String,
    target: Option<NodeId>,
    secret: Arc<[u8]>,
    contacts: Arc<Contacts>,
    conn: Option<TcpStream>,
}

impl Peer {
    /// A peer at `addr`, dialed on first use.
    pub fn new(
        addr: &str,
        target: Option<NodeId>,
        secret: Arc<[u8]>,
        contacts: Arc<Contacts>,
    ) -> Peer {
        Peer {
            addr: addr.to_string(),
            target,
            secret,
            contacts,
            conn: None,
        }
    }

    /// Send one request and wait for its answer, within `ttl`.
    pub async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, ClusterError> {
        let r = tokio::time::timeout(ttl, self.exchange(req)).await;
        let r = r.unwrap_or(Err(ClusterError::Timeout("cluster request")));
        match &r {
            Ok(_) => {
                if let Some(id) = self.target {
                    self.contacts.saw(id);
                }
            }
            Err(_) => self.conn = None,
        }
        r
    }

    async fn exchange(&mut self, req: &Request) -> Result<Response, ClusterError> {
        if self.conn.is_none() {
            let mut s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            handshake::dial(&mut s, &self.secret).await?;
            self.conn = Some(s);
        }
        let s = self.conn.as_mut().expect("connected above");
        write_frame(s, req).await?;
        read_frame(s).await
    }

    async fn raft_call<E: std::error::Error>(
        &mut self,
        req: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, Member, RaftError<NodeId, E>>> {
        match self.call(&req, option.hard_ttl()).await {
            Ok(Response::Failed(t)) => Err(RPCError::Network(NetworkError::new(
                &ClusterError::Remote(t),
            ))),
            Ok(r) => Ok(r),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

fn unexpected(r: &Response) -> NetworkError {
    NetworkError::new(&ClusterError::Remote(format!("unexpected answer {r:?}")))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.raft_call(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => Ok(r),
            other => Err(RPCError::Network(unexpected(&other))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .raft_call(Request::InstallSnapshot(rpc), &option)
            .await?
        {
            Response::InstallSnapshot(r) => Ok(r),
            other => Err(RPCError::Network(unexpected(&other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.raft_call(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => Ok(r),
            other => Err(RPCError::Network(unexpected(&other))),
        }
    }
}

/// Makes the engine's per-peer clients.
pub struct Network {
    /// The shared secret every dial proves.
    pub secret: Arc<[u8]>,
    /// Shared with the status view.
    pub contacts: Arc<Contacts>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer::new(
            &node.addr,
            Some(target),
            self.secret.clone(),
            self.contacts.clone(),
        )
    }
}
