//! Project automation, run as `cargo xtask <command>`.

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
    /// Everything CI checks: formatting, clippy with warnings denied, the whole test suite.
    Ci,
    /// Runs every benchmark in the workspace (criterion, release profile).
    Bench {
        /// Small sizes and short measurements, to check the harness in seconds.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::Ci => ci(&root),
        Task::Bench { quick } => bench(&root, quick),
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
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// Benches read `SESSION_BENCH_QUICK=1` to pick small sizes.
fn bench(root: &Path, quick: bool) -> Result<()> {
    // Only `[[bench]]` targets: libraries' own libtest harnesses reject criterion's flags.
    let mut args = vec!["bench", "--workspace", "--bench", "*"];
    if quick {
        args.extend(["--", "--warm-up-time", "0.1", "--measurement-time", "0.3"]);
    }
    cargo_with_env(
        root,
        &args,
        &[("SESSION_BENCH_QUICK", if quick { "1" } else { "0" })],
    )
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
