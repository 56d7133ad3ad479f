//! Administrative SQL (creating and dropping databases, ending connections).

use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Runs `sql` as one simple query on a connection of its own and returns the
/// rows as text.
///
/// The connection lives on a thread with its own runtime, so this works from
/// synchronous code, from inside any test's runtime, and from `Drop`.
pub(crate) fn query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start a runtime: {err}"))?;
        runtime.block_on(run(&url, &sql))
    })
    .join()
    .unwrap_or_else(|_| Err("the administrative connection's thread panicked".to_owned()))
}

async fn run(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| format!("invalid server URL: {err}"))?;
    config.connect_timeout(Duration::from_secs(10));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|err| format!("cannot connect: {err}"))?;
    let driver = tokio::spawn(connection);
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|err| err.to_string());
    drop(client);
    // Ends once the client is gone; waiting closes the connection cleanly.
    let _closed = driver.await;
    Ok(messages?
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
