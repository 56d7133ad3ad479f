//! Where the programs the tests start are found.

use std::path::PathBuf;

/// A program on `PATH`, or in the system folders Debian installs servers
/// to (`/usr/sbin` is not on an ordinary user's `PATH`). The test support
/// and `cargo xtask prerequisites` both look here, so what the check finds
/// is what the tests run.
#[must_use]
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.metadata().is_ok_and(|meta| meta.is_file()))
}
