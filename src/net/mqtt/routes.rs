//! Routes from MQTT topics to eddy topics and keys, and back.
//!
//! A PUBLISH to MQTT topic `plant/7/3/temp` goes to the first
//! `[[mqtt.route]]` whose filter matches, with the key its template makes
//! (`{1}`, `{2}` … the levels the filter's wildcards matched, `{topic}` the
//! whole MQTT topic). With no matching route, the default: the first level
//! is the eddy topic and the rest the key (`sensors/dev-7/temp` → topic
//! `sensors`, key `dev-7/temp`; `sensors` alone → no key). The MQTT topic
//! travels in the record's [`HEADER_TOPIC`] header, so a subscriber gets
//! the topic it was published to; records produced natively have none and
//! are delivered as `{eddy topic}/{key}` (the default route reversed).
//!
//! Pure: no I/O, no broker; the partition is chosen by the publish flow
//! (murmur2 of the key, as everywhere).

use crate::broker::AckLevel;
use crate::config::mqtt::{MqttAcks, MqttRoute};

/// Record header carrying the MQTT topic a record was published to.
pub const HEADER_TOPIC: &str = "mqtt.topic";
/// MQTT 5 content type.
pub const HEADER_CONTENT_TYPE: &str = "mqtt.content_type";
/// MQTT 5 payload format indicator ("0" bytes, "1" UTF-8).
pub const HEADER_PAYLOAD_FORMAT: &str = "mqtt.payload_format";
/// MQTT 5 message expiry interval, in s from the record's timestamp: an
/// expired record is not delivered over MQTT.
pub const HEADER_MESSAGE_EXPIRY_S: &str = "mqtt.message_expiry_s";

/// Where a PUBLISH goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topic: String,
    /// `None`: keyless (a partition is picked round robin).
    pub key: Option<String>,
    pub acks: AckLevel,
}

/// Why a topic has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("MQTT topic {0:?} matches no route and its first level is not a valid eddy topic name ([a-zA-Z0-9._-], 1–249)")]
    NoTopic(String),
}

/// The configured routes, in order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<MqttRoute>,
}

/// The levels of `topic` that `filter`'s wildcards matched (`#` matches
/// the rest, as one string), or `None` when it does not match.
pub fn match_levels<'t>(filter: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    // MQTT: topics starting with `$` are not matched by leading wildcards.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return None;
    }
    let mut captured = Vec::new();
    let mut rest = Some(topic);
    for level in filter.split('/') {
        if level == "#" {
            captured.push(rest.unwrap_or(""));
            return Some(captured);
        }
        let current = rest?;
        let (this, next) = match current.find('/') {
            Some(i) => (&current[..i], Some(&current[i + 1..])),
            None => (current, None),
        };
        if level == "+" {
            captured.push(this);
        } else if level != this {
            return None;
        }
        rest = next;
    }
    rest.is_none().then_some(captured)
}

/// Whether `filter` matches `topic` (MQTT rules).
pub fn matches(filter: &str, topic: &str) -> bool {
    match_levels(filter, topic).is_some()
}

/// Whether a subscription filter is well formed (MQTT 4.7.1).
pub fn is_valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            (!l.contains('+') && !l.contains('#'))
                || *l == "+"
                || (*l == "#" && i + 1 == levels.len())
        })
}

/// Whether a PUBLISH topic is well formed (no wildcards, not empty).
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

fn acks_of(acks: Option<MqttAcks>) -> AckLevel {
    match acks {
        Some(MqttAcks::Received) => AckLevel::Received,
        Some(MqttAcks::Durable) | None => AckLevel::Durable,
    }
}

