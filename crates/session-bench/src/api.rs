//! One keep-alive HTTP/1.1 connection to a running service's API, for the
//! sections that drive it request by request (propagation, misses): create,
//! revoke, resolve, forward auth and a scrape of `/metrics`.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};

/// A keep-alive connection to one service.
pub(crate) struct Client {
    sender: SendRequest<Full<Bytes>>,
    address: SocketAddr,
}

/// A session just created on a service: its token (a secret: never printed)
/// and its id.
pub(crate) struct Created {
    pub(crate) token: String,
    pub(crate) id: String,
}

impl Client {
    pub(crate) async fn connect(address: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            sender: crate::load::connect(address).await?,
            address,
        })
    }

    async fn send(
        &mut self,
        request: http::request::Builder,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = request.header(hyper::header::HOST, self.address.to_string());
        let body = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(body)?).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// `POST /v1/sessions` for a new account; expects 201.
    pub(crate) async fn create(&mut self) -> anyhow::Result<Created> {
        let account = uuid::Uuid::new_v4();
        let body = serde_json::json!({ "account_id": account.to_string() });
        let request = Request::builder().method(Method::POST).uri("/v1/sessions");
        let (status, bytes) = self.send(request, Some(body)).await?;
        expect(status, StatusCode::CREATED, "creating a session")?;
        let created: serde_json::Value = serde_json::from_slice(&bytes)?;
        let field = |pointer: &str| {
            created
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {pointer} in the creation response"))
        };
        Ok(Created {
            token: field("/token")?,
            id: field("/session/id")?,
        })
    }

    /// `DELETE /v1/sessions/{id}`; expects 204.
    pub(crate) async fn revoke(&mut self, id: &str) -> anyhow::Result<()> {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(format!("/v1/sessions/{id}"));
        let (status, _) = self.send(request, None).await?;
        expect(status, StatusCode::NO_CONTENT, "revoking a session")
    }

    /// `POST /v1/sessions/resolve`: the answer's status.
    pub(crate) async fn resolve(&mut self, token: &str) -> anyhow::Result<StatusCode> {
        let body = serde_json::json!({ "token": token });
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/sessions/resolve");
        Ok(self.send(request, Some(body)).await?.0)
    }

    /// `GET /v1/forward-auth` with the token as a bearer: the answer's status.
    pub(crate) async fn forward_auth(&mut self, token: &str) -> anyhow::Result<StatusCode> {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/forward-auth")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        Ok(self.send(request, None).await?.0)
    }

    /// `GET /metrics`, read with [`Metrics::value`].
    pub(crate) async fn metrics(&mut self) -> anyhow::Result<Metrics> {
        let request = Request::builder().method(Method::GET).uri("/metrics");
        let (status, bytes) = self.send(request, None).await?;
        expect(status, StatusCode::OK, "scraping /metrics")?;
        Ok(Metrics(String::from_utf8(bytes.to_vec())?))
    }
}

/// One scrape of a service's `/metrics`.
pub(crate) struct Metrics(String);

impl Metrics {
    /// A sample, such as `session_change_log_reads_total`; an error if the
    /// scrape holds none (the service writes every counter, zeros too, so
    /// a missing one was renamed).
    pub(crate) fn value(&self, series: &str) -> anyhow::Result<f64> {
        session_test_process::metric_value(&self.0, series)
            .with_context(|| format!("no sample {series} in /metrics"))
    }
}

/// The change-log reads a service made between two scrapes of its
/// `/metrics`: how many, and the time they took in all (its store-call
/// histogram's `log_read` sum).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogReads {
    pub(crate) reads: f64,
    pub(crate) seconds: f64,
}

impl LogReads {
    pub(crate) fn between(before: &Metrics, after: &Metrics) -> anyhow::Result<Self> {
        let delta = |series| anyhow::Ok(after.value(series)? - before.value(series)?);
        Ok(Self {
            reads: delta("session_change_log_reads_total")?,
            seconds: delta("session_store_call_duration_seconds_sum{operation=\"log_read\"}")?,
        })
    }

    /// The mean time a read took, in microseconds.
    pub(crate) fn mean_micros(&self) -> f64 {
        1e6 * self.seconds / self.reads.max(1.0)
    }
}

impl std::ops::AddAssign for LogReads {
    fn add_assign(&mut self, other: Self) {
        self.reads += other.reads;
        self.seconds += other.seconds;
    }
}

/// Fails unless the status is the one expected.
pub(crate) fn expect(status: StatusCode, want: StatusCode, what: &str) -> anyhow::Result<()> {
    if status != want {
        bail!("{what}: expected {want}, got {status}");
    }
    Ok(())
}
