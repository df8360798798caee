//! The mirror's shared state: per link its state, last error and counters,
//! and per (link, partition) the `mirrored` watermark.
//!
//! Link tasks write it; the broker reads it (Watermarks replies,
//! `acks=mirrored`, `MirrorStatus`) and so does the metrics collector. A
//! watermark only moves forward, and only after the upstream acknowledged;
//! every advance recomputes the partition's `keep_from` (the lowest
//! watermark of the links that mirror it) and wakes `acks=mirrored` waiters.
//!
//! This module talks to no upstream and decides nothing about what to send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use event_listener::Event;

use crate::config::MirrorLinkConfig;
use crate::storage::{PartitionLog, Topic};
use crate::time::now_ms;
use crate::wire::MirrorLinkState;

/// Which local topics a link mirrors.
#[derive(Debug, Clone)]
pub struct Selector {
    names: Vec<String>,
    pattern: Option<regex_lite::Regex>,
}

impl Selector {
    /// From a link's `topics` and `pattern` (already validated); neither
    /// means every topic.
    pub fn new(config: &MirrorLinkConfig) -> Selector {
        Selector {
            names: config.topics.clone(),
            pattern: config
                .pattern
                .as_ref()
                .map(|p| regex_lite::Regex::new(&format!("^(?:{p})$")).expect("validated pattern")),
        }
    }

    /// Whether the link mirrors `topic`.
    pub fn selects(&self, topic: &str) -> bool {
        if self.names.is_empty() && self.pattern.is_none() {
            return true;
        }
        self.names.iter().any(|n| n == topic)
            || self.pattern.as_ref().is_some_and(|p| p.is_match(topic))
    }
}

/// How far a link has mirrored one partition.
pub struct PartitionProgress {
    /// The incarnation of the topic this progress belongs to.
    pub topic_id: u64,
    pub log: Arc<PartitionLog>,
    pub upstream_topic: String,
    /// Every offset below was acknowledged upstream.
    pub mirrored: AtomicU64,
}

struct Inner {
    state: MirrorLinkState,
    since_ms: u64,
    last_error: Option<String>,
    last_error_ms: u64,
}

/// One link.
pub struct LinkState {
    pub config: MirrorLinkConfig,
    pub selector: Selector,
    inner: Mutex<Inner>,
    /// Sessions that ended in an error.
    pub reconnects: AtomicU64,
    /// Records and bytes acknowledged upstream.
    pub records_mirrored: AtomicU64,
    pub bytes_mirrored: AtomicU64,
    /// Stored batch bytes sent upstream (before compression), and the
    /// bytes of the requests' payload that carried them (after it: the
    /// compressed batches of an `eddy://` request, the Kafka record batch
    /// of a `kafka://` one). Counted when sent, acknowledged or not.
    pub sent_raw_bytes: AtomicU64,
    pub sent_compressed_bytes: AtomicU64,
    /// Records removed locally before this link forwarded them.
    pub dropped_records: AtomicU64,
    partitions: RwLock<BTreeMap<(String, u32), Arc<PartitionProgress>>>,
}

/// A link at one moment (for status replies and metrics).
#[derive(Debug, Clone)]
pub struct LinkSnapshot {
    pub name: String,
    pub upstream: String,
    pub state: MirrorLinkState,
    pub since_ms: u64,
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    pub reconnects: u64,
    pub records_mirrored: u64,
    pub bytes_mirrored: u64,
    pub sent_raw_bytes: u64,
    pub sent_compressed_bytes: u64,
    pub dropped_records: u64,
    pub partitions: Vec<PartitionSnapshot>,
}

/// A partition of a link at one moment.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub upstream_topic: String,
    pub partition: u32,
    pub mirrored: u64,
    pub log_end: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
}

