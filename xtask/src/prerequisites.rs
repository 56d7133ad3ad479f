//! The programs the test suites need from the system, checked before `ci`
//! builds anything, and installed with `apt-get` where that is possible.
//!
//! The suites start throwaway servers of their own (PostgreSQL, pgbouncer,
//! nginx, Caddy, HAProxy, Prometheus) and never use one that happens to be
//! running, so what they need is the programs, not running services. Run as
//! root on a machine with `apt-get`, every missing package is installed,
//! each step printed, with service starts refused while it runs so no
//! package starts a daemon of its own. Anywhere else, one message names
//! every missing package, so a new user installs them in one go.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use session_test_process::find_program as program;

/// One program the suites run, and the Debian package that has it.
struct Prerequisite {
    /// What it is for, for the message when it is missing.
    purpose: &'static str,
    /// The Debian package that installs it.
    package: &'static str,
    /// Whether it is installed.
    present: fn() -> bool,
}

/// Every program the suites need that a fresh machine may lack.
const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        purpose: "throwaway PostgreSQL servers (session-test-postgres)",
        package: "postgresql",
        present: postgres_server_present,
    },
    Prerequisite {
        purpose: "PostgreSQL behind a transaction pooler",
        package: "pgbouncer",
        present: || program("pgbouncer").is_some(),
    },
    Prerequisite {
        purpose: "forward auth behind nginx (session-test-gateway)",
        package: "nginx",
        present: || program("nginx").is_some(),
    },
    Prerequisite {
        purpose: "forward auth behind Caddy (session-test-gateway)",
        package: "caddy",
        present: || program("caddy").is_some(),
    },
    Prerequisite {
        purpose: "forward auth behind HAProxy (session-test-gateway)",
        package: "haproxy",
        present: || program("haproxy").is_some(),
    },
    Prerequisite {
        purpose: "a real scrape of /metrics (session-test-gateway)",
        package: "prometheus",
        present: || program("prometheus").is_some(),
    },
    Prerequisite {
        purpose: "the virtualenv schemathesis runs from",
        package: "python3-venv",
        present: python_venv_present,
    },
];

/// Checks every prerequisite and installs what is missing, or fails naming
/// every missing package and how to install them.
pub(crate) fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
    let listed: Vec<String> = missing
        .iter()
        .map(|p| format!("  {:<14} {}", p.package, p.purpose))
        .collect();
    let apt_get = program("apt-get");
    let Some(apt_get) = apt_get.filter(|_| is_root()) else {
        bail!(
            "the test suites need programs this machine lacks:\n{}\ninstall them (Debian/Ubuntu, as \
             root): apt-get install --no-install-recommends {}\n`cargo xtask ci` installs them \
             itself when run as root on a machine with apt-get",
            listed.join("\n"),
            packages.join(" ")
        );
    };
    eprintln!(
        "xtask: installing what the test suites need:\n{}",
        listed.join("\n")
    );
    install(&apt_get, &packages)?;
    let still: Vec<&str> = self::missing().iter().map(|p| p.package).collect();
    if !still.is_empty() {
        bail!(
            "apt-get installed {} but these are still missing: {}",
            packages.join(" "),
            still.join(" ")
        );
    }
    Ok(())
}

/// The prerequisites not installed.
fn missing() -> Vec<&'static Prerequisite> {
    PREREQUISITES.iter().filter(|p| !(p.present)()).collect()
}

/// `apt-get update`, then `apt-get install` of `packages`, with service
/// starts refused (Debian's `policy-rc.d` convention, exit code 101) for
/// the duration when nothing refuses them already.
fn install(apt_get: &Path, packages: &[&str]) -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = if policy.exists() {
        None
    } else {
        eprintln!(
            "xtask: writing {} so the packages start no services",
            policy.display()
        );
        write_policy(policy)?;
        Some(RemoveOnDrop(policy))
    };
    let quiet = ["-q", "-o", "Dpkg::Use-Pty=0"];
    let update = apt(apt_get, &[&quiet[..], &["update"]].concat());
    // A stale package list only fails the install below, which says so.
    if let Err(err) = update {
        eprintln!("xtask: {err:#}; trying the install with the lists already here");
    }
    let install = [
        &quiet[..],
        &["install", "-y", "--no-install-recommends"],
        packages,
    ]
    .concat();
    let installed = apt(apt_get, &install);
    drop(placed);
    installed.with_context(|| {
        format!(
            "could not install {}: check that Debian's package archive is reachable",
            packages.join(" ")
        )
    })
}

fn apt(apt_get: &Path, args: &[&str]) -> Result<()> {
    eprintln!("$ {} {}", apt_get.display(), args.join(" "));
    let status = Command::new(apt_get)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("could not run {}", apt_get.display()))?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn write_policy(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(
        path,
        "#!/bin/sh\n# Written by cargo xtask ci while it installs packages.\nexit 101\n",
    )
    .with_context(|| format!("could not write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("could not make {} executable", path.display()))
}

/// Removes the file it names when dropped, so an install that fails still
/// leaves the machine's service policy as it was.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        eprintln!("xtask: removing {}", self.0.display());
        if let Err(err) = std::fs::remove_file(self.0) {
            eprintln!("xtask: could not remove {}: {err}", self.0.display());
        }
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the
/// effective user.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Whether a PostgreSQL server is installed where session-test-postgres
/// looks: `initdb` on `PATH`, or in one of Debian's per-version folders.
fn postgres_server_present() -> bool {
    program("initdb").is_some()
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.path().join("bin").join("initdb").is_file())
        })
}

/// Whether `python3 -m venv` can make a virtualenv with pip in it (Debian
/// splits `ensurepip` into `python3-venv`).
fn python_venv_present() -> bool {
    Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|out| out.status.success())
}
