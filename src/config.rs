//! Server settings and every bound the server enforces, with their defaults.
//!
//! Each limit has a unit in its name and a named default so that the README,
//! `--help`, the example config file and the code agree. Defaults, then the
//! config file ([`file`]), then flags fill a [`ServerConfig`]; nothing else
//! reads settings. [`ServerConfig::validate`] checks every setting against
//! its bounds and names the offending field by its config-file path.
//!
//! This module does not start anything and does not read the environment.

pub mod file;
pub mod mirror;
pub mod mqtt;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::storage::StorageOptions;
use crate::wire::{BATCH_BYTES_MAX_DEFAULT, FRAME_BYTES_MAX_DEFAULT, FRAME_PREFIX_BYTES};
pub use mirror::MirrorLinkConfig;
pub use mqtt::MqttConfig;

/// Default listen address: loopback only until the operator says otherwise.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7654";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "eddy-data";
/// Default number of partitions of an auto-created topic (Kafka's `num.partitions`).
pub const DEFAULT_PARTITIONS_DEFAULT: u32 = 1;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 4096;
/// Default most simultaneous connections.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default most simultaneous connections from one source address (IPv6:
/// one /48 prefix, what one site usually has: `net::IPV6_SOURCE_PREFIX_BITS`), so that one misbehaving or
/// hostile source cannot take every connection slot.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 1_000;
/// Default most connections in the TLS handshake at once (accepted, not yet
/// through the handshake), counted apart from established ones: a flood of
/// half-open handshakes takes these slots, not the devices'.
pub const HANDSHAKES_MAX_DEFAULT: usize = 2_000;
/// Default most topics on the hub (a gateway has few; each costs sled
/// metadata and a share of every flush round).
pub const TOPICS_MAX_DEFAULT: usize = 1_000;
/// Default most partitions of all topics together (each empty partition
/// costs sled metadata files and fsync work in every flush round).
pub const PARTITIONS_TOTAL_MAX_DEFAULT: u64 = 4_096;
/// Default time a client has to complete the TLS handshake and send its
/// `Hello`, in ms.
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time a connection may sit with no request in flight, in ms
/// (Kafka's `connections.max.idle.ms`).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 600_000;
/// Default time the rest of a frame has to arrive once its first byte has, in ms.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default requests in flight per connection; beyond it the server stops
/// reading from that connection until one completes.
pub const INFLIGHT_MAX_DEFAULT: u32 = 64;
/// Longest long-poll a fetch may ask for, in ms.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Longest a produce may wait for its acknowledgement level, in ms.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 120_000;
/// Bytes a fetch response may carry besides its batches (headers, ids).
pub const FETCH_RESPONSE_OVERHEAD_BYTES: u32 = 4 << 10;
/// Capacity of a connection's read buffer, in bytes.
pub const READ_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of answers waiting to be written after which a connection stops
/// reading requests until they are written.
pub const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of answers a connection may have pending — reserved by fetches
/// about to read, or encoded and not yet written — before it stops reading
/// requests and woken long-polls wait for room
/// ([`crate::broker::AnswerBudget`]). One answer of any size (at most a
/// frame) may always proceed, so a connection holds at most this plus one
/// frame.
pub const ANSWER_BYTES_PENDING_MAX: usize = 1 << 20;
/// How long graceful shutdown waits for in-flight requests, in ms.
pub const SHUTDOWN_DRAIN_MS: u64 = 10_000;
/// Default address of the Kafka-protocol listener (plaintext on loopback).
pub const KAFKA_LISTEN_DEFAULT: &str = "127.0.0.1:9092";
/// Default address of the Prometheus metrics endpoint (`/metrics`).
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:7655";
/// Default interval at which the TLS certificate and key files are checked
/// for changes, in ms (0: reload on SIGHUP only).
pub const TLS_RELOAD_CHECK_MS_DEFAULT: u64 = 5_000;

