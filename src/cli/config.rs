//! `eddy config check FILE`: validate a config file without starting.
//!
//! Reports the first error with file, line, column and setting (exit 2), or
//! prints the settings that would be in force (exit 0). It does not bind
//! ports or touch the data directory.

use std::path::PathBuf;

use argh::FromArgs;

use super::CliError;
use crate::config::{file, ServerConfig, TlsSetup};
use crate::outln;

/// Check a config file: `eddy config check FILE`.
#[derive(FromArgs, argh::ArgsInfo, Debug)]
#[argh(subcommand, name = "config")]
pub struct ConfigArgs {
    /// check
    #[argh(positional)]
    pub action: String,
    /// the config file (TOML)
    #[argh(positional)]
    pub file: PathBuf,
}

/// The actions, for parsing, help, completions and the man page.
pub const ACTIONS: &[(&str, &str)] = &[(
    "check",
    "check FILE: load what `eddy serve` would, without starting",
)];

pub fn run(args: ConfigArgs) -> Result<(), CliError> {
    if args.action != "check" {
        return Err(super::args::unknown_action("config", &args.action));
    }
    let loaded = file::load(&args.file).map_err(|e| CliError::usage(e.to_string()))?;
    let mut config = ServerConfig::default();
    loaded
        .apply(&mut config)
        .map_err(|e| CliError::usage(e.to_string()))?;
    // The files the settings name must load too, or serve would refuse them.
    if let Some(acl) = &config.acl_file {
        crate::acl::Acl::load(acl).map_err(|e| CliError::usage(format!("acl.file: {e}")))?;
    }
    if let Some(ca) = &config.client_ca {
        crate::tls::ClientCaStore::load(ca)
            .map_err(|e| CliError::usage(format!("tls.client_ca: {e}")))?;
    }
    check_tls_files(&config)?;
    outln!("{}: ok", args.file.display());
    outln!("{}", summary(&config));
    Ok(())
}

/// The certificate and key (and that they belong together), and each
/// mirror link's CA and client pair: what `eddy serve` loads at start.
fn check_tls_files(config: &ServerConfig) -> Result<(), CliError> {
    if let TlsSetup::Files { cert, key } = &config.tls {
        crate::tls::load_certified_key(cert, key)
            .map_err(|e| CliError::usage(format!("tls.cert/tls.key: {e}")))?;
    }
    for link in &config.mirror {
        if let Some(ca) = &link.ca {
            crate::tls::load_certs(ca)
                .map_err(|e| CliError::usage(format!("mirror {:?} ca: {e}", link.name)))?;
        }
        if let (Some(cert), Some(key)) = (&link.cert, &link.key) {
            crate::tls::load_certified_key(cert, key)
                .map_err(|e| CliError::usage(format!("mirror {:?} cert/key: {e}", link.name)))?;
        }
    }
    Ok(())
}

/// One line per setting group, as `eddy serve` would run.
pub fn summary(config: &ServerConfig) -> String {
    let tls = match &config.tls {
        TlsSetup::DevGenerated => format!(
            "dev certificate in {}",
            config.data_dir.join("tls").display()
        ),
        TlsSetup::Files { cert, key } => format!("{} + {}", cert.display(), key.display()),
        TlsSetup::InsecurePlaintext => "OFF (insecure plaintext)".to_string(),
    };
    let reload = match config.tls_reload_check_ms {
        0 => "on SIGHUP".to_string(),
        ms => format!("on SIGHUP or change (checked every {ms} ms)"),
    };
    let metrics = match config.metrics_listen {
        Some(addr) => format!("http://{addr}/metrics"),
        None => "off".to_string(),
    };
    let devices = match &config.client_ca {
        Some(ca) => format!("certificates chaining to {} (mTLS)", ca.display()),
        None => "no certificates (identity anonymous)".to_string(),
    };
    let acl = match &config.acl_file {
        Some(file) => format!("{} (default deny)", file.display()),
        None => "off (everyone may do everything)".to_string(),
    };
    let l = &config.limits;
    let mut mirror = String::new();
    for link in &config.mirror {
        let topics = match (link.topics.is_empty(), &link.pattern) {
            (true, None) => "all topics".to_string(),
            (false, None) => link.topics.join(","),
            (true, Some(p)) => format!("/{p}/"),
            (false, Some(p)) => format!("{} and /{p}/", link.topics.join(",")),
        };
        mirror.push_str(&format!(
            "\n  mirror {} → {} ({topics} as {})",
            link.name, link.url, link.topic_name
        ));
    }
    format!(
        "  listen {} (TLS: {tls}; reload {reload})\n  devices present {devices}; ACL {acl}\n  \
         data dir {}\n  metrics {metrics}\n  \
         connections_max {}, connections_per_ip_max {}, inflight_max {}, frame_bytes_max {}, batch_bytes_max {}\n  \
         timeouts: tls_handshake {} ms, idle {} ms, frame {} ms\n  \
         cache {} MiB, threads {}, auto_create_topics {}, default_partitions {}{mirror}",
        config.listen,
        config.data_dir.display(),
        l.connections_max,
        l.connections_per_ip_max,
        l.inflight_max,
        l.frame_bytes_max,
        l.batch_bytes_max,
        l.tls_handshake_timeout_ms,
        l.idle_timeout_ms,
        l.frame_timeout_ms,
        config.storage.cache_bytes >> 20,
        config.threads,
        config.auto_create_topics,
        config.default_partitions,
    )
}
