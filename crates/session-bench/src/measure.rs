//! Rounds and medians: how a noisy, shared machine still yields stable ratios.
//!
//! Every section measures a subject and its floor in alternating rounds, so
//! both see the same background load, and reports the median of each and
//! the median of the per-round ratios.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::{Figure, Row, Unit};

/// Per-round values of several series measured in the same rounds.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    series: BTreeMap<String, Vec<f64>>,
}

impl Rounds {
    pub(crate) fn record(&mut self, series: &str, value: f64) {
        self.series
            .entry(series.to_owned())
            .or_default()
            .push(value);
    }

    /// The median of a series; 0 if it was never recorded.
    pub(crate) fn median(&self, series: &str) -> f64 {
        self.series
            .get(series)
            .map_or(0.0, |values| median(values.clone()))
    }

    /// The sum of a series; 0 if it was never recorded.
    pub(crate) fn sum(&self, series: &str) -> f64 {
        self.series
            .get(series)
            .map_or(0.0, |values| values.iter().sum())
    }

    /// The median of `subject / floor` over the rounds both were measured in.
    pub(crate) fn ratio(&self, subject: &str, floor: &str) -> f64 {
        let (Some(subject), Some(floor)) = (self.series.get(subject), self.series.get(floor))
        else {
            return f64::NAN;
        };
        median(
            subject
                .iter()
                .zip(floor)
                .map(|(subject, floor)| subject / floor)
                .collect(),
        )
    }
}

/// The median (the mean of the middle two for an even count); NaN when empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// Round `round`'s order of `n` subjects: rotated each round, so no subject
/// always runs first (right after setup) or last.
pub(crate) fn rotation(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// Operations completed per second, and how long each took.
#[derive(Debug)]
pub(crate) struct Throughput {
    pub(crate) per_second: f64,
    /// Microseconds per operation.
    pub(crate) latency: Histogram<u64>,
}

impl Throughput {
    /// From operations counted over `window`.
    pub(crate) fn new(completed: u64, window: Duration, latency: Histogram<u64>) -> Self {
        let per_second = completed as f64 / window.as_secs_f64();
        Self {
            per_second,
            latency,
        }
    }
}

/// A latency histogram from 1 µs to 60 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("1 µs to 60 s at 3 digits are valid bounds")
}

/// One of several tasks that each repeat an operation back to back.
pub(crate) trait Worker: Send + 'static {
    /// One operation.
    fn work(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs every worker on its own task for `warmup + window`; counts the
/// operations that start after the warm-up and end within the window.
/// Hands the workers back for the next round.
pub(crate) async fn drive<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<(Vec<W>, Throughput)> {
    let window_start = Instant::now() + warmup;
    let window_end = window_start + window;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut completed = 0u64;
            loop {
                let began = Instant::now();
                if began >= window_end {
                    return anyhow::Ok((worker, completed, latency));
                }
                worker.work().await?;
                let done = Instant::now();
                if began >= window_start && done <= window_end {
                    completed += 1;
                    latency.saturating_record(micros(done - began));
                }
            }
        }));
    }
    let mut workers = Vec::with_capacity(tasks.len());
    let mut completed = 0;
    let mut latency = histogram();
    for task in tasks {
        let (worker, done, worker_latency) = task.await??;
        workers.push(worker);
        completed += done;
        latency.add(&worker_latency)?;
    }
    Ok((workers, Throughput::new(completed, window, latency)))
}

/// As [`drive`], with `threads` OS threads repeating a blocking operation.
pub(crate) fn drive_blocking(
    threads: usize,
    warmup: Duration,
    window: Duration,
    work: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<Throughput> {
    let window_start = Instant::now() + warmup;
    let window_end = window_start + window;
    let results: Vec<anyhow::Result<(u64, Histogram<u64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut latency = histogram();
                    let mut completed = 0u64;
                    loop {
                        let began = Instant::now();
                        if began >= window_end {
                            return Ok((completed, latency));
                        }
                        work()?;
                        let done = Instant::now();
                        if began >= window_start && done <= window_end {
                            completed += 1;
                            latency.saturating_record(micros(done - began));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut completed = 0;
    let mut latency = histogram();
    for result in results {
        let (done, thread_latency) = result?;
        completed += done;
        latency.add(&thread_latency)?;
    }
    Ok(Throughput::new(completed, window, latency))
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Throughput per round and latency over all rounds, per series.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    rounds: Rounds,
    latency: BTreeMap<&'static str, Histogram<u64>>,
}

impl Measured {
    pub(crate) fn record(
        &mut self,
        series: &'static str,
        throughput: Throughput,
    ) -> anyhow::Result<()> {
        self.rounds.record(series, throughput.per_second);
        match self.latency.get_mut(series) {
            Some(total) => total.add(&throughput.latency)?,
            None => {
                self.latency.insert(series, throughput.latency);
            }
        }
        Ok(())
    }

    /// Adds to a latency series other than the operations' own, such as a
    /// probe's, in microseconds.
    pub(crate) fn record_latency(
        &mut self,
        series: &'static str,
        latency: &Histogram<u64>,
    ) -> anyhow::Result<()> {
        self.latency
            .entry(series)
            .or_insert_with(histogram)
            .add(latency)?;
        Ok(())
    }

    /// A quantile of a latency series over every round; NaN if never recorded.
    pub(crate) fn latency_at(&self, series: &str, quantile: f64) -> Figure {
        let value = self.latency.get(series).map_or(f64::NAN, |latency| {
            latency.value_at_quantile(quantile) as f64
        });
        Figure::new(value, Unit::Microseconds)
    }

    /// How many values a latency series holds.
    pub(crate) fn latency_count(&self, series: &str) -> u64 {
        self.latency.get(series).map_or(0, Histogram::len)
    }

    /// Records a per-round figure other than throughput.
    pub(crate) fn record_value(&mut self, series: &str, value: f64) {
        self.rounds.record(series, value);
    }

    /// The sum over the rounds of a series recorded with
    /// [`record_value`](Self::record_value); 0 if never recorded.
    pub(crate) fn sum(&self, series: &str) -> f64 {
        self.rounds.sum(series)
    }

    /// The median of a series recorded with [`record_value`](Self::record_value).
    pub(crate) fn median(&self, series: &str) -> f64 {
        self.rounds.median(series)
    }

    /// The median of per-round `subject / floor` throughput.
    pub(crate) fn ratio(&self, subject: &str, floor: &str) -> f64 {
        self.rounds.ratio(subject, floor)
    }

    /// A row: median throughput of subject and floor, their ratio, and
    /// both latencies' p50 and p99 over every round.
    pub(crate) fn throughput_row(
        &self,
        case: impl Into<String>,
        subject: &str,
        floor: &str,
    ) -> Row {
        let rate = |series| Figure::new(self.rounds.median(series), Unit::PerSecond);
        let micros = |series: &str, quantile| self.latency_at(series, quantile);
        Row::new(case, rate(subject), rate(floor), self.ratio(subject, floor))
            .detail("p50", micros(subject, 0.5))
            .detail("p99", micros(subject, 0.99))
            .detail("floor p50", micros(floor, 0.5))
            .detail("floor p99", micros(floor, 0.99))
    }
}

/// CPU time a process has used so far, user and system, from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    // Linux reports it in USER_HZ ticks, 100 per second on every architecture it runs on.
    const TICKS_PER_SECOND: u64 = 100;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; the first after the name is field 3.
    let ticks = |field: usize| -> anyhow::Result<u64> {
        fields
            .get(field - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no field {field} in {path}"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}
