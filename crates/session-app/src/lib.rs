//! The session service: wires session-core to a store (SQLite by default, or
//! PostgreSQL) and a cache, serves session-http's API behind its own accept
//! loop, exports logs and traces, and offers an operator CLI that talks to
//! a running service.
//!
//! It is also the worked example of composing the adapters: `serve.rs`
//! builds everything the API needs and hands it to `session_http::router`.

pub mod cli;
mod client;
mod connections;
mod loopback;
mod open_files;
mod secret;
mod serve;
pub mod store;
mod telemetry;
mod terminal;
mod unread;

/// A configuration mistake the operator must fix: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
