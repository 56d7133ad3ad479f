//! `cargo xtask tidy`: the checks that keep the docs and the manifests true
//! to the code, so drift fails the build instead of waiting for a reader.
//!
//! - Every crate has a section in docs/ARCHITECTURE.md's code map, and every
//!   section names a crate that exists.
//! - Every lint a `#[expect(...)]` names is enabled (on by default, or in the
//!   workspace's `[lints]`): an attribute against a lint that never runs says
//!   nothing. `#[allow]` itself is refused by clippy (`allow_attributes`).
//! - `cargo doc` has no warnings (broken intra-doc links, bad HTML).
//! - No crate declares a dependency it does not use (cargo-machete).
//! - The README's metrics table matches what a live `/metrics` serves: every
//!   family served is listed with its type and labels.
//! - The Rust snippets of README.md and docs/ARCHITECTURE.md compile (they
//!   are doctests of `session-axum`), and the PostgreSQL grants the
//!   architecture states are the ones a test proves enough (the test reads
//!   them from the document).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::server::Server;

/// The cargo-machete release that finds unused dependencies.
const CARGO_MACHETE_VERSION: &str = "0.9.2";

/// Whether tidy runs the two checks that are tests of the suite (the
/// snippets' doctests and the grants test).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SuiteChecks {
    /// Run them: `cargo xtask tidy` alone.
    Run,
    /// Leave them to `cargo test --workspace`, which runs them anyway
    /// (`ci`, right after tidy).
    LeaveToTheSuite,
}

