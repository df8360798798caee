//! The TOML config file (`eddy serve --config FILE`, `eddy config check FILE`).
//!
//! One optional key per setting, grouped in sections (`[tls]`, `[storage]`,
//! `[limits]`, `[metrics]`, `[acl]`, `[kafka]`, and one `[[mirror]]` table per upstream
//! link); a missing key keeps its default, an unknown key
//! is an error (a typo must not be silently ignored). Every error names the
//! file, the line and column, and the setting's dotted path:
//!
//! ```text
//! /etc/eddy/eddy.toml:12:1: limits.conections_max: unknown field `conections_max`, expected one of …
//! ```
//!
//! `packaging/eddy.toml` documents every key with its unit and default and
//! is the file the .deb installs; a test keeps the two in step.
//!
//! This module parses and applies a file onto a [`ServerConfig`]; it knows
//! nothing of flags (the CLI applies those afterwards) and starts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mirror::MirrorSection;
use super::mqtt::MqttSection;
use super::{Invalid, ServerConfig, TlsSetup};

/// Largest config file read, in bytes (a real one is a few KiB).
pub const FILE_BYTES_MAX: u64 = 1 << 20;

/// Log levels the `log_level` key accepts.
pub const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The whole file. Field names are the keys; see `packaging/eddy.toml`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub hub_id: Option<String>,
    pub auto_create_topics: Option<bool>,
    pub default_partitions: Option<u32>,
    pub threads: Option<usize>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub acl: AclSection,
    /// `[mqtt]`, with its `[[mqtt.route]]` tables.
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub kafka: KafkaSection,
    /// `[[mirror]]` tables, one per upstream link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<MirrorSection>,
}

/// `[tls]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure_plaintext: Option<bool>,
    pub reload_check_ms: Option<u64>,
    pub client_ca: Option<PathBuf>,
}

/// `[storage]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub cache_mb: Option<u64>,
    pub disk_budget_mb: Option<u64>,
    pub disk_free_min_mb: Option<u64>,
    pub maintenance_interval_ms: Option<u64>,
    pub flush_ms: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub connections_max: Option<usize>,
    pub connections_per_ip_max: Option<usize>,
    pub handshakes_max: Option<usize>,
    pub topics_max: Option<usize>,
    pub partitions_total_max: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub frame_timeout_ms: Option<u64>,
    pub inflight_max: Option<u32>,
    pub frame_bytes_max: Option<u32>,
    pub batch_bytes_max: Option<u32>,
}

/// `[metrics]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
}

/// `[kafka]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
    pub advertised: Option<String>,
}

/// `[acl]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclSection {
    pub file: Option<PathBuf>,
}

/// A config-file error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The setting's dotted path (`limits.inflight_max`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// A parsed file and its text (to place later errors).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub text: String,
    pub file: FileConfig,
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<Loaded, FileError> {
    let error = |message: String| FileError {
        path: path.to_path_buf(),
        position: None,
        field: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
    if meta.len() > FILE_BYTES_MAX {
        return Err(error(format!(
            "is {} bytes; a config file may have at most {FILE_BYTES_MAX}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let file = parse(path, &text)?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        file,
    })
}

/// Parses config text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, FileError> {
    let syntax = |e: toml::de::Error| FileError {
        path: path.to_path_buf(),
        position: e.span().map(|span| line_column(text, span.start)),
        field: None,
        message: format!(
            "{}{}",
            e.message().trim_end(),
            e.span()
                .and_then(|span| quote_hint(text, span.start))
                .unwrap_or_default()
        ),
    };
    let deserializer = toml::Deserializer::parse(text).map_err(syntax)?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let mut error = syntax(e.into_inner());
        // "." is serde_path_to_error's name for the root.
        error.field = (field != ".").then_some(field);
        error
    })
}

/// For a `key = value` line whose value is an unquoted word (an address,
/// a path, a name: TOML reads `127.0.0.1:7654` as a bad float), the form
/// that works: `; write it quoted: listen = "127.0.0.1:7654"`.
fn quote_hint(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, value) = line.split_once('=')?;
    let (key, value) = (key.trim(), value.split('#').next()?.trim());
    let quoted_already = value.starts_with(['"', '\'', '[', '{']);
    let literal = value.parse::<f64>().is_ok() || matches!(value, "true" | "false");
    if key.is_empty() || value.is_empty() || quoted_already || literal {
        return None;
    }
    Some(format!("; write it quoted: {key} = \"{value}\""))
}

