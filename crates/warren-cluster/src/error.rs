//! The cluster's typed errors.

use thiserror::Error;

/// Why a cluster operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The link's socket failed.
    #[error("cluster link: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded.
    #[error("cluster frame encode: {0}")]
    Encode(serde_json::Error),
    /// A frame could not be decoded (a peer of another version, or a fault).
    #[error("cluster frame decode: {0}")]
    Decode(serde_json::Error),
    /// A frame longer than the link allows.
    #[error("cluster frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    /// The peer did not prove the shared secret (or we could not).
    #[error("the peer does not share this cluster's secret")]
    BadSecret,
    /// The peer does not speak the cluster protocol.
    #[error("not a Warren cluster peer")]
    NotCluster,
    /// The peer answered with a failure.
    #[error("peer: {0}")]
    Remote(String),
    /// A message-link frame made no sense.
    #[error("cluster message link: {0}")]
    Link(&'static str),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The cluster's files could not be read or written.
    #[error("cluster state {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("cluster config: {0}")]
    Config(String),
    /// The consensus engine failed.
    #[error("raft: {0}")]
    Raft(String),
}
