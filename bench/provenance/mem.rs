//! The ledger as two in-memory maps, for the benchmarks that measure the fingerprints and the
//! matcher apart from the embedded ledger's storage (`accuracy.rs`, `speed.rs`).

use std::collections::HashMap;

use aigate::provenance::scan::{Lookup, Response};

/// A response's id is its index in `entries`.
#[derive(Default)]
pub struct Mem {
    pub by_hash: HashMap<u64, Vec<u32>>,
    pub entries: Vec<Response>,
}

impl Lookup for Mem {
    fn responses(&self, hash: u64, out: &mut Vec<u64>) -> anyhow::Result<()> {
        if let Some(ids) = self.by_hash.get(&hash) {
            out.extend(ids.iter().map(|&i| u64::from(i)));
        }
        Ok(())
    }
    fn response(&self, id: u64) -> anyhow::Result<Option<Response>> {
        Ok(self.entries.get(id as usize).cloned())
    }
}
