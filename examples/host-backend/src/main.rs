//! Serves the example host backend: `DATABASE_URL` (default
//! `sqlite://data/host-backend.db`) on `LISTEN` (default `127.0.0.1:3000`).

use session_axum::SessionAuth;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://data/host-backend.db".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let service = host_backend::open(&url).await?;
    // Warms the cache (and, with PostgreSQL, follows other writers) until
    // shut down; dropping the guard would stop it.
    let tasks = service.start();
    let app = host_backend::app(SessionAuth::builder(service).build());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // Without a signal handler, Ctrl-C ends the process at once.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Stops the background tasks, writing any pending last-seen marks.
    tasks.shutdown().await?;
    Ok(())
}
