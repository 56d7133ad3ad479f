//! A server process under a guardian.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};

use crate::{Guardian, Signal, signal_group};

/// A server process that leads a process group of its own, handed to a
/// [`Guardian`]: killed with its whole group when dropped, and by the
/// guardian if the test process ends first. Its own process group also
/// keeps Ctrl-C on the test run from reaching it before the guardian acts.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Set once the process has been reaped.
    exit: Option<ExitStatus>,
    guardian: Guardian,
}

impl ServerProcess {
    /// Spawns `command` in a new process group and has `guardian` watch
    /// that group. The guardian stays with the process, so whatever else it
    /// was told to clean up is done when this is dropped.
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned, or the guardian cannot be told of
    /// it (the process is then killed). Either way `guardian` is dropped,
    /// and does the rest of its cleanup.
    pub fn spawn(command: &mut Command, mut guardian: Guardian) -> io::Result<Self> {
        let mut child = command.process_group(0).spawn()?;
        if let Err(err) = guardian.watch(child.id()) {
            let _ignored = child.kill();
            let _status = child.wait();
            return Err(err);
        }
        Ok(Self {
            child,
            exit: None,
            guardian,
        })
    }

    /// The process's id, which is also its process group's.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process's standard output, if `spawn` was asked for a pipe; once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The process's standard error, if `spawn` was asked for a pipe; once.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status, if the process has exited; it is reaped then.
    ///
    /// # Errors
    ///
    /// If the system cannot say.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.reaped(status);
        }
        Ok(self.exit)
    }

    /// Sends `signal` to the process's group.
    ///
    /// # Errors
    ///
    /// If it has exited and was reaped, or cannot be signalled.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.exit.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the server process has exited",
            ));
        }
        signal_group(self.id(), signal)
    }

    /// SIGKILL to the process's group, and waits until the process is gone:
    /// no shutdown, no flush. Returns its exit status, also if it had
    /// already exited.
    ///
    /// # Errors
    ///
    /// If it cannot be waited for.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        // The group's leader may have exited (a zombie still holds the id)
        // while others of it live on: kill them all the same.
        let _ignored = signal_group(self.id(), Signal::Kill);
        let status = self.child.wait()?;
        self.reaped(status);
        Ok(status)
    }

    /// Once reaped, the id may be given to another process: the guardian
    /// must no longer kill it.
    fn reaped(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        let _ignored = self.guardian.unwatch();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _status = self.kill();
        // Then the guardian, a field, does the rest of its cleanup.
    }
}
