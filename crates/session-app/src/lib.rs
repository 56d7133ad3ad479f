//! The session service: wires session-core to a store (SQLite by default, or
//! PostgreSQL) and the moka cache, serves the HTTP API, and offers an operator
//! CLI that talks to a running service.
//!
//! This is the only crate that knows HTTP and JSON; it is also the worked
//! example of composing the adapters.

pub mod cli;
mod client;
mod connections;
pub mod http;
mod json_lines;
mod secret;
mod serve;
pub mod store;
pub mod store_metrics;
mod telemetry;

/// A configuration mistake the operator must fix: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
