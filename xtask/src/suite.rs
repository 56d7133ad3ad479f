//! The test suite as `ci` runs it: every test binary of the workspace at
//! once, then the doctests.
//!
//! `cargo test --workspace` runs its binaries one after another, and most of
//! their time is spent waiting on the servers and processes they start
//! (PostgreSQL, the real binary, gateways), not on the CPU: one after another
//! they took about 200 s on 2 cores, the two largest about 80 s each. Started
//! together, the suite takes about as long as its largest binary. Each binary
//! still runs its own tests on as many threads as `cargo test` gives it, from
//! its package's folder with the environment cargo sets, so a test sees no
//! difference; only their output is kept apart, in one file per binary, and
//! printed whole for a binary that fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One test binary cargo built.
struct TestBinary {
    /// `package/target` (`session-app/it`), for messages and the log's name.
    name: String,
    executable: PathBuf,
    /// The package's folder: cargo runs each test binary from there.
    package_dir: PathBuf,
}

/// Builds every test target of the workspace as `cargo test --workspace`
/// would, runs all the binaries at once, then the doctests. Fails naming
/// every binary that failed, after printing each one's whole output.
pub(crate) fn run(root: &Path, target_dir: &Path) -> Result<()> {
    let binaries = build(root)?;
    let logs = target_dir.join("suite");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("could not create {}", logs.display()))?;
    eprintln!(
        "xtask: running {} test binaries at once, their output in {}",
        binaries.len(),
        logs.display()
    );
    let started = Instant::now();
    let results: Vec<(String, Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = binaries
            .iter()
            .map(|binary| {
                let logs = &logs;
                scope.spawn(move || (binary.name.clone(), run_one(binary, logs, started)))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| (String::from("?"), Err(anyhow::anyhow!("panicked"))))
            })
            .collect()
    });
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, result)| result.is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    for (_, result) in &results {
        if let Err(err) = result {
            eprintln!("{err:#}");
        }
    }
    if !failed.is_empty() {
        bail!("test binaries failed: {}", failed.join(", "));
    }
    crate::cargo(root, &["test", "--workspace", "--doc"])
}

/// `cargo test --workspace --no-run`, and the test binaries it reports.
fn build(root: &Path) -> Result<Vec<TestBinary>> {
    eprintln!("$ cargo test --workspace --no-run --message-format json-render-diagnostics");
    let output = Command::new(crate::cargo_program())
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format",
            "json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the tests failed ({})", output.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let (Some(executable), Some(manifest)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        let package_dir = Path::new(manifest)
            .parent()
            .context("a manifest path without a folder")?
            .to_path_buf();
        // The workspace's packages are named as their folders.
        let package_name = package_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = message["target"]["name"].as_str().unwrap_or("?");
        binaries.push(TestBinary {
            name: format!("{package_name}/{target}"),
            executable: PathBuf::from(executable),
            package_dir,
        });
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run reported no test binary");
    }
    Ok(binaries)
}

/// Runs one binary, its output to its own log; prints a line when it ends.
fn run_one(binary: &TestBinary, logs: &Path, started: Instant) -> Result<()> {
    let log = logs.join(format!("{}.log", binary.name.replace('/', "-")));
    let file = std::fs::File::create(&log)
        .with_context(|| format!("could not create {}", log.display()))?;
    let status = Command::new(&binary.executable)
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("could not run {}", binary.executable.display()))?;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let summary = output
        .lines()
        .rfind(|line| line.starts_with("test result:"))
        .unwrap_or("no test result");
    eprintln!(
        "{:>6.1} s  {}: {summary}",
        started.elapsed().as_secs_f64(),
        binary.name
    );
    if !status.success() {
        bail!("{} failed ({status}):\n{output}", binary.name);
    }
    Ok(())
}
