//! The cluster link's frames: a 4-byte big-endian length, then one JSON
//! document. Definitions traffic is small and rare, so a self-describing
//! encoding that an operator can read in a capture is worth its bytes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClusterError;
use crate::types::{Command, Member, NodeId, TypeConfig};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// The largest frame either side accepts: a snapshot chunk or a batch of
/// entries stays far below it; anything bigger is a fault, not data.
pub const MAX_FRAME: usize = 64 << 20;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a proposal to the leader.
    Propose(Command),
    /// A node asks to be added to the group (join_cluster).
    Join(NodeId, Member),
    /// Remove a member (forget_cluster_node), asked of the leader.
    Leave(NodeId),
    /// The leader's view of the cluster.
    Status,
    /// An event for this node to act on (see `Notice`).
    Notice(warren_core::replicate::Notice),
    /// Turn this connection into the named node's message link (binary
    /// frames from here on; see `link`).
    Link(String),
}

/// The answer to a [`Request`]; errors travel as text, since the asking
/// side only reports or retries them.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to AppendEntries.
    AppendEntries(AppendEntriesResponse<NodeId>),
    /// Answer to Vote.
    Vote(VoteResponse<NodeId>),
    /// Answer to InstallSnapshot.
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
    /// The proposal is committed at this log index.
    Committed(u64),
    /// The membership change is done.
    Joined,
    /// Answer to Status.
    Status(Box<warren_core::replicate::ClusterStatus>),
    /// The receiver is not the leader; the leader's address if known.
    NotLeader(Option<String>),
    /// The request failed on the receiver.
    Failed(String),
}

/// Write one frame.
pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> Result<(), ClusterError> {
    let body = serde_json::to_vec(msg).map_err(ClusterError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(ClusterError::FrameTooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Decode a frame's body as a request, as the listening side does (the
/// entry point for fuzzing the link's decoder).
pub fn decode_request(body: &[u8]) -> Result<Request, ClusterError> {
    serde_json::from_slice(body).map_err(ClusterError::Decode)
}

/// Read one frame; a length over [`MAX_FRAME`] is refused before any
/// allocation.
pub async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<T, ClusterError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ClusterError::FrameTooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(ClusterError::Decode)
}
