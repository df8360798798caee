//! `eddy serve`: run the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argh::FromArgs;
use signal_hook::consts::{SIGHUP, SIGTERM};
use signal_hook::iterator::Signals;

use super::CliError;
use crate::config::{
    file, MirrorLinkConfig, ServerConfig, TlsSetup, DATA_DIR_DEFAULT, LISTEN_DEFAULT,
};
use crate::server;

/// Run the hub. With no arguments: data in ./eddy-data, a dev CA and server
/// certificate generated there on first start, listening on 127.0.0.1:7654,
/// metrics on 127.0.0.1:7655. Flags override the --config file.
#[derive(FromArgs, argh::ArgsInfo, Debug, Default)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// config file (TOML; see packaging/eddy.toml); flags override it
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// address to listen on (default 127.0.0.1:7654)
    #[argh(option, short = 'l')]
    pub listen: Option<SocketAddr>,
    /// data directory (default ./eddy-data)
    #[argh(option, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// server certificate chain (PEM); default: the generated dev certificate
    #[argh(option)]
    pub cert: Option<PathBuf>,
    /// server private key (PEM), with --cert
    #[argh(option)]
    pub key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that device certificates must chain to: mTLS,
    /// the identity is the certificate's DNS/URI name or common name
    #[argh(option)]
    pub client_ca: Option<PathBuf>,
    /// ACL file (TOML) saying which identity may produce, consume or
    /// administer which topics and groups; default deny (see README)
    #[argh(option)]
    pub acl: Option<PathBuf>,
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
    #[argh(option)]
    pub default_partitions: Option<u32>,
    /// sled page cache in MiB (default 16)
    #[argh(option)]
    pub cache_mb: Option<u64>,
    /// most simultaneous connections (default 10000)
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// most simultaneous connections from one source address (default 1000)
    #[argh(option)]
    pub max_connections_per_ip: Option<usize>,
    /// executor threads (default: one per CPU)
    #[argh(option)]
    pub threads: Option<usize>,
    /// most MiB of stored records over all topics; topics' on_full decides
    /// what happens when it is used up (default: no budget)
    #[argh(option)]
    pub disk_budget_mb: Option<u64>,
    /// refuse writes (DiskFull) while the data directory's file system has
    /// less than this many MiB free; 0: no reserve (default 64)
    #[argh(option)]
    pub disk_free_min_mb: Option<u64>,
    /// ms between retention/compaction/budget checks when idle (default 10000)
    #[argh(option)]
    pub maintenance_interval_ms: Option<u64>,
    /// default flush.ms of topics: a durable produce is acknowledged at the
    /// first fsync at least this long after it (fewer fsyncs, less flash
    /// wear, slower acks; 0: at once, the default; at most 10000)
    #[argh(option)]
    pub flush_ms: Option<u64>,
    /// address of the Prometheus /metrics endpoint (default 127.0.0.1:7655)
    #[argh(option)]
    pub metrics_listen: Option<SocketAddr>,
    /// serve no metrics endpoint
    #[argh(switch)]
    pub no_metrics: bool,
    /// address of the MQTT listener (default 127.0.0.1:1883; TLS on any
    /// non-loopback address unless mqtt.insecure_plaintext)
    #[argh(option)]
    pub mqtt_listen: Option<SocketAddr>,
    /// no MQTT listener
    #[argh(switch)]
    pub no_mqtt: bool,
    /// address of the Kafka-protocol listener (default 127.0.0.1:9092;
    /// plaintext on loopback, TLS elsewhere)
    #[argh(option)]
    pub kafka_listen: Option<SocketAddr>,
    /// serve no Kafka-protocol listener
    #[argh(switch)]
    pub no_kafka: bool,
    /// log level: error, warn, info, debug, trace (default info; or EDDY_LOG)
    #[argh(option)]
    pub log_level: Option<String>,
    /// mirror topics upstream: [NAME=]eddy://HOST:PORT or
    /// [NAME=]kafka://HOST:PORT[,HOST:PORT] (repeatable; replaces the config
    /// file's [[mirror]] links)
    #[argh(option)]
    pub mirror: Vec<String>,
    /// topics a --mirror link forwards: a regular expression over whole
    /// topic names (default: all); once for every link, or once per --mirror
    #[argh(option)]
    pub mirror_topics: Vec<String>,
    /// CA (PEM) that signed the upstream's certificate; once for every link,
    /// or once per --mirror (kafka://: TLS only with it)
    #[argh(option)]
    pub mirror_ca: Vec<PathBuf>,
}

