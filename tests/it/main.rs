//! One integration-test binary: real sockets on 127.0.0.1:0, real TLS, real clients, and the
//! real `aigate` binary for the CLI.

mod admin;
mod admin_limits;
mod ai_hosts;
mod audit_evidence;
mod audit_log;
mod browser;
mod browser_explorer;
mod browser_oidc;
mod browser_requests;
mod cli;
mod common;
mod console;
mod data_path;
mod destinations;
mod explorer;
mod late_body;
mod oidc;
mod overview;
mod postgres;
mod properties;
mod provenance;
mod provenance_replica;
mod provenance_scan;
mod refusals;
mod replicas;
mod requests;
mod routes;
mod side_calls;
mod tampering;
