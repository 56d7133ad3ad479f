//! `cargo xtask fuzz`: the coverage-guided fuzz targets of `fuzz/`, run by
//! cargo-fuzz (libFuzzer) for a bounded time each.
//!
//! cargo-fuzz is installed on first use, pinned, into a folder of its
//! version under the machine's tools directory, so every later run and
//! every other clone reuses it. The targets build with
//! `--sanitizer none`, which works on the stable toolchain: the code under
//! test forbids `unsafe`, so AddressSanitizer (nightly-only) would watch
//! only the dependencies, while the fuzz targets' own assertions, overflow
//! checks and debug assertions, which hold on stable, are what find faults
//! here.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release installed; `--locked` builds it with its own lock file.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// How the fuzz targets are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// Optimised, as cargo-fuzz builds by default: the most inputs per
    /// second, for `cargo xtask fuzz`. Sixteen codegen units instead of
    /// cargo-fuzz's one build faster for slightly slower runs.
    Release,
    /// Unoptimised (`--dev`): about half the build time of `Release` and
    /// far fewer inputs per second, which suits CI's short runs, whose
    /// budget the optimised build alone would spend.
    Dev,
}

impl Build {
    /// The cargo-fuzz flags of this build, the same for `build` and `run`
    /// so the run reuses the build.
    const fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Release => &["--sanitizer", "none", "--codegen-units", "16"],
            Self::Dev => &["--sanitizer", "none", "--dev"],
        }
    }
}

/// An input that takes longer than this, in seconds, counts as a hang.
const INPUT_TIMEOUT_SECS: u32 = 10;

/// Builds every fuzz target (or only `only`) and runs each for `seconds`,
/// from its generated corpus and its committed seeds. Fails on the first
/// crash, hang or broken invariant, naming the input saved under
/// `fuzz/artifacts/`; prints how many inputs each target ran.
pub(crate) fn fuzz(
    root: &Path,
    target_dir: &Path,
    tools_dir: &Path,
    seconds: u32,
    only: Option<&str>,
    profile: Build,
) -> Result<()> {
    let cargo_fuzz = crate::install_crate(tools_dir, "cargo-fuzz", CARGO_FUZZ_VERSION)?;
    let fuzz_dir = root.join("fuzz");
    let fuzz_target_dir = target_dir.join("fuzz");
    let common = |command: &str| {
        let mut cmd = Command::new(&cargo_fuzz);
        cmd.arg(command)
            .arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .current_dir(root);
        cmd
    };

    let listed = common("list")
        .output()
        .context("could not list the fuzz targets")?;
    if !listed.status.success() {
        bail!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
    let all: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let targets: Vec<&str> = match only {
        Some(name) if !all.iter().any(|t| t == name) => bail!(
            "no fuzz target `{name}`; the targets are {}",
            all.join(", ")
        ),
        Some(name) => vec![name],
        None => all.iter().map(String::as_str).collect(),
    };

    let mut build = common("build");
    build
        .args(profile.flags())
        .arg("--target-dir")
        .arg(&fuzz_target_dir);
    if let Some(name) = only {
        build.arg(name);
    }
    eprintln!("$ cargo fuzz build {}", profile.flags().join(" "));
    let status = build.status().context("could not run cargo fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }

    let logs = fuzz_target_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("could not create {}", logs.display()))?;
    let mut summary = Vec::new();
    // CI's short check runs the targets at once, so the run takes
    // `seconds` in all and no core waits; a longer search gives each
    // target the whole machine in turn.
    let at_once = if profile == Build::Dev {
        targets.len()
    } else {
        1
    };
    for wave in targets.chunks(at_once.max(1)) {
        let mut running = Vec::new();
        for &target in wave {
            let corpus = fuzz_dir.join("corpus").join(target);
            let seeds = fuzz_dir.join("seeds").join(target);
            for dir in [&corpus, &seeds] {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
            let log = logs.join(format!("{target}.log"));
            let log_file = std::fs::File::create(&log)
                .with_context(|| format!("could not create {}", log.display()))?;
            eprintln!(
                "$ cargo fuzz run {target} ({seconds} s, log in {})",
                log.display()
            );
            let child = common("run")
                .args(profile.flags())
                .arg("--target-dir")
                .arg(&fuzz_target_dir)
                .arg(target)
                // New inputs go to the first directory; the seeds are only read.
                .arg(&corpus)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
                .arg("-print_final_stats=1")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("could not run fuzz target {target}"))?;
            running.push((target, log, child));
        }
        let mut failures = Vec::new();
        for (target, log, mut child) in running {
            let status = child
                .wait()
                .with_context(|| format!("could not wait for fuzz target {target}"))?;
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            if !status.success() {
                let tail: Vec<&str> = output.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                failures.push(format!(
                    "fuzz target {target} failed ({status}); the input is saved under {}:\n{}",
                    fuzz_dir.join("artifacts").join(target).display(),
                    tail.join("\n")
                ));
                continue;
            }
            let runs = stat(&output, "number_of_executed_units").unwrap_or_default();
            let per_second = stat(&output, "average_exec_per_sec").unwrap_or_default();
            eprintln!(
                "fuzz target {target}: {runs} inputs in {seconds} s ({per_second}/s), no failure"
            );
            summary.push(format!("{target}: {runs} inputs ({per_second}/s)"));
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("\n\n"));
        }
    }
    eprintln!("xtask fuzz: {}", summary.join("; "));
    Ok(())
}

/// A figure from libFuzzer's final stats (`stat::<name>: <value>`).
fn stat(output: &str, name: &str) -> Option<u64> {
    let prefix = format!("stat::{name}:");
    output
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}