impl LinkState {
    fn new(config: MirrorLinkConfig) -> LinkState {
        LinkState {
            selector: Selector::new(&config),
            config,
            inner: Mutex::new(Inner {
                state: MirrorLinkState::Connecting,
                since_ms: now_ms(),
                last_error: None,
                last_error_ms: 0,
            }),
            reconnects: AtomicU64::new(0),
            records_mirrored: AtomicU64::new(0),
            bytes_mirrored: AtomicU64::new(0),
            sent_raw_bytes: AtomicU64::new(0),
            sent_compressed_bytes: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
            partitions: RwLock::new(BTreeMap::new()),
        }
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The link's state now.
    pub fn state(&self) -> MirrorLinkState {
        self.inner.lock().expect("link state lock").state
    }

    /// Moves to `state` (keeps the time of the last change when unchanged).
    pub fn set_state(&self, state: MirrorLinkState) {
        let mut inner = self.inner.lock().expect("link state lock");
        if inner.state != state {
            inner.state = state;
            inner.since_ms = now_ms();
        }
    }

    /// Records a failure (shown until the next one).
    pub fn set_error(&self, error: String) {
        let mut inner = self.inner.lock().expect("link state lock");
        inner.last_error = Some(error);
        inner.last_error_ms = now_ms();
    }

    /// The progress of a partition, if the link tracks it.
    pub fn progress(&self, topic: &str, partition: u32) -> Option<Arc<PartitionProgress>> {
        self.partitions
            .read()
            .expect("progress lock")
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Starts (or restarts, for a new incarnation) tracking a partition at
    /// `mirrored`; returns the progress in use.
    pub fn track(
        &self,
        topic: &Topic,
        log: &Arc<PartitionLog>,
        upstream_topic: &str,
        mirrored: u64,
    ) -> Arc<PartitionProgress> {
        let key = (topic.meta.name.clone(), log.partition());
        let mut partitions = self.partitions.write().expect("progress lock");
        if let Some(p) = partitions.get(&key) {
            if p.topic_id == topic.meta.id {
                return p.clone();
            }
        }
        let progress = Arc::new(PartitionProgress {
            topic_id: topic.meta.id,
            log: log.clone(),
            upstream_topic: upstream_topic.to_string(),
            mirrored: AtomicU64::new(mirrored),
        });
        partitions.insert(key, progress.clone());
        progress
    }

    /// Stops tracking every partition of `topic` (deleted locally).
    pub fn forget_topic(&self, topic: &str) {
        self.partitions
            .write()
            .expect("progress lock")
            .retain(|(t, _), _| t != topic);
    }

    /// Topics the link tracks now.
    pub fn tracked_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .partitions
            .read()
            .expect("progress lock")
            .keys()
            .map(|(t, _)| t.clone())
            .collect();
        names.dedup();
        names
    }

    /// How far the link has mirrored a partition of this incarnation of
    /// `topic` (0 when it has not started on it).
    pub fn mirrored(&self, topic: &Topic, partition: u32) -> u64 {
        match self.progress(&topic.meta.name, partition) {
            Some(p) if p.topic_id == topic.meta.id => p.mirrored.load(Ordering::Acquire),
            _ => 0,
        }
    }

    /// The link now.
    pub fn snapshot(&self) -> LinkSnapshot {
        let (state, since_ms, last_error, last_error_ms) = {
            let inner = self.inner.lock().expect("link state lock");
            (
                inner.state,
                inner.since_ms,
                inner.last_error.clone(),
                inner.last_error_ms,
            )
        };
        let partitions = self
            .partitions
            .read()
            .expect("progress lock")
            .iter()
            .map(|((topic, partition), p)| {
                let marks = p.log.watermarks();
                let mirrored = p.mirrored.load(Ordering::Acquire);
                let lag_records = marks.log_end.saturating_sub(mirrored);
                let span = marks.log_end.saturating_sub(marks.log_start);
                let lag_bytes = if span == 0 {
                    0
                } else {
                    let stored = u128::from(p.log.stored_bytes());
                    let lag = u128::from(lag_records.min(span));
                    u64::try_from(stored * lag / u128::from(span)).unwrap_or(u64::MAX)
                };
                PartitionSnapshot {
                    topic: topic.clone(),
                    upstream_topic: p.upstream_topic.clone(),
                    partition: *partition,
                    mirrored,
                    log_end: marks.log_end,
                    lag_records,
                    lag_bytes,
                }
            })
            .collect();
        LinkSnapshot {
            name: self.config.name.clone(),
            upstream: self.config.url.clone(),
            state,
            since_ms,
            last_error,
            last_error_ms,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            records_mirrored: self.records_mirrored.load(Ordering::Relaxed),
            bytes_mirrored: self.bytes_mirrored.load(Ordering::Relaxed),
            sent_raw_bytes: self.sent_raw_bytes.load(Ordering::Relaxed),
            sent_compressed_bytes: self.sent_compressed_bytes.load(Ordering::Relaxed),
            dropped_records: self.dropped_records.load(Ordering::Relaxed),
            partitions,
        }
    }
}

/// Every link of this hub.
pub struct MirrorState {
    pub hub_id: String,
    links: Vec<Arc<LinkState>>,
    /// Fires whenever a `mirrored` watermark advances.
    progress_event: Event,
}

impl MirrorState {
    /// State for `links`, all connecting, tracking nothing yet.
    pub fn new(hub_id: &str, links: &[MirrorLinkConfig]) -> MirrorState {
        MirrorState {
            hub_id: hub_id.to_string(),
            links: links
                .iter()
                .map(|c| Arc::new(LinkState::new(c.clone())))
                .collect(),
            progress_event: Event::new(),
        }
    }

