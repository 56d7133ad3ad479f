//! Measurements of the PostgreSQL store.

fn main() {}
