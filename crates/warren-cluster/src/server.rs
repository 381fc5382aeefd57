//! The listening side of the cluster link: each connection proves the
//! secret first, then carries requests one at a time, answered in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::handshake;
use crate::node::Cluster;
use crate::wire::{read_frame, write_frame, Request, Response};

/// A peer that has not proved the secret by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept cluster connections until the process ends.
pub async fn serve(listener: TcpListener, cluster: Arc<Cluster>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("cluster listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &cluster).await {
                tracing::debug!(%peer, "cluster connection ended: {e}");
            }
        });
    }
}

async fn connection(mut s: TcpStream, cluster: &Cluster) -> Result<(), crate::ClusterError> {
    let peer = s.peer_addr()?;
    s.set_nodelay(true)?;
    let proved = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::accept(&mut s, cluster.secret()),
    )
    .await
    .unwrap_or(Err(crate::ClusterError::Timeout("cluster handshake")));
    if let Err(e) = proved {
        tracing::warn!(%peer, "cluster connection refused: {e}");
        return Err(e);
    }
    loop {
        let req: Request = read_frame(&mut s).await?;
        if let Request::Link(from) = req {
            cluster.links().accept(s, from);
            return Ok(());
        }
        let resp = handle(cluster, req).await;
        write_frame(&mut s, &resp).await?;
    }
}

async fn handle(cluster: &Cluster, req: Request) -> Response {
    let raft = cluster.raft();
    match req {
        Request::AppendEntries(rpc) => {
            cluster.saw(rpc.vote.leader_id().voted_for().as_ref());
            match raft.append_entries(rpc).await {
                Ok(r) => Response::AppendEntries(r),
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => Response::Vote(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::InstallSnapshot(rpc) => match raft.install_snapshot(rpc).await {
            Ok(r) => Response::InstallSnapshot(r),
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Propose(cmd) => cluster.propose_here(cmd).await,
        Request::Join(id, member) => cluster.add_member(id, member).await,
        Request::Leave(id) => cluster.remove_member(id).await,
        Request::Status => Response::Status(Box::new(cluster.local_status())),
        Request::Notice(n) => {
            cluster.notice_received(n);
            Response::Joined
        }
        Request::Link(_) => Response::Failed("a message link is not a request".into()),
    }
}
