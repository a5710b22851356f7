//! The audit log: one JSON line per request, tunnel or admin action, hash-chained.
//!
//! `record` is the schema (v1, docs/audit-schema.md), `json` its line, `chain` the tamper
//! evidence and its verification, `redact` what must never be written, `writer` the batched file
//! sink, `query` the reviewer's view.

pub mod chain;
mod json;
pub mod query;
pub mod record;
pub mod redact;
pub mod writer;

pub use record::{AuditRecord, Kind};
pub use writer::{Ack, AuditLog, AuditWriterError, KEEP_CACHED};
