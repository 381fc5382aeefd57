//! Joining the cluster at start-up, when `[cluster]` names a listener.

use std::sync::Arc;
use std::time::Duration;

use warren_cluster::{Cluster, ClusterConfig};
use warren_core::Broker;

use crate::settings::Settings;
use crate::StartError;

/// Start this node's part of the cluster; `None` when clustering is off
/// (the default: a single node opens no cluster listener).
pub async fn start(
    settings: &Settings,
    broker: &Arc<Broker>,
) -> Result<Option<Arc<Cluster>>, StartError> {
    let c = &settings.cluster;
    if c.bind.is_empty() {
        return Ok(None);
    }
    let secret = read_secret(&c.secret_file)?;
    let advertise = if c.advertise.is_empty() {
        c.bind.clone()
    } else {
        c.advertise.clone()
    };
    let cfg = ClusterConfig {
        name: c.name.clone(),
        node_name: if c.node_name.is_empty() {
            format!("warren@{advertise}")
        } else {
            c.node_name.clone()
        },
        bind: c.bind.clone(),
        seeds: c
            .seeds
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        advertise,
        secret,
        dir: settings.store.dir.join("cluster"),
        heartbeat: Duration::from_millis(c.heartbeat_ms),
        election_timeout: Duration::from_millis(c.election_timeout_ms),
        commit_timeout: Duration::from_millis(c.commit_timeout_ms),
        snapshot_logs: c.snapshot_logs,
    };
    Ok(Some(Cluster::start(cfg, broker.clone()).await?))
}

/// The shared secret: the file's content without surrounding whitespace.
fn read_secret(path: &str) -> Result<Vec<u8>, StartError> {
    let err = |why: String| StartError::Cluster(warren_cluster::ClusterError::Config(why));
    if path.is_empty() {
        return Err(err(
            "cluster.bind is set but cluster.secret_file is not".into()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("secret file {path}: {e}")))?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(err(format!(
            "secret in {path} is shorter than 16 characters"
        )));
    }
    Ok(secret.as_bytes().to_vec())
}
