//! `eddy passwd FILE USER`: sets (or with --delete removes) a user of the
//! MQTT password file (`[mqtt] password_file`), in Mosquitto's
//! `mosquitto_passwd` format (PBKDF2-SHA512 `$7$` lines).
//!
//! The password is read from standard input (its first line) or, at a
//! terminal, asked for twice without echo. The file is rewritten
//! atomically with mode 0600; a running hub picks it up on SIGHUP or when
//! it sees the file change. It does not contact a server.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use argh::FromArgs;

use super::CliError;
use crate::net::mqtt::passwords::{self, ITERATIONS_DEFAULT, ITERATIONS_MAX};

/// Longest password read, in bytes.
const PASSWORD_BYTES_MAX: usize = 65_535;

/// Set an MQTT user's password in a password file (Mosquitto's format):
/// `eddy passwd FILE USER` reads the password from standard input, or asks
/// for it at a terminal. The file is created if missing (mode 0600).
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "passwd")]
pub struct PasswdArgs {
    /// the password file (created if missing)
    #[argh(positional)]
    pub file: PathBuf,
    /// the user name (the identity the ACLs see)
    #[argh(positional)]
    pub user: String,
    /// remove the user instead
    #[argh(switch)]
    pub delete: bool,
    /// PBKDF2-SHA512 iterations of the new hash (default 10000)
    #[argh(option, default = "ITERATIONS_DEFAULT")]
    pub iterations: u32,
}

pub fn run(args: PasswdArgs) -> Result<(), CliError> {
    if !passwords::is_valid_user(&args.user) {
        return Err(CliError::usage(format!(
            "user name {:?}: 1 to {} bytes, no `:` and no control characters",
            args.user,
            passwords::USER_BYTES_MAX
        )));
    }
    if !(1..=ITERATIONS_MAX).contains(&args.iterations) {
        return Err(CliError::usage(format!(
            "--iterations must be 1..={ITERATIONS_MAX}"
        )));
    }
    if args.delete {
        if !passwords::update_file(&args.file, &args.user, None, args.iterations)? {
            return Err(CliError::new(format!(
                "user {:?} is not in {}",
                args.user,
                args.file.display()
            )));
        }
        eprintln!("removed {} from {}", args.user, args.file.display());
        return Ok(());
    }
    let password = read_password()?;
    let existed = passwords::update_file(
        &args.file,
        &args.user,
        Some(password.as_bytes()),
        args.iterations,
    )?;
    eprintln!(
        "{} {} in {}",
        if existed { "updated" } else { "added" },
        args.user,
        args.file.display()
    );
    Ok(())
}

/// The password: asked twice at a terminal, else stdin's first line.
fn read_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Reenter password: ")?;
        if first != again {
            return Err(CliError::new("the passwords differ"));
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(CliError::new(format!(
            "the password must be 1 to {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(password)
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<String, CliError> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    eprint!("{text}");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
