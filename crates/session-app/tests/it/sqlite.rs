//! End to end on the embedded default, SQLite.

use crate::e2e::{sqlite_url, temp_dir};
use crate::scenarios;

#[tokio::test]
async fn create_resolve_revoke_resolve() {
    let dir = temp_dir();
    scenarios::create_resolve_revoke_resolve(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn restart_keeps_sessions() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn api_key_is_enforced() {
    let dir = temp_dir();
    scenarios::api_key_is_enforced(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn cli_round_trip() {
    let dir = temp_dir();
    scenarios::cli_round_trip(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn restart_keeps_sessions_with_the_moka_cache() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions_with(&sqlite_url(dir.path()), &["--cache", "moka"]).await;
}
