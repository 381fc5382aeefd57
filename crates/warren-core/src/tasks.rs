//! Spawn-once background tasks. A queue runs at most one task of each kind
//! (its `x-expires` timer, its TTL sweeper, its dead-letter drain); a flag
//! claimed with one atomic swap decides who spawns it, so the publish path
//! pays a swap, never a lock.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

/// One background task slot: free, or claimed by a running task.
#[derive(Debug, Default)]
pub(crate) struct TaskSlot(AtomicBool);

/// What [`TaskSlot::spawn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spawn {
    /// A task of this slot was already running.
    Running,
    /// A new task was spawned.
    Started,
    /// No tokio runtime here, or the task could not be built: the slot
    /// stays free.
    Unable,
}

impl TaskSlot {
    /// Claim the slot and spawn the task `make` builds on the current tokio
    /// runtime, unless one already runs. `make` is called only after the
    /// claim succeeded and a runtime exists; `None` from it gives up.
    pub(crate) fn spawn<F>(&self, make: impl FnOnce() -> Option<F>) -> Spawn
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.0.swap(true, Ordering::AcqRel) {
            return Spawn::Running;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.release();
            return Spawn::Unable;
        };
        let Some(task) = make() else {
            self.release();
            return Spawn::Unable;
        };
        rt.spawn(task);
        Spawn::Started
    }

    /// The running task ends: free the slot.
    pub(crate) fn release(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// The running task is about to end: free the slot, then, if work came
    /// in meanwhile (`more`), claim it back. True means the caller keeps
    /// the slot and must go on; false, it has ended (or another task took
    /// over).
    pub(crate) fn release_unless(&self, more: impl FnOnce() -> bool) -> bool {
        self.release();
        more() && !self.0.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_runtime_the_slot_stays_free() {
        let s = TaskSlot::default();
        assert_eq!(s.spawn(|| Some(async {})), Spawn::Unable);
        assert!(!s.0.load(Ordering::Acquire));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_the_first_claim_spawns() {
        let s = TaskSlot::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert_eq!(
            s.spawn(|| Some(async move {
                let _ = tx.send(());
            })),
            Spawn::Started
        );
        assert_eq!(
            s.spawn(|| -> Option<std::future::Ready<()>> { unreachable!("slot is claimed") }),
            Spawn::Running
        );
        rx.await.expect("task ran");
        assert!(!s.release_unless(|| false), "no more work: slot freed");
        assert!(s.release_unless(|| true), "more work: slot claimed back");
        assert!(s.0.load(Ordering::Acquire));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_that_cannot_be_built_frees_the_slot() {
        let s = TaskSlot::default();
        assert_eq!(s.spawn(|| None::<std::future::Ready<()>>), Spawn::Unable);
        assert_eq!(s.spawn(|| Some(async {})), Spawn::Started);
    }
}
