//! The process that cleans up after a server when the test process is gone.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};

use crate::ServerUser;
use crate::signal::server_pid;

/// The guardian, a shell script: the one program sure to be everywhere,
/// and all it does is wait and clean up. Its standard input is the pipe:
/// each line names the process group to kill (an empty line: none), and
/// the end of input, which the kernel brings when the test process exits
/// however it exits, or the `Guardian` is dropped, is its cue. It ignores
/// the terminal's signals and has a process group of its own, so Ctrl-C on
/// the test run does not end it before it has done its work. A killed
/// group gets a second to go before the directory is removed, so nothing
/// of it writes there afterwards.
///
/// `$1` is the directory to remove (empty: none); the rest, if any, is the
/// stop command.
const SCRIPT: &str = r#"
trap '' HUP INT TERM
directory=$1
shift
group=
while IFS= read -r line; do group=$line; done
if [ -n "$group" ]; then
    kill -s KILL -- "-$group" 2>/dev/null
    tries=0
    while [ "$tries" -lt 100 ] && kill -0 -- "-$group" 2>/dev/null; do
        sleep 0.01
        tries=$((tries + 1))
    done
fi
if [ "$#" -gt 0 ]; then "$@" </dev/null >/dev/null 2>&1; fi
if [ -n "$directory" ]; then rm -rf -- "$directory"; fi
"#;

/// What a [`Guardian`] does when its time comes, in this order: kill the
/// process group it watches (see [`Guardian::watch`]), run the stop
/// command, remove the directory.
#[derive(Debug, Clone, Default)]
pub struct Cleanup {
    stop: Vec<OsString>,
    directory: Option<PathBuf>,
}

impl Cleanup {
    /// Nothing but killing the watched process group.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `program` with `args` (as the guardian's user, its output
    /// discarded) to stop a server that no watched group holds, such as a
    /// PostgreSQL that `pg_ctl` started in the background.
    #[must_use]
    pub fn stop<I, S>(mut self, program: impl AsRef<OsStr>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.stop = std::iter::once(program.as_ref().to_owned())
            .chain(args.into_iter().map(|arg| arg.as_ref().to_owned()))
            .collect();
        self
    }

    /// Removes `directory` and everything in it, last.
    #[must_use]
    pub fn remove(mut self, directory: &Path) -> Self {
        self.directory = Some(directory.to_owned());
        self
    }
}

/// A process that cleans up after a test server once the test process is
/// gone, however it ended, or once this value is dropped, whichever comes
/// first. Dropping it waits until the cleanup is done.
///
/// It runs as the server's user, so it may signal the server and remove
/// what the server wrote.
#[derive(Debug)]
pub struct Guardian {
    process: Child,
    /// The only write end of the guardian's standard input; closing it is
    /// the signal.
    pipe: Option<ChildStdin>,
}

impl Guardian {
    /// Starts a guardian, as `user`, that will carry out `cleanup`.
    ///
    /// # Errors
    ///
    /// If the shell cannot be started. The cleanup is then not done: the
    /// caller still owns what it would have removed.
    pub fn spawn(user: &ServerUser, cleanup: Cleanup) -> io::Result<Self> {
        let mut process = user
            .command("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("session-test-guardian")
            .arg(cleanup.directory.as_deref().unwrap_or(Path::new("")))
            .args(&cleanup.stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot start the guardian process (sh): {err}"),
                )
            })?;
        let pipe = process.stdin.take();
        Ok(Self { process, pipe })
    }

    /// Tells the guardian to kill process group `leader` (SIGKILL) when its
    /// time comes, instead of any group named before.
    ///
    /// # Errors
    ///
    /// If `leader` is not a process id (0 and 1 are refused) or the
    /// guardian is gone; the group would then not be killed.
    pub fn watch(&mut self, leader: u32) -> io::Result<()> {
        server_pid(leader)?;
        self.tell(&format!("{leader}\n"))
    }

    /// Tells the guardian that the watched group is gone (its leader was
    /// reaped), so it kills nothing: the id may belong to another process by
    /// the time the test process exits.
    ///
    /// # Errors
    ///
    /// If the guardian is gone.
    pub fn unwatch(&mut self) -> io::Result<()> {
        self.tell("\n")
    }

    fn tell(&mut self, line: &str) -> io::Result<()> {
        let pipe = self
            .pipe
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the guardian is done"))?;
        pipe.write_all(line.as_bytes()).and_then(|()| pipe.flush())
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        drop(self.pipe.take());
        // Wait, so the server and its files are gone when their owner is.
        let _status = self.process.wait();
    }
}