/// Runs every check, reporting all failures of a check together.
pub(crate) fn tidy(
    root: &Path,
    target_dir: &Path,
    tools_dir: &Path,
    suite_checks: SuiteChecks,
) -> Result<()> {
    code_map(root)?;
    lint_expectations(root)?;
    crate::cargo_with_env(
        root,
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--document-private-items",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
    .context("cargo doc has warnings")?;
    unused_dependencies(root, tools_dir)?;
    if suite_checks == SuiteChecks::Run {
        suite_drift_checks(root)?;
    }
    metrics_table(root, target_dir)?;
    eprintln!("xtask tidy: docs and manifests agree with the code");
    Ok(())
}

/// The drift checks that are tests of the suite: the README's and
/// ARCHITECTURE's snippets and the documented grants.
fn suite_drift_checks(root: &Path) -> Result<()> {
    // The snippets: README.md and docs/ARCHITECTURE.md are doctests of
    // session-axum, which depends on what a host uses.
    crate::cargo(root, &["test", "--package", "session-axum", "--doc"])
        .context("a Rust snippet of README.md or docs/ARCHITECTURE.md does not compile")?;
    // The grants: the test reads them from docs/ARCHITECTURE.md.
    crate::cargo(
        root,
        &[
            "test",
            "--package",
            "session-postgres",
            "--test",
            "it",
            "--",
            "--exact",
            "change_log::the_documented_grants_are_enough_to_serve",
        ],
    )
    .context("the grants docs/ARCHITECTURE.md states are not enough to serve")
}

/// Every crate folder (`crates/*`, `examples/*`, `xtask`, `fuzz`) has a
/// `### \`path\`` section under docs/ARCHITECTURE.md's "Code map", and
/// every such section names a folder that exists.
fn code_map(root: &Path) -> Result<()> {
    let doc = read(&root.join("docs").join("ARCHITECTURE.md"))?;
    let map = section(&doc, "## Code map").context("docs/ARCHITECTURE.md has no `## Code map`")?;
    let listed: BTreeSet<String> = map
        .lines()
        .filter_map(|line| line.strip_prefix("### `"))
        .filter_map(|rest| rest.strip_suffix('`'))
        .map(str::to_owned)
        .collect();
    let mut crates = BTreeSet::new();
    for group in ["crates", "examples"] {
        for entry in std::fs::read_dir(root.join(group))? {
            let entry = entry?;
            if entry.path().join("Cargo.toml").is_file() {
                crates.insert(format!("{group}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    crates.extend(["xtask".to_owned(), "fuzz".to_owned()]);
    let missing: Vec<_> = crates.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&crates).collect();
    if !missing.is_empty() || !stale.is_empty() {
        bail!(
            "docs/ARCHITECTURE.md's code map does not match the workspace: crates without a \
             section: {missing:?}; sections naming no crate: {stale:?}. Each crate gets a \
             `### \\`path\\`` section saying what it is and what it may depend on."
        );
    }
    Ok(())
}

/// The text of the `##` section headed `heading`, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.find(&format!("\n{heading}\n"))? + heading.len() + 2;
    let rest = &doc[start..];
    Some(rest.find("\n## ").map_or(rest, |end| &rest[..end]))
}

/// Every lint named by an `#[expect(...)]` in the workspace's Rust sources
/// is enabled: its default level (from `clippy-driver -W help`) is warn or
/// deny, or the root manifest's `[workspace.lints]` raises it.
fn lint_expectations(root: &Path) -> Result<()> {
    let help = Command::new("clippy-driver")
        .args(["-W", "help"])
        .output()
        .context("could not run clippy-driver: install clippy (`rustup component add clippy`)")?;
    let help = String::from_utf8_lossy(&help.stdout);
    let mut enabled = BTreeSet::new();
    for line in help.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(level)) = (words.next(), words.next())
            && matches!(level, "warn" | "deny" | "forbid")
        {
            enabled.insert(name.replace('-', "_"));
        }
    }
    if !enabled.contains("clippy::new_without_default") {
        bail!("could not read the lint levels from `clippy-driver -W help`");
    }
    let manifest = read(&root.join("Cargo.toml"))?;
    let mut table = "";
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line;
        } else if let Some((name, level)) = line.split_once('=')
            && (level.contains("warn") || level.contains("deny") || level.contains("forbid"))
        {
            let name = name.trim().replace('-', "_");
            match table {
                "[workspace.lints.rust]" => enabled.insert(name),
                "[workspace.lints.clippy]" => enabled.insert(format!("clippy::{name}")),
                _ => false,
            };
        }
    }
    let mut offences = Vec::new();
    for dir in ["crates", "examples", "xtask"] {
        for file in rust_files(&root.join(dir))? {
            let text = read(&file)?;
            for (at, _) in text.match_indices("expect(") {
                let before = &text[..at];
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let in_comment = before[line_start..].trim_start().starts_with("//");
                let attribute = before.ends_with("#[")
                    || before.ends_with("#![")
                    || before.trim_end().ends_with(',') && before.contains("cfg_attr(");
                if in_comment || !attribute {
                    continue;
                }
                let args = &text[at + "expect(".len()..];
                let args = &args[..args.find(')').unwrap_or(args.len())];
                let args = args.split("reason").next().unwrap_or_default();
                for lint in args.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                    if !enabled.contains(lint) {
                        let line = before.lines().count();
                        let file = file.strip_prefix(root).unwrap_or(&file);
                        offences.push(format!("{}:{line}: `{lint}`", file.display()));
                    }
                }
            }
        }
    }
    if !offences.is_empty() {
        bail!(
            "these `#[expect]` attributes name lints that are not enabled, so they silence \
             nothing; remove them (say why in a comment if the code needs it):\n  {}",
            offences.join("\n  ")
        );
    }
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// cargo-machete over the workspace and the fuzz workspace: a declared
/// dependency that no source names fails.
fn unused_dependencies(root: &Path, tools_dir: &Path) -> Result<()> {
    let machete = crate::install_crate(tools_dir, "cargo-machete", CARGO_MACHETE_VERSION)?;
    crate::run(root, &machete, &[])
        .context("a crate declares a dependency it does not use: remove it from its Cargo.toml")
}

/// A family of the README's metrics table: its type and label names.
#[derive(Debug, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    /// Whether the row says the family may be absent from a fresh
    /// instance over SQLite (PostgreSQL only, `--last-seen` only, or it
    /// appears with its first event).
    may_be_absent: bool,
}

