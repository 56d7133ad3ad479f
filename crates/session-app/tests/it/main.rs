//! session-app's tests: in-process router tests, and end-to-end tests that
//! run the real binary.

mod config;
mod e2e;
mod faults;
mod launcher;
mod multi;
mod postgres;
mod router;
mod scenarios;
mod sqlite;
mod traces;
