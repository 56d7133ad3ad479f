//! session-app's tests: in-process router tests, and end-to-end tests that
//! run the real binary.

mod cli_transport;
mod config;
mod e2e;
mod faults;
mod forward_auth;
mod gateways;
mod last_seen;
mod launcher;
mod limits;
mod multi;
mod postgres;
mod router;
mod scenarios;
mod scrape;
mod secrets;
mod sqlite;
mod store_metrics;
mod traces;