// Bounds `ServerConfig::validate` enforces (inclusive). They exist so that a
// typo (an extra zero, ms taken for s) is refused at start, not discovered
// in production.
/// Largest accepted `limits.connections_max`.
pub const CONNECTIONS_MAX_LIMIT: usize = 1_000_000;
/// Largest accepted `limits.topics_max`.
pub const TOPICS_MAX_LIMIT: usize = 100_000;
/// Largest accepted `limits.partitions_total_max`.
pub const PARTITIONS_TOTAL_MAX_LIMIT: u64 = 1_000_000;
/// Smallest accepted timeout (`limits.*_timeout_ms`), in ms.
pub const TIMEOUT_MS_MIN: u64 = 100;
/// Largest accepted timeout (`limits.*_timeout_ms`), in ms (one day).
pub const TIMEOUT_MS_LIMIT: u64 = 86_400_000;
/// Largest accepted `limits.inflight_max`.
pub const INFLIGHT_MAX_LIMIT: u32 = 4_096;
/// Smallest accepted `limits.frame_bytes_max`.
pub const FRAME_BYTES_MAX_MIN: u32 = 64 << 10;
/// Largest accepted `limits.frame_bytes_max` (one frame is buffered whole).
pub const FRAME_BYTES_MAX_LIMIT: u32 = 64 << 20;
/// Smallest accepted `limits.batch_bytes_max`.
pub const BATCH_BYTES_MAX_MIN: u32 = 1 << 10;
/// Largest accepted `threads`.
pub const THREADS_MAX: usize = 256;
/// Smallest accepted `storage.cache_mb`, in MiB.
pub const CACHE_MB_MIN: u64 = 1;
/// Smallest accepted `storage.maintenance_interval_ms`.
pub const MAINTENANCE_INTERVAL_MS_MIN: u64 = 1;
/// Largest accepted `storage.maintenance_interval_ms` (one day).
pub const MAINTENANCE_INTERVAL_MS_LIMIT: u64 = 86_400_000;
/// Largest accepted `storage.disk_free_min_mb`, in MiB (1 TiB).
pub const DISK_FREE_MIN_MB_LIMIT: u64 = 1 << 20;
/// Largest accepted `storage.cache_mb`, in MiB.
pub const CACHE_MB_LIMIT: u64 = 65_536;
/// Smallest nonzero `tls.reload_check_ms`, in ms.
pub const TLS_RELOAD_CHECK_MS_MIN: u64 = 100;

/// How the listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetup {
    /// A dev CA and server certificate generated in `<data-dir>/tls`.
    DevGenerated,
    /// Operator-provided PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// No TLS. Development only, never the default.
    InsecurePlaintext,
}

/// Limits against abuse and overload.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connections_max: usize,
    pub connections_per_ip_max: usize,
    /// Connections in the TLS handshake at once ([`HANDSHAKES_MAX_DEFAULT`]).
    pub handshakes_max: usize,
    /// Topics on the hub ([`TOPICS_MAX_DEFAULT`]).
    pub topics_max: usize,
    /// Partitions of all topics together ([`PARTITIONS_TOTAL_MAX_DEFAULT`]).
    pub partitions_total_max: u64,
    pub tls_handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub frame_timeout_ms: u64,
    pub inflight_max: u32,
    pub frame_bytes_max: u32,
    pub batch_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            handshakes_max: HANDSHAKES_MAX_DEFAULT,
            topics_max: TOPICS_MAX_DEFAULT,
            partitions_total_max: PARTITIONS_TOTAL_MAX_DEFAULT,
            tls_handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            inflight_max: INFLIGHT_MAX_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
        }
    }
}

/// Everything `eddy serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsSetup,
    /// Stable identity of this hub; `None`: generated once and kept in
    /// `<data-dir>/hub-id`.
    pub hub_id: Option<String>,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub storage: StorageOptions,
    pub limits: Limits,
    /// Executor threads; 0 = one per CPU.
    pub threads: usize,
    /// Time between idle steps of retention, compaction and the disk
    /// budget, in ms.
    pub maintenance_interval_ms: u64,
    /// Where `/metrics` is served; `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the TLS files (and the client CA and ACL file) are checked
    /// for changes, in ms; 0: only on SIGHUP
    /// ([`crate::server::RunningServer::reloader`]).
    pub tls_reload_check_ms: u64,
    /// CA certificate(s) (PEM) that device certificates must chain to;
    /// `None`: no client certificates asked for (every device is
    /// `anonymous`).
    pub client_ca: Option<PathBuf>,
    /// The ACL file ([`crate::acl`]); `None`: ACLs off, every connection may
    /// do everything.
    pub acl_file: Option<PathBuf>,
    /// Upstream mirror links ([`mirror`]); none by default.
    pub mirror: Vec<MirrorLinkConfig>,
    /// The MQTT listener ([`mqtt`]); on at 127.0.0.1:1883 by default.
    pub mqtt: MqttConfig,
    /// The Kafka-protocol listener ([`crate::net::kafka`]).
    pub kafka: KafkaConfig,
}

