//! Mirror link settings: the upstream URL, topic selection and naming, TLS,
//! and every bound of a link (backoff, liveness, in-flight requests,
//! bandwidth), with their defaults and validation.
//!
//! A link comes from `eddy serve --mirror [NAME=]URL` (with
//! `--mirror-topics` and `--mirror-ca`) or from a `[[mirror]]` table of the
//! config file. This module parses and checks; it connects to nothing (that
//! is `crate::mirror`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Default upstream topic name: MirrorMaker 2's default replication policy.
pub const MIRROR_TOPIC_NAME_DEFAULT: &str = "{hub_id}.{topic}";
/// First wait after a failed session, in ms; it doubles per failure.
pub const MIRROR_BACKOFF_MIN_MS_DEFAULT: u64 = 200;
/// Longest wait between attempts, in ms (before jitter).
pub const MIRROR_BACKOFF_MAX_MS_DEFAULT: u64 = 30_000;
/// Interval of the liveness ping on the link's control connection, in ms.
pub const MIRROR_PING_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// A ping unanswered this long ends the session, in ms.
pub const MIRROR_PING_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest the upstream may take to acknowledge one request, in ms.
pub const MIRROR_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Requests in flight per upstream connection.
pub const MIRROR_INFLIGHT_MAX_DEFAULT: u32 = 4;
/// Most record bytes in one request to the upstream.
pub const MIRROR_REQUEST_BYTES_MAX_DEFAULT: u32 = 512 << 10;
/// Smallest accepted `request_bytes_max` (one stored batch must fit).
pub const MIRROR_REQUEST_BYTES_MAX_MIN: u32 = 16 << 10;
/// Largest accepted `request_bytes_max` (Kafka's default message.max.bytes
/// is about 1 MB; an eddy upstream's frame limit may be lower).
pub const MIRROR_REQUEST_BYTES_MAX_LIMIT: u32 = 8 << 20;
/// Largest accepted `inflight_max` (Kafka's idempotent producer allows 5
/// batches in flight per partition).
pub const MIRROR_INFLIGHT_MAX_LIMIT: u32 = 5;
/// Most mirror links.
pub const MIRROR_LINKS_MAX: usize = 16;
/// Longest link name, in bytes.
pub const MIRROR_LINK_NAME_BYTES_MAX: usize = 64;

/// What kind of cluster a link writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Another eddy (native protocol over TLS).
    Eddy,
    /// A Kafka-protocol cluster (Apache Kafka, Redpanda, Tansu …).
    Kafka,
}

/// Compression on the uplink: of each request's batches on an `eddy://`
/// link (none, lz4 or zstd; negotiated, so an older upstream gets them
/// uncompressed), of each record batch on a `kafka://` link (any of the
/// four but gzip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkCompression {
    None,
    /// Snappy (Kafka's codec 2; every Kafka consumer reads it). kafka:// only.
    Snappy,
    /// LZ4 (Kafka's codec 3): the cheapest per byte.
    Lz4,
    /// zstd level 3 (Kafka's codec 4, Kafka 2.1 and later): the fewest bytes.
    Zstd,
}

impl UplinkCompression {
    /// The default of a link kind: zstd, the fewest bytes for little CPU
    /// (benches/compression.rs: on telemetry JSON 0.18× of the value bytes
    /// to an eddy, 0.22× to Kafka, where LZ4 sends 0.30×). An older eddy
    /// is sent uncompressed; a Kafka before 2.1 (or consumers built
    /// without zstd) needs `compression = "lz4"`.
    pub fn default_for(kind: UpstreamKind) -> UplinkCompression {
        match kind {
            UpstreamKind::Eddy | UpstreamKind::Kafka => UplinkCompression::Zstd,
        }
    }

