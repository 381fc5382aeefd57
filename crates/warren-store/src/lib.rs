//! Durability for Warren: durable definitions (vhosts, users, exchanges,
//! queues, bindings) and the persistent messages of durable queues, with
//! group-commit fsync and recovery after a restart or kill -9.
//!
//! Layout of the data directory:
//! - `LOCK`: held (flock) while a broker runs; a second broker is refused.
//! - `definitions.json`: the durable topology, replaced atomically
//!   (write temp, fsync, rename, fsync directory) on every change.
//! - `messages/NNNNNNNNNN.seg`: the message log (see [`log`]).
//! - `pages/`: queue tails paged out of memory (see [`pages`]); a cache,
//!   cleared at start-up.
//!
//! This crate knows nothing of the routing core; it stores names, ids and
//! bytes. See docs/architecture.md for why this design was chosen.

#![deny(missing_docs)]

pub mod log;
pub mod pages;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use log::{Log, QueueKey, QueueTail, Recovered, Recovery, SyncState};
pub use pages::{PageOptions, Pages};

/// Storage failures, naming the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another broker holds the data directory.
    #[error("data directory {0} is in use by another Warren process (lock file {0}/LOCK is held)")]
    Locked(PathBuf),
    /// definitions.json does not parse.
    #[error("{path}: invalid definitions: {source}")]
    Definitions {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A durable user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    /// Login.
    pub name: String,
    /// RabbitMQ-format salted SHA-256 hash.
    pub password_hash: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A durable exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Type name (may be a plugin type).
    #[serde(rename = "type")]
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments as an AMQP field table, base64.
    pub arguments: String,
}

/// A durable queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments as an AMQP field table, base64.
    pub arguments: String,
    /// The cluster node the queue lives on (none outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

/// A binding between durable ends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingDef {
    /// Vhost.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    /// Binding key.
    pub routing_key: String,
    /// Arguments as an AMQP field table, base64.
    pub arguments: String,
}

/// Everything durable except messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    /// Vhost names.
    pub vhosts: Vec<String>,
    /// Users.
    pub users: Vec<UserDef>,
    /// Durable exchanges (predeclared ones excluded).
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings whose ends are both durable (default-exchange ones excluded).
    pub bindings: Vec<BindingDef>,
    /// Per-vhost user permissions. None in files written before
    /// permissions existed: every user then keeps full rights.
    #[serde(default)]
    pub permissions: Option<Vec<PermissionDef>>,
    /// Per-vhost limits (RabbitMQ's `vhost-limits`: `max-connections`,
    /// `max-queues`) by vhost; absent in files written before limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vhost_limits: BTreeMap<String, LimitsDef>,
    /// Per-user limits (`max-connections`, `max-channels`) by user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_limits: BTreeMap<String, LimitsDef>,
}

/// Limits of one vhost or user by RabbitMQ's names; a negative value means
/// no limit, as in RabbitMQ, and is kept as given.
pub type LimitsDef = BTreeMap<String, i64>;

/// A user's permission in one vhost (RabbitMQ's three expressions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    /// User.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Configure expression.
    pub configure: String,
    /// Write expression.
    pub write: String,
    /// Read expression.
    pub read: String,
}

/// An open data directory.
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// The message log.
    pub log: Arc<Log>,
    /// Where queues page out the tail beyond their in-memory window.
    pub pages: Arc<Pages>,
    defs_write: Mutex<()>,
}

/// What was on disk at start-up.
pub struct Opened {
    /// The store.
    pub store: Arc<Store>,
    /// Durable definitions (None on a fresh directory).
    pub definitions: Option<Definitions>,
    /// Messages recovered from the log.
    pub recovery: Recovery,
}

