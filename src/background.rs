//! Threads whose work no call waits for (the audit log's flush, fsync and housekeeping helpers,
//! the provenance capture workers) can run at the lowest priority, so that on a busy core they
//! take the time the data path leaves idle instead of preempting it (docs/performance.md on the
//! audit threads, docs/provenance.md "Capture cost" on the capture workers and the ledger's
//! store).
//!
//! Two levels. Nice 19 ([`lowest_priority`]) for the audit log's helpers: a call's record waits
//! in their queue, so they must keep a share of a saturated core. `SCHED_IDLE`
//! ([`idle_priority`]) for capture: nothing waits for it, and its queue drops what it cannot
//! keep. When a forwarding thread wakes, a nice-19 thread on the core can keep it for the rest
//! of its time slice (the scheduler protects a running thread's slice); a `SCHED_IDLE` one is
//! preempted at the wake-up. In `bench/capture.sh` that took capture-on throughput from
//! 0.91–0.94 of capture off to 0.95–0.97 (docs/provenance.md, "Capture cost").

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

/// `SCHED_IDLE` for the calling thread only (Linux), and nice 19 (which that policy ignores, but
/// where `SCHED_IDLE` is refused, by a seccomp filter say, the thread still gets the lowest nice
/// value). The error says which step failed.
pub fn idle_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        // The crate sets the policy, then the nice value to the policy's minimum (0 for
        // SCHED_IDLE): nice 19 comes after.
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        lowest_priority()?;
        idle.map_err(|e| {
            // An errno reads better as the system's message ("Operation not permitted").
            let why = match e {
                thread_priority::Error::OS(code) => {
                    std::io::Error::from_raw_os_error(code).to_string()
                }
                other => other.to_string(),
            };
            std::io::Error::other(format!(
                "SCHED_IDLE refused ({why}); the thread is at nice 19"
            ))
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        lowest_priority()
    }
}

/// Runs `f` on a thread of its own under [`idle_priority`] and returns what it returns. On
/// Linux a thread starts with its creator's policy and nice value, so the threads `f` starts
/// run there too: that is how the embedded ledger's store (whose flush, compaction and monitor
/// threads it starts when it opens) gets it. If the priority cannot be set, `f` runs anyway, and
/// the error is returned beside its result.
pub fn at_idle_priority<T: Send>(f: impl FnOnce() -> T + Send) -> (T, std::io::Result<()>) {
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            let lowered = idle_priority();
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
    /// The calling thread's nice value and scheduling policy (fields 19 and 41 of its stat; its
    /// name has no spaces here; policy 5 is `SCHED_IDLE`, 0 `SCHED_OTHER`).
    fn own() -> (i64, i64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
            .split(' ')
            .collect();
        let field = |n: usize| {
            fields
                .get(n)
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN)
        };
        (field(16), field(38))
    }

    /// `f` and the threads it starts run under `SCHED_IDLE` at nice 19; the caller's priority
    /// and policy are left alone.
    #[test]
    fn threads_started_at_idle_priority_inherit_it() {
        let before = own();
        let ((inside, child), lowered) = super::at_idle_priority(|| {
            let child = std::thread::spawn(own)
                .join()
                .unwrap_or((i64::MIN, i64::MIN));
            (own(), child)
        });
        lowered.unwrap();
        let idle = 5; // SCHED_IDLE
        assert_eq!((inside, child), ((19, idle), (19, idle)));
        assert_eq!(own(), before, "the caller's own priority changed");
    }

    /// The audit log's helpers stay in the normal policy at nice 19.
    #[test]
    fn the_lowest_priority_is_nice_19_in_the_normal_policy() {
        let got = std::thread::spawn(|| super::lowest_priority().map(|()| own()))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(got, (19, 0)); // SCHED_OTHER
    }
}
