//! `session-app serve`: logging → store → listener → warm → ready.
//!
//! The store is opened before the listener binds, so a refused start (a
//! SQLite file another process holds) never takes a port. The API is
//! session-http's router over an `ApiState` holding the store's metrics
//! and the binary's own families (connections, dropped log lines and
//! spans). On SIGTERM or Ctrl-C it stops accepting, lets in-flight
//! requests finish within `--shutdown-timeout`, flushes last-seen marks
//! (with `--last-seen`) and closes the store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use session_cache_moka::{MokaRecordCache, MokaSessionCache};
use session_core::Revoker;
use session_core::config::{
    IdleRevocation, IdleRevocationError, LastSeenSettings, Retention, SessionLimit,
};
use session_core::port::cache::SessionCache;
use session_core::{CompactCache, MemoryCache, SessionService};
use session_http::{ApiKey, ApiKeys, ApiState, EventFeed, Scopes, StoreMetrics};
use tokio::net::TcpListener;

use crate::ConfigError;
use crate::cli::{CacheKind, ServeArgs};
use crate::connections::{self, ConnectionLimits, ConnectionMetrics};
use crate::{open_files, secret, telemetry};

/// The environment variable holding a single API key.
pub(crate) const API_KEY_ENV: &str = "SESSION_API_KEY";

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keys = server_keys(args.api_key_file.as_deref())?;
    let forward_auth = args.forward_auth.settings()?;
    if !keys.is_enabled() && !args.listen.ip().is_loopback() {
        return Err(ConfigError(format!(
            "--listen {} is not a loopback address and no API key is configured: anyone who can \
             reach it could create and revoke sessions. Set --api-key-file or {API_KEY_ENV}, or \
             listen on 127.0.0.1",
            args.listen
        ))
        .into());
    }

    if args.header_read_timeout > args.request_timeout {
        return Err(ConfigError(format!(
            "--header-read-timeout {} is longer than --request-timeout {}: a request head is \
             part of the request, so the request timeout must be at least as long",
            humantime::format_duration(args.header_read_timeout),
            humantime::format_duration(args.request_timeout),
        ))
        .into());
    }
    let last_seen = args.last_seen.then_some(LastSeenSettings {
        queue_capacity: args.last_seen_queue as usize,
        flush_interval: args.last_seen_flush_interval,
    });
    let idle = args
        .revoke_idle_after
        .map(|after| {
            let mut idle = IdleRevocation::new(after, last_seen.as_ref()).map_err(|err| {
                ConfigError(format!(
                    "--revoke-idle-after {}: {err}{}",
                    humantime::format_duration(after),
                    match err {
                        IdleRevocationError::LastSeenOff => "; add --last-seen",
                        _ => " (see --last-seen-flush-interval)",
                    }
                ))
            })?;
            idle.interval = args.maintenance_interval;
            Ok::<_, ConfigError>(idle)
        })
        .transpose()?;
    let retention = args.retain_revoked_for.map(|after| {
        let mut retention = Retention::new(after, args.retention_action.into());
        retention.interval = args.maintenance_interval;
        retention
    });
    let limits = ConnectionLimits {
        first_byte_timeout: args.first_byte_timeout,
        header_read_timeout: args.header_read_timeout,
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
        max_pending_connections: args.max_pending_connections as usize,
    };

    // Before anything opens a file: the store's connections count too.
    let pool = u64::from(args.database.pool.pg_pool_size);
    let needed = u64::from(args.max_connections)
        + u64::from(args.max_pending_connections)
        + open_files::RESERVED
        + pool;
    match open_files::ensure(needed, || {
        format!(
            "--max-connections {} and --max-pending-connections {}, with {} for the \
             service's own files (the store, the listener, the log),",
            args.max_connections,
            args.max_pending_connections,
            open_files::RESERVED + pool,
        )
    })? {
        open_files::Outcome::Enough { limit } => {
            tracing::debug!(limit, needed, "the open-file limit is enough");
        }
        open_files::Outcome::Raised { from, to } => {
            tracing::info!(
                from,
                to,
                needed,
                "raised the open-file limit (soft) to the hard limit"
            );
        }
    }

    // Before the listener: a SQLite file another process holds fails the start
    // here, so the refused process never takes (or answers on) a port.
    let store = crate::store::open(&args.database, !args.no_migrate).await?;
    let cache: Arc<dyn SessionCache> = match args.cache {
        CacheKind::Map => Arc::new(MemoryCache::new()),
        CacheKind::Moka => Arc::new(MokaSessionCache::new()),
        CacheKind::Compact => Arc::new(CompactCache::new().with_records(Arc::new(
            MokaRecordCache::new(args.record_cache_mib.saturating_mul(1 << 20)),
        ))),
    };
    // Every store call is timed and its failures counted, on its way to the adapter.
    let store_metrics = StoreMetrics::new(Some(store.pools));
    let events = EventFeed::new(store.events, args.max_event_subscribers as usize);
    // A write here wakes this instance's subscribers at once.
    let mut builder =
        SessionService::builder(events.store(store_metrics.store(store.store)), cache)
            .warm_page_size(args.warm_page_size)
            .max_staleness(args.max_staleness)
            .poll_interval(args.log_poll_interval);
    if let Some(log) = store.change_log {
        // Another process's write wakes the feed through the follower's
        // wake-ups: one listening connection per instance.
        let events = events.clone();
        builder = builder
            .change_log(store_metrics.change_log(log))
            .on_change_log_hint(move || events.wake());
    }
    if let Some(settings) = last_seen {
        builder = builder.last_seen(settings);
    }
    if let Some(idle) = idle {
        builder = builder.idle_revocation(idle);
    }
    if let Some(retention) = retention {
        builder = builder.retention(retention);
    }
    if let Some(max) = args.max_sessions_per_account {
        builder = builder.session_limit(SessionLimit {
            max,
            policy: args.session_limit_policy.into(),
        });
    }
    if let Some(at) = args.sessions_not_before {
        builder = builder.not_before(at);
        tracing::info!(not_before = %at, "refusing every session created before --sessions-not-before");
    }
    let service = builder.build();
    let connection_metrics = ConnectionMetrics::default();
    let state = ApiState::builder(service.clone())
        .api_keys(keys)
        .forward_auth(forward_auth)
        .store_metrics(&store_metrics)
        .events(events.clone())
        .register_metrics({
            let connection_metrics = connection_metrics.clone();
            move |registry| {
                connection_metrics.register(registry);
                registry.register_collector(Box::new(telemetry::DropsCollector));
            }
        })
        .build();
    let app = session_http::router(state);

    let listener =
        listen(args.listen).with_context(|| format!("could not listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        store = store.description,
        cache = ?args.cache,
        ?limits,
        "listening; warming the session cache"
    );

    // Warms (retrying with backoff), and with a change log keeps following
    // it; with --last-seen, writes the marks resolves make.
    let tasks = service.start();
    let sequencer = tokio::spawn({
        let events = events.clone();
        let (poll, retention) = (args.log_poll_interval, args.event_retention);
        async move {
            events
                .run(poll, Some(retention), EVENT_PRUNE_INTERVAL)
                .await
        }
    });

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel();
    let closing = events.clone();
    let server = connections::serve(listener, app, limits, connection_metrics, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        // Event streams never finish on their own: end them now.
        closing.close();
        let _ = stopping_tx.send(());
    });
    let deadline = args.shutdown_timeout;
    tokio::select! {
        () = server => {},
        () = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(deadline).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(?deadline, "in-flight requests did not finish in time; exiting"),
    }
    // Stops the background tasks, then (with --last-seen) records the marks
    // since the last flush, within the same bound again.
    match tokio::time::timeout(deadline, tasks.shutdown()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not record when sessions were last seen at shutdown")
        }
        Err(_) => tracing::warn!(
            ?deadline,
            "recording when sessions were last seen took too long at shutdown"
        ),
    }
    events.close();
    let _ = sequencer.await;
    // Dropping the service closes the store's connections.
    drop(service);
    tracing::info!("stopped");
    Ok(())
}

