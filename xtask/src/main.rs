//! Project automation, run as `cargo xtask <command>`.

mod fuzz;
mod prerequisites;
mod server;
mod suite;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use clap::{Parser, Subcommand};
use server::Server;

#[derive(Parser)]
#[command(about = "Project automation for the session workspace")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: formatting, clippy with warnings denied, the whole test suite,
    /// schemathesis against the real binary, the benchmark harness in quick mode, and each
    /// fuzz target for a few seconds. First installs the servers the suites need, as
    /// `prerequisites` does.
    Ci,
    /// Checks for the programs the test suites run (PostgreSQL, pgbouncer, nginx, Caddy,
    /// HAProxy, Prometheus, python3-venv). As root with apt-get, installs what is missing,
    /// printing each step; otherwise fails naming every missing package.
    Prerequisites,
    /// Checks that the docs and manifests agree with the code: the code map names every
    /// crate, no `#[expect]` names a disabled lint, `cargo doc` has no warnings, no unused
    /// dependency, the README's metrics table matches a live /metrics, the README's and
    /// ARCHITECTURE's Rust snippets compile, and the documented PostgreSQL grants suffice.
    Tidy,
    /// Only the test step of `ci`: every test binary of the workspace at once, each one's
    /// output in target/suite/, then the doctests.
    Test,
    /// Only the schemathesis step of `ci`: the OpenAPI document against the
    /// real binary, every check, for about a minute.
    Schemathesis,
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
        Task::Prerequisites => prerequisites::ensure(),
        Task::Tidy => tidy::tidy(
            &root,
            &target_dir(&root),
            &tools_dir(&root),
            tidy::SuiteChecks::Run,
        ),
        Task::Test => suite::run(&root, &target_dir(&root)),
        Task::Schemathesis => schemathesis(&root),
        Task::Bench { quick } => bench(&root, quick),
        Task::Fuzz { time, target } => fuzz::fuzz(
            &root,
            &target_dir(&root),
            &tools_dir(&root),
            time,
            target.as_deref(),
            fuzz::Build::Release,
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ci(root: &Path) -> Result<()> {
    let mut steps = Steps::default();
    steps.run("prerequisites", prerequisites::ensure)?;
    steps.run("fmt", || {
        cargo(root, &["fmt", "--all", "--", "--check"])
            .context("formatting differs: run `cargo fmt --all`")
    })?;
    steps.run("clippy", || {
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
        )
    })?;
    steps.run("tidy", || {
        tidy::tidy(
            root,
            &target_dir(root),
            &tools_dir(root),
            tidy::SuiteChecks::LeaveToTheSuite,
        )
    })?;
    steps.run("test", || suite::run(root, &target_dir(root)))?;
    steps.run("schemathesis, bench --quick", || {
        // Side by side: neither keeps both cores busy (schemathesis is one
        // Python process driving the debug binary; the quick bench mostly
        // waits on the servers it starts).
        let (checked, benched) = std::thread::scope(|scope| {
            let benched = scope.spawn(|| bench(root, true));
            let checked = schemathesis(root);
            let benched = benched
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the quick bench panicked")));
            (checked, benched)
        });
        match (checked, benched) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(err), Ok(())) | (Ok(()), Err(err)) => Err(err),
            (Err(checked), Err(benched)) => {
                Err(checked.context(format!("and the quick bench failed too: {benched:#}")))
            }
        }
    })?;
    steps.run("fuzz", || {
        fuzz::fuzz(
            root,
            &target_dir(root),
            &tools_dir(root),
            CI_FUZZ_SECS,
            None,
            fuzz::Build::Dev,
        )
    })?;
    eprintln!("xtask ci: all checks passed\n{steps}");
    Ok(())
}

