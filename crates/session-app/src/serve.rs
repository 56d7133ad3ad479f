//! `session-app serve`: logging → store → listener → warm → ready.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use session_cache_moka::MokaSessionCache;
use session_core::{MemoryCache, MissPolicy, SessionCache, SessionService};
use tokio::net::TcpListener;

use crate::ConfigError;
use crate::cli::{CacheKind, ServeArgs};
use crate::http::{self, ApiKeys, AppState};

/// The environment variable holding a single API key.
pub(crate) const API_KEY_ENV: &str = "SESSION_API_KEY";

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keys = server_keys(args.api_key_file.as_deref())?;
    if !keys.is_enabled() && !args.listen.ip().is_loopback() {
        return Err(ConfigError(format!(
            "--listen {} is not a loopback address and no API key is configured: anyone who can \
             reach it could create and revoke sessions. Set --api-key-file or {API_KEY_ENV}, or \
             listen on 127.0.0.1",
            args.listen
        ))
        .into());
    }

    // Before the listener: a SQLite file another process holds fails the start
    // here, so the refused process never takes (or answers on) a port.
    let store = crate::store::open(&args.database, !args.no_migrate).await?;
    let cache: Arc<dyn SessionCache> = match args.cache {
        CacheKind::Map => Arc::new(MemoryCache::new()),
        CacheKind::Moka => Arc::new(MokaSessionCache::new()),
    };
    let mut builder = SessionService::builder(store.store, cache)
        .warm_page_size(args.warm_page_size)
        .miss_policy(MissPolicy {
            reads_per_second: args.miss_reads_per_second,
            burst: args.miss_burst,
            negative_entries: args.negative_cache_size,
        });
    if let Some(feed) = store.change_feed {
        builder = builder.change_feed(feed);
    }
    let service = builder.build();
    let state = AppState::new(service.clone(), keys);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        store = store.description,
        cache = ?args.cache,
        "listening; warming the session cache"
    );

    // Warms (retrying with backoff), and with a change feed keeps following it.
    tokio::spawn({
        let service = service.clone();
        async move { service.keep_in_sync().await }
    });

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel();
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(());
    });
    let deadline = args.shutdown_timeout;
    tokio::select! {
        served = server => served.context("the HTTP server failed")?,
        () = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(deadline).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(?deadline, "in-flight requests did not finish in time; exiting"),
    }
    // Dropping the service closes the store's connections.
    drop(service);
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Every API key the service accepts: the file's lines and the environment variable.
fn server_keys(file: Option<&Path>) -> anyhow::Result<ApiKeys> {
    let mut keys = match file {
        Some(path) => read_key_file(path)?,
        None => Vec::new(),
    };
    if let Ok(key) = std::env::var(API_KEY_ENV) {
        keys.push(key.trim().to_owned());
    }
    ApiKeys::new(keys.iter().map(String::as_str)).map_err(|err| {
        ConfigError(format!("{err} (check --api-key-file and {API_KEY_ENV})")).into()
    })
}

/// The keys in a key file: one per line; blank lines and `#` comments are skipped.
pub(crate) fn read_key_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError(format!("--api-key-file {}: {err}", path.display())))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(ConfigError(format!("--api-key-file {} holds no key", path.display())).into());
    }
    Ok(keys)
}
