//! MQTT listener settings (`[mqtt]`, `--mqtt-listen`): the address, TLS or
//! the loud plaintext waiver, the MQTT-specific bounds, and the routes from
//! MQTT topics to eddy topics and keys (`[[mqtt.route]]`), with their
//! defaults and validation.
//!
//! This module parses and checks; matching a topic against the routes is
//! `crate::net::mqtt::routes`, and nothing here opens a socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Where the MQTT listener binds by default (plaintext, loopback only).
pub const MQTT_LISTEN_DEFAULT: &str = "127.0.0.1:1883";
/// Largest MQTT packet accepted, in bytes (checked against the fixed
/// header's remaining length before anything is allocated).
pub const MQTT_PACKET_BYTES_MAX_DEFAULT: u32 = 256 << 10;
/// Smallest accepted `packet_bytes_max`.
pub const MQTT_PACKET_BYTES_MAX_MIN: u32 = 1 << 10;
/// Largest accepted `packet_bytes_max` (MQTT's own limit is 256 MB).
pub const MQTT_PACKET_BYTES_MAX_LIMIT: u32 = 16 << 20;
/// QoS 1/2 publishes a client may have unacknowledged (MQTT 5's receive
/// maximum, told to v5 clients in CONNACK); at the bound the connection
/// stops reading.
pub const MQTT_INFLIGHT_MAX_DEFAULT: u16 = 64;
/// Largest accepted `inflight_max`.
pub const MQTT_INFLIGHT_MAX_LIMIT: u16 = 4_096;
/// Longest keep-alive a client may ask for, in s (0 from a client, "no
/// keep-alive", is raised to this).
pub const MQTT_KEEP_ALIVE_MAX_S_DEFAULT: u16 = 600;
/// Most `[[mqtt.route]]` tables.
pub const MQTT_ROUTES_MAX: usize = 256;
/// Most levels of a route's filter.
pub const MQTT_FILTER_LEVELS_MAX: usize = 32;

/// When a route's PUBACK / PUBREC is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttAcks {
    /// Once the record is appended (not yet fsynced).
    Received,
    /// Once the record is fsynced (the default).
    Durable,
}

/// One route: MQTT topics matching `filter` go to eddy topic `topic` with
/// the key `key` (a template: `{1}` is the first level the filter's first
/// wildcard matched, `{topic}` the whole MQTT topic).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRoute {
    pub filter: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<MqttAcks>,
}

/// `[mqtt]`
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
    pub insecure_plaintext: Option<bool>,
    pub packet_bytes_max: Option<u32>,
    pub inflight_max: Option<u16>,
    pub keep_alive_max_s: Option<u16>,
    /// Mosquitto-format password file: CONNECT must name a user in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<MqttRoute>,
}

/// The MQTT listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `None`: no MQTT listener.
    pub listen: Option<SocketAddr>,
    /// Plaintext on a non-loopback address (a closed LAN; logged loudly).
    pub insecure_plaintext: bool,
    pub packet_bytes_max: u32,
    pub inflight_max: u16,
    pub keep_alive_max_s: u16,
    /// `Some`: connections without a client certificate must CONNECT with
    /// a user name and password from this file (the user name is their
    /// identity); `None`: they are `anonymous`.
    pub password_file: Option<PathBuf>,
    pub routes: Vec<MqttRoute>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: Some(MQTT_LISTEN_DEFAULT.parse().expect("valid default address")),
            insecure_plaintext: false,
            packet_bytes_max: MQTT_PACKET_BYTES_MAX_DEFAULT,
            inflight_max: MQTT_INFLIGHT_MAX_DEFAULT,
            keep_alive_max_s: MQTT_KEEP_ALIVE_MAX_S_DEFAULT,
            password_file: None,
            routes: Vec::new(),
        }
    }
}

impl MqttConfig {
    /// Whether the listener speaks TLS: everywhere but loopback, unless
    /// waived.
    pub fn uses_tls(&self) -> bool {
        match self.listen {
            Some(addr) => !addr.ip().is_loopback() && !self.insecure_plaintext,
            None => false,
        }
    }

    /// Applies a `[mqtt]` section over these settings.
    pub fn apply(&mut self, s: &MqttSection) {
        if let Some(listen) = s.listen {
            self.listen = Some(listen);
        }
        if s.enabled == Some(false) {
            self.listen = None;
        } else if s.enabled == Some(true) && self.listen.is_none() {
            self.listen = MqttConfig::default().listen;
        }
        if let Some(v) = s.insecure_plaintext {
            self.insecure_plaintext = v;
        }
        if let Some(v) = s.packet_bytes_max {
            self.packet_bytes_max = v;
        }
        if let Some(v) = s.inflight_max {
            self.inflight_max = v;
        }
        if let Some(v) = s.keep_alive_max_s {
            self.keep_alive_max_s = v;
        }
        if let Some(path) = &s.password_file {
            self.password_file = Some(path.clone());
        }
        if !s.route.is_empty() {
            self.routes = s.route.clone();
        }
    }

