//! File descriptors of this process, for `/metrics` and `/api/nodes`. Its
//! resident memory is not read here: the memory-alarm sampler reads it
//! every 250 ms and the handlers report that sample (`Alarms::figures`).

/// Open file descriptors and their limit.
pub(crate) struct Fds {
    /// Descriptors open now.
    pub(crate) open: u64,
    /// The soft limit (`Max open files`).
    pub(crate) max: u64,
}

/// Read the descriptors of this process (Linux /proc; zeros elsewhere).
pub(crate) fn fds() -> Fds {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    Fds {
        open,
        max: max_open_files(&limits),
    }
}

/// The soft limit from the text of /proc/self/limits.
fn max_open_files(limits: &str) -> u64 {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_is_the_fourth_word() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(text), 1024);
        assert_eq!(max_open_files("nothing"), 0);
    }
}
