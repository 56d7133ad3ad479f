//! An HTTP/1.1 load generator on hyper: a fixed number of keep-alive
//! connections, each sending its next request as soon as the previous answer
//! has been read, for a fixed time. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::measure::{Throughput, histogram};

/// What every request of a run looks like; bodies are cycled through.
#[derive(Debug, Clone)]
pub(crate) struct Requests {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    /// JSON bodies, one per request in turn; empty for a bodiless request.
    pub(crate) bodies: Arc<[Bytes]>,
    /// A header whose values are sent one per request in turn, with the
    /// same index as the bodies (tokens, for forward auth).
    pub(crate) header: Option<(HeaderName, Arc<[HeaderValue]>)>,
    pub(crate) expect: StatusCode,
}

impl Requests {
    pub(crate) fn get(path: &'static str) -> Self {
        Self {
            method: Method::GET,
            path,
            bodies: Arc::from([Bytes::new()]),
            header: None,
            expect: StatusCode::OK,
        }
    }

    fn build(&self, index: usize) -> anyhow::Result<Request<Full<Bytes>>> {
        let body = self.bodies[index % self.bodies.len()].clone();
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(hyper::header::HOST, "127.0.0.1");
        if let Some((name, values)) = &self.header {
            request = request.header(name, values[index % values.len()].clone());
        }
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        Ok(request.body(Full::new(body))?)
    }
}

/// Opens `connections` connections to `address` and keeps them busy for
/// `warmup + duration`; only requests that start after the warm-up and end
/// within the duration are counted in the throughput. Also returns how many
/// requests were answered in all, warm-up included.
pub(crate) async fn run(
    address: SocketAddr,
    requests: &Requests,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Throughput, u64)> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(address).await?);
    }
    let began = Instant::now();
    let window_start = began + warmup;
    let window_end = window_start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for (worker, mut sender) in senders.into_iter().enumerate() {
        let requests = requests.clone();
        workers.spawn(async move {
            let mut latency = histogram();
            let mut completed = 0u64;
            let mut answered = 0u64;
            // Each connection starts at its own place in the bodies.
            let mut index = worker * 7919;
            loop {
                let request = requests.build(index)?;
                index += 1;
                sender.ready().await.context("the connection closed")?;
                let sent = Instant::now();
                if sent >= window_end {
                    return anyhow::Ok((completed, answered, latency));
                }
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                let done = Instant::now();
                answered += 1;
                if status != requests.expect {
                    bail!(
                        "{} {} answered {status}, expected {}: {}",
                        requests.method,
                        requests.path,
                        requests.expect,
                        String::from_utf8_lossy(&body)
                    );
                }
                if sent >= window_start && done <= window_end {
                    completed += 1;
                    let micros = u64::try_from(done.duration_since(sent).as_micros())?;
                    latency.saturating_record(micros.max(1));
                }
            }
        });
    }
    let (mut total, mut answered) = (0u64, 0u64);
    let mut latency = histogram();
    while let Some(joined) = workers.join_next().await {
        let (completed, worker_answered, worker_latency) = joined??;
        total += completed;
        answered += worker_answered;
        latency.add(&worker_latency)?;
    }
    Ok((Throughput::new(total, duration, latency), answered))
}

/// A keep-alive HTTP/1.1 connection to `address`.
pub(crate) async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("could not connect to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; ends when the sender is dropped.
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    Ok(sender)
}
