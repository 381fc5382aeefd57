//! The definitions state machine: each committed command is applied to this
//! node's broker, in log order. What was applied is recorded beside the
//! broker's own definitions file, so a restart replays only the rest.
//! A snapshot is the broker's durable definitions.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::AnyError;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use warren_core::Broker;
use warren_store::Definitions;

use crate::error::ClusterError;
use crate::files::{load_json, save_json};
use crate::types::{Applied, Command, Member, NodeId, TypeConfig};

/// What the state machine records of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    /// The founding import has been applied; later ones are ignored, so the
    /// first leader's definitions win once.
    imported: bool,
}

/// A snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

/// The state machine over this node's broker.
pub struct StateMachine {
    broker: Arc<Broker>,
    dir: PathBuf,
    progress: Progress,
    flusher: Arc<Flusher>,
}

/// How long the flusher waits for more applied changes before it writes,
/// so a burst of changes costs one write.
const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Writes the broker's definitions and then the progress they contain, off
/// the apply path: a change is answered once applied in memory, since the
/// Raft log already holds it durably on a majority; a crash before the
/// write only means replaying it at start-up.
struct Flusher {
    pending: parking_lot::Mutex<Option<Progress>>,
    wake: tokio::sync::Notify,
}

impl Flusher {
    fn request(&self, p: Progress) {
        *self.pending.lock() = Some(p);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>, broker: Arc<Broker>, dir: PathBuf) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(FLUSH_DELAY).await;
            let Some(p) = self.pending.lock().take() else {
                continue;
            };
            let (broker, path) = (broker.clone(), dir.join("applied"));
            let saved = tokio::task::spawn_blocking(move || {
                // Definitions first: the progress file never runs ahead of them.
                broker.flush_definitions();
                save_json(&path, &p, false)
            })
            .await;
            if let Ok(Err(e)) = saved {
                tracing::error!("cluster progress not saved: {e}");
            }
        }
    }
}

impl StateMachine {
    /// Open the state machine's records in `dir`.
    pub fn open(broker: Arc<Broker>, dir: &Path) -> Result<StateMachine, ClusterError> {
        let progress = load_json(&dir.join("applied"))?.unwrap_or_default();
        let flusher = Arc::new(Flusher {
            pending: parking_lot::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        });
        tokio::spawn(flusher.clone().run(broker.clone(), dir.to_path_buf()));
        Ok(StateMachine {
            broker,
            dir: dir.to_path_buf(),
            progress,
            flusher,
        })
    }

    /// True once the founding import is applied.
    pub fn imported(dir: &Path) -> bool {
        load_json::<Progress>(&dir.join("applied"))
            .ok()
            .flatten()
            .is_some_and(|p| p.imported)
    }

    // The error type is openraft's, returned as the storage traits require.
    #[allow(clippy::result_large_err)]
    fn save(&self) -> Result<(), StorageError<NodeId>> {
        save_json(&self.dir.join("applied"), &self.progress, false)
            .map_err(|e| StorageError::from(StorageIOError::write_state_machine(AnyError::new(&e))))
    }

    fn apply_command(&mut self, cmd: &Command) {
        match cmd {
            Command::Change(c) => self.broker.apply_change(c),
            Command::Import(defs) if !self.progress.imported => {
                self.broker.apply_import(defs);
                self.progress.imported = true;
            }
            Command::Import(_) => {}
        }
    }
}

/// A snapshot being built: the definitions and progress taken together on
/// the state machine's task, so the data is exactly the state at its index
/// even if more changes are applied while it is written.
pub struct Builder {
    defs: Definitions,
    progress: Progress,
    dir: PathBuf,
}

fn snapshot_err(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(e)))
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = serde_json::to_vec(&self.defs).map_err(|e| snapshot_err(&e))?;
        let applied = self.progress.applied;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: self.progress.membership.clone(),
            snapshot_id: applied.map_or("0-0".into(), |l| {
                format!("{}-{}", l.leader_id.term, l.index)
            }),
        };
        let stored = Stored {
            meta: meta.clone(),
            data: data.clone(),
        };
        save_json(&self.dir.join("snapshot"), &stored, true).map_err(|e| snapshot_err(&e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        Ok((self.progress.applied, self.progress.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            match &e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => self.apply_command(cmd),
                EntryPayload::Membership(m) => {
                    tracing::info!("cluster membership now {m}");
                    self.progress.membership = StoredMembership::new(Some(e.log_id), m.clone());
                }
            }
            self.progress.applied = Some(e.log_id);
            out.push(Applied);
        }
        self.flusher.request(self.progress.clone());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            defs: self.broker.definitions(),
            progress: self.progress.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let defs: Definitions = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        tracing::info!("installing cluster snapshot {}", meta.snapshot_id);
        self.broker.apply_import(&defs);
        self.broker.flush_definitions();
        self.progress.applied = meta.last_log_id;
        self.progress.membership = meta.last_membership.clone();
        self.progress.imported = true;
        self.save()?;
        let stored = Stored {
            meta: meta.clone(),
            data,
        };
        save_json(&self.dir.join("snapshot"), &stored, true).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored: Option<Stored> = load_json(&self.dir.join("snapshot")).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
        })?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
