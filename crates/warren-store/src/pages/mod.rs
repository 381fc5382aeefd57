//! Paged-out queue tails: where a queue puts the messages beyond its
//! in-memory window, so that a backlog costs disk rather than RAM.
//!
//! Each queue that pages gets a [`Spill`]: a directory of numbered segment
//! files written sequentially at the tail and read sequentially at the
//! head, each file deleted as soon as its last record has been read back.
//! Records are opaque bytes (the core encodes its messages); this crate
//! only frames them.
//!
//! Page files are a cache, not a source of truth. Persistent messages are
//! also in the message log (which is what a publisher confirm waits for),
//! so the page directory is wiped at start-up: paged transient messages
//! are dropped on restart as RabbitMQ drops them, and persistent ones come
//! back from the log. Nothing here is fsynced.
//!
//! Files: `mod.rs` the per-broker directory and options, [`spill`] one
//! queue's files.

mod spill;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use spill::{Chunk, Spill};

use crate::StoreError;

/// How much of a queue stays in memory before its tail goes to disk.
#[derive(Clone, Copy, Debug)]
pub struct PageOptions {
    /// Ready messages a queue keeps in memory before paging the rest.
    pub window_messages: usize,
    /// Ready body bytes a queue keeps in memory before paging the rest.
    pub window_bytes: usize,
    /// Page files roll over at this size.
    pub segment_size: u64,
}

impl Default for PageOptions {
    fn default() -> Self {
        PageOptions {
            window_messages: 2048,
            window_bytes: 8 << 20,
            segment_size: 16 << 20,
        }
    }
}

/// The page directory of one broker (`<store.dir>/pages`).
pub struct Pages {
    root: PathBuf,
    next: AtomicU64,
    opts: PageOptions,
    /// Bytes in page files (written and not yet deleted), for metrics.
    disk_bytes: AtomicU64,
}

impl Pages {
    /// Take `root` for paging, dropping whatever an earlier run left there
    /// (the files are moved aside at once and deleted by a background
    /// thread, so a large leftover does not delay start-up).
    pub fn open(root: &Path, opts: PageOptions) -> Result<Arc<Pages>, StoreError> {
        remove_old_asides(root);
        if root.exists() {
            let aside = unused_sibling(root);
            fs::rename(root, &aside).map_err(|e| StoreError::io(root, e))?;
            remove_in_background(aside);
        }
        fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        Ok(Arc::new(Pages {
            root: root.to_path_buf(),
            next: AtomicU64::new(1),
            opts,
            disk_bytes: AtomicU64::new(0),
        }))
    }

    /// The window and segment sizes.
    pub fn options(&self) -> &PageOptions {
        &self.opts
    }

    /// A new, empty spill; its directory is made when it first writes.
    pub fn spill(self: &Arc<Self>) -> Spill {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Spill::new(self.clone(), self.root.join(format!("q{n:08}")))
    }

    /// Bytes currently in page files.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    fn add_disk(&self, n: u64) {
        self.disk_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_disk(&self, n: u64) {
        self.disk_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A name beside `root` that nothing uses: `pages.old-N`. A leftover from a
/// run killed while its remover worked (a broker running as PID 1 in a
/// container gets the same pid every time) must not block start-up.
fn unused_sibling(root: &Path) -> PathBuf {
    (0u64..)
        .map(|n| root.with_extension(format!("old-{}-{n}", std::process::id())))
        .find(|p| !p.exists())
        .expect("some name is free")
}

/// Delete, in the background, what earlier runs moved aside and did not
/// finish deleting.
fn remove_old_asides(root: &Path) {
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return;
    };
    let prefix = format!("{}.old-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            remove_in_background(e.path());
        }
    }
}

/// Delete a directory tree off the caller's thread: a queue deleted with
/// gigabytes paged out must not hold its lock (or start-up) while the
/// filesystem frees them.
fn remove_in_background(dir: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("warren-pages-rm".into())
        .spawn(move || {
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove page directory {}: {e}", dir.display());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the page-file remover: {e}");
    }
}
