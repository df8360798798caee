//! Topic settings: their names, defaults, parsing and validation.
//!
//! Settings travel and are stored as `(name, value)` text pairs, as Kafka's
//! topic configs do; only the settings a user set are stored (overrides),
//! everything else takes the default below. [`TopicConfig::parse`] is the
//! one place that turns pairs into typed settings, so create, alter and
//! reopen all accept and reject exactly the same input.
//!
//! Pure: no sled, no I/O. What the settings do lives in `retention`,
//! `compaction` and `budget`.

/// `retention.ms` default: keep forever (`-1`). Kafka's default is 7 days;
/// eddy deliberately differs: a gateway's clock and its devices' clocks may
/// be wrong (a Raspberry Pi has no real-time clock), so an age limit nobody
/// chose could silently delete data that was never mirrored. Bound a topic
/// with `retention.ms`/`retention.bytes`, and the disk with the budget.
pub const RETENTION_MS_DEFAULT: i64 = -1;
/// `retention.bytes` default: no size limit, as Kafka.
pub const RETENTION_BYTES_DEFAULT: i64 = -1;
/// `delete.retention.ms` default: tombstones stay 1 day, as Kafka.
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 86_400_000;
/// `min.cleanable.dirty.ratio` default, as Kafka.
pub const MIN_CLEANABLE_DIRTY_RATIO_DEFAULT: f64 = 0.5;
/// `priority` default; higher numbers are shed later by the disk budget.
pub const PRIORITY_DEFAULT: u8 = 0;

/// What a topic does when the disk budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// The topic's data is never dropped. A write first sheds
    /// `drop_oldest` topics of a lower priority; producers get `DiskFull`
    /// once none has droppable data left.
    Reject,
    /// The topic's oldest batches may be dropped for room. A write sheds
    /// the oldest batches of `drop_oldest` topics of its own or a lower
    /// priority (its own topic included), lowest priority first.
    DropOldest,
}

/// Typed topic settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `retention.ms`: whole batches whose newest record is older than this
    /// are removed from the front. `None` = no age limit.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: batches are removed from the front while the
    /// partition would still hold at least this many bytes without them.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` contains `delete` (retention applies).
    pub delete: bool,
    /// `cleanup.policy` contains `compact` (newest record per key kept).
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone (empty value) is kept
    /// after its timestamp once compaction has reached it.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`: compaction starts when the bytes written
    /// since the last pass are at least this share of the partition.
    pub min_cleanable_dirty_ratio: f64,
    /// `priority`: 0–255; the disk budget sheds lower priorities first.
    pub priority: u8,
    /// `on_full`.
    pub on_full: OnFull,
    /// `on_full.unmirrored = drop`: the disk budget and retention
    /// (`retention.ms`, `retention.bytes`) may remove records the mirror has
    /// not forwarded yet. Default `keep`: they wait until it has. Compaction
    /// never rewrites unforwarded records either way.
    pub drop_unmirrored: bool,
    /// `mirror.source`: `hub/topic` when this topic is a mirror of another
    /// hub's topic, written only by that hub's mirror link (set when the
    /// link creates it); ordinary produces are refused.
    pub mirror_source: Option<String>,
    /// `segment.bytes`: a partition's active segment file is closed once
    /// the next append would take it past this many bytes.
    pub segment_bytes: u64,
    /// `segment.ms`: … or once its first batch is this old.
    pub segment_ms: u64,
    /// `flush.ms`: a durable append is fsynced (and acknowledged) at the
    /// first group commit at least this long after the oldest unsynced
    /// append of the partition; `None` = the hub's default.
    pub flush_ms: Option<u64>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: u64::try_from(RETENTION_MS_DEFAULT).ok(),
            retention_bytes: u64::try_from(RETENTION_BYTES_DEFAULT).ok(),
            delete: true,
            compact: false,
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            min_cleanable_dirty_ratio: MIN_CLEANABLE_DIRTY_RATIO_DEFAULT,
            priority: PRIORITY_DEFAULT,
            on_full: OnFull::Reject,
            drop_unmirrored: false,
            mirror_source: None,
            segment_bytes: super::segment::SEGMENT_BYTES_DEFAULT,
            segment_ms: super::segment::SEGMENT_MS_DEFAULT,
            flush_ms: None,
        }
    }
}

