//! Writing to standard output without panicking when its reader goes away.
//!
//! `println!` panics on a closed pipe (`eddy topics list | head -1`), and
//! Rust ignores SIGPIPE; [`outln!`](crate::outln) returns
//! [`CliError::broken_pipe`] instead, which ends the command quietly with
//! exit code 141 (what a shell reports for a Unix tool killed by SIGPIPE).
//! Diagnostics go to stderr with `eprintln!`, which this does not cover.

use std::io::Write;

use super::CliError;

/// `println!` for command output: `outln!(…)` returns early from the
/// enclosing function with [`CliError::broken_pipe`] when stdout is closed.
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    () => {
        $crate::cli::output::write_line(format_args!(""))?
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))?
    };
}

/// Writes one line to stdout.
pub fn write_line(args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(stdout_error)
}

/// Writes `text` as is to stdout and flushes it.
pub fn write_all(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// The error for a failed write to stdout: quiet when its reader left.
pub fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::broken_pipe()
    } else {
        CliError::new(format!("cannot write to standard output: {e}"))
    }
}
