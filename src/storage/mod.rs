//! Shared state for several replicas: PostgreSQL.
//!
//! The default is `file` (the exemption journal and the audit log in the state directory).
//! With `storage.backend = "postgres"` exemptions live in the database, every replica keeps its
//! in-memory snapshot for the data path and follows changes with LISTEN/NOTIFY plus a periodic
//! resync, and each replica's audit file is shipped to a shared, day-partitioned table.

pub mod audit;
pub mod migrate;
pub mod mirror;
pub mod partitions;
pub mod postgres;

pub use postgres::{Db, DbError};