/// How long each step of `ci` took, printed at the end (and after a
/// failure, up to the step that failed), so the run's budget is visible.
#[derive(Default)]
struct Steps(Vec<(&'static str, std::time::Duration)>);

impl Steps {
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = std::time::Instant::now();
        let result = step();
        self.0.push((name, started.elapsed()));
        if result.is_err() {
            eprintln!("xtask ci: `{name}` failed\n{self}");
        }
        result
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut total = std::time::Duration::ZERO;
        for (name, took) in &self.0 {
            total += *took;
            writeln!(f, "  {name:<28} {:>6.1} s", took.as_secs_f64())?;
        }
        write!(f, "  {:<28} {:>6.1} s", "total", total.as_secs_f64())
    }
}

/// The build of the binaries a step runs (the service for tidy's metrics
/// check and schemathesis, the bench harness): the same packages and
/// targets `cargo test --workspace` builds, so whichever comes first builds
/// for the others. A narrower selection (`--package session-app`) would
/// resolve features differently and build most dependencies again.
const SUITE_BUILD: &[&str] = &["build", "--workspace", "--bins", "--tests"];

/// Seconds `ci` runs each fuzz target: enough to catch a regression of
/// what the seeds reach, within CI's budget; `cargo xtask fuzz` runs longer.
const CI_FUZZ_SECS: u32 = 10;

fn bench(root: &Path, quick: bool) -> Result<()> {
    let results = target_dir(root).join("bench").join("results.json");
    let results = results.to_string_lossy();
    if quick {
        cargo(root, SUITE_BUILD)?;
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

/// The schemathesis release the contract is checked with, from PyPI.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// How long schemathesis generates requests, in seconds: its fuzzing and
/// stateful phases repeat until this is spent.
const SCHEMATHESIS_SECONDS: &str = "60";

/// Runs schemathesis, every check, against the real binary (debug build)
/// serving a temporary SQLite file behind an API key on a free loopback
/// port, with the binary's own `/openapi.json`: the document must describe
/// exactly what the service does. Any finding fails CI.
fn schemathesis(root: &Path) -> Result<()> {
    cargo(root, SUITE_BUILD)?;
    let runner = schemathesis_venv(&tools_dir(root).join(SCHEMATHESIS.replace("==", "-")))?;
    let scratch = target_dir(root).join("schemathesis").join("run");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("could not clear {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    // A fresh key each run; the file is private, as the service expects.
    let key = format!(
        "schemathesis-{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    );
    let key_file = scratch.join("api-key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)?;
        writeln!(file, "{key}")?;
    }
    let server = Server::start(
        &target_dir(root).join("debug").join("session-app"),
        &scratch,
        &["--api-key-file", &key_file.to_string_lossy()],
    )?;
    let schema = format!("http://{}/openapi.json", server.address);
    let authorization = format!("Authorization: Bearer {key}");
    let config = root.join("xtask").join("schemathesis.toml");
    let config = config.to_string_lossy();
    let report = scratch.join("report");
    let report = report.to_string_lossy();
    let result = run(
        &scratch,
        &runner,
        &[
            "--no-color",
            "--config-file",
            &config,
            "run",
            &schema,
            "--header",
            &authorization,
            // Every check runs (schemathesis' default); the few exceptions
            // are in the config file, each with its reason.
            "--max-time",
            SCHEMATHESIS_SECONDS,
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-dir",
            &report,
        ],
    );
    drop(server);
    result.context("schemathesis found the service and its OpenAPI document disagree")
}

/// The schemathesis runner of a virtualenv under `work`, made (with
/// `python3 -m venv`) and filled from PyPI unless it already holds
/// [`SCHEMATHESIS`].
fn schemathesis_venv(work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let runner = venv.join("bin").join("schemathesis");
    let pinned = SCHEMATHESIS.trim_start_matches("schemathesis==");
    let installed = Command::new(&runner)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(pinned));
    if installed {
        return Ok(runner);
    }
    std::fs::create_dir_all(work)?;
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .context("python3 is required to run schemathesis: install the Debian package `python3`")?;
    if !made.success() {
        bail!(
            "`python3 -m venv` failed: install the Debian package `python3-venv` (schemathesis \
             runs from a virtualenv under {})",
            work.display()
        );
    }
    run(
        work,
        &venv.join("bin").join("pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ],
    )
    .context("could not install schemathesis from PyPI into the virtualenv")?;
    Ok(runner)
}

/// The binary `name` of the crates.io crate `name` at `version`, from
/// `tools_dir/<name>-<version>`, installed there first (`cargo install
/// --locked`, with the crate's own lock file) if missing. Built without
/// optimisation: these tools drive cargo or scan sources, so a fresh
/// machine's first run is about 45 s shorter (cargo-fuzz and cargo-machete
/// together) for about 5 s more per later run (cargo-machete's scan).
fn install_crate(tools_dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let root = tools_dir.join(format!("{name}-{version}"));
    let binary = root.join("bin").join(name);
    if binary.is_file() {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "$ cargo install {name} --version {version} --locked --debug --root {}",
        root.display()
    );
    let status = Command::new(cargo)
        .args([
            "install",
            name,
            "--version",
            version,
            "--locked",
            "--debug",
            "--root",
        ])
        .arg(&root)
        .status()
        .context("could not run cargo install")?;
    if !status.success() {
        bail!(
            "could not install {name} {version} into {} ({status}): it comes from crates.io, so \
             check the network, or install it by hand with `cargo install {name} --version \
             {version} --locked --debug --root {}`",
            root.display(),
            root.display()
        );
    }
    Ok(binary)
}

/// Where pinned tools (cargo-fuzz, the schemathesis virtualenv) are
/// installed: once per machine and user, not per clone, so a fresh clone
/// does not build them again. `$XDG_CACHE_HOME/session-xtask`, else
/// `~/.cache/session-xtask`, else the target directory. Each tool's folder
/// names its version, so a pin change installs beside the old one.
fn tools_dir(root: &Path) -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .map_or_else(
            || target_dir(root).join("tools"),
            |cache| cache.join("session-xtask"),
        )
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

/// The cargo that runs this xtask, so every step uses the same toolchain.
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo_with_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo_program())
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