/// How often events past `--event-retention` are pruned.
const EVENT_PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// Connections the kernel completes and holds for the accept loop. The
/// loop accepts every connection at once (admission comes later), so this
/// only absorbs bursts of connects faster than it runs; past it the kernel
/// drops a client's SYN and the client retries a second later. 128, the
/// standard library's, filled under a burst of silent connects; nginx
/// uses 511, Go the system's maximum (Linux caps this at `somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `address` with [`LISTEN_BACKLOG`], reusing the address as
/// the standard library's listener does (a restart need not wait out the
/// previous process's closed connections).
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
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
        let key = key.trim_ascii();
        ApiKeys::check(key).map_err(|err| ConfigError(format!("{API_KEY_ENV}: {err}")))?;
        keys.push(KeyLine {
            name: Revoker::DEFAULT,
            scopes: Scopes::ALL,
            secret: key.to_owned(),
        });
    }
    // Every key was checked above, each error naming where the key came from.
    let keys = keys
        .iter()
        .map(|line| ApiKey::new(line.name.clone(), line.scopes, &line.secret))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ConfigError(format!("{err} (check --api-key-file and {API_KEY_ENV})")))?;
    Ok(ApiKeys::scoped(keys))
}

/// One key of a key file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyLine {
    /// Its name: [`Revoker::DEFAULT`] for a bare key.
    pub(crate) name: Revoker,
    /// What it may do: every scope for a bare key.
    pub(crate) scopes: Scopes,
    /// The key itself.
    pub(crate) secret: String,
}