    /// The setting's value (`compression = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            UplinkCompression::None => "none",
            UplinkCompression::Snappy => "snappy",
            UplinkCompression::Lz4 => "lz4",
            UplinkCompression::Zstd => "zstd",
        }
    }

    /// Parses a setting's value.
    pub fn parse(name: &str) -> Option<UplinkCompression> {
        [
            UplinkCompression::None,
            UplinkCompression::Snappy,
            UplinkCompression::Lz4,
            UplinkCompression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// One mirror link.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorLinkConfig {
    /// Stable name (cursors are kept per link name).
    pub name: String,
    /// As given (`eddy://host:port`, `kafka://host:port[,host:port]`).
    pub url: String,
    pub kind: UpstreamKind,
    /// `host:port` to connect to, tried in order (Kafka: bootstrap servers).
    pub addrs: Vec<String>,
    /// Topics mirrored by exact name.
    pub topics: Vec<String>,
    /// Topics mirrored by a regular expression that must match the whole
    /// name. With neither `topics` nor `pattern`, every topic is mirrored.
    pub pattern: Option<String>,
    /// Upstream topic name, with `{hub_id}` and `{topic}` replaced.
    pub topic_name: String,
    /// CA to trust (PEM). eddy://: required unless plaintext. kafka://:
    /// TLS when set, plaintext otherwise.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), presented when the upstream asks.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify in the upstream's certificate (default: its host).
    pub server_name: Option<String>,
    /// eddy:// without TLS (an upstream started with --insecure-plaintext).
    pub insecure_plaintext: bool,
    pub compression: UplinkCompression,
    /// Most bytes per second sent upstream; 0: no cap.
    pub bandwidth_bytes_per_s: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub inflight_max: u32,
    pub request_bytes_max: u32,
}

/// A `[[mirror]]` table of the config file (keys as documented in
/// `packaging/eddy.toml`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    pub name: Option<String>,
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub topic_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_plaintext: Option<bool>,
    pub compression: Option<String>,
    pub bandwidth_bytes_per_s: Option<u64>,
    pub backoff_min_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub ping_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub inflight_max: Option<u32>,
    pub request_bytes_max: Option<u32>,
}

