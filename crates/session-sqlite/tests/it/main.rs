//! session-sqlite's integration tests: one binary, one module per subject.

mod concurrency;
mod contract;
mod crash;
mod lock;
mod modes;
mod open;
mod rows;
mod support;
