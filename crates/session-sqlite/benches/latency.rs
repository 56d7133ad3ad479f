//! Latency measurement.

fn main() {}
