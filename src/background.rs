//! Threads whose work no call waits for (the audit log's flush, fsync and housekeeping helpers,
//! the provenance capture workers) can run at the lowest priority, so that on a busy core they
//! take the time the data path leaves idle instead of preempting it (docs/performance.md on the
//! audit threads, docs/provenance.md "Capture cost" on the capture workers and the ledger's
//! store).

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

/// Runs `f` on a thread of its own at the lowest priority and returns what it returns. On Linux
/// a thread starts at its creator's nice value, so the threads `f` starts run there too: that is
/// how the embedded ledger's store (whose flush, compaction and monitor threads it starts when it
/// opens) gets it. If the priority cannot be set, `f` runs anyway, at normal priority, and the
/// error is returned beside its result.
pub fn at_lowest_priority<T: Send>(f: impl FnOnce() -> T + Send) -> (T, std::io::Result<()>) {
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            let lowered = lowest_priority();
            (f(), lowered)
        });
        match run.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The calling thread's nice value (field 19 of its stat; its name has no spaces here).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        after_name
            .split(' ')
            .nth(16)
            .and_then(|n| n.parse().ok())
            .unwrap_or(i64::MIN)
    }

    /// `f` and the threads it starts run at nice 19; the caller's priority is left alone.
    #[test]
    fn threads_started_at_the_lowest_priority_inherit_it() {
        let before = own_nice();
        let ((inside, child), lowered) = super::at_lowest_priority(|| {
            let child = std::thread::spawn(own_nice).join().unwrap_or(i64::MIN);
            (own_nice(), child)
        });
        lowered.unwrap();
        assert_eq!((inside, child), (19, 19));
        assert_eq!(own_nice(), before, "the caller's own priority changed");
    }
}