impl Store {
    /// Lock `dir`, read definitions and recover the message log.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        Self::open_with(dir, PageOptions::default())
    }

    /// [`Store::open`] with the queues' paging window.
    pub fn open_with(dir: &Path, paging: PageOptions) -> Result<Opened, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }
        let defs_path = dir.join("definitions.json");
        let definitions = match fs::read(&defs_path) {
            Ok(b) => {
                Some(
                    serde_json::from_slice(&b).map_err(|source| StoreError::Definitions {
                        path: defs_path.clone(),
                        source,
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io(&defs_path, e)),
        };
        let (log, recovery) = Log::open(&dir.join("messages"))?;
        let pages = Pages::open(&dir.join("pages"), paging)?;
        Ok(Opened {
            store: Arc::new(Store {
                dir: dir.to_path_buf(),
                _lock: lock,
                log,
                pages,
                defs_write: Mutex::new(()),
            }),
            definitions,
            recovery,
        })
    }

    /// Replace definitions.json atomically and durably.
    pub fn save_definitions(&self, defs: &Definitions) -> Result<(), StoreError> {
        let _one_at_a_time = self.defs_write.lock();
        let tmp = self.dir.join("definitions.json.tmp");
        let path = self.dir.join("definitions.json");
        let json = serde_json::to_vec_pretty(defs).expect("definitions serialize");
        let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(&json).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.dir, e))?;
        Ok(())
    }

    /// Stop the writer after flushing what is pending.
    pub fn close(&self) {
        self.log.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(q: &str) -> QueueKey {
        QueueKey {
            vhost: "/".into(),
            queue: q.into(),
        }
    }

    fn wait_synced(log: &Log, seq: u64) {
        let mut rx = log.subscribe();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                rx.wait_for(|s| s.synced >= seq),
            )
            .await
            .expect("synced in time")
            .unwrap();
        });
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempdir();
        let first = Store::open(&dir).unwrap();
        assert!(matches!(Store::open(&dir), Err(StoreError::Locked(_))));
        first.store.close();
    }

    #[test]
    fn messages_survive_and_removed_ones_do_not() {
        let dir = tempdir();
        {
            let o = Store::open(&dir).unwrap();
            let log = &o.store.log;
            let mut last = 0;
            for i in 0..100u64 {
                let id = log.next_id();
                let mut rec = Vec::new();
                log::encode_enqueue(
                    &mut rec,
                    id,
                    &[key("a"), key("b")],
                    "ex",
                    b"keyprops",
                    3,
                    &i.to_be_bytes(),
                );
                last = log.append_enqueue(id, &[key("a"), key("b")], &rec);
                if i % 2 == 0 {
                    log.append_remove(id, &key("a"));
                }
                if i == 1 {
                    log.append_delivered(id, &key("b"));
                }
            }
            log.append_remove(1, &key("b"));
            wait_synced(log, last);
            o.store.close();
        }
        let mut o = Store::open(&dir).unwrap();
        let a = o.recovery.take(&key("a"));
        let b = o.recovery.take(&key("b"));
        assert_eq!(a.len(), 50);
        assert_eq!(b.len(), 99);
        assert!(a.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(a[0].body, Bytes::copy_from_slice(&1u64.to_be_bytes()));
        assert_eq!(&a[0].meta[..], b"keyprops");
        assert!(b.iter().find(|m| m.id == 2).unwrap().redelivered);
        assert!(!b.iter().find(|m| m.id == 3).unwrap().redelivered);
        o.store.close();
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempdir();
        {
            let o = Store::open(&dir).unwrap();
            let log = &o.store.log;
            let mut last = 0;
            for i in 0..10u64 {
                let id = log.next_id();
                let mut rec = Vec::new();
                log::encode_enqueue(&mut rec, id, &[key("q")], "", b"q", 1, &i.to_be_bytes());
                last = log.append_enqueue(id, &[key("q")], &rec);
            }
            wait_synced(log, last);
            o.store.close();
        }
        let seg = dir.join("messages").join("0000000001.seg");
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        let record = n / 10;
        bytes.truncate(n - 5); // torn last record
        bytes[n - record - 10] ^= 0xff; // and garble the one before it
        fs::write(&seg, &bytes).unwrap();
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.recovery.queues[&key("q")].len(), 8);
        assert!(o.recovery.truncated > 0);
        o.store.close();
    }

    #[test]
    fn definitions_round_trip() {
        let dir = tempdir();
        let o = Store::open(&dir).unwrap();
        assert!(o.definitions.is_none());
        let d = Definitions {
            vhosts: vec!["/".into()],
            queues: vec![QueueDef {
                vhost: "/".into(),
                name: "q".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        o.store.save_definitions(&d).unwrap();
        o.store.close();
        drop(o);
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.definitions, Some(d));
        o.store.close();
    }

    #[test]
    fn limits_round_trip_and_older_files_have_none() {
        let old: Definitions = serde_json::from_str(
            r#"{"vhosts":["/"],"users":[],"exchanges":[],"queues":[],"bindings":[]}"#,
        )
        .unwrap();
        assert!(old.vhost_limits.is_empty() && old.user_limits.is_empty());
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("limits"), "no limits, no keys: {json}");
        let dir = tempdir();
        let o = Store::open(&dir).unwrap();
        let mut d = Definitions::default();
        d.vhost_limits.insert(
            "/".into(),
            [
                ("max-connections".to_string(), 3),
                ("max-queues".to_string(), -1),
            ]
            .into(),
        );
        d.user_limits
            .insert("guest".into(), [("max-channels".to_string(), 7)].into());
        o.store.save_definitions(&d).unwrap();
        o.store.close();
        drop(o);
        let o = Store::open(&dir).unwrap();
        assert_eq!(o.definitions, Some(d));
        o.store.close();
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "warren-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
