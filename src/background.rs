//! Threads whose work no call waits for (the audit log's flush, fsync and housekeeping helpers,
//! the provenance capture workers) can run at the lowest priority, so that on a busy core they
//! take the time the data path leaves idle instead of preempting it (docs/performance.md on the
//! audit threads, docs/provenance.md "Capture cost" on the capture workers).

/// Nice 19 for the calling thread only. Linux keeps a nice value per thread; elsewhere it is the
/// whole process's, so this does nothing there and says so.
pub fn lowest_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::nice(19)
            .map(drop)
            .map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a thread's own priority is only set on Linux",
        ))
    }
}
