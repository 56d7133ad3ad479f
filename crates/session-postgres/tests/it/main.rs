//! session-postgres against a real PostgreSQL: a throwaway server per test
//! binary (or `TEST_DATABASE_URL`), a fresh database per test.

mod change_log;
mod config;
mod contract;
mod failover;
mod last_seen;
mod limits;
mod log_integrity;
mod maintenance;
mod migrations;
mod poison;
mod pooler;
mod reload_race;
mod resilience;
mod storage;
mod support;
mod tls;
