//! The lock file that makes one process the owner of a database file.
//!
//! The service keeps every active session in its own memory and treats a
//! cache miss as final, which is right only if no other process writes the
//! file. SQLite's own locks serialise writers but let a second process run
//! beside the first, whose cache would then never see the second's
//! revocations. So a store takes an exclusive advisory lock on `<db>.lock`
//! before it touches the database, and holds it for as long as it lives.
//!
//! The lock is `flock(2)` on Unix (`LockFileEx` on Windows) through
//! [`File::try_lock`]: the kernel releases it when the process exits, however
//! it exits, so a crash never leaves a stale lock. The file itself is never
//! removed: deleting a lock file while another process has it open would let
//! two processes each lock a different file of the same name.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::open::OpenError;

/// An exclusive lock on a database's lock file, released on drop.
#[derive(Debug)]
pub(crate) struct DatabaseLock {
    // Never read: holding the handle holds the lock.
    _file: File,
}

/// The lock file of the database at `db`: its name with `.lock` appended.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of the database at `db`, or fails at once, naming the
/// process that holds it.
pub(crate) fn lock(db: &Path) -> Result<DatabaseLock, OpenError> {
    let lock_file = lock_path(db);
    let io_error = |source| OpenError::Lock {
        path: db.to_path_buf(),
        lock_file: lock_file.clone(),
        source,
    };
    let mut file = match crate::private::create_file(&lock_file).map_err(io_error)? {
        Some(created) => created,
        None => OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_file)
            .map_err(io_error)?,
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                path: db.to_path_buf(),
                lock_file,
                pid: holder_pid(&mut file),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_error(source)),
    }
    // Only for the message a second process prints; the lock is the handle.
    record_pid(&mut file).map_err(io_error)?;
    Ok(DatabaseLock { _file: file })
}

fn record_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// The pid the holder wrote, if it has written it yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