    /// The section that sets every key to these settings.
    pub fn to_section(&self) -> MqttSection {
        MqttSection {
            enabled: Some(self.listen.is_some()),
            listen: self.listen,
            insecure_plaintext: Some(self.insecure_plaintext),
            packet_bytes_max: Some(self.packet_bytes_max),
            inflight_max: Some(self.inflight_max),
            keep_alive_max_s: Some(self.keep_alive_max_s),
            password_file: self.password_file.clone(),
            route: self.routes.clone(),
        }
    }

    /// Checks bounds and every route.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(MQTT_PACKET_BYTES_MAX_MIN..=MQTT_PACKET_BYTES_MAX_LIMIT)
            .contains(&self.packet_bytes_max)
        {
            return Err(Invalid::new(
                &["mqtt.packet_bytes_max"],
                format!(
                    "must be {MQTT_PACKET_BYTES_MAX_MIN}..={MQTT_PACKET_BYTES_MAX_LIMIT} bytes"
                ),
            ));
        }
        if !(1..=MQTT_INFLIGHT_MAX_LIMIT).contains(&self.inflight_max) {
            return Err(Invalid::new(
                &["mqtt.inflight_max"],
                format!("must be 1..={MQTT_INFLIGHT_MAX_LIMIT}"),
            ));
        }
        if self.keep_alive_max_s == 0 {
            return Err(Invalid::new(
                &["mqtt.keep_alive_max_s"],
                "must be at least 1 s".into(),
            ));
        }
        if self.routes.len() > MQTT_ROUTES_MAX {
            return Err(Invalid::new(
                &["mqtt.route"],
                format!("at most {MQTT_ROUTES_MAX} routes"),
            ));
        }
        for route in &self.routes {
            route
                .check()
                .map_err(|message| Invalid::new(&["mqtt.route"], message))?;
        }
        Ok(())
    }
}

impl MqttRoute {
    /// The number of wildcards in the filter (what `{N}` may refer to).
    pub fn wildcards(&self) -> usize {
        self.filter
            .split('/')
            .filter(|l| *l == "+" || *l == "#")
            .count()
    }

    /// Checks the filter (MQTT syntax), the eddy topic name and the key
    /// template's references.
    pub fn check(&self) -> Result<(), String> {
        let levels: Vec<&str> = self.filter.split('/').collect();
        if self.filter.is_empty() || levels.len() > MQTT_FILTER_LEVELS_MAX {
            return Err(format!(
                "filter {:?}: 1 to {MQTT_FILTER_LEVELS_MAX} levels",
                self.filter
            ));
        }
        for (i, level) in levels.iter().enumerate() {
            let wild = level.contains('+') || level.contains('#');
            let alone = *level == "+" || (*level == "#" && i + 1 == levels.len());
            if wild && !alone {
                return Err(format!(
                    "filter {:?}: `+` must be a whole level, `#` the whole last level",
                    self.filter
                ));
            }
        }
        if !crate::wire::is_valid_topic_name(&self.topic) {
            return Err(format!(
                "topic {:?}: 1–249 characters of [a-zA-Z0-9._-]",
                self.topic
            ));
        }
        let Some(key) = &self.key else {
            return Ok(());
        };
        let wildcards = self.wildcards();
        let mut rest = key.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("key {key:?}: `{{` without `}}`"))?;
            let name = &rest[open + 1..open + close];
            let ok = name == "topic"
                || name
                    .parse::<usize>()
                    .is_ok_and(|n| (1..=wildcards).contains(&n));
            if !ok {
                return Err(format!(
                    "key {key:?}: {{{name}}} is not {{topic}} nor {{1}}..{{{wildcards}}} (the filter's wildcards)"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(filter: &str, topic: &str, key: Option<&str>) -> MqttRoute {
        MqttRoute {
            filter: filter.into(),
            topic: topic.into(),
            key: key.map(Into::into),
            acks: None,
        }
    }

    #[test]
    fn routes_are_checked() {
        assert!(route("plant/+/+/temp", "temperature", Some("{1}/{2}"))
            .check()
            .is_ok());
        assert!(route("a/#", "t", Some("{topic}")).check().is_ok());
        assert!(route("a/+/b", "t", Some("{2}")).check().is_err());
        assert!(route("a/b+", "t", None).check().is_err());
        assert!(route("a/#/b", "t", None).check().is_err());
        assert!(route("a", "bad topic", None).check().is_err());
        assert!(route("a/+", "t", Some("{1")).check().is_err());
    }

    #[test]
    fn tls_everywhere_but_loopback_unless_waived() {
        let mut c = MqttConfig::default();
        assert!(!c.uses_tls());
        c.listen = Some("0.0.0.0:8883".parse().unwrap());
        assert!(c.uses_tls());
        c.insecure_plaintext = true;
        assert!(!c.uses_tls());
        c.listen = None;
        assert!(!c.uses_tls());
    }
}
