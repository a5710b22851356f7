//! File descriptors. The process raises its soft `RLIMIT_NOFILE` to the hard limit at start:
//! the usual soft default (1024) is far below what `gateway.max_connections` needs. The admin
//! listener may then hold only a share of them, so a flood of admin connections can never take
//! the descriptors the proxy needs for vendor calls (issue 15: 19,990 idle admin connections
//! stopped the proxy accepting).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The admin listener holds at most one descriptor in this many; the rest is the proxy's.
pub const ADMIN_SHARE_DIVISOR: u64 = 10;

/// Raise the soft descriptor limit to the hard one. Returns the soft limit in force afterwards
/// (`None`: unlimited).
pub fn raise_nofile() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one for descriptors (the kernel caps it at
    // `nr_open`): keep the soft limit as it is.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, current, maximum, "cannot raise the file descriptor limit to the hard limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The most connections the admin listener may hold: its configured cap, but never more than
/// its share of the descriptor limit `nofile`.
pub fn admin_cap(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        None => configured,
        Some(n) => {
            let share = usize::try_from(n / ADMIN_SHARE_DIVISOR).unwrap_or(usize::MAX);
            configured.min(share.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_share_bounds_the_configured_cap() {
        assert_eq!(admin_cap(256, Some(1024)), 102);
        assert_eq!(admin_cap(256, Some(1_048_576)), 256);
        assert_eq!(admin_cap(256, None), 256);
        assert_eq!(admin_cap(256, Some(5)), 1);
    }
}