/// `[kafka]`: the Kafka-protocol listener. Plaintext on a loopback address
/// (clients are [`crate::net::kafka::KAFKA_LOCAL_IDENTITY`]); on any other
/// address TLS with the hub's certificate (and `client_ca` for mTLS, as
/// for devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Where Kafka clients connect; `None`: no Kafka listener.
    pub listen: Option<SocketAddr>,
    /// `HOST:PORT` that Metadata names for this node (what clients can
    /// reach); `None`: the bound address.
    pub advertised: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            listen: Some(KAFKA_LISTEN_DEFAULT.parse().expect("valid default address")),
            advertised: None,
        }
    }
}

impl KafkaConfig {
    /// The advertised host and port, if set and well-formed.
    pub fn advertised_host_port(&self) -> Option<(String, u16)> {
        let (host, port) = self.advertised.as_deref()?.rsplit_once(':')?;
        let port = port.parse().ok()?;
        (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: LISTEN_DEFAULT.parse().expect("valid default address"),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            tls: TlsSetup::DevGenerated,
            hub_id: None,
            auto_create_topics: true,
            default_partitions: DEFAULT_PARTITIONS_DEFAULT,
            storage: StorageOptions::default(),
            limits: Limits::default(),
            threads: 0,
            maintenance_interval_ms: crate::storage::maintenance::MAINTENANCE_INTERVAL_MS_DEFAULT,
            metrics_listen: Some(
                METRICS_LISTEN_DEFAULT
                    .parse()
                    .expect("valid default address"),
            ),
            tls_reload_check_ms: TLS_RELOAD_CHECK_MS_DEFAULT,
            client_ca: None,
            acl_file: None,
            mirror: Vec::new(),
            mqtt: MqttConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// A setting that is out of bounds or contradicts another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The offending setting by its config-file path (`limits.inflight_max`);
    /// when two settings contradict each other, both, the primary first.
    pub fields: Vec<&'static str>,
    /// The first of `fields` (what the message is about).
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Invalid {
    fn new(fields: &[&'static str], message: String) -> Invalid {
        Invalid {
            fields: fields.to_vec(),
            field: fields[0],
            message,
        }
    }
}

/// `Err` unless `min <= value <= max`.
fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(Invalid::new(
            &[field],
            format!("{value}{unit} is out of range: use {min}{unit} to {max}{unit}"),
        ));
    }
    Ok(())
}

impl ServerConfig {
    /// Checks every setting against its bounds and the settings against
    /// each other; the error names the setting and the fix.
    pub fn validate(&self) -> Result<(), Invalid> {
        let l = &self.limits;
        in_range(
            "limits.connections_max",
            l.connections_max,
            1,
            CONNECTIONS_MAX_LIMIT,
            "",
        )?;
        in_range(
            "limits.connections_per_ip_max",
            l.connections_per_ip_max,
            1,
            CONNECTIONS_MAX_LIMIT,
            "",
        )?;
        in_range(
            "limits.handshakes_max",
            l.handshakes_max,
            1,
            CONNECTIONS_MAX_LIMIT,
            "",
        )?;
        in_range("limits.topics_max", l.topics_max, 1, TOPICS_MAX_LIMIT, "")?;
        in_range(
            "limits.partitions_total_max",
            l.partitions_total_max,
            1,
            PARTITIONS_TOTAL_MAX_LIMIT,
            "",
        )?;
        for (field, value) in [
            (
                "limits.tls_handshake_timeout_ms",
                l.tls_handshake_timeout_ms,
            ),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.frame_timeout_ms", l.frame_timeout_ms),
        ] {
            in_range(field, value, TIMEOUT_MS_MIN, TIMEOUT_MS_LIMIT, " ms")?;
        }
        in_range(
            "limits.inflight_max",
            l.inflight_max,
            1,
            INFLIGHT_MAX_LIMIT,
            "",
        )?;
        in_range(
            "limits.frame_bytes_max",
            l.frame_bytes_max,
            FRAME_BYTES_MAX_MIN,
            FRAME_BYTES_MAX_LIMIT,
            " bytes",
        )?;
        in_range(
            "limits.batch_bytes_max",
            l.batch_bytes_max,
            BATCH_BYTES_MAX_MIN,
            FRAME_BYTES_MAX_LIMIT,
            " bytes",
        )?;
        if l.batch_bytes_max + FETCH_RESPONSE_OVERHEAD_BYTES + FRAME_PREFIX_BYTES as u32
            > l.frame_bytes_max
        {
            return Err(Invalid::new(
                &["limits.batch_bytes_max", "limits.frame_bytes_max"],
                format!(
                    "batch_bytes_max ({}) must be at least {} bytes below frame_bytes_max ({}): raise frame_bytes_max or lower batch_bytes_max",
                    l.batch_bytes_max,
                    FETCH_RESPONSE_OVERHEAD_BYTES + FRAME_PREFIX_BYTES as u32,
                    l.frame_bytes_max
                ),
            ));
        }
        in_range(
            "default_partitions",
            self.default_partitions,
            1,
            PARTITIONS_MAX,
            "",
        )?;
        in_range("threads", self.threads, 0, THREADS_MAX, "")?;
        in_range(
            "storage.cache_mb",
            self.storage.cache_bytes >> 20,
            CACHE_MB_MIN,
            CACHE_MB_LIMIT,
            " MiB",
        )?;
        in_range(
            "storage.disk_free_min_mb",
            self.storage.disk_free_min_bytes >> 20,
            0,
            DISK_FREE_MIN_MB_LIMIT,
            " MiB",
        )?;
        in_range(
            "storage.flush_ms",
            self.storage.flush_ms,
            0,
            crate::storage::FLUSH_MS_MAX,
            " ms",
        )?;
        if self.tls_reload_check_ms != 0 {
            in_range(
                "tls.reload_check_ms",
                self.tls_reload_check_ms,
                TLS_RELOAD_CHECK_MS_MIN,
                TIMEOUT_MS_LIMIT,
                " ms",
            )?;
        }
        in_range(
            "storage.maintenance_interval_ms",
            self.maintenance_interval_ms,
            MAINTENANCE_INTERVAL_MS_MIN,
            MAINTENANCE_INTERVAL_MS_LIMIT,
            " ms",
        )?;
        if let Some(metrics) = self.metrics_listen {
            if metrics == self.listen && metrics.port() != 0 {
                return Err(Invalid::new(
                    &["metrics.listen", "listen"],
                    format!("metrics.listen ({metrics}) is the same address as listen: choose another port"),
                ));
            }
        }
        if self.client_ca.is_some() && self.tls == TlsSetup::InsecurePlaintext {
            return Err(Invalid::new(
                &["tls.client_ca", "tls.insecure_plaintext"],
                "client_ca needs TLS: device certificates are checked in the TLS handshake; remove insecure_plaintext".into(),
            ));
        }
        if let Some(id) = &self.hub_id {
            if !crate::wire::is_valid_topic_name(id) {
                return Err(Invalid::new(
                    &["hub_id"],
                    format!("hub id {id:?} must be 1–249 characters of [a-zA-Z0-9._-]"),
                ));
            }
        }
        mirror::validate_links(&self.mirror)?;
        self.mqtt.validate()?;
        self.validate_kafka()
    }

    fn validate_kafka(&self) -> Result<(), Invalid> {
        let Some(kafka) = self.kafka.listen else {
            return Ok(());
        };
        if !kafka.ip().is_loopback() && self.tls == TlsSetup::InsecurePlaintext {
            return Err(Invalid::new(
                &["kafka.listen", "tls.insecure_plaintext"],
                format!("kafka.listen {kafka} is not a loopback address and needs TLS (the hub's certificate); remove insecure_plaintext or listen on 127.0.0.1"),
            ));
        }
        if kafka.port() != 0 && (kafka == self.listen || Some(kafka) == self.metrics_listen) {
            return Err(Invalid::new(
                &["kafka.listen"],
                format!("kafka.listen ({kafka}) is the address of another listener: choose another port"),
            ));
        }
        if self.kafka.advertised.is_some() && self.kafka.advertised_host_port().is_none() {
            return Err(Invalid::new(
                &["kafka.advertised"],
                "kafka.advertised must be HOST:PORT (what Kafka clients can reach)".into(),
            ));
        }
        Ok(())
    }
}
