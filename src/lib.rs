//! aigate: an outbound API-call enforcement proxy for AI vendor traffic.
//!
//! Module map, along the data path (see `proxy` for the diagram):
//! - `config`: the TOML file (`raw`) and its validation into domain types (`validate`).
//! - `proxy`: accept -> connect -> classify -> tunnel | intercept -> pipeline -> forward | deny.
//! - `tls`: the minting CA (`authority`) and the upstream client (`upstream`).
//! - `identify`: user, tool signatures, workflow tag, model.
//! - `policy`: the pure decision engine (`decide`), its rules and reason codes.
//! - `exemptions`: time-boxed exemptions as an immutable snapshot for `decide`.
//! - `requests`: the exemption request loop: drafts behind deny-message links, requests,
//!   approval through the grant rules, webhooks.
//! - `audit`: the record schema, the hash chain, redaction, the batched writer, queries.
//! - `catalog`: the AI host catalog (model APIs tunnelled uninspected, flagged as `ai_host`).
//! - `side_calls`: tools a user was recently identified with, flagged on their AI-host tunnels.
//! - `pac`: the proxy auto-config generator.
//! - `provenance`: reassembling model output from vendor responses (capture, first part).
//! - `metrics`: Prometheus counters, fed from the audit writer.
//! - `reload`: the policy file on SIGHUP or change, the users file on change.
//! - `host`, `resolve`: host normalisation and name resolution.
//! - `destination`: which addresses the gateway may dial (internal ranges refused).
//! - `storage`: PostgreSQL for several replicas: migrations, the audit shipper.
//! - `admin`: the admin API (axum) on its own bounded listener: exemptions, health; refusals
//!   of unauthenticated callers folded into summaries.
//! - `console`: the web console on the admin listener (server-rendered HTML, sessions, CSRF,
//!   local sign-in); a client of the same modules as the admin API.
//! - `fdlimit`: the descriptor limit raised at start, and the admin listener's share of it.
//! - `console`: the web console on the admin listener (so far: OIDC sign-in).
//! - `app`: wiring a `Config` into a running gateway; `cli`: the command line; `table`: its
//!   aligned, escaped text tables.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod audit;
pub mod background;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod console;
pub mod destination;
pub mod doctor;
pub mod exemptions;
pub mod explain;
pub mod fdlimit;
pub mod host;
pub mod identify;
pub mod metrics;
pub mod pac;
pub mod policy;
pub mod provenance;
pub mod proxy;
pub mod reload;
pub mod requests;
pub mod resolve;
pub mod side_calls;
pub mod storage;
pub mod table;
pub mod tls;

pub use app::{App, AppHandle};
