//! Files and directories that only the service's own user can reach.
//!
//! The database holds account ids, client addresses and user agents, and the
//! token hashes that resolve sessions, so nothing the store creates is
//! readable by group or others. Modes are set explicitly after creation:
//! the process umask can only narrow the mode given at creation, and a umask
//! that removed the owner's own bits would leave a file the service cannot
//! write. SQLite gives the `-wal` and `-shm` files it creates the mode of the
//! database file, so creating that one privately covers them. Files and
//! directories that already exist are left as they are.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of the directories the store creates: owner only.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of the files the store creates: owner read and write.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and every missing ancestor, each with mode 0700.
pub(crate) fn create_dir_all(dir: &Path, missing: &[impl AsRef<Path>]) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // Never wider than 0700 for a moment; then exactly 0700, whatever the umask.
        builder.mode(DIR_MODE).create(dir)?;
        for created in missing {
            std::fs::set_permissions(created, std::fs::Permissions::from_mode(DIR_MODE))?;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = missing;
        builder.create(dir)?;
    }
    Ok(())
}

/// Creates `path` as a new file with mode 0600 and opens it for reading and
/// writing; `None` if it already exists.
pub(crate) fn create_file(path: &Path) -> io::Result<Option<File>> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(err) => return Err(err),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(Some(file))
}
