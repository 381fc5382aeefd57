//! The Raft log on disk: one append-only file of CRC-checked frames
//! (`len u32 | crc32 u32 | JSON entry`), fsynced before openraft is told an
//! append is durable, and the vote in its own atomically replaced file.
//! Entries are also kept in memory: the definitions log is short, since
//! snapshots purge it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::AnyError;
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;

use crate::error::ClusterError;
use crate::files::{load_json, save_json};
use crate::types::{NodeId, TypeConfig};

/// The log, shared between the engine's storage handle and its readers.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

fn io_err(e: std::io::Error) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_logs(AnyError::new(&e)))
}

fn frame(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> Result<(), ClusterError> {
    let body = serde_json::to_vec(entry).map_err(ClusterError::Encode)?;
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Every whole, intact frame of `bytes`, and the length they cover (a torn
/// or corrupt tail after a crash is cut there).
fn frames(bytes: &[u8]) -> (Vec<Entry<TypeConfig>>, usize) {
    let (mut out, mut at) = (Vec::new(), 0);
    while bytes.len() - at >= 8 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(e) = serde_json::from_slice(body) else {
            break;
        };
        out.push(e);
        at += 8 + len;
    }
    (out, at)
}

impl LogStore {
    /// Open (or create) the log in `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, ClusterError> {
        let state = |source| ClusterError::State {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(state)?;
        let path = dir.join("log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(state)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(state)?;
        let (list, good) = frames(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                "cluster log: {} torn or corrupt tail bytes cut",
                bytes.len() - good
            );
            file.set_len(good as u64).map_err(state)?;
        }
        let purged: Option<LogId<NodeId>> = load_json(&dir.join("purged"))?.flatten();
        let entries = list
            .into_iter()
            .filter(|e| Some(e.log_id.index) > purged.map(|p| p.index))
            .map(|e| (e.log_id.index, e))
            .collect();
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                vote: load_json(&dir.join("vote"))?.flatten(),
                committed: load_json(&dir.join("committed"))?.flatten(),
                dir: dir.to_path_buf(),
                file,
                entries,
                purged,
            })),
        })
    }
}

impl Inner {
    /// Write the whole log anew (after a truncate or a purge, both rare).
    fn rewrite(&mut self) -> Result<(), ClusterError> {
        let mut bytes = Vec::new();
        for e in self.entries.values() {
            frame(e, &mut bytes)?;
        }
        let path = self.dir.join("log");
        crate::files::write_atomic(&path, &bytes, true)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| ClusterError::State {
                path: path.display().to_string(),
                source,
            })?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        save_json(&inner.dir.join("vote"), &Some(vote), true)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not fsynced: losing it only means re-learning it from the leader.
        let mut inner = self.inner.lock();
        save_json(&inner.dir.join("committed"), &committed, false)
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock();
        let mut bytes = Vec::new();
        let mut batch = Vec::new();
        for e in entries {
            frame(&e, &mut bytes).map_err(|err| {
                StorageError::from(StorageIOError::write_logs(AnyError::new(&err)))
            })?;
            batch.push(e);
        }
        let written = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(io_err(e));
        }
        for e in batch {
            inner.entries.insert(e.log_id.index, e);
        }
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        inner.entries.split_off(&log_id.index);
        inner
            .rewrite()
            .map_err(|e| StorageError::from(StorageIOError::write_logs(AnyError::new(&e))))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        save_json(&inner.dir.join("purged"), &Some(log_id), true)
            .map_err(|e| StorageError::from(StorageIOError::write_logs(AnyError::new(&e))))?;
        inner.purged = Some(log_id);
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        inner
            .rewrite()
            .map_err(|e| StorageError::from(StorageIOError::write_logs(AnyError::new(&e))))
    }
}

/// How many leading bytes of a log file are whole, intact frames (the rest
/// is a torn or corrupt tail that start-up cuts). For fuzzing the scan.
pub fn intact_len(bytes: &[u8]) -> usize {
    frames(bytes).1
}

#[cfg(test)]
mod tests;
