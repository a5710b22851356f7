//! The audit log: one JSON line per request, tunnel or admin action, hash-chained.
//!
//! `record` is the schema (v1, docs/audit-schema.md), `json` its line, `outcome` what a call's
//! slim outcome leaves to its decision, `chain` the tamper evidence and its verification,
//! `checkpoint` the signed statements that prove a log complete,
//! `verify` the check of a file or a rotated series, `redact` what must never be written,
//! `writer` the batched file sink (and, in `writer/evidence.rs`, checkpoints and rotation),
//! `query` the reviewer's view, `index` the derived per-file block index that lets a selective
//! query skip most of a large log.

mod backwards;
pub mod calls;
pub mod chain;
pub mod checkpoint;
pub mod index;
mod json;
pub mod outcome;
pub mod query;
pub mod record;
pub mod recover;
pub mod redact;
pub mod refusals;
pub mod rotated;
pub mod verify;
pub mod writer;

pub use record::{AuditRecord, Kind};
pub use writer::{Ack, AuditLog, AuditWriterError, KEEP_CACHED};
