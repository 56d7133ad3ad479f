//! Project automation, run as `cargo xtask <command>`.

mod fuzz;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project automation for the session workspace")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: formatting, clippy with warnings denied, the whole test suite,
    /// the benchmark harness in quick mode, and each fuzz target for a few seconds.
    Ci,
    /// Runs the benchmarks (release profile): session-bench's sections, each figure beside
    /// its floor, written to target/bench/results.json, then the crates' own benches.
    Bench {
        /// Every section at a small size with the dev profile, in seconds: checks the
        /// harness end to end; the numbers mean nothing.
        #[arg(long)]
        quick: bool,
    },
    /// Runs the fuzz targets of `fuzz/` (cargo fuzz, libFuzzer), installing cargo-fuzz
    /// into the target directory if missing; fails on any crash or broken invariant.
    Fuzz {
        /// Seconds to run each target.
        #[arg(long, default_value_t = 60)]
        time: u32,
        /// Only this target (`cargo fuzz list` in `fuzz/` names them).
        target: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::Ci => ci(&root),
        Task::Bench { quick } => bench(&root, quick),
        Task::Fuzz { time, target } => {
            fuzz::fuzz(&root, &target_dir(&root), time, target.as_deref())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ci(root: &Path) -> Result<()> {
    cargo(root, &["fmt", "--all", "--", "--check"])
        .context("formatting differs: run `cargo fmt --all`")?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(root, &["test", "--workspace"])?;
    bench(root, true)?;
    fuzz::fuzz(root, &target_dir(root), CI_FUZZ_SECS, None)?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// Seconds `ci` runs each fuzz target: enough to catch a regression of
/// what the seeds reach, within CI's budget; `cargo xtask fuzz` runs longer.
const CI_FUZZ_SECS: u32 = 15;

fn bench(root: &Path, quick: bool) -> Result<()> {
    let results = target_dir(root).join("bench").join("results.json");
    let results = results.to_string_lossy();
    if quick {
        // The same packages and targets `cargo test --workspace` builds, so
        // after the tests only the harness itself is compiled: a narrower
        // selection would resolve features differently and rebuild most
        // dependencies.
        cargo(root, &["build", "--workspace", "--bins", "--tests"])?;
        return run(
            root,
            &target_dir(root).join("debug").join("session-bench"),
            &["--quick", "--out", &results],
        );
    }
    cargo(
        root,
        &[
            "build",
            "--release",
            "--package",
            "session-app",
            "--package",
            "session-bench",
        ],
    )?;
    // A failed section fails the run, but only after the other benches ran.
    let harness = run(
        root,
        &target_dir(root).join("release").join("session-bench"),
        &["--out", &results],
    );
    // The crates' own benches, in finer detail than the harness: the moka
    // cache against the plain map (threads, moka's own configurations,
    // memory) and the stores' latency percentiles. Shorter measurements than
    // criterion's defaults keep the whole run within its budget; the other
    // benches read no arguments.
    cargo_with_env(
        root,
        &[
            "bench",
            "--package",
            "session-cache-moka",
            "--package",
            "session-postgres",
            "--package",
            "session-sqlite",
            "--bench",
            "*",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "2",
        ],
        &[("SESSION_BENCH_QUICK", "0")],
    )?;
    harness
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn run(root: &Path, program: &Path, args: &[&str]) -> Result<()> {
    eprintln!("$ {} {}", program.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not run {}", program.display()))?;
    if !status.success() {
        bail!("`{}` failed ({status})", program.display());
    }
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    cargo_with_env(root, args, &[])
}

fn cargo_with_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .with_context(|| format!("could not run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
