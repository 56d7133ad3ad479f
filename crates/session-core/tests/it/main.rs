//! session-core's integration tests: one binary, one module per subject.

mod contract;
mod feed;
mod gated;
mod last_seen;
mod metadata;
mod outcomes;
mod service;
mod token;
