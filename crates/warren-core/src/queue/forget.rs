//! A purged or deleted backlog: what was still on disk (the tail left in
//! the message log at start-up, page files holding persistent messages) has
//! its removal logged on a background thread, so a queue deleted with
//! gigabytes in it neither holds its lock nor stalls other queues while its
//! records are read. The log's tail is removed by runs of ids (one record
//! per run, nothing read); page files are read once, for their message ids,
//! and deleted as they are read. Disk comes back as the log's next batch
//! finds its segments dead.
//!
//! A small leftover is logged by the caller itself, before it answers.
//! Until the thread has logged everything, a crash brings the not yet
//! removed messages back (a purge is not waited for on disk, as an ack is
//! not).

use std::sync::Arc;

use parking_lot::Mutex;

use warren_store::{Log, QueueKey};

use super::paged;
use super::ready::{Leftovers, READ_CHUNK};
use super::Queue;

impl Queue {
    /// Log the removal of what a purge or delete left unread (see the
    /// module docs); transient leftovers are simply dropped.
    pub(super) fn forget_later(&self, left: Leftovers) {
        if left.is_empty() {
            return;
        }
        let Some((log, key)) = self.store.clone() else {
            return;
        };
        if left.len() <= INLINE {
            return forget_all(&log, &key, left);
        }
        // Shared so that it is still here if the thread cannot start.
        let job = Arc::new(Mutex::new(Some((log, key, left))));
        let run = |job: &Mutex<Option<(Arc<Log>, QueueKey, Leftovers)>>| {
            if let Some((log, key, left)) = job.lock().take() {
                forget_all(&log, &key, left);
            }
        };
        let theirs = job.clone();
        let spawned = std::thread::Builder::new()
            .name("warren-forget".into())
            .spawn(move || run(&theirs));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to log a purge; logging it here: {e}");
            run(&job);
        }
    }
}

/// Leftovers this small are logged by the caller (off the queue's lock),
/// so that a small purge is in the log before its purge-ok.
const INLINE: usize = 1 << 16;

/// Runs of consecutive ids, each logged as one removal.
struct Runs<'a> {
    log: &'a Log,
    key: &'a QueueKey,
    run: Option<(u64, u64)>,
}

impl Runs<'_> {
    fn add(&mut self, id: u64) {
        match &mut self.run {
            Some((_, end)) if *end == id => *end += 1,
            _ => {
                self.flush();
                self.run = Some((id, id + 1));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((first, end)) = self.run.take() {
            remove(self.log, self.key, first, end);
        }
    }
}

fn remove(log: &Log, key: &QueueKey, first: u64, end: u64) {
    if end == first + 1 {
        log.append_remove(first, key);
    } else {
        log.append_remove_range(first, end, key);
    }
}

fn forget_all(log: &Arc<Log>, key: &QueueKey, left: Leftovers) {
    for tail in left.tails {
        for (first, end) in tail.id_runs() {
            remove(log, key, first, end);
        }
    }
    let mut runs = Runs {
        log,
        key,
        run: None,
    };
    for mut spill in left.spills {
        loop {
            match spill.pop_chunk(READ_CHUNK) {
                Ok(Some(chunk)) => {
                    for rec in chunk.records() {
                        match paged::store_id(&rec) {
                            0 => {}
                            id => runs.add(id),
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(
                        "queue '{}' in vhost '{}': a purged page file cannot be read ({e}); its persistent messages come back at the next restart",
                        key.queue,
                        key.vhost
                    );
                    break;
                }
            }
        }
    }
    runs.flush();
}
