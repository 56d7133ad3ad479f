//! The process plumbing every test-support crate shares: how a throwaway
//! server is started, watched, signalled and cleaned up.
//!
//! - [`ServerUser`]: who a server runs as. When the tests run as root, an
//!   unprivileged user (PostgreSQL refuses root, and a server under test
//!   should not have its rights), switched to by the spawn itself
//!   (`setuid`, `setgid`, no supplementary groups); otherwise the tests' own.
//!   It also makes the private directory a server keeps its files in.
//! - [`Guardian`]: a small process that cleans up after a server once the
//!   test process is gone, however that ends (a panic that aborts, SIGKILL):
//!   it holds the read end of a pipe whose only write end the test process
//!   holds, and the kernel closes that when the test process exits. Then it
//!   kills the server's process group, runs a stop command if one was given,
//!   and removes the server's directory.
//! - [`ServerProcess`]: a server spawned as the leader of a process group of
//!   its own and handed to a guardian; killed with its group when dropped.
//! - [`signal_process`], [`signal_group`] and [`is_running`], by system call
//!   (through rustix), never by running `kill`.
//! - [`free_port`] and [`on_a_free_port`], for servers that must be told
//!   their port; [`until`] and [`until_async`], the one bounded wait; and
//!   [`metric_value`], to read a sample from a Prometheus text exposition.
//!
//! Linux and other Unix systems only.

mod guardian;
mod metrics;
mod port;
mod program;
mod server;
mod signal;
mod user;
mod wait;

pub use guardian::{Cleanup, Guardian};
pub use metrics::metric_value;
pub use port::{free_port, on_a_free_port};
pub use program::find_program;
pub use server::ServerProcess;
pub use signal::{Signal, is_running, signal_group, signal_process};
pub use user::ServerUser;
pub use wait::{TimedOut, until, until_async};
