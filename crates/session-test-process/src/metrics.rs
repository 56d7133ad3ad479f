//! Reading a Prometheus text exposition.

/// The value of one sample in a Prometheus (or OpenMetrics) text
/// exposition, such as a service's `/metrics`: the number after `series`
/// on the line that starts with it. `series` is the metric's name with its
/// labels exactly as the exposition writes them:
/// `session_resolves_total{outcome="hit"}`, or a bare name for a series
/// without labels. `None` if no such line holds a number.
#[must_use]
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        // A timestamp may follow the value.
        rest.split(' ').next()?.parse().ok()
    })
}
