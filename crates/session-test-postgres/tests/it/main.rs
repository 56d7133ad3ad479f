//! session-test-postgres.