impl ServeArgs {
    /// The server configuration: defaults, then the `--config` file, then
    /// the flags. Also returns the file's log level, if it sets one.
    pub fn config(&self) -> Result<(ServerConfig, Option<String>), CliError> {
        let mut config = ServerConfig::default();
        let mut file_log_level = None;
        if let Some(path) = &self.config {
            let loaded = file::load(path).map_err(|e| CliError::usage(e.to_string()))?;
            loaded
                .apply(&mut config)
                .map_err(|e| CliError::usage(e.to_string()))?;
            file_log_level = loaded.log_level().map(str::to_string);
        }
        self.apply_flags(&mut config)?;
        config
            .validate()
            .map_err(|e| CliError::usage(format!("{e} (set by a flag, or by default)")))?;
        Ok((config, file_log_level))
    }

    fn apply_flags(&self, config: &mut ServerConfig) -> Result<(), CliError> {
        let files = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(TlsSetup::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return Err(CliError::usage("--cert and --key go together")),
        };
        match (self.insecure_plaintext, files) {
            (true, Some(_)) => {
                return Err(CliError::usage(
                    "--insecure-plaintext cannot be combined with --cert/--key",
                ))
            }
            (true, None) => config.tls = TlsSetup::InsecurePlaintext,
            (false, Some(files)) => config.tls = files,
            (false, None) => {}
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(id) = &self.hub_id {
            config.hub_id = Some(id.clone());
        }
        if self.no_auto_create {
            config.auto_create_topics = false;
        }
        if let Some(n) = self.default_partitions {
            config.default_partitions = n;
        }
        if let Some(mb) = self.cache_mb {
            config.storage.cache_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(n) = self.max_connections {
            config.limits.connections_max = n;
        }
        if let Some(n) = self.max_connections_per_ip {
            config.limits.connections_per_ip_max = n;
        }
        if let Some(ca) = &self.client_ca {
            config.client_ca = Some(ca.clone());
        }
        if let Some(acl) = &self.acl {
            config.acl_file = Some(acl.clone());
        }
        if let Some(n) = self.threads {
            config.threads = n;
        }
        if let Some(mb) = self.disk_budget_mb {
            config.storage.disk_budget_bytes = Some(mb.saturating_mul(1 << 20));
        }
        if let Some(mb) = self.disk_free_min_mb {
            config.storage.disk_free_min_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(ms) = self.maintenance_interval_ms {
            config.maintenance_interval_ms = ms;
        }
        if let Some(ms) = self.flush_ms {
            config.storage.flush_ms = ms;
        }
        if !self.mirror.is_empty() {
            config.mirror = self.mirror_links()?;
        } else if !self.mirror_topics.is_empty() || !self.mirror_ca.is_empty() {
            return Err(CliError::usage(
                "--mirror-topics and --mirror-ca belong to a --mirror link: add --mirror URL",
            ));
        }
        match (self.no_kafka, self.kafka_listen) {
            (true, Some(_)) => {
                return Err(CliError::usage(
                    "--no-kafka cannot be combined with --kafka-listen",
                ))
            }
            (true, None) => config.kafka.listen = None,
            (false, Some(addr)) => config.kafka.listen = Some(addr),
            (false, None) => {}
        }
        match (self.no_metrics, self.metrics_listen) {
            (true, Some(_)) => {
                return Err(CliError::usage(
                    "--no-metrics cannot be combined with --metrics-listen",
                ))
            }
            (true, None) => config.metrics_listen = None,
            (false, Some(addr)) => config.metrics_listen = Some(addr),
            (false, None) => {}
        }
        match (self.no_mqtt, self.mqtt_listen) {
            (true, Some(_)) => {
                return Err(CliError::usage(
                    "--no-mqtt cannot be combined with --mqtt-listen",
                ))
            }
            (true, None) => config.mqtt.listen = None,
            (false, Some(addr)) => config.mqtt.listen = Some(addr),
            (false, None) => {}
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The links of `--mirror`, with `--mirror-topics` and `--mirror-ca`
    /// given once (for every link) or once per link, in order.
    fn mirror_links(&self) -> Result<Vec<MirrorLinkConfig>, CliError> {
        let n = self.mirror.len();
        let per_link = |flag: &str, count: usize| {
            if count > 1 && count != n {
                Err(CliError::usage(format!(
                    "{flag} is given {count} times for {n} --mirror links: give it once (for every link) or once per link, in the same order"
                )))
            } else {
                Ok(())
            }
        };
        per_link("--mirror-topics", self.mirror_topics.len())?;
        per_link("--mirror-ca", self.mirror_ca.len())?;
        let mut links = Vec::with_capacity(n);
        for (i, spec) in self.mirror.iter().enumerate() {
            let mut link = MirrorLinkConfig::parse(spec)
                .map_err(|e| CliError::usage(format!("--mirror {spec}: {e}")))?;
            let pick = |len: usize| if len == 1 { 0 } else { i };
            if let Some(pattern) = self.mirror_topics.get(pick(self.mirror_topics.len())) {
                link.set_pattern(pattern);
            }
            if let Some(ca) = self.mirror_ca.get(pick(self.mirror_ca.len())) {
                link.ca = Some(ca.clone());
            }
            links.push(link);
        }
        Ok(links)
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
    let (config, file_log_level) = args.config()?;
    init_logging(
        args.log_level.as_deref(),
        file_log_level.as_deref().unwrap_or("info"),
    );
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

    handle_signals(&running)?;

    print_banner(&running, &config, plaintext);
    running.join()?;
    log::info!("stopped cleanly");
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM (`systemctl stop`) stop the server
/// gracefully, a second one exits at once; SIGHUP (`systemctl reload`)
/// reloads the TLS files, the client CA and the ACL file.
///
/// ctrlc takes SIGINT. SIGTERM and SIGHUP come from signal-hook: ctrlc's
/// `termination` feature would treat SIGHUP as a stop too, and signal-hook
/// chains to an earlier handler of the same signal, so each signal has
/// exactly one owner.
fn handle_signals(running: &server::RunningServer) -> Result<(), CliError> {
    let shutdown = running.shutdown_handle();
    let stops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(move |signal: &str| {
        if stops.fetch_add(1, Ordering::SeqCst) == 0 {
            log::info!("{signal}: shutting down (signal again to exit at once)");
            shutdown.trigger();
        } else {
            log::warn!("second signal: exiting without the final flush");
            std::process::exit(130);
        }
    });
    let on_interrupt = stop.clone();
    ctrlc::set_handler(move || on_interrupt("SIGINT"))
        .map_err(|e| CliError::new(format!("cannot install the SIGINT handler: {e}")))?;
    let mut signals = Signals::new([SIGTERM, SIGHUP])
        .map_err(|e| CliError::new(format!("cannot install the SIGTERM/SIGHUP handler: {e}")))?;
    let reloader = running.reloader().clone();
    std::thread::Builder::new()
        .name("eddy-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    log::info!(
                        "SIGHUP: reloading the TLS certificate and key, client CA, ACL file and MQTT password file"
                    );
                    reloader.trigger();
                } else {
                    stop("SIGTERM");
                }
            }
        })
        .map_err(|e| CliError::new(format!("cannot start the signal thread: {e}")))?;
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
    if let Some(kafka) = running.kafka_addr() {
        log::info!("Kafka clients on {kafka}");
    }
    match running.metrics_addr() {
        Some(metrics) => log::info!("metrics on http://{metrics}/metrics"),
        None => log::info!("metrics endpoint off"),
    }
    if let Some(mqtt) = running.mqtt_addr() {
        let tls = if config.mqtt.uses_tls() {
            "TLS"
        } else {
            "plaintext"
        };
        log::info!("MQTT 3.1.1/5 on {mqtt} ({tls})");
    }
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
