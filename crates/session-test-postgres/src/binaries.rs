//! Finding the PostgreSQL server programs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs a throwaway server needs, from one installation.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) pg_ctl: PathBuf,
}

impl Binaries {
    /// `pg_basebackup`, for starting a standby.
    pub(crate) fn pg_basebackup(&self) -> Result<PathBuf, String> {
        self.client("pg_basebackup", "starts a standby")
    }

    /// The client program `name` of this installation, which `what` needs:
    /// beside `pg_ctl`, or beside the file `pg_ctl` links to (Debian links a
    /// default version's server programs elsewhere, but not its client
    /// programs), so its version is the server's.
    pub(crate) fn client(&self, name: &str, what: &str) -> Result<PathBuf, String> {
        let beside = |program: &Path| program.parent().map(|dir| dir.join(name));
        let linked = std::fs::canonicalize(&self.pg_ctl).ok();
        beside(&self.pg_ctl)
            .into_iter()
            .chain(linked.as_deref().and_then(beside))
            .find(|candidate| is_file(candidate))
            .ok_or_else(|| {
                format!(
                    "session-test-postgres: {name}, which {what}, is not installed beside {}. \
                     Install the PostgreSQL programs (Debian/Ubuntu: `apt-get install \
                     postgresql`; Fedora: `dnf install postgresql-server postgresql`; macOS: \
                     `brew install postgresql`).",
                    self.pg_ctl.display()
                )
            })
    }
}

const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Looks on `PATH`, then in `pg_config --bindir`, then in Debian's
/// per-version folders (newest first), which are not on `PATH` by default.
pub(crate) fn find() -> Result<Binaries, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = on_path
        .into_iter()
        .chain(pg_config_bindir())
        .chain(debian_bindirs());
    for dir in candidates {
        if PROGRAMS.iter().all(|program| is_file(&dir.join(program))) {
            return Ok(Binaries {
                initdb: dir.join("initdb"),
                pg_ctl: dir.join("pg_ctl"),
            });
        }
    }
    Err(concat!(
        "session-test-postgres: no PostgreSQL server found to start for the tests. ",
        "Looked for initdb, pg_ctl and postgres on PATH, in `pg_config --bindir` and in ",
        "/usr/lib/postgresql/<version>/bin. Install the PostgreSQL server ",
        "(Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; ",
        "macOS: `brew install postgresql`), or set TEST_DATABASE_URL to a server where this ",
        "user may create databases."
    )
    .to_owned())
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}
