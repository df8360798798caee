//! Server settings and every bound the server enforces, with their defaults.
//!
//! Each limit has a unit in its name and a named default so that the README,
//! `--help` and the code agree. Flags (and later a config file) fill a
//! [`ServerConfig`]; nothing else reads settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::storage::StorageOptions;
use crate::wire::{BATCH_BYTES_MAX_DEFAULT, FRAME_BYTES_MAX_DEFAULT, FRAME_PREFIX_BYTES};

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
/// Default time a client has to complete the TLS handshake, in ms.
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
/// Bytes of queued responses after which a connection's writer flushes.
pub const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// How long graceful shutdown waits for in-flight requests, in ms.
pub const SHUTDOWN_DRAIN_MS: u64 = 10_000;

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
        }
    }
}

impl ServerConfig {
    /// Checks the settings against each other; the message names the
    /// setting and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.batch_bytes_max + FETCH_RESPONSE_OVERHEAD_BYTES + FRAME_PREFIX_BYTES as u32
            > l.frame_bytes_max
        {
            return Err(format!(
                "batch_bytes_max ({}) must be at least {} bytes below frame_bytes_max ({}): raise frame_bytes_max or lower batch_bytes_max",
                l.batch_bytes_max, FETCH_RESPONSE_OVERHEAD_BYTES, l.frame_bytes_max
            ));
        }
        if l.inflight_max == 0 {
            return Err("inflight_max must be at least 1".into());
        }
        if self.maintenance_interval_ms == 0 {
            return Err("maintenance_interval_ms must be at least 1".into());
        }
        if l.connections_max == 0 {
            return Err("connections_max must be at least 1".into());
        }
        if self.default_partitions == 0 || self.default_partitions > PARTITIONS_MAX {
            return Err(format!(
                "default_partitions must be between 1 and {PARTITIONS_MAX}"
            ));
        }
        if let Some(id) = &self.hub_id {
            if !crate::wire::is_valid_topic_name(id) {
                return Err(format!(
                    "hub id {id:?} must be 1–249 characters of [a-zA-Z0-9._-]"
                ));
            }
        }
        Ok(())
    }
}
