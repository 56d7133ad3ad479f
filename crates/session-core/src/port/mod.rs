//! The ports, for adapter authors: what a store, a change log, a cache and a
//! clock must do, each with its own types. [`SessionService`](crate::SessionService)
//! sees adapters only through these traits.
//!
//! An adapter is correct when it passes the contract suites of `testkit`
//! (the `testkit` feature), which every adapter in this workspace runs.

pub mod cache;
pub mod change_log;
pub mod clock;
pub mod events;
pub mod store;
