//! A TCP proxy that can stop forwarding without closing anything: a
//! database, or the network to it, that hangs instead of failing.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A proxy on a free port of 127.0.0.1 that forwards every connection to
/// a server, until [`stall`](Self::stall): then it stops forwarding in both
/// directions (and opens no new connection to the server) while keeping
/// every socket open, as a host that froze or a network that drops every
/// packet would look to both sides, until [`resume`](Self::resume). Bytes
/// read before a stall are held and delivered after it.
///
/// It runs on a thread of its own, so it serves synchronous and
/// asynchronous tests alike and outlives no test: dropped, it closes every
/// connection.
#[derive(Debug)]
pub struct StallingProxy {
    port: u16,
    stalled: watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StallingProxy {
    /// Starts forwarding to `server_port` of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If no port can be bound or no thread started.
    #[must_use]
    pub fn start(server_port: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .unwrap_or_else(|err| panic!("session-test-postgres: cannot bind the proxy: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("session-test-postgres: the proxy's address: {err}"))
            .port();
        let (stalled, watching) = watch::channel(false);
        let (shutdown, stop) = oneshot::channel();
        let server = SocketAddr::from(([127, 0, 0, 1], server_port));
        let thread = std::thread::Builder::new()
            .name("stalling-proxy".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|err| panic!("session-test-postgres: a runtime: {err}"));
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap_or_else(|err| {
                        panic!("session-test-postgres: the proxy's listener: {err}")
                    });
                    tokio::select! {
                        _ = stop => {}
                        () = accept(listener, server, watching) => {}
                    }
                });
                // Dropping the runtime drops every connection's task and socket.
            })
            .unwrap_or_else(|err| panic!("session-test-postgres: cannot start the proxy: {err}"));
        Self {
            port,
            stalled,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The port to connect to instead of the server's, on 127.0.0.1.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// Stops forwarding, in both directions, on every connection.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again, what was held first.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ignored = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ignored = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, server: SocketAddr, stalled: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut stalled = stalled.clone();
        tokio::spawn(async move {
            forwarding(&mut stalled).await;
            let Ok(server) = TcpStream::connect(server).await else {
                return;
            };
            let (from_client, to_client) = client.into_split();
            let (from_server, to_server) = server.into_split();
            tokio::join!(
                pipe(from_client, to_server, stalled.clone()),
                pipe(from_server, to_client, stalled),
            );
        });
    }
}

/// Copies one direction, holding what it read while stalled.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        forwarding(&mut stalled).await;
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ignored = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        forwarding(&mut stalled).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Returns once the proxy forwards.
async fn forwarding(stalled: &mut watch::Receiver<bool>) {
    let _ignored = stalled.wait_for(|stalled| !*stalled).await;
}
