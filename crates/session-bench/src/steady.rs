//! Background load at an even rate, from a thread and runtime of its own so
//! its client work never delays the measuring task's, switched on and off
//! between measurements: creates on one instance (other users logging in
//! while a revocation is timed), or well-formed random tokens at forward
//! auth (a flood of misses).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use session_core::SessionToken;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::api::{Client, expect};
use crate::measure::histogram;

/// What each request of the load is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// `POST /v1/sessions`, a new account each time.
    Creates,
    /// `GET /v1/forward-auth` with a freshly generated token, well formed and
    /// belonging to no session: a miss every time, answered 401.
    RandomTokens,
}

/// What the load did while it was on.
pub(crate) struct Tally {
    pub(crate) answered: u64,
    pub(crate) on_for: Duration,
    /// Microseconds per request.
    pub(crate) latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn per_second(&self) -> f64 {
        self.answered as f64 / self.on_for.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A running load, off until [`set`](Self::set) turns it on.
pub(crate) struct Steady {
    switch: watch::Sender<bool>,
    on_since: Option<Instant>,
    on_for: Duration,
    thread: std::thread::JoinHandle<anyhow::Result<(u64, Histogram<u64>)>>,
}

impl Steady {
    /// Opens `connections` connections to `address` on a thread of its own;
    /// once on, they send `per_second` requests a second between them,
    /// evenly spaced, each connection waiting for its answer before its
    /// next tick (a late answer delays that connection's next request
    /// rather than bunching requests up).
    pub(crate) fn start(
        address: SocketAddr,
        load: Load,
        per_second: f64,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let (switch, on) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let period = Duration::from_secs_f64(connections as f64 / per_second);
        let thread = std::thread::Builder::new()
            .name("steady-load".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..connections {
                        let client = Client::connect(address).await?;
                        // Connection i ticks i/connections of a period after the first.
                        let offset = period.mul_f64(i as f64 / connections as f64);
                        tasks.spawn(send_steadily(client, load, period, offset, on.clone()));
                    }
                    drop(on);
                    let mut answered = 0;
                    let mut latency = histogram();
                    while let Some(joined) = tasks.join_next().await {
                        let (n, task_latency) = joined??;
                        answered += n;
                        latency.add(&task_latency)?;
                    }
                    Ok((answered, latency))
                })
            })?;
        Ok(Self {
            switch,
            on_since: None,
            on_for: Duration::ZERO,
            thread,
        })
    }

    /// Turns the load on or off.
    pub(crate) fn set(&mut self, on: bool) {
        match (on, self.on_since) {
            (true, None) => self.on_since = Some(Instant::now()),
            (false, Some(since)) => {
                self.on_for += since.elapsed();
                self.on_since = None;
            }
            _ => {}
        }
        self.switch.send_replace(on);
    }

    /// Stops the load and returns what it did while on.
    pub(crate) fn finish(mut self) -> anyhow::Result<Tally> {
        self.set(false);
        drop(self.switch);
        let (answered, latency) = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the steady load's thread panicked"))??;
        Ok(Tally {
            answered,
            on_for: self.on_for,
            latency,
        })
    }
}

/// One connection's share of the load, until the switch is dropped.
async fn send_steadily(
    mut client: Client,
    load: Load,
    period: Duration,
    offset: Duration,
    mut on: watch::Receiver<bool>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut answered = 0u64;
    let mut latency = histogram();
    loop {
        if on.wait_for(|on| *on).await.is_err() {
            return Ok((answered, latency));
        }
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let sent = Instant::now();
                    match load {
                        Load::Creates => {
                            client.create().await?;
                        }
                        Load::RandomTokens => {
                            let token = SessionToken::generate();
                            let status = client.forward_auth(token.expose_secret()).await?;
                            expect(status, StatusCode::UNAUTHORIZED, "forward auth of a random token")?;
                        }
                    }
                    answered += 1;
                    latency.saturating_record(
                        u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1),
                    );
                }
                changed = on.changed() => {
                    if changed.is_err() || !*on.borrow_and_update() {
                        break;
                    }
                }
            }
        }
    }
}
