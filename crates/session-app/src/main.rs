//! `session-app`: the session service and its operator CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    session_app::cli::main()
}