/// The README's metrics table against the families a fresh instance over
/// SQLite serves on `/metrics`: every family served is listed with the
/// same type and labels; a listed family not served must be one the table
/// says appears later.
fn metrics_table(root: &Path, target_dir: &Path) -> Result<()> {
    let readme = read(&root.join("README.md"))?;
    let documented = documented_families(&readme)?;
    crate::cargo(root, crate::SUITE_BUILD)?;
    let scratch = target_dir.join("tidy");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let server = Server::start(
        &target_dir.join("debug").join("session-app"),
        &scratch,
        &["--last-seen"],
    )?;
    // One request first, so the request histogram has labelled samples.
    server.get("/healthz")?;
    let text = server.get("/metrics")?;
    drop(server);
    let served = served_families(&text);
    let mut problems = Vec::new();
    for (name, family) in &served {
        match documented.get(name) {
            None => problems.push(format!("`{name}` is served but not in the README's table")),
            Some(listed) if listed.kind != family.kind || listed.labels != family.labels => {
                problems.push(format!(
                    "`{name}`: served as a {} with labels {:?}, listed as a {} with labels {:?}",
                    family.kind, family.labels, listed.kind, listed.labels
                ));
            }
            Some(_) => {}
        }
    }
    for (name, listed) in &documented {
        if !served.contains_key(name) && !listed.may_be_absent {
            problems.push(format!(
                "`{name}` is in the README's table but not served, and its row does not say it \
                 appears later"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the README's metrics table (### Metrics) and /metrics disagree:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// The rows of the README's `| Family | Type | Labels | … |` table.
fn documented_families(readme: &str) -> Result<BTreeMap<String, Family>> {
    let table = readme
        .split("| Family | Type | Labels |")
        .nth(1)
        .context("README.md has no metrics table (`| Family | Type | Labels |`)")?;
    let mut families = BTreeMap::new();
    for row in table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, name, kind, labels, what, ..] = cells.as_slice() else {
            bail!("README.md's metrics table has a short row: {row}");
        };
        let labels: BTreeSet<String> = labels
            .split(',')
            .map(|label| label.trim().trim_matches('`').to_owned())
            .filter(|label| !label.is_empty())
            .collect();
        let may_be_absent = !labels.is_empty()
            || what.starts_with("PostgreSQL")
            || what.contains("(PostgreSQL)")
            || what.contains("present after");
        families.insert(
            name.trim_matches('`').to_owned(),
            Family {
                kind: (*kind).to_owned(),
                labels,
                may_be_absent,
            },
        );
    }
    Ok(families)
}

/// The families of an OpenMetrics text, by the name their samples carry
/// (a counter's with `_total`), with the label names of their samples
/// (a histogram's `le` left out).
fn served_families(text: &str) -> BTreeMap<String, Family> {
    let mut families = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                let sampled = if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                families.insert(
                    sampled.clone(),
                    Family {
                        kind: kind.to_owned(),
                        labels: BTreeSet::new(),
                        may_be_absent: false,
                    },
                );
                current = Some(sampled);
            }
        } else if !line.starts_with('#')
            && let Some(name) = &current
            && let Some((_, labels)) = line.split_once('{')
            && let Some(family) = families.get_mut(name)
        {
            let labels = labels.split('}').next().unwrap_or_default();
            for pair in labels.split("\",") {
                if let Some((label, _)) = pair.split_once("=\"")
                    && label != "le"
                {
                    family.labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    families
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_families_read_names_types_and_labels() {
        let text = "# HELP a_total A.\n# TYPE a counter\na_total{outcome=\"x\",kind=\"y\"} 1\n\
                    # TYPE h histogram\nh_bucket{operation=\"get\",le=\"0.1\"} 0\nh_sum{operation=\"get\"} 0\n\
                    # TYPE g gauge\ng 1\n# EOF\n";
        let served = served_families(text);
        assert_eq!(
            served["a_total"].labels,
            BTreeSet::from(["kind".to_owned(), "outcome".to_owned()])
        );
        assert_eq!(served["h"].labels, BTreeSet::from(["operation".to_owned()]));
        assert_eq!(served["g"].kind, "gauge");
        assert!(served["g"].labels.is_empty());
    }

    #[test]
    fn the_readme_table_parses() {
        let readme = include_str!("../../README.md");
        let families = documented_families(readme).unwrap();
        assert!(families.len() > 20);
        assert_eq!(families["session_resolves_total"].kind, "counter");
        assert!(!families["session_cache_sessions"].may_be_absent);
    }
}
