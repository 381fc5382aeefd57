//! CPU and memory of the broker under test and of the generator itself,
//! read from /proc (Linux).

use std::time::Instant;

/// Clock ticks per second for /proc/<pid>/stat times (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

/// One reading.
pub struct Sample {
    /// Broker utime+stime in ticks.
    pub broker_ticks: Option<u64>,
    /// Broker resident set in bytes.
    pub broker_rss: Option<u64>,
    /// Generator utime+stime in ticks.
    pub own_ticks: u64,
    #[allow(dead_code)]
    at: Instant,
}

fn ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

impl Sample {
    /// Read now.
    pub fn take(pid: Option<u32>) -> Sample {
        Sample {
            broker_ticks: pid.and_then(|p| ticks(&p.to_string())),
            broker_rss: pid.and_then(rss),
            own_ticks: ticks("self").unwrap_or(0),
            at: Instant::now(),
        }
    }
}

/// Broker CPU (fraction of one core) and RSS at the end.
pub fn broker_usage(a: &Sample, b: &Sample, secs: f64) -> Option<(f64, u64)> {
    Some((
        (b.broker_ticks? - a.broker_ticks?) as f64 / TICKS / secs,
        b.broker_rss?,
    ))
}

/// Generator CPU (fraction of one core).
pub fn own_cpu(a: &Sample, b: &Sample, secs: f64) -> f64 {
    (b.own_ticks - a.own_ticks) as f64 / TICKS / secs
}