impl MirrorLinkConfig {
    /// A link to `url` (`[NAME=]eddy://…` or `[NAME=]kafka://…`) with every
    /// other setting at its default.
    pub fn parse(spec: &str) -> Result<MirrorLinkConfig, String> {
        let (name, url) = match spec.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.to_string()), url),
            _ => (None, spec),
        };
        let (kind, rest) = if let Some(rest) = url.strip_prefix("eddy://") {
            (UpstreamKind::Eddy, rest)
        } else if let Some(rest) = url.strip_prefix("kafka://") {
            (UpstreamKind::Kafka, rest)
        } else {
            return Err(format!(
                "mirror URL {url:?} must start with eddy:// (another eddy) or kafka:// (a Kafka-protocol cluster)"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let addrs: Vec<String> = rest.split(',').map(|a| a.trim().to_string()).collect();
        for addr in &addrs {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!(
                    "mirror URL {url:?}: {addr:?} is not host:port (e.g. {}://central.example.com:{})",
                    if kind == UpstreamKind::Eddy { "eddy" } else { "kafka" },
                    if kind == UpstreamKind::Eddy { 7654 } else { 9092 }
                ));
            }
        }
        let name = name.unwrap_or_else(|| default_name(&addrs[0]));
        Ok(MirrorLinkConfig {
            name,
            url: url.to_string(),
            kind,
            addrs,
            topics: Vec::new(),
            pattern: None,
            topic_name: MIRROR_TOPIC_NAME_DEFAULT.to_string(),
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            insecure_plaintext: false,
            compression: UplinkCompression::default_for(kind),
            bandwidth_bytes_per_s: 0,
            backoff_min_ms: MIRROR_BACKOFF_MIN_MS_DEFAULT,
            backoff_max_ms: MIRROR_BACKOFF_MAX_MS_DEFAULT,
            ping_interval_ms: MIRROR_PING_INTERVAL_MS_DEFAULT,
            ping_timeout_ms: MIRROR_PING_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: MIRROR_REQUEST_TIMEOUT_MS_DEFAULT,
            inflight_max: MIRROR_INFLIGHT_MAX_DEFAULT,
            request_bytes_max: MIRROR_REQUEST_BYTES_MAX_DEFAULT,
        })
    }

    /// Sets the topic selection from `--mirror-topics`: a regular
    /// expression over whole topic names.
    pub fn set_pattern(&mut self, pattern: &str) {
        self.pattern = Some(pattern.to_string());
        self.topics.clear();
    }

    /// The upstream topic name of local topic `topic`.
    pub fn upstream_topic(&self, hub_id: &str, topic: &str) -> String {
        upstream_topic(&self.topic_name, hub_id, topic)
    }

    /// Checks the link's settings on their own; `i` is its index in the
    /// config file (for the error's field path).
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |field: &'static str, message: String| {
            Err(Invalid::new(
                &[field],
                format!("link {:?}: {message}", self.name),
            ))
        };
        if self.name.is_empty()
            || self.name.len() > MIRROR_LINK_NAME_BYTES_MAX
            || !crate::wire::is_valid_topic_name(&self.name)
        {
            return bad(
                "mirror.name",
                format!(
                    "link names are 1–{MIRROR_LINK_NAME_BYTES_MAX} characters of [a-zA-Z0-9._-]"
                ),
            );
        }
        for topic in &self.topics {
            if !crate::wire::is_valid_topic_name(topic) {
                return bad(
                    "mirror.topics",
                    format!("{topic:?} is not a valid topic name"),
                );
            }
        }
        if let Some(pattern) = &self.pattern {
            if let Err(e) = regex_lite::Regex::new(&format!("^(?:{pattern})$")) {
                return bad(
                    "mirror.pattern",
                    format!("topic pattern {pattern:?} is not a regular expression: {e}"),
                );
            }
        }
        if !self.topic_name.contains("{topic}") {
            return bad(
                "mirror.topic_name",
                format!(
                    "topic_name {:?} must contain {{topic}} (else every topic would go to one upstream topic)",
                    self.topic_name
                ),
            );
        }
        let sample = upstream_topic(&self.topic_name, "hub", "topic");
        if !crate::wire::is_valid_topic_name(&sample) || sample.contains('{') {
            return bad(
                "mirror.topic_name",
                format!(
                    "topic_name {:?} does not make a valid topic name: use [a-zA-Z0-9._-] besides {{hub_id}} and {{topic}}",
                    self.topic_name
                ),
            );
        }
        match self.kind {
            UpstreamKind::Eddy => {
                if self.insecure_plaintext && self.ca.is_some() {
                    return bad(
                        "mirror.insecure_plaintext",
                        "insecure_plaintext cannot be combined with ca: remove one".into(),
                    );
                }
                if !self.insecure_plaintext && self.ca.is_none() {
                    return bad(
                        "mirror.ca",
                        "an eddy:// upstream speaks TLS: give the CA that signed its certificate \
                         (--mirror-ca FILE, or ca = \"…\"; for an eddy's dev certificate: its <data-dir>/tls/ca.pem)"
                            .to_string(),
                    );
                }
                if self.compression == UplinkCompression::Snappy {
                    return bad(
                        "mirror.compression",
                        "an eddy:// link compresses with none, lz4 or zstd (snappy is for kafka:// links)"
                            .into(),
                    );
                }
            }
            UpstreamKind::Kafka => {
                if self.insecure_plaintext {
                    return bad(
                        "mirror.insecure_plaintext",
                        "kafka:// links use TLS when ca is set and plaintext otherwise; remove insecure_plaintext".into(),
                    );
                }
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad(
                "mirror.cert",
                "cert and key go together: set both (PEM files) or neither".into(),
            );
        }
        if self.cert.is_some() && self.ca.is_none() {
            return bad(
                "mirror.cert",
                "a client certificate needs TLS: set ca too".into(),
            );
        }
        super::in_range(
            "mirror.backoff_min_ms",
            self.backoff_min_ms,
            10,
            super::TIMEOUT_MS_LIMIT,
            " ms",
        )?;
        super::in_range(
            "mirror.backoff_max_ms",
            self.backoff_max_ms,
            self.backoff_min_ms,
            super::TIMEOUT_MS_LIMIT,
            " ms",
        )?;
        for (field, value) in [
            ("mirror.ping_interval_ms", self.ping_interval_ms),
            ("mirror.ping_timeout_ms", self.ping_timeout_ms),
            ("mirror.request_timeout_ms", self.request_timeout_ms),
        ] {
            super::in_range(
                field,
                value,
                super::TIMEOUT_MS_MIN,
                super::TIMEOUT_MS_LIMIT,
                " ms",
            )?;
        }
        super::in_range(
            "mirror.inflight_max",
            self.inflight_max,
            1,
            MIRROR_INFLIGHT_MAX_LIMIT,
            "",
        )?;
        super::in_range(
            "mirror.request_bytes_max",
            self.request_bytes_max,
            MIRROR_REQUEST_BYTES_MAX_MIN,
            MIRROR_REQUEST_BYTES_MAX_LIMIT,
            " bytes",
        )?;
        if self.bandwidth_bytes_per_s != 0
            && self.bandwidth_bytes_per_s < u64::from(MIRROR_REQUEST_BYTES_MAX_MIN)
        {
            return bad(
                "mirror.bandwidth_bytes_per_s",
                format!(
                    "a bandwidth cap of {} bytes/s is below one request's minimum ({MIRROR_REQUEST_BYTES_MAX_MIN}); use 0 (no cap) or more",
                    self.bandwidth_bytes_per_s
                ),
            );
        }
        Ok(())
    }

    /// Applies a `[[mirror]]` table's optional keys.
    pub fn apply_section(&mut self, s: &MirrorSection) -> Result<(), Invalid> {
        if let Some(name) = &s.name {
            self.name = name.clone();
        }
        if let Some(topics) = &s.topics {
            self.topics = topics.clone();
        }
        if let Some(pattern) = &s.pattern {
            self.pattern = Some(pattern.clone());
        }
        set(&mut self.topic_name, s.topic_name.clone());
        if s.ca.is_some() {
            self.ca = s.ca.clone();
        }
        if s.cert.is_some() {
            self.cert = s.cert.clone();
        }
        if s.key.is_some() {
            self.key = s.key.clone();
        }
        if s.server_name.is_some() {
            self.server_name = s.server_name.clone();
        }
        set(&mut self.insecure_plaintext, s.insecure_plaintext);
        if let Some(c) = &s.compression {
            self.compression = UplinkCompression::parse(c).ok_or_else(|| {
                Invalid::new(
                    &["mirror.compression"],
                    format!("unknown compression {c:?}: use none, snappy, lz4 or zstd"),
                )
            })?;
        }
        set(&mut self.bandwidth_bytes_per_s, s.bandwidth_bytes_per_s);
        set(&mut self.backoff_min_ms, s.backoff_min_ms);
        set(&mut self.backoff_max_ms, s.backoff_max_ms);
        set(&mut self.ping_interval_ms, s.ping_interval_ms);
        set(&mut self.ping_timeout_ms, s.ping_timeout_ms);
        set(&mut self.request_timeout_ms, s.request_timeout_ms);
        set(&mut self.inflight_max, s.inflight_max);
        set(&mut self.request_bytes_max, s.request_bytes_max);
        Ok(())
    }

    /// The `[[mirror]]` table that sets every key to this link's value.
    pub fn to_section(&self) -> MirrorSection {
        MirrorSection {
            name: Some(self.name.clone()),
            url: Some(self.url.clone()),
            topics: Some(self.topics.clone()),
            pattern: self.pattern.clone(),
            topic_name: Some(self.topic_name.clone()),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
            insecure_plaintext: Some(self.insecure_plaintext),
            compression: Some(self.compression.name().to_string()),
            bandwidth_bytes_per_s: Some(self.bandwidth_bytes_per_s),
            backoff_min_ms: Some(self.backoff_min_ms),
            backoff_max_ms: Some(self.backoff_max_ms),
            ping_interval_ms: Some(self.ping_interval_ms),
            ping_timeout_ms: Some(self.ping_timeout_ms),
            request_timeout_ms: Some(self.request_timeout_ms),
            inflight_max: Some(self.inflight_max),
            request_bytes_max: Some(self.request_bytes_max),
        }
    }
}

