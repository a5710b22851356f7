//! Who is calling, with which tool, in which workflow, for which model.
//!
//! Matching is pure (plain data in, plain data out); the pipeline gathers the inputs. Every
//! signal comes from the client and can be forged, so the result carries the evidence that matched
//! and a confidence, and both go to the audit record.

pub mod body_stream;
pub mod local_account;
pub mod model;
pub mod normalise;
pub mod scan;
pub mod signed;
pub mod tools;
pub mod user;
pub mod workflow;

pub use tools::{Confidence, ToolMatch, ToolSignature, identify_tool};
pub use user::{Directory, Identity, User};
pub use workflow::{Workflow, WorkflowSource};
