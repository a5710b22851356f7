//! Connection slots: overall and per client address. A client over its share gets a clear 503
//! naming the limit instead of a hang, and one busy address cannot starve the others.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

#[derive(Debug)]
pub struct Limits {
    total: AtomicUsize,
    per_client: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_client: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Total(usize),
    PerClient(usize),
}

/// Held for as long as a client connection (or the tunnel it became) lives.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Limits> {
        Arc::new(Limits {
            total: AtomicUsize::new(0),
            per_client: DashMap::new(),
            max_total,
            max_per_client,
        })
    }

    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, LimitHit> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Total(self.max_total));
        }
        let mut n = self.per_client.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::PerClient(self.max_per_client));
        }
        *n += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        // Remove the entry at zero so the map does not keep every address ever seen.
        self.limits.per_client.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total() {
        let l = Limits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.acquire(a).unwrap();
        let _s2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), LimitHit::PerClient(2));
        let _s3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), LimitHit::Total(3));
        drop(s1);
        let _s4 = l.acquire(b).unwrap();
        assert_eq!(l.per_client.len(), 2);
    }
}