impl MirrorSection {
    /// The link this table describes.
    pub fn to_link(&self) -> Result<MirrorLinkConfig, Invalid> {
        let url = self.url.as_deref().ok_or_else(|| {
            Invalid::new(
                &["mirror.url"],
                "a [[mirror]] table needs url = \"eddy://host:port\" or \"kafka://host:port\""
                    .into(),
            )
        })?;
        let mut link =
            MirrorLinkConfig::parse(url).map_err(|m| Invalid::new(&["mirror.url"], m))?;
        link.apply_section(self)?;
        Ok(link)
    }
}

/// Checks a set of links together: names unique, at most
/// [`MIRROR_LINKS_MAX`].
pub fn validate_links(links: &[MirrorLinkConfig]) -> Result<(), Invalid> {
    if links.len() > MIRROR_LINKS_MAX {
        return Err(Invalid::new(
            &["mirror"],
            format!("at most {MIRROR_LINKS_MAX} mirror links"),
        ));
    }
    for (i, link) in links.iter().enumerate() {
        link.validate()?;
        if links[..i].iter().any(|l| l.name == link.name) {
            return Err(Invalid::new(
                &["mirror.name"],
                format!(
                    "two mirror links are named {:?}: name them (NAME=URL, or name = \"…\")",
                    link.name
                ),
            ));
        }
    }
    Ok(())
}

