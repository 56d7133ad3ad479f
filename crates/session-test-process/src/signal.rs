//! Signals and liveness, by system call.

use std::io;

use rustix::process::Pid;

/// A signal the tests send to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: shut down cleanly.
    Term,
    /// SIGKILL: gone at once, as a crash or the OOM killer would end it.
    Kill,
}

impl Signal {
    const fn raw(self) -> rustix::process::Signal {
        match self {
            Self::Term => rustix::process::Signal::TERM,
            Self::Kill => rustix::process::Signal::KILL,
        }
    }
}

/// Sends `signal` to process `pid`.
///
/// # Errors
///
/// If no such process exists (`ESRCH`), it may not be signalled (`EPERM`), or
/// `pid` is not a process id a test could mean (0, 1 or above `i32::MAX`).
pub fn signal_process(pid: u32, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::kill_process(
        server_pid(pid)?,
        signal.raw(),
    )?)
}

/// Sends `signal` to every process of the group led by `leader`, as a server
/// that starts helpers of its own needs (PostgreSQL's backends).
///
/// # Errors
///
/// As [`signal_process`]; `ESRCH` if no process is in that group.
pub fn signal_group(leader: u32, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::kill_process_group(
        server_pid(leader)?,
        signal.raw(),
    )?)
}

/// Whether process `pid` still runs. A zombie, dead but not yet reaped by
/// its parent, does not: where nothing reaps orphans (some containers'
/// init), a killed server stays one for ever.
#[must_use]
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself hold any character.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) if std::path::Path::new("/proc/self").exists() => false,
        // No /proc (macOS): whether the kernel knows the process at all.
        Err(_) => match server_pid(pid) {
            Ok(pid) => match rustix::process::test_kill_process(pid) {
                Ok(()) => true,
                Err(err) => err == rustix::io::Errno::PERM,
            },
            Err(_) => false,
        },
    }
}

/// `pid` as the kernel's type. 0 and 1 are refused: as a target of `kill`
/// they mean the caller's own group and every process there is.
pub(crate) fn server_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|&raw| raw > 1)
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pid} is not the id of a server process"),
            )
        })
}
