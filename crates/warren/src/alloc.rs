//! The global allocator of the broker binary. jemalloc with background
//! purging by default: after a backlog drains, freed pages go back to the
//! operating system within a couple of seconds, where glibc's malloc kept
//! a 3 GiB peak resident. `--no-default-features --features mimalloc`
//! builds with mimalloc instead, for comparison (docs/architecture.md has
//! the measurements behind the choice).

/// jemalloc, with a background thread that returns dirty pages after one
/// second (jemalloc's default decay is ten seconds, and without the
/// background thread purging happens only when some thread allocates).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc at start-up (`const char *malloc_conf`, prefixed as
/// tikv-jemalloc-sys builds it).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
#[used]
pub static malloc_conf: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0"[0];

/// mimalloc, the alternative measured against jemalloc.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
