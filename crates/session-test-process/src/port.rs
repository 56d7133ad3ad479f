//! Free ports of the loopback interface.

use std::io;
use std::net::TcpListener;

/// How often [`on_a_free_port`] tries.
const ATTEMPTS: usize = 5;

/// A port of 127.0.0.1 that was free a moment ago: the kernel's pick for a
/// socket bound and closed again. Nothing listens on it, so connections to
/// it are refused; another process may take it at any time, which
/// [`on_a_free_port`] makes harmless for a server that must be told its port.
///
/// # Errors
///
/// If no socket can be bound on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Calls `start` with a [`free_port`] until it succeeds, fails for
/// another reason than the port being taken (which `taken` tells from the
/// error's text), or has failed five times: another process may take the
/// port between the probe and the server's bind.
///
/// # Errors
///
/// `start`'s error, the last one if every attempt found its port taken; or
/// if no free port can be found.
pub fn on_a_free_port<T>(
    mut start: impl FnMut(u16) -> Result<T, String>,
    taken: impl Fn(&str) -> bool,
) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port().map_err(|err| {
            format!("session-test-process: cannot find a free port of 127.0.0.1: {err}")
        })?;
        match start(port) {
            Ok(started) => return Ok(started),
            Err(err) if taken(&err) => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}
