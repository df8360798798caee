//! `eddy serve`: run the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argh::FromArgs;

use super::CliError;
use crate::config::{
    ServerConfig, TlsSetup, CONNECTIONS_MAX_DEFAULT, DATA_DIR_DEFAULT, DEFAULT_PARTITIONS_DEFAULT,
    LISTEN_DEFAULT,
};
use crate::server;
use crate::storage::maintenance::MAINTENANCE_INTERVAL_MS_DEFAULT;
use crate::storage::CACHE_BYTES_DEFAULT;

/// Run the hub. With no arguments: data in ./eddy-data, a dev CA and server
/// certificate generated there on first start, listening on 127.0.0.1:7654.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to listen on (default 127.0.0.1:7654)
    #[argh(option, default = "LISTEN_DEFAULT.parse().expect(\"valid default\")")]
    pub listen: SocketAddr,
    /// data directory (default ./eddy-data)
    #[argh(option, default = "PathBuf::from(DATA_DIR_DEFAULT)")]
    pub data_dir: PathBuf,
    /// server certificate chain (PEM); default: the generated dev certificate
    #[argh(option)]
    pub cert: Option<PathBuf>,
    /// server private key (PEM), with --cert
    #[argh(option)]
    pub key: Option<PathBuf>,
    /// serve without TLS (development only; never do this on a real network)
    #[argh(switch)]
    pub insecure_plaintext: bool,
    /// stable identity of this hub (default: the host name, fixed at first start)
    #[argh(option)]
    pub hub_id: Option<String>,
    /// do not create topics on first produce
    #[argh(switch)]
    pub no_auto_create: bool,
    /// partitions of auto-created topics (default 1)
    #[argh(option, default = "DEFAULT_PARTITIONS_DEFAULT")]
    pub default_partitions: u32,
    /// sled page cache in MiB (default 16)
    #[argh(option, default = "CACHE_BYTES_DEFAULT >> 20")]
    pub cache_mb: u64,
    /// most simultaneous connections (default 10000)
    #[argh(option, default = "CONNECTIONS_MAX_DEFAULT")]
    pub max_connections: usize,
    /// executor threads (default: one per CPU)
    #[argh(option, default = "0")]
    pub threads: usize,
    /// most MiB of stored records over all topics; topics' on_full decides
    /// what happens when it is used up (default: no budget)
    #[argh(option)]
    pub disk_budget_mb: Option<u64>,
    /// ms between retention/compaction/budget checks when idle (default 10000)
    #[argh(option, default = "MAINTENANCE_INTERVAL_MS_DEFAULT")]
    pub maintenance_interval_ms: u64,
    /// log level: error, warn, info, debug, trace (default info; or EDDY_LOG)
    #[argh(option)]
    pub log_level: Option<String>,
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Result<ServerConfig, CliError> {
        let tls = match (self.insecure_plaintext, &self.cert, &self.key) {
            (true, None, None) => TlsSetup::InsecurePlaintext,
            (true, _, _) => {
                return Err(CliError::usage(
                    "--insecure-plaintext cannot be combined with --cert/--key",
                ))
            }
            (false, Some(cert), Some(key)) => TlsSetup::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (false, None, None) => TlsSetup::DevGenerated,
            (false, _, _) => return Err(CliError::usage("--cert and --key go together")),
        };
        let mut config = ServerConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            tls,
            hub_id: self.hub_id.clone(),
            auto_create_topics: !self.no_auto_create,
            default_partitions: self.default_partitions,
            threads: self.threads,
            maintenance_interval_ms: self.maintenance_interval_ms,
            ..ServerConfig::default()
        };
        config.storage.cache_bytes = self.cache_mb << 20;
        config.storage.disk_budget_bytes = self.disk_budget_mb.map(|mb| mb << 20);
        config.limits.connections_max = self.max_connections;
        config.validate().map_err(CliError::usage)?;
        Ok(config)
    }
}

/// Initialises stderr logging: `--log-level`, else `EDDY_LOG`, else `default`.
pub fn init_logging(level: Option<&str>, default: &str) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("EDDY_LOG").ok())
        .unwrap_or_else(|| default.into());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_millis()
        .format_target(false)
        .try_init();
}

pub fn run(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_level.as_deref(), "info");
    let config = args.config()?;
    match super::fd_limit::ensure_for_connections(
        config.limits.connections_max,
        "--max-connections",
    ) {
        Ok(Some((before, after))) => {
            log::info!(
                "raised the open-file limit from {before} to {after} (--max-connections {})",
                config.limits.connections_max
            )
        }
        Ok(None) => {}
        // Serve anyway: connections beyond the limit fail to be accepted
        // (logged by the accept loop), the others work.
        Err(e) => log::warn!("{e}"),
    }
    let plaintext = config.tls == TlsSetup::InsecurePlaintext;
    let running = server::start(config.clone())?;

    let shutdown = running.shutdown_handle();
    let signals = Arc::new(AtomicUsize::new(0));
    ctrlc::set_handler(move || {
        if signals.fetch_add(1, Ordering::SeqCst) == 0 {
            log::info!("shutting down (signal again to exit at once)");
            shutdown.trigger();
        } else {
            log::warn!("second signal: exiting without the final flush");
            std::process::exit(130);
        }
    })
    .map_err(|e| CliError::new(format!("cannot install the signal handler: {e}")))?;

    print_banner(&running, &config, plaintext);
    running.join()?;
    log::info!("stopped cleanly");
    Ok(())
}

fn print_banner(running: &server::RunningServer, config: &ServerConfig, plaintext: bool) {
    let addr = running.addr();
    let scheme = if plaintext {
        "plaintext (INSECURE: development only)"
    } else {
        "TLS"
    };
    log::info!(
        "eddy {} listening on {addr} ({scheme}); hub id {}; data in {}",
        env!("CARGO_PKG_VERSION"),
        running.hub_id(),
        config.data_dir.display()
    );
    let mut server_flag = String::new();
    if addr.to_string() != LISTEN_DEFAULT {
        server_flag = format!(" --server {addr}");
    }
    let tls_flag = if plaintext {
        " --plaintext".to_string()
    } else if let Some(ca) = running.dev_ca() {
        if running.tls_generated() {
            log::info!(
                "generated a dev CA at {} (clients trust it with --ca)",
                ca.display()
            );
        }
        if config.data_dir == std::path::Path::new(DATA_DIR_DEFAULT) {
            String::new()
        } else {
            format!(" --ca {}", ca.display())
        }
    } else {
        " --ca <your CA file>".to_string()
    };
    eprintln!(
        "\nTry it from another terminal in this directory:\n  \
         echo hello | eddy produce --topic demo{server_flag}{tls_flag}\n  \
         eddy consume --topic demo --from-beginning{server_flag}{tls_flag}\n\
         (from a source checkout: cargo run --release -- produce …)\n"
    );
}
