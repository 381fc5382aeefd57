//! Warren's cluster: nodes that share definitions through one Raft group
//! (openraft), over a cluster link of our own that proves a shared secret.
//!
//! The engine is behind the core's [`warren_core::replicate::Replicate`]
//! trait: the core proposes a [`warren_core::replicate::Change`] and waits;
//! this crate commits it through the group and applies committed changes to
//! the broker on every node. Another engine would implement the same trait.

#![deny(missing_docs)]

mod config;
mod error;
mod files;
mod handshake;
mod link;
mod log_store;
mod network;
mod node;
mod server;
mod state_machine;
mod status;
mod types;
mod watch;
mod wire;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use node::Cluster;
pub use types::{node_id, NodeId};

/// The decoders of what arrives from outside (the link's frames, the log
/// file at start-up), for fuzzing.
pub mod decode {
    pub use crate::link::frame::{
        decode as decode_link_frame, message as link_message, split as split_link_frame,
        Frame as LinkFrame,
    };
    pub use crate::log_store::intact_len;
    pub use crate::wire::{decode_request, MAX_FRAME};
}