/// Every known setting: name, default as text, and what it means.
pub const KNOWN: &[(&str, &str, &str)] = &[
    (
        "retention.ms",
        "-1",
        "remove batches older than this (ms; -1 = keep forever)",
    ),
    (
        "retention.bytes",
        "-1",
        "keep about this many bytes per partition (-1 = no limit)",
    ),
    (
        "cleanup.policy",
        "delete",
        "delete, compact or compact,delete",
    ),
    (
        "delete.retention.ms",
        "86400000",
        "keep tombstones this long on compacted topics (ms)",
    ),
    (
        "min.cleanable.dirty.ratio",
        "0.5",
        "compact when this share of a partition is new (0–1)",
    ),
    (
        "priority",
        "0",
        "0–255; the disk budget drops lower priorities first",
    ),
    (
        "on_full",
        "reject",
        "when the disk budget is used up: reject or drop_oldest",
    ),
    (
        "on_full.unmirrored",
        "keep",
        "keep or drop records not yet mirrored when the budget is used up or retention removes them",
    ),
    (
        "mirror.source",
        "",
        "hub/topic this topic mirrors (set by the hub's mirror link; only it writes here)",
    ),
    (
        "segment.bytes",
        "16777216",
        "close a partition's segment file at this size (bytes; retention frees whole segments)",
    ),
    (
        "segment.ms",
        "86400000",
        "close a partition's segment file when its first batch is this old (ms)",
    ),
    (
        "flush.ms",
        "-1",
        "fsync durable appends at most this often (ms; acks wait up to it; -1 = the hub's default)",
    ),
];

