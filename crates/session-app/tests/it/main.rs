//! session-app's tests: end-to-end tests that run the real binary (the
//! router's in-process tests are session-http's).

mod admission;
mod bodies;
mod cli_transport;
mod config;
mod e2e;
mod edge;
mod events;
mod faults;
mod gateways;
mod hangs;
mod last_seen;
mod launcher;
mod limits;
mod maintenance;
mod multi;
mod postgres;
mod scenarios;
mod scrape;
mod secrets;
mod sqlite;
mod traces;
