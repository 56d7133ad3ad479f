//! session-core's integration tests: one binary, one module per subject.

mod background;
mod change_log;
mod contract;
mod gated;
mod last_seen;
mod metadata;
mod outcomes;
mod service;
mod stored;
mod token;
