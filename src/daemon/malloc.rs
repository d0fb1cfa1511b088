//! glibc malloc settings for the long-running daemon (one-shot commands keep the defaults).

/// One malloc arena for every thread. glibc gives each thread that allocates an arena of
/// its own (up to 8 per core) and memory freed in one arena is never reused by another,
/// so a dozen threads that each allocate a little now and then hold a little each: on a
/// server scraping etcd (its detector thread and the scrape thread each ~0.5-1 MiB) one
/// arena measured -0.75 MiB of idle RSS (BENCHMARKS.md, "Idle RSS"). The daemon allocates
/// rarely and seldom from two threads at once, so the shared arena's lock costs nothing
/// measurable.
pub(crate) fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc parameter; it is called before the daemon's
    // threads start.
    unsafe {
        if libc::mallopt(libc::M_ARENA_MAX, 1) != 1 {
            log::debug!("mallopt(M_ARENA_MAX, 1) refused: one arena per thread");
        }
    }
}