/// `template` with `{hub_id}` and `{topic}` replaced.
pub fn upstream_topic(template: &str, hub_id: &str, topic: &str) -> String {
    template
        .replace("{hub_id}", hub_id)
        .replace("{topic}", topic)
}

/// The default link name: the first address, made a valid name.
fn default_name(addr: &str) -> String {
    addr.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MIRROR_LINK_NAME_BYTES_MAX)
        .collect()
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_names_and_address_lists() {
        let l = MirrorLinkConfig::parse("kafka://k1:9092,k2:9093").unwrap();
        assert_eq!(l.kind, UpstreamKind::Kafka);
        assert_eq!(l.addrs, vec!["k1:9092", "k2:9093"]);
        assert_eq!(l.name, "k1-9092");
        let l = MirrorLinkConfig::parse("dc=eddy://central.example.com:7654").unwrap();
        assert_eq!((l.kind, l.name.as_str()), (UpstreamKind::Eddy, "dc"));
        assert_eq!(l.url, "eddy://central.example.com:7654");
        for bad in [
            "http://x:1",
            "kafka://nohost",
            "kafka://:9092",
            "eddy://h:port",
            "kafka://a:1,",
        ] {
            assert!(MirrorLinkConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_setting_and_the_fix() {
        let mut l = MirrorLinkConfig::parse("eddy://h:1").unwrap();
        let e = l.validate().unwrap_err();
        assert_eq!(e.field, "mirror.ca");
        assert!(e.message.contains("--mirror-ca"), "{e}");
        l.ca = Some("ca.pem".into());
        l.validate().unwrap();
        l.topic_name = "all".into();
        assert_eq!(l.validate().unwrap_err().field, "mirror.topic_name");
        l.topic_name = "{hub_id}/{topic}".into();
        assert_eq!(l.validate().unwrap_err().field, "mirror.topic_name");
        l.topic_name = MIRROR_TOPIC_NAME_DEFAULT.into();
        l.pattern = Some("(".into());
        assert_eq!(l.validate().unwrap_err().field, "mirror.pattern");
        l.pattern = None;
        l.inflight_max = 6;
        assert_eq!(l.validate().unwrap_err().field, "mirror.inflight_max");
        l.inflight_max = 1;
        l.backoff_max_ms = l.backoff_min_ms - 1;
        assert_eq!(l.validate().unwrap_err().field, "mirror.backoff_max_ms");
        let k = MirrorLinkConfig::parse("kafka://h:1").unwrap();
        k.validate().unwrap();
        let twice = vec![k.clone(), k];
        assert_eq!(validate_links(&twice).unwrap_err().field, "mirror.name");
    }

    #[test]
    fn upstream_names_follow_the_template() {
        let l = MirrorLinkConfig::parse("kafka://h:1").unwrap();
        assert_eq!(l.upstream_topic("gw-7", "alarms"), "gw-7.alarms");
        assert_eq!(upstream_topic("{topic}", "gw", "t"), "t");
    }
}
