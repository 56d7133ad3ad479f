//! session-core's integration tests: one binary, one module per subject.
//! The service's suites run once per cache mode (`map` and `compact`), each
//! module naming its cache.

#![expect(
    clippy::duplicate_mod,
    reason = "the service's suites are loaded once per cache mode, on purpose"
)]

mod background;
mod compact;
mod contract;
mod gated;
mod last_seen;
mod limits;
mod maintenance;
mod map;
mod metadata;
mod not_before;
mod outcomes;
mod reasons;
mod stored;
mod token;
