//! Resource alarms, as RabbitMQ raises them: while memory use is above the
//! high watermark or free disk space below its limit, publishers are
//! blocked (their sockets are not read) and consumers keep flowing, so the
//! backlog that caused the alarm can drain. The sampling of memory and disk
//! lives with the binary; this is the shared state every adapter watches.
//! It is also the one reading of the process's resident memory: the
//! management API reports the sampler's latest figure instead of reading
//! /proc itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

/// The resources an alarm can be raised for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Memory use above the high watermark.
    Memory,
    /// Free disk space below the limit.
    Disk,
}

impl Resource {
    /// The reason RabbitMQ gives in `connection.blocked`.
    pub fn reason(self) -> &'static str {
        match self {
            Resource::Memory => "low on memory",
            Resource::Disk => "low on disk",
        }
    }
}

/// Which alarms are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlarmSet {
    /// The memory alarm.
    pub memory: bool,
    /// The disk alarm.
    pub disk: bool,
}

impl AlarmSet {
    /// True when any alarm is on: publishers must be blocked.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The `connection.blocked` reason for the alarms that are on.
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory and disk",
            (true, false) => Resource::Memory.reason(),
            _ => Resource::Disk.reason(),
        }
    }
}

/// Alarm state and the figures behind it, shared by the sampler, the
/// adapters (which block publishers) and the management API (which reports
/// them as RabbitMQ's `/api/nodes` does).
pub struct Alarms {
    on: AtomicBool,
    state: watch::Sender<AlarmSet>,
    /// The latest RSS sample (bytes), for the alarm, `/api/nodes` and `/metrics`.
    mem_used: AtomicU64,
    mem_limit: AtomicU64,
    disk_free: AtomicU64,
    disk_limit: AtomicU64,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            on: AtomicBool::new(false),
            state: watch::Sender::new(AlarmSet::default()),
            mem_used: AtomicU64::new(0),
            mem_limit: AtomicU64::new(u64::MAX),
            disk_free: AtomicU64::new(u64::MAX),
            disk_limit: AtomicU64::new(0),
        }
    }
}

/// A snapshot of the figures, for reports.
#[derive(Clone, Copy, Debug)]
pub struct AlarmFigures {
    /// Bytes of memory in use (resident set).
    pub mem_used: u64,
    /// The high watermark in bytes.
    pub mem_limit: u64,
    /// Free bytes on the data directory's filesystem.
    pub disk_free: u64,
    /// The free-space limit in bytes.
    pub disk_limit: u64,
    /// Which alarms are on.
    pub alarms: AlarmSet,
}

impl Alarms {
    /// True while any alarm is on; one relaxed load, cheap enough for the
    /// read loop to ask per frame.
    pub fn blocking(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Which alarms are on now.
    pub fn current(&self) -> AlarmSet {
        *self.state.borrow()
    }

    /// A receiver that wakes on every change of the alarm set.
    pub fn subscribe(&self) -> watch::Receiver<AlarmSet> {
        self.state.subscribe()
    }

    /// Record a memory sample; raises or clears the memory alarm.
    pub fn record_memory(&self, used: u64, limit: u64) {
        self.mem_used.store(used, Ordering::Relaxed);
        self.mem_limit.store(limit, Ordering::Relaxed);
        self.set(Resource::Memory, used > limit, used, limit);
    }

    /// Record a disk sample; raises or clears the disk alarm.
    pub fn record_disk(&self, free: u64, limit: u64) {
        self.disk_free.store(free, Ordering::Relaxed);
        self.disk_limit.store(limit, Ordering::Relaxed);
        self.set(Resource::Disk, free < limit, free, limit);
    }

    fn set(&self, r: Resource, on: bool, value: u64, limit: u64) {
        let changed = self.state.send_if_modified(|s| {
            let slot = match r {
                Resource::Memory => &mut s.memory,
                Resource::Disk => &mut s.disk,
            };
            let changed = std::mem::replace(slot, on) != on;
            // Stored before the watchers are woken, so that a woken
            // connection sees the new state in `blocking()`.
            self.on.store(s.any(), Ordering::Release);
            changed
        });
        if !changed {
            return;
        }
        match (r, on) {
            (Resource::Memory, true) => tracing::warn!(
                used = value,
                limit,
                "memory resource limit alarm set: memory use is above the high watermark; publishers are blocked"
            ),
            (Resource::Memory, false) => {
                tracing::info!(used = value, limit, "memory resource limit alarm cleared")
            }
            (Resource::Disk, true) => tracing::warn!(
                free = value,
                limit,
                "disk resource limit alarm set: free disk space is below the limit; publishers are blocked"
            ),
            (Resource::Disk, false) => {
                tracing::info!(free = value, limit, "disk resource limit alarm cleared")
            }
        }
    }

    /// The figures for `/api/nodes` and `/metrics`.
    pub fn figures(&self) -> AlarmFigures {
        AlarmFigures {
            mem_used: self.mem_used.load(Ordering::Relaxed),
            mem_limit: self.mem_limit.load(Ordering::Relaxed),
            disk_free: self.disk_free.load(Ordering::Relaxed),
            disk_limit: self.disk_limit.load(Ordering::Relaxed),
            alarms: self.current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_rise_and_clear_and_wake_watchers() {
        let a = Alarms::default();
        let mut rx = a.subscribe();
        a.record_memory(10, 100);
        assert!(!a.blocking());
        assert!(!rx.has_changed().unwrap());
        a.record_memory(101, 100);
        assert!(a.blocking());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().reason(), "low on memory");
        a.record_disk(5, 10);
        assert_eq!(a.current().reason(), "low on memory and disk");
        a.record_memory(50, 100);
        assert!(a.blocking(), "disk alarm still on");
        a.record_disk(50, 10);
        assert!(!a.blocking());
        let f = a.figures();
        assert_eq!(
            (f.mem_used, f.mem_limit, f.disk_free, f.disk_limit),
            (50, 100, 50, 10)
        );
    }
}