    /// Every link.
    pub fn links(&self) -> &[Arc<LinkState>] {
        &self.links
    }

    /// Whether some link mirrors `topic`.
    pub fn is_mirrored(&self, topic: &str) -> bool {
        self.links.iter().any(|l| l.selector.selects(topic))
    }

    /// Fires whenever a `mirrored` watermark advances.
    pub fn progress_event(&self) -> &Event {
        &self.progress_event
    }

    /// Each link's watermark of a partition, for the links that mirror the
    /// topic.
    pub fn watermarks(&self, topic: &Topic, partition: u32) -> Vec<(&str, u64)> {
        self.links
            .iter()
            .filter(|l| l.selector.selects(&topic.meta.name))
            .map(|l| (l.name(), l.mirrored(topic, partition)))
            .collect()
    }

    /// The lowest watermark of a partition over the links that mirror it
    /// (`None`: no link mirrors the topic).
    pub fn min_mirrored(&self, topic: &Topic, partition: u32) -> Option<u64> {
        self.watermarks(topic, partition)
            .into_iter()
            .map(|(_, offset)| offset)
            .min()
    }

    /// Moves `progress` to `end` (never back), keeps the partition's data
    /// from the lowest watermark on, and wakes waiters.
    pub fn advance(&self, progress: &PartitionProgress, end: u64) {
        progress.mirrored.fetch_max(end, Ordering::AcqRel);
        self.update_keep_from(progress);
        self.progress_event.notify(usize::MAX);
    }

    /// Sets a partition's `keep_from` to the lowest watermark of the links
    /// that track it (a stale, lower value only keeps more).
    pub fn update_keep_from(&self, progress: &PartitionProgress) {
        let topic = progress.log.topic();
        let partition = progress.log.partition();
        let mut lowest: Option<u64> = None;
        for l in &self.links {
            if !l.selector.selects(topic) {
                continue;
            }
            let offset = match l.progress(topic, partition) {
                Some(p) if p.topic_id == progress.topic_id => p.mirrored.load(Ordering::Acquire),
                // A link that has not started on it yet needs everything.
                _ => 0,
            };
            lowest = Some(lowest.map_or(offset, |low| low.min(offset)));
        }
        progress.log.set_keep_from(lowest);
    }

    /// Every link now.
    pub fn snapshot(&self) -> Vec<LinkSnapshot> {
        self.links.iter().map(|l| l.snapshot()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_names_pattern_or_everything() {
        let mut c = MirrorLinkConfig::parse("kafka://h:1").unwrap();
        assert!(Selector::new(&c).selects("anything"));
        c.topics = vec!["alarms".into()];
        let s = Selector::new(&c);
        assert!(s.selects("alarms") && !s.selects("alarms2"));
        c.pattern = Some("sensors\\..*".into());
        let s = Selector::new(&c);
        assert!(s.selects("sensors.t") && s.selects("alarms") && !s.selects("xsensors.t"));
    }
}