impl Loaded {
    /// Applies the file onto `config` and validates the result; errors
    /// point at the offending key.
    pub fn apply(&self, config: &mut ServerConfig) -> Result<(), FileError> {
        self.file
            .apply(config)
            .and_then(|()| config.validate())
            .map_err(|invalid| self.place(invalid))
    }

    /// The log level the file asks for, if any.
    pub fn log_level(&self) -> Option<&str> {
        self.file.log_level.as_deref()
    }

    /// Turns an [`Invalid`] into a [`FileError`] at the first of its fields
    /// that the file sets.
    pub fn place(&self, invalid: Invalid) -> FileError {
        let placed = invalid
            .fields
            .iter()
            .find_map(|f| locate(&self.text, f).map(|position| (*f, position)));
        let (field, position) = match placed {
            Some((field, position)) => (field, Some(position)),
            None => (invalid.field, None),
        };
        FileError {
            path: self.path.clone(),
            position,
            field: Some(field.to_string()),
            message: invalid.message,
        }
    }
}

impl FileConfig {
    /// Overwrites every setting of `config` that the file sets. Checks only
    /// what a single key can get wrong on its own; bounds are
    /// [`ServerConfig::validate`]'s job.
    pub fn apply(&self, config: &mut ServerConfig) -> Result<(), Invalid> {
        set(&mut config.listen, self.listen);
        set(&mut config.data_dir, self.data_dir.clone());
        if let Some(id) = &self.hub_id {
            config.hub_id = Some(id.clone());
        }
        set(&mut config.auto_create_topics, self.auto_create_topics);
        set(&mut config.default_partitions, self.default_partitions);
        set(&mut config.threads, self.threads);
        if let Some(level) = &self.log_level {
            if !LOG_LEVELS.contains(&level.as_str()) {
                return Err(Invalid::new(
                    &["log_level"],
                    format!("unknown log level {level:?}: use one of {LOG_LEVELS:?}"),
                ));
            }
        }

        let tls = &self.tls;
        match (tls.insecure_plaintext, &tls.cert, &tls.key) {
            (Some(true), None, None) => config.tls = TlsSetup::InsecurePlaintext,
            (Some(true), _, _) => {
                return Err(Invalid::new(
                    &["tls.insecure_plaintext", "tls.cert", "tls.key"],
                    "insecure_plaintext = true cannot be combined with cert/key: remove one".into(),
                ))
            }
            (_, Some(cert), Some(key)) => {
                config.tls = TlsSetup::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                }
            }
            (_, None, None) => {}
            (_, Some(_), None) | (_, None, Some(_)) => {
                return Err(Invalid::new(
                    &["tls.cert", "tls.key"],
                    "cert and key go together: set both (PEM files) or neither (dev certificate)"
                        .into(),
                ))
            }
        }
        set(&mut config.tls_reload_check_ms, tls.reload_check_ms);
        if let Some(ca) = &tls.client_ca {
            config.client_ca = Some(ca.clone());
        }
        if let Some(acl) = &self.acl.file {
            config.acl_file = Some(acl.clone());
        }

