//! Who a server runs as, and the directory it keeps its files in.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Who a test server runs as: the test process's own user or, when that is
/// root, an unprivileged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUser {
    /// User and group ids to switch to; `None` to stay who we are.
    switch_to: Option<(u32, u32)>,
}

impl ServerUser {
    /// The test process's own user, whoever that is: for a program that may
    /// run as root, such as the service under test.
    #[must_use]
    pub const fn current() -> Self {
        Self { switch_to: None }
    }

    /// The test process's own user unless it is root; then the first of
    /// `names` that exists, with its own group and no supplementary groups.
    /// A server under test needs no privilege and must not have it, and
    /// some (PostgreSQL, `pg_ctl`) refuse to run as root.
    ///
    /// The names are looked up in `/etc/passwd`, where system users such as
    /// `nobody` and `postgres` live.
    ///
    /// # Errors
    ///
    /// Running as root, if none of `names` is in `/etc/passwd`, or that file
    /// cannot be read; the message names the users it looked for.
    pub fn unprivileged(names: &[&str]) -> io::Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self::current());
        }
        let not_found = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "running as root, a test server must run as an unprivileged user, but none \
                     of {} is in /etc/passwd",
                    names.join(", ")
                ),
            )
        };
        let passwd = fs::read_to_string("/etc/passwd")
            .map_err(|err| io::Error::new(err.kind(), format!("cannot read /etc/passwd: {err}")))?;
        names
            .iter()
            .find_map(|name| ids_of(&passwd, name))
            .map(|ids| Self {
                switch_to: Some(ids),
            })
            .ok_or_else(not_found)
    }

    /// The user id a server runs as, when it is not the test process's own.
    #[must_use]
    pub const fn uid(&self) -> Option<u32> {
        match self.switch_to {
            Some((uid, _)) => Some(uid),
            None => None,
        }
    }

    /// A command for `program` that runs as this user. The switch happens in
    /// the child between fork and exec (`setgid`, then `setuid`, which also
    /// drops every supplementary group), so no helper program is needed.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Makes this user own `path` and, if it is a directory, everything in
    /// it; nothing to do when it is the test process's own user.
    ///
    /// # Errors
    ///
    /// If a file cannot be read or changed hands.
    pub fn give(&self, path: &Path) -> io::Result<()> {
        let Some((uid, gid)) = self.switch_to else {
            return Ok(());
        };
        // Not into symbolic links: a server's directory holds none of its own.
        if fs::symlink_metadata(path)?.is_dir() {
            for entry in fs::read_dir(path)? {
                self.give(&entry?.path())?;
            }
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    /// A new directory in the system's temporary folder, named from
    /// `prefix`, that this user owns and alone may enter (mode 0700): where
    /// a server keeps its files. Nothing removes it but the caller, usually
    /// through a [`Guardian`](crate::Guardian)'s [`Cleanup`](crate::Cleanup).
    ///
    /// # Errors
    ///
    /// If it cannot be created or handed to this user; nothing is left then.
    pub fn private_directory(&self, prefix: &str) -> io::Result<PathBuf> {
        let directory = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()?;
        self.give(directory.path())?;
        Ok(directory.keep())
    }
}

/// The user and group ids of `name` in the text of `/etc/passwd`.
fn ids_of(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}
