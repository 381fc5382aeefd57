//! Samples the process's memory and the data directory's free disk space
//! and feeds [`Alarms`], as RabbitMQ's vm_memory_monitor and
//! rabbit_disk_monitor do. Resident memory is the measure (RabbitMQ's `rss`
//! strategy on Linux); the limit is a fraction of RAM or of the cgroup limit.
//! This is the broker's only RSS reader: each sample is recorded in
//! [`Alarms`], where the management API reads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use warren_core::alarm::Alarms;

use crate::settings::{Disk, Memory};

/// How often memory is sampled.
const MEMORY_INTERVAL: Duration = Duration::from_millis(250);
/// Disk is sampled every this many memory samples (once a second).
const DISK_EVERY: u32 = 4;
/// cgroup v1 reports "no limit" as a huge number.
const NO_CGROUP_LIMIT: u64 = 1 << 60;

/// The memory the broker may use: RAM, or the cgroup limit when lower.
pub fn available_memory() -> u64 {
    let ram = meminfo_total().unwrap_or(u64::MAX);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
    .filter(|v| *v < NO_CGROUP_LIMIT)
    .min()
    .unwrap_or(u64::MAX);
    ram.min(cgroup)
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The high watermark in bytes for these settings.
pub fn memory_limit(m: &Memory, available: u64) -> u64 {
    match m.high_watermark_bytes {
        Some(b) => b,
        None => (available as f64 * m.high_watermark.clamp(0.0, 1.0)) as u64,
    }
}

/// Resident set size of this process, in bytes.
pub fn resident_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Free bytes available to the broker on the filesystem holding `dir`.
pub fn disk_free(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Sample now (so that an alarm is on before the first client connects),
/// then keep sampling in a background task.
pub fn spawn(alarms: Arc<Alarms>, memory: &Memory, disk: &Disk, dir: PathBuf) {
    let available = available_memory();
    let mem_limit = memory_limit(memory, available);
    let disk_limit = disk.free_limit_bytes;
    tracing::info!(
        "memory high watermark set to {} MiB of {} MiB available",
        mem_limit >> 20,
        available >> 20
    );
    tracing::info!("disk free limit set to {disk_limit} bytes");
    sample_disk(&alarms, &dir, disk_limit);
    sample_memory(&alarms, mem_limit);
    // Weak: the task ends with the broker (tests start several in one process).
    let alarms = Arc::downgrade(&alarms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMORY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u32;
        loop {
            n = n.wrapping_add(1);
            tick.tick().await;
            let Some(alarms) = alarms.upgrade() else {
                return;
            };
            sample_memory(&alarms, mem_limit);
            if n.is_multiple_of(DISK_EVERY) {
                sample_disk(&alarms, &dir, disk_limit);
            }
        }
    });
}

fn sample_memory(alarms: &Alarms, limit: u64) {
    if let Some(used) = resident_memory() {
        alarms.record_memory(used, limit);
    }
}

fn sample_disk(alarms: &Alarms, dir: &Path, limit: u64) {
    match disk_free(dir) {
        Ok(free) => alarms.record_disk(free, limit),
        Err(e) => tracing::warn!("cannot read free disk space of {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_plausible() {
        let rss = resident_memory().unwrap();
        assert!(rss > 1 << 20 && rss < available_memory());
        assert!(disk_free(Path::new(".")).unwrap() > 0);
        let m = Memory {
            high_watermark: 0.4,
            high_watermark_bytes: None,
        };
        assert_eq!(memory_limit(&m, 1000), 400);
        let m = Memory {
            high_watermark_bytes: Some(7),
            ..m
        };
        assert_eq!(memory_limit(&m, 1000), 7);
    }
}
