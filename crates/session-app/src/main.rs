//! `session-app`: the session service and its operator CLI.

use std::process::ExitCode;

/// jemalloc instead of glibc's malloc. A compact cache allocates its index
/// in groups it never frees, while its record cache allocates and frees
/// small records all the time; glibc's heap interleaves the two and the
/// freed records' holes stay resident: at 30 million sessions the process
/// held 59.1 B a session with glibc against 56.5 B with jemalloc, whose
/// size classes keep them apart (the index alone is 54.1 B; see
/// docs/BENCHMARKS.md, "The cache at scale").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    session_app::cli::main()
}