/// The keys in a key file, in file order: one per line, either a bare
/// `KEY` (named `default`, every scope: the format from before keys had
/// names) or `NAME SCOPES KEY`; blank lines and `#` comments are skipped,
/// and so is a UTF-8 byte-order mark that an editor put first. A line that
/// is not valid fails, naming the file and the line but never showing the
/// line.
pub(crate) fn read_key_file(path: &Path) -> anyhow::Result<Vec<KeyLine>> {
    const FLAG: &str = "--api-key-file";
    let text = secret::read_file(path, FLAG)?;
    Ok(parse_key_file(&text)
        .map_err(|message| ConfigError(format!("{FLAG} {}: {message}", path.display())))?)
}

/// The keys in the text of a key file (its byte-order mark already gone),
/// or what is wrong with it. A name may be on several lines (a key being
/// rotated), with the same scopes on each; a key may be on one line only.
fn parse_key_file(text: &str) -> Result<Vec<KeyLine>, String> {
    let mut keys: Vec<(usize, KeyLine)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        // ASCII whitespace only: a non-breaking space pasted at the end of a
        // key is refused by name rather than silently dropped.
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let key = match fields[..] {
            [secret] => KeyLine {
                name: Revoker::DEFAULT,
                scopes: Scopes::ALL,
                secret: secret.to_owned(),
            },
            [name, scopes, secret] => KeyLine {
                name: Revoker::new(name)
                    .map_err(|err| format!("line {number}: the name {}", err.reason))?,
                scopes: Scopes::parse(scopes).ok_or_else(|| {
                    format!(
                        "line {number}: the scopes must be `all` or a comma-separated list of \
                         `read`, `events` and `write`, each at most once"
                    )
                })?,
                secret: secret.to_owned(),
            },
            _ => {
                return Err(format!(
                    "line {number}: expected `KEY` or `NAME SCOPES KEY`, separated by spaces; \
                     found {} fields",
                    fields.len()
                ));
            }
        };
        ApiKeys::check(&key.secret).map_err(|err| format!("line {number}: {err}"))?;
        for (earlier, seen) in &keys {
            if seen.secret == key.secret {
                return Err(format!("line {number}: the same key as line {earlier}"));
            }
            if seen.name == key.name && seen.scopes != key.scopes {
                return Err(format!(
                    "line {number}: the name is on line {earlier} with other scopes"
                ));
            }
        }
        keys.push((number, key));
    }
    if keys.is_empty() {
        return Err("holds no key".to_owned());
    }
    Ok(keys.into_iter().map(|(_, key)| key).collect())
}

#[cfg(test)]
mod tests {
    use session_http::Scope;

    use super::*;

    const KEY: &str = "0123456789abcdef-key";