impl TopicConfig {
    /// Parses stored or requested overrides. Unknown names, bad values and
    /// duplicates are errors whose message names the setting and the fix.
    pub fn parse(entries: &[(String, String)]) -> Result<TopicConfig, String> {
        let mut config = TopicConfig::default();
        for (i, (name, value)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("topic setting {name:?} is given twice"));
            }
            config.set(name, value)?;
        }
        Ok(config)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let bad = |expected: &str| {
            format!("topic setting {name}={value:?} is invalid: expected {expected}")
        };
        match name {
            "retention.ms" | "retention.bytes" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| bad("a whole number, or -1 for no limit"))?;
                let limit = match n {
                    -1 => None,
                    n if n >= 0 => Some(n.unsigned_abs()),
                    _ => return Err(bad("a whole number ≥ 0, or -1 for no limit")),
                };
                if name == "retention.ms" {
                    self.retention_ms = limit;
                } else {
                    self.retention_bytes = limit;
                }
            }
            "segment.bytes" | "segment.ms" => {
                let n: u64 = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("a whole number ≥ 1"))?;
                if name == "segment.bytes" {
                    self.segment_bytes = n;
                } else {
                    self.segment_ms = n;
                }
            }
            "flush.ms" => {
                self.flush_ms = match value.parse::<i64>() {
                    Ok(-1) => None,
                    Ok(n) if u64::try_from(n).is_ok_and(|n| n <= super::FLUSH_MS_MAX) => {
                        Some(n.unsigned_abs())
                    }
                    _ => {
                        return Err(bad(
                            "a whole number of milliseconds from 0 to 10000, or -1 for the hub's default",
                        ))
                    }
                };
            }
            "cleanup.policy" => {
                let mut delete = false;
                let mut compact = false;
                for part in value.split(',').map(str::trim) {
                    match part {
                        "delete" if !delete => delete = true,
                        "compact" if !compact => compact = true,
                        _ => return Err(bad("delete, compact or compact,delete")),
                    }
                }
                self.delete = delete;
                self.compact = compact;
            }
            "delete.retention.ms" => {
                self.delete_retention_ms = value
                    .parse()
                    .map_err(|_| bad("a whole number of milliseconds ≥ 0"))?;
            }
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = value.parse().map_err(|_| bad("a number from 0 to 1"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(bad("a number from 0 to 1"));
                }
                self.min_cleanable_dirty_ratio = ratio;
            }
            "priority" => {
                self.priority = value.parse().map_err(|_| bad("a whole number 0–255"))?;
            }
            "on_full" => {
                self.on_full = match value {
                    "reject" => OnFull::Reject,
                    "drop_oldest" => OnFull::DropOldest,
                    _ => return Err(bad("reject or drop_oldest")),
                };
            }
            "on_full.unmirrored" => {
                self.drop_unmirrored = match value {
                    "keep" => false,
                    "drop" => true,
                    _ => return Err(bad("keep or drop")),
                };
            }
            "mirror.source" => {
                self.mirror_source = match value.split_once('/') {
                    None if value.is_empty() => None,
                    Some((hub, topic))
                        if crate::wire::is_valid_topic_name(hub)
                            && crate::wire::is_valid_topic_name(topic) =>
                    {
                        Some(value.to_string())
                    }
                    _ => return Err(bad("HUB_ID/TOPIC (or empty: not a mirror)")),
                };
            }
            _ => {
                let names: Vec<&str> = KNOWN.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown topic setting {name:?}; known settings: {}",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// The overrides after setting `set` and removing `delete` (returned to
/// their defaults), validated.
pub fn altered(
    current: &[(String, String)],
    set: &[(String, String)],
    delete: &[String],
) -> Result<Vec<(String, String)>, String> {
    for name in delete {
        if !KNOWN.iter().any(|(n, _, _)| n == name) {
            return Err(format!("unknown topic setting {name:?} cannot be deleted"));
        }
        if set.iter().any(|(n, _)| n == name) {
            return Err(format!("topic setting {name:?} is both set and deleted"));
        }
    }
    TopicConfig::parse(set)?;
    let mut out: Vec<(String, String)> = current
        .iter()
        .filter(|(n, _)| !delete.contains(n) && !set.iter().any(|(s, _)| s == n))
        .cloned()
        .collect();
    out.extend(set.iter().cloned());
    out.sort();
    TopicConfig::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_table() {
        let parsed = TopicConfig::parse(&pairs(
            &KNOWN.iter().map(|(n, d, _)| (*n, *d)).collect::<Vec<_>>(),
        ))
        .unwrap();
        assert_eq!(parsed, TopicConfig::default());
    }

    #[test]
    fn values_parse_and_bad_ones_are_named() {
        let c = TopicConfig::parse(&pairs(&[
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("cleanup.policy", "compact,delete"),
            ("on_full", "drop_oldest"),
            ("priority", "7"),
            ("on_full.unmirrored", "drop"),
        ]))
        .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(1000));
        assert!(c.compact && c.delete && c.drop_unmirrored);
        assert_eq!((c.priority, c.on_full), (7, OnFull::DropOldest));
        let m = TopicConfig::parse(&pairs(&[("mirror.source", "gw-1/sensors")])).unwrap();
        assert_eq!(m.mirror_source.as_deref(), Some("gw-1/sensors"));
        for (name, value, needle) in [
            ("retention.ms", "-2", "retention.ms"),
            ("cleanup.policy", "compact,compact", "cleanup.policy"),
            ("cleanup.policy", "", "cleanup.policy"),
            ("priority", "256", "0–255"),
            ("on_full", "panic", "reject or drop_oldest"),
            ("min.cleanable.dirty.ratio", "1.5", "0 to 1"),
            ("retention_ms", "5", "known settings"),
            ("mirror.source", "gw-1", "HUB_ID/TOPIC"),
            ("mirror.source", "gw/a/b", "HUB_ID/TOPIC"),
        ] {
            let e = TopicConfig::parse(&pairs(&[(name, value)])).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert!(TopicConfig::parse(&pairs(&[("priority", "1"), ("priority", "2")])).is_err());
    }

    #[test]
    fn alter_sets_and_deletes() {
        let current = pairs(&[("priority", "3"), ("retention.ms", "5")]);
        let out = altered(
            &current,
            &pairs(&[("retention.ms", "9"), ("on_full", "drop_oldest")]),
            &["priority".to_string()],
        )
        .unwrap();
        assert_eq!(
            out,
            pairs(&[("on_full", "drop_oldest"), ("retention.ms", "9")])
        );
        assert!(altered(&current, &[], &["nope".to_string()]).is_err());
        assert!(altered(&current, &pairs(&[("on_full", "x")]), &[]).is_err());
    }
}
