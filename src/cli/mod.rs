//! The `eddy` command line: argh definitions and one module per command.
//!
//! Commands are thin: `serve` builds a [`crate::config::ServerConfig`] and
//! calls [`crate::server`]; `config check` validates a config file; `acl
//! check` explains an ACL decision; the client commands use
//! [`crate::client`].

pub mod acl;
pub mod bench;
pub mod bench_devices;
mod bench_group;
pub mod config;
pub mod consume;
pub mod fd_limit;
mod group_consume;
pub mod groups;
pub mod mirror;
pub mod produce;
pub mod serve;
pub mod topics;

use std::path::PathBuf;

use argh::FromArgs;

use crate::client::{Client, ClientOptions, ClientTls};
use crate::config::{DATA_DIR_DEFAULT, LISTEN_DEFAULT};
use crate::wire::Acks;

/// eddy: a small durable event hub for gateways. Devices send keyed records
/// over TLS; eddy stores them in partitioned, offset-addressed logs.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start; `serve`'s many flags make its variant the largest.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
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
}

/// A command's failure: the message for stderr and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 1,
        }
    }

    /// Bad usage (exit code 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 2,
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
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Groups(args) => groups::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Config(args) => config::run(args),
        Command::Acl(args) => acl::run(args),
        Command::Mirror(args) => mirror::run(args),
    }
}

/// The server address a client command uses by default.
pub fn default_server() -> String {
    LISTEN_DEFAULT.to_string()
}

/// Connection settings shared by the client commands.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub ca: Option<PathBuf>,
    pub plaintext: bool,
    pub tls_server_name: Option<String>,
    /// Client certificate and key to present (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Connection {
    /// Client options; the CA defaults to the dev CA of `./eddy-data`.
    pub fn options(&self, client_id: &str) -> Result<ClientOptions, CliError> {
        let mut options = if self.plaintext {
            ClientOptions::plaintext(&self.server)
        } else {
            let ca = match &self.ca {
                Some(ca) => ca.clone(),
                None => {
                    let dev = PathBuf::from(DATA_DIR_DEFAULT).join("tls").join("ca.pem");
                    if !dev.exists() {
                        return Err(CliError::usage(format!(
                            "no CA certificate to trust: pass --ca FILE (eddy serve writes its dev CA to \
                             <data-dir>/tls/ca.pem; {} does not exist here), or --plaintext for a server \
                             started with --insecure-plaintext",
                            dev.display()
                        )));
                    }
                    dev
                }
            };
            let identity =
                match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                    (None, None) => None,
                    _ => return Err(CliError::usage(
                        "--cert and --key go together: the client certificate and its private key",
                    )),
                };
            let mut options = ClientOptions::tls(&self.server, ca);
            if let Some(tls) = options.tls.as_mut() {
                *tls = ClientTls {
                    ca: tls.ca.clone(),
                    server_name: self.tls_server_name.clone(),
                    identity,
                };
            }
            options
        };
        options.client_id = client_id.to_string();
        Ok(options)
    }

    /// Connects.
    pub async fn connect(&self, client_id: &str) -> Result<Client, CliError> {
        let options = self.options(client_id)?;
        Ok(Client::connect(&options).await?)
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