    /// As [`read_key_file`] reads a file's text: the keys' secrets.
    fn parse(text: &str) -> Result<Vec<String>, String> {
        parse_lines(text).map(|keys| keys.into_iter().map(|key| key.secret).collect())
    }

    fn parse_lines(text: &str) -> Result<Vec<KeyLine>, String> {
        parse_key_file(secret::without_byte_order_mark(text))
    }

    #[test]
    fn named_keys_carry_their_scopes_and_bare_keys_hold_every_scope() {
        let text = format!(
            "# name scopes key\nfeed events {KEY}-1\nadmin read,write {KEY}-2\n{KEY}-3\n\
             feed events {KEY}-4\n"
        );
        let keys = parse_lines(&text).unwrap();
        let summary: Vec<(&str, Scopes)> = keys
            .iter()
            .map(|key| (key.name.as_str(), key.scopes))
            .collect();
        assert_eq!(
            summary,
            [
                ("feed", Scopes::of(&[Scope::Events])),
                ("admin", Scopes::of(&[Scope::Read, Scope::Write])),
                ("default", Scopes::ALL),
                ("feed", Scopes::of(&[Scope::Events])),
            ]
        );
        assert_eq!(
            parse_lines(&format!("ops all {KEY}")).unwrap()[0].scopes,
            Scopes::ALL
        );
    }

    #[test]
    fn a_named_line_that_is_not_valid_is_refused_by_line_without_showing_it() {
        for (text, line, says) in [
            (format!("{KEY}\nfeed {KEY}-2"), 2, "found 2 fields"),
            (format!("feed events {KEY} extra"), 1, "found 4 fields"),
            (
                format!("Feed events {KEY}"),
                1,
                "the name must be a lowercase identifier",
            ),
            (
                format!("feed-1 events {KEY}"),
                1,
                "the name must be a lowercase identifier",
            ),
            (format!("feed event {KEY}"), 1, "the scopes must be"),
            (format!("feed read,read {KEY}"), 1, "the scopes must be"),
            (format!("feed read, {KEY}"), 1, "the scopes must be"),
            (format!("feed {KEY} events"), 1, "the scopes must be"),
            ("feed events short".to_owned(), 1, "at least 16"),
            (
                format!("a read {KEY}\nb write {KEY}"),
                2,
                "the same key as line 1",
            ),
            (
                format!("a read {KEY}-1\n\na write {KEY}-2"),
                3,
                "on line 1 with other scopes",
            ),
        ] {
            let err = parse_lines(&text).unwrap_err();
            assert!(
                err.starts_with(&format!("line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains(KEY), "{err}");
        }
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_first_key() {
        let text = format!("\u{feff}{KEY}\r\nsecond-key-0123456789\r\n");
        assert_eq!(parse(&text).unwrap(), [KEY, "second-key-0123456789"]);
        assert_eq!(
            parse(&format!("\u{feff}# comment\n{KEY}\n")).unwrap(),
            [KEY]
        );
    }

    #[test]
    fn blank_lines_comments_and_surrounding_spaces_are_skipped() {
        let text = format!("\n  # rotation: new key first\n\n  {KEY}\t\n");
        assert_eq!(parse(&text).unwrap(), [KEY]);
    }

    #[test]
    fn a_line_a_header_cannot_carry_is_refused_by_line_without_showing_it() {
        for (text, line) in [
            // A second mark is not a byte-order mark: only the first is stripped.
            (format!("\u{feff}\u{feff}{KEY}"), 1),
            (format!("# ok\n{KEY}\u{a0}x"), 2),
            (format!("# ok\n{KEY}\u{a0}"), 2),
            (format!("{KEY}\n\n{KEY}\u{1b}[0m"), 3),
            (format!("{KEY}\nbearer {KEY}"), 2),
            (format!("\u{feff}{KEY}\nshort"), 2),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(
                err.starts_with(&format!("line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(!err.contains(KEY), "{err}");
        }
    }

    #[test]
    fn a_file_without_keys_is_refused() {
        for text in ["", "\u{feff}", "# only a comment\n\n"] {
            assert_eq!(parse(text).unwrap_err(), "holds no key");
        }
    }
}