fn fill(template: &str, captured: &[&str], topic: &str) -> String {
    let mut out = String::with_capacity(template.len() + topic.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if name == "topic" {
            out.push_str(topic);
        } else if let Some(level) = name
            .parse::<usize>()
            .ok()
            .and_then(|n| captured.get(n.wrapping_sub(1)))
        {
            out.push_str(level);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl Router {
    /// Routes checked by `config::mqtt` (`MqttRoute::check`).
    pub fn new(routes: Vec<MqttRoute>) -> Router {
        Router { routes }
    }

    /// Where a PUBLISH to `topic` goes.
    pub fn route(&self, topic: &str) -> Result<Target, RouteError> {
        for r in &self.routes {
            if let Some(captured) = match_levels(&r.filter, topic) {
                return Ok(Target {
                    topic: r.topic.clone(),
                    key: Some(match &r.key {
                        Some(template) => fill(template, &captured, topic),
                        None => topic.to_string(),
                    }),
                    acks: acks_of(r.acks),
                });
            }
        }
        let (first, rest) = match topic.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (topic, None),
        };
        if !crate::wire::is_valid_topic_name(first) {
            return Err(RouteError::NoTopic(topic.to_string()));
        }
        Ok(Target {
            topic: first.to_string(),
            key: rest.map(str::to_string),
            acks: AckLevel::Durable,
        })
    }

    /// The eddy topics whose records a subscription to `filter` may
    /// receive, out of `existing` ones: those of routes whose filter can
    /// overlap it, and by the default route its first level (every topic
    /// when that is a wildcard).
    pub fn topics_for(&self, filter: &str, existing: &[String]) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        let mut add = |t: &str| {
            if !topics.iter().any(|have| have == t) {
                topics.push(t.to_string());
            }
        };
        for r in &self.routes {
            if filters_overlap(&r.filter, filter) {
                add(&r.topic);
            }
        }
        let first = filter.split('/').next().unwrap_or("");
        if first == "+" || first == "#" {
            for t in existing {
                add(t);
            }
        } else if crate::wire::is_valid_topic_name(first) {
            add(first);
        }
        topics
    }
}

/// The MQTT topic of a record read from eddy topic `topic`: its
/// [`HEADER_TOPIC`] when it has one, else `{topic}/{key}` (or `{topic}`).
pub fn mqtt_topic_of(topic: &str, key: Option<&[u8]>, header: Option<&[u8]>) -> Option<String> {
    if let Some(h) = header {
        return std::str::from_utf8(h).ok().map(str::to_string);
    }
    match key {
        Some(k) if !k.is_empty() => std::str::from_utf8(k).ok().map(|k| format!("{topic}/{k}")),
        _ => Some(topic.to_string()),
    }
}

/// Whether some topic could match both filters (conservative: `true` when
/// unsure).
fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, _) | (_, None) => return false,
            (Some(x), Some(y)) => {
                if x != "+" && y != "+" && x != y {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_route() -> Router {
        Router::new(vec![MqttRoute {
            filter: "plant/+/+/temp".into(),
            topic: "temperature".into(),
            key: Some("{1}/{2}".into()),
            acks: Some(MqttAcks::Received),
        }])
    }

    #[test]
    fn mqtt_matching_rules() {
        assert_eq!(match_levels("a/+/c", "a/b/c"), Some(vec!["b"]));
        assert_eq!(match_levels("a/#", "a/b/c"), Some(vec!["b/c"]));
        assert_eq!(match_levels("a/#", "a"), Some(vec![""]));
        assert!(matches("#", "x/y"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a/+/", "a/b/"));
        assert!(is_valid_filter("a/+/#"));
        assert!(!is_valid_filter("a/b#"));
        assert!(!is_valid_filter("#/a"));
        assert!(!is_valid_topic("a/+"));
    }

    #[test]
    fn a_route_makes_topic_and_key_from_wildcards() {
        let t = temp_route().route("plant/7/3/temp").unwrap();
        assert_eq!(t.topic, "temperature");
        assert_eq!(t.key.as_deref(), Some("7/3"));
        assert_eq!(t.acks, AckLevel::Received);
    }

    #[test]
    fn the_default_is_first_level_topic_rest_key() {
        let r = temp_route();
        let t = r.route("sensors/dev-7/temp").unwrap();
        assert_eq!(
            (t.topic.as_str(), t.key.as_deref()),
            ("sensors", Some("dev-7/temp"))
        );
        assert_eq!(t.acks, AckLevel::Durable);
        assert_eq!(r.route("sensors").unwrap().key, None);
        assert!(r.route("bad topic/x").is_err());
    }

    #[test]
    fn subscriptions_find_their_topics() {
        let r = temp_route();
        let existing = vec!["a".to_string(), "temperature".to_string()];
        assert_eq!(
            r.topics_for("plant/+/+/temp", &existing),
            vec!["temperature", "plant"]
        );
        assert_eq!(r.topics_for("sensors/#", &existing), vec!["sensors"]);
        assert_eq!(r.topics_for("#", &existing), vec!["temperature", "a"]);
        assert_eq!(
            mqtt_topic_of("sensors", Some(b"dev-1/t"), None).as_deref(),
            Some("sensors/dev-1/t")
        );
        assert_eq!(
            mqtt_topic_of("temperature", Some(b"7/3"), Some(b"plant/7/3/temp")).as_deref(),
            Some("plant/7/3/temp")
        );
    }
}
