//! session-cache-moka's integration tests: one binary, one module per subject.

mod behaviour;
mod contract;
mod records;
mod stress;