        if let Some(mb) = self.storage.cache_mb {
            // Out-of-range values saturate and are refused by `validate`.
            config.storage.cache_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(mb) = self.storage.disk_budget_mb {
            config.storage.disk_budget_bytes = Some(mb.saturating_mul(1 << 20));
        }
        if let Some(mb) = self.storage.disk_free_min_mb {
            config.storage.disk_free_min_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(ms) = self.storage.flush_ms {
            config.storage.flush_ms = ms;
        }
        set(
            &mut config.maintenance_interval_ms,
            self.storage.maintenance_interval_ms,
        );

        let (l, limits) = (&self.limits, &mut config.limits);
        set(&mut limits.connections_max, l.connections_max);
        set(&mut limits.connections_per_ip_max, l.connections_per_ip_max);
        set(&mut limits.handshakes_max, l.handshakes_max);
        set(&mut limits.topics_max, l.topics_max);
        set(&mut limits.partitions_total_max, l.partitions_total_max);
        set(
            &mut limits.tls_handshake_timeout_ms,
            l.tls_handshake_timeout_ms,
        );
        set(&mut limits.idle_timeout_ms, l.idle_timeout_ms);
        set(&mut limits.frame_timeout_ms, l.frame_timeout_ms);
        set(&mut limits.inflight_max, l.inflight_max);
        set(&mut limits.frame_bytes_max, l.frame_bytes_max);
        set(&mut limits.batch_bytes_max, l.batch_bytes_max);

        let m = &self.metrics;
        if let Some(listen) = m.listen {
            config.metrics_listen = Some(listen);
        }
        if m.enabled == Some(false) {
            config.metrics_listen = None;
        } else if m.enabled == Some(true) && config.metrics_listen.is_none() {
            config.metrics_listen = ServerConfig::default().metrics_listen;
        }
        config.mqtt.apply(&self.mqtt);
        let k = &self.kafka;
        if let Some(listen) = k.listen {
            config.kafka.listen = Some(listen);
        }
        if k.enabled == Some(false) {
            config.kafka.listen = None;
        } else if k.enabled == Some(true) && config.kafka.listen.is_none() {
            config.kafka.listen = ServerConfig::default().kafka.listen;
        }
        if let Some(advertised) = &k.advertised {
            config.kafka.advertised = Some(advertised.clone());
        }
        if !self.mirror.is_empty() {
            config.mirror = self
                .mirror
                .iter()
                .map(MirrorSection::to_link)
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// The file that sets every key to `config`'s value (optional keys that
    /// have no value there stay unset).
    pub fn from_config(config: &ServerConfig) -> FileConfig {
        let (cert, key, plaintext) = match &config.tls {
            TlsSetup::Files { cert, key } => (Some(cert.clone()), Some(key.clone()), false),
            TlsSetup::DevGenerated => (None, None, false),
            TlsSetup::InsecurePlaintext => (None, None, true),
        };
        let l = &config.limits;
        FileConfig {
            listen: Some(config.listen),
            data_dir: Some(config.data_dir.clone()),
            hub_id: config.hub_id.clone(),
            auto_create_topics: Some(config.auto_create_topics),
            default_partitions: Some(config.default_partitions),
            threads: Some(config.threads),
            log_level: Some("info".into()),
            tls: TlsSection {
                cert,
                key,
                insecure_plaintext: Some(plaintext),
                reload_check_ms: Some(config.tls_reload_check_ms),
                client_ca: config.client_ca.clone(),
            },
            storage: StorageSection {
                cache_mb: Some(config.storage.cache_bytes >> 20),
                disk_budget_mb: config.storage.disk_budget_bytes.map(|b| b >> 20),
                disk_free_min_mb: Some(config.storage.disk_free_min_bytes >> 20),
                maintenance_interval_ms: Some(config.maintenance_interval_ms),
                flush_ms: Some(config.storage.flush_ms),
            },
            limits: LimitsSection {
                connections_max: Some(l.connections_max),
                connections_per_ip_max: Some(l.connections_per_ip_max),
                handshakes_max: Some(l.handshakes_max),
                topics_max: Some(l.topics_max),
                partitions_total_max: Some(l.partitions_total_max),
                tls_handshake_timeout_ms: Some(l.tls_handshake_timeout_ms),
                idle_timeout_ms: Some(l.idle_timeout_ms),
                frame_timeout_ms: Some(l.frame_timeout_ms),
                inflight_max: Some(l.inflight_max),
                frame_bytes_max: Some(l.frame_bytes_max),
                batch_bytes_max: Some(l.batch_bytes_max),
            },
            metrics: MetricsSection {
                enabled: Some(config.metrics_listen.is_some()),
                listen: config.metrics_listen,
            },
            acl: AclSection {
                file: config.acl_file.clone(),
            },
            mqtt: config.mqtt.to_section(),
            kafka: KafkaSection {
                enabled: Some(config.kafka.listen.is_some()),
                listen: config.kafka.listen,
                advertised: config.kafka.advertised.clone(),
            },
            mirror: config.mirror.iter().map(|l| l.to_section()).collect(),
        }
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where the key `field` (a dotted path such as `limits.inflight_max`) is
/// set in `text`, if it is.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut parts = field.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(line_column(text, key.span().start));
        }
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests;
