//! The benchmarks behind `cargo xtask bench`: every figure beside its floor,
//! the best the same machine reaches doing only the unavoidable part of the
//! work, measured in the same run.
//!
//! Each section is a module with a `run` function returning its tables; to
//! add one, write the module and list it in [`SECTIONS`]. Results print as
//! Markdown tables and go to `target/bench/results.json` with the machine
//! they were measured on. `--quick` runs every section at a small size to
//! check the harness end to end; its numbers mean nothing.

/// The allocator `session-app` runs with (see its main.rs), so the
/// in-process figures (`scale`, `warm`, `resolve`) are what it would show.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod api;
mod app;
mod cold_start;
mod create;
mod events;
mod extractor;
mod floor;
mod http;
mod idle;
mod load;
mod measure;
mod miss;
mod pooler;
mod postgres;
mod propagation;
mod report;
mod resolve;
mod resume;
mod scale;
mod sqlite;
mod steady;
mod warm;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::report::{Failure, Machine, Results, Section};

/// A section: its name on the command line and what runs it.
type Run = fn(&Context) -> anyhow::Result<Vec<Section>>;

/// Every section, in the order they run and print.
const SECTIONS: &[(&str, Run)] = &[
    ("resolve", resolve::run),
    ("extractor", extractor::run),
    ("http", http::run),
    ("create", create::run),
    ("cold-start", cold_start::run),
    ("propagation", propagation::run),
    ("events", events::run),
    ("miss", miss::run),
    ("pooler", pooler::run),
    ("resume", resume::run),
    ("scale", scale::run),
    ("idle", idle::run),
    ("warm", warm::run),
];

/// Runs the session benchmarks and writes their results.
#[derive(Debug, Parser)]
#[command(name = "session-bench")]
struct Cli {
    /// Small sizes and short rounds: checks every section works, in seconds.
    #[arg(long)]
    quick: bool,

    /// The `session-app` binary to start (default: the one next to this binary).
    #[arg(long, value_name = "PATH")]
    app: Option<PathBuf>,

    /// Where to write the results.
    #[arg(long, value_name = "PATH", default_value = "target/bench/results.json")]
    out: PathBuf,

    /// Run only these sections (default: all).
    #[arg(long = "section", value_name = "NAME", value_parser = section_names())]
    sections: Vec<String>,
}

fn section_names() -> clap::builder::PossibleValuesParser {
    SECTIONS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .into()
}

/// What every section gets.
pub(crate) struct Context {
    pub(crate) quick: bool,
    /// The `session-app` binary.
    pub(crate) app: PathBuf,
    /// A directory for database files, removed at exit.
    pub(crate) scratch: PathBuf,
    pub(crate) cpus: usize,
}

fn main() -> anyhow::Result<()> {
    // Not a section: the bare-stack server the `http` section measures
    // beside the service, run as a process of its own.
    if std::env::args().nth(1).as_deref() == Some(floor::FLOOR_SERVER_ARG) {
        return floor::serve();
    }
    // Not a section either: one cache mode at one size, measured in a
    // process of its own by the `scale` section.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(scale::CHILD_ARG) {
        return scale::child(&args[2..]);
    }
    // Nor is a warm of one store, measured by the `warm` section.
    if args.get(1).map(String::as_str) == Some(warm::CHILD_ARG) {
        return warm::child(&args[2..]);
    }
    let cli = Cli::parse();
    let began = Instant::now();
    let mut machine = Machine::describe();
    let app = match cli.app {
        Some(app) => app,
        None => std::env::current_exe()?.with_file_name("session-app"),
    };
    if !app.is_file() {
        bail!(
            "{} does not exist: build it (`cargo build -p session-app`) or pass --app",
            app.display()
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("session-bench-")
        .tempdir()
        .context("could not create a scratch directory")?;
    let ctx = Context {
        quick: cli.quick,
        app,
        scratch: scratch.path().to_path_buf(),
        cpus: machine.cpus,
    };
    eprintln!(
        "session-bench ({} mode, {} build) on {} × {}, load {:.2}",
        if ctx.quick { "quick" } else { "full" },
        machine.profile,
        machine.cpus,
        machine.cpu_model,
        machine.load_before
    );

    let mut sections = Vec::new();
    let mut failures = Vec::new();
    for (name, run) in SECTIONS {
        if !cli.sections.is_empty() && !cli.sections.iter().any(|s| s == name) {
            continue;
        }
        let started = Instant::now();
        eprintln!("{name}:");
        // A failed section is reported at the end; the others still run and
        // their results are still written.
        match run(&ctx) {
            Ok(tables) => {
                eprintln!("{name}: done in {:.1?}", started.elapsed());
                for table in &tables {
                    println!("{}", table.render());
                }
                sections.extend(tables);
            }
            Err(err) => {
                eprintln!("{name}: FAILED after {:.1?}: {err:#}", started.elapsed());
                failures.push(Failure {
                    section: name,
                    error: format!("{err:#}"),
                });
            }
        }
    }

    machine.load_after = report::load_average();
    let results = Results {
        machine,
        mode: if ctx.quick { "quick" } else { "full" },
        elapsed_s: began.elapsed().as_secs_f64(),
        sections,
        failures,
    };
    results.write(&cli.out)?;
    eprintln!(
        "session-bench: wrote {} after {:.1?}",
        cli.out.display(),
        began.elapsed()
    );
    if !results.failures.is_empty() {
        let names: Vec<&str> = results.failures.iter().map(|f| f.section).collect();
        bail!("these benchmarks failed: {}", names.join(", "));
    }
    Ok(())
}
