//! The open-file limit (`RLIMIT_NOFILE`, `ulimit -n`) the connection limits
//! need. Every client connection, pending or holding a slot, is a file
//! descriptor, so the caps protect the process only if it may open that
//! many and its own besides: past the limit `accept` fails ("Too many open
//! files"), every client waits, and the store cannot reconnect.
//!
//! As nginx's `worker_rlimit_nofile` and Go's runtime do, the soft limit is
//! raised toward the hard one when it is lower than needed; an unprivileged
//! process may do that. A hard limit below the need stops the start, as any
//! other setting the service cannot honour: a cap above the limit protects
//! nothing, and is better found out now than during the flood it was
//! meant to hold.

use crate::ConfigError;

/// Descriptors the process holds beyond client connections: the
/// listener, the runtime's, standard streams and the log, the SQLite
/// files of each store connection (about 21 in all at rest on SQLite), trace
/// export's sockets, with room to spare. The PostgreSQL pool comes on top.
pub(crate) const RESERVED: u64 = 64;

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The soft limit was enough already.
    Enough {
        /// The soft limit.
        limit: u64,
    },
    /// The soft limit was raised.
    Raised {
        /// The soft limit before.
        from: u64,
        /// The soft limit now.
        to: u64,
    },
}

/// Makes the soft open-file limit at least `needed`, raising it to the hard
/// limit if it is lower (to `needed` if the hard limit is unlimited).
/// `describe` says what needs the descriptors, for the error.
///
/// # Errors
///
/// A [`ConfigError`] naming `describe`'s settings and `ulimit -n` when the
/// hard limit is below `needed`, or the soft limit cannot be raised.
pub(crate) fn ensure(needed: u64, describe: impl Fn() -> String) -> Result<Outcome, ConfigError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let soft = current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(Outcome::Enough { limit: soft });
    }
    let refused = |hard: String| {
        ConfigError(format!(
            "{} need {needed} open files, but the open-file limit is {soft} (hard limit \
             {hard}): lower them, or raise the limit (`ulimit -n`, systemd's LimitNOFILE)",
            describe()
        ))
    };
    let to = match maximum {
        Some(hard) if hard < needed => return Err(refused(hard.to_string())),
        Some(hard) => hard,
        None => needed,
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(to),
            maximum,
        },
    )
    .map_err(|err| {
        refused(format!(
            "{}, and raising to it failed: {err}",
            maximum.map_or_else(|| "unlimited".to_owned(), |hard| hard.to_string())
        ))
    })?;
    Ok(Outcome::Raised { from: soft, to })
}
