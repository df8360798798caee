//! The `eddy` command line: argh definitions and one module per command.
//!
//! Commands are thin: `serve` builds a [`crate::config::ServerConfig`] and
//! calls [`crate::server`]; `config check` validates a config file; `acl
//! check` explains an ACL decision; the client commands use
//! [`crate::client`].

pub mod acl;
pub mod args;
pub mod bench;
pub mod bench_devices;
mod bench_group;
pub mod bench_progress;
pub mod completions;
pub mod config;
mod connection;
pub mod consume;
pub mod fd_limit;
mod group_consume;
pub mod groups;
pub mod man;
pub mod mirror;
pub mod output;
pub mod passwd;
pub mod produce;
pub mod serve;
pub mod topics;
pub mod version;

use argh::{ArgsInfo, FromArgs};

pub use connection::{default_server, Connection};

use crate::wire::Acks;

/// eddy: a small durable event hub for gateways. Devices send keyed records
/// over TLS; eddy stores them in partitioned, offset-addressed logs.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    note = "`eddy help COMMAND` lists a command's flags; `eddy topics`, `eddy groups` and `eddy mirror` alone list their actions.",
    error_code(
        1,
        "the command failed (the hub refused, a connection or file failed, acl check denied)"
    ),
    error_code(
        2,
        "usage error (unknown or missing argument, bad value, a config file that does not check)"
    ),
    error_code(
        141,
        "standard output was closed by its reader (| head): ended quietly"
    )
)]
pub struct Cli {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
// Parsed once at start; `serve`'s many flags make its variant the largest.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    Produce(produce::ProduceArgs),
    Consume(consume::ConsumeArgs),
    Topics(topics::TopicsArgs),
    Groups(groups::GroupsArgs),
    Bench(bench::BenchArgs),
    Config(config::ConfigArgs),
    Acl(acl::AclArgs),
    Mirror(mirror::MirrorArgs),
    Passwd(passwd::PasswdArgs),
    Version(version::VersionArgs),
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
}

/// Exit code of a command that failed (the server refused, a file is bad…).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a command line eddy cannot run (unknown flag, bad value).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when standard output was closed by its reader (`| head`):
/// 128 + SIGPIPE, what a shell reports for a Unix tool killed by it.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// A command's failure: the message for stderr and the exit code
/// ([`EXIT_FAILURE`], [`EXIT_USAGE`] or [`EXIT_BROKEN_PIPE`]).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// Bad usage (exit code 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    /// Standard output was closed by its reader: end quietly.
    pub fn broken_pipe() -> CliError {
        CliError {
            message: String::new(),
            code: EXIT_BROKEN_PIPE,
        }
    }
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError::new(e.to_string())
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let Some(command) = cli.command else {
        if cli.version {
            return version::print(false);
        }
        return args::print_top_level_help();
    };
    match command {
        Command::Serve(args) => serve::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Groups(args) => groups::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Config(args) => config::run(args),
        Command::Acl(args) => acl::run(args),
        Command::Mirror(args) => mirror::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Version(args) => version::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// Parses an ack level.
pub fn parse_acks(value: &str) -> Result<Acks, String> {
    match value {
        "received" => Ok(Acks::Received),
        "durable" => Ok(Acks::Durable),
        "mirrored" => Ok(Acks::Mirrored),
        other => Err(format!(
            "unknown ack level {other:?}: use received, durable or mirrored"
        )),
    }
}

/// Default for `--acks`.
pub fn default_acks() -> Acks {
    Acks::Durable
}

/// Calls `stop` with the signal's name on SIGINT (ctrlc) and SIGTERM
/// (signal-hook, on a thread of its own), for commands that must finish
/// cleanly when interrupted or stopped. `eddy serve` has its own handler
/// (it also reloads on SIGHUP).
pub fn on_stop_signals(
    stop: impl Fn(&'static str) + Send + Sync + 'static,
) -> Result<(), CliError> {
    let stop = std::sync::Arc::new(stop);
    let on_interrupt = stop.clone();
    ctrlc::set_handler(move || on_interrupt("SIGINT"))
        .map_err(|e| CliError::new(format!("cannot install the SIGINT handler: {e}")))?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
        .map_err(|e| CliError::new(format!("cannot install the SIGTERM handler: {e}")))?;
    std::thread::Builder::new()
        .name("eddy-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                stop("SIGTERM");
            }
        })
        .map_err(|e| CliError::new(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// The actions a command takes as its first positional argument (`eddy
/// topics create …`), with a line about each: one list for parsing, "did
/// you mean", `eddy topics` alone, completions and the man page.
pub fn actions_of(command: &str) -> &'static [(&'static str, &'static str)] {
    match command {
        "topics" => topics::ACTIONS,
        "groups" => groups::ACTIONS,
        "mirror" => mirror::ACTIONS,
        "config" => config::ACTIONS,
        "acl" => acl::ACTIONS,
        "completions" => completions::SHELLS,
        _ => &[],
    }
}
