//! `GET /status.json`: the hub at a glance for a person or a script — hub
//! id, version, uptime, storage and disk, topics with watermarks and
//! ingest rates, groups with lag, mirror links with state and lag,
//! connections per listener. The status page (`GET /`, `status.html`)
//! polls it and draws from it.
//!
//! Rates are computed between two renders (the page polls every 2 s), from
//! the previous sample kept here ([`STATUS_RATE_WINDOW_MS_MIN`] apart at
//! least). Like the collectors, it reads each layer's state at call time
//! and keeps no counters of its own; it serves no HTTP itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::mirror::MirrorState;
use crate::net::NetContext;
use crate::storage::Storage;

/// Shortest interval over which a rate is computed, in ms: renders closer
/// together than this reuse the previous rates' base sample.
pub const STATUS_RATE_WINDOW_MS_MIN: u64 = 500;

/// What the status is read from.
pub struct StatusSource {
    pub hub_id: String,
    pub storage: Arc<Storage>,
    pub net: Arc<NetContext>,
    pub mirror: Option<Arc<MirrorState>>,
    pub started: Instant,
    /// The previous sample: when, and the log end of each topic.
    last: Mutex<Option<(Instant, BTreeMap<String, u64>)>>,
}

impl StatusSource {
    pub fn new(
        hub_id: String,
        storage: Arc<Storage>,
        net: Arc<NetContext>,
        mirror: Option<Arc<MirrorState>>,
    ) -> StatusSource {
        StatusSource {
            hub_id,
            storage,
            net,
            mirror,
            started: Instant::now(),
            last: Mutex::new(None),
        }
    }

    /// The status document (JSON text). Called on the blocking pool.
    pub fn render(&self) -> String {
        let topics = self.topics();
        json!({
            "hub_id": self.hub_id,
            "version": crate::cli::version::VERSION,
            "commit": crate::cli::version::COMMIT,
            "uptime_s": self.started.elapsed().as_secs(),
            "now_ms": crate::time::now_ms(),
            "storage": self.storage_status(),
            "topics": topics,
            "groups": self.groups(),
            "mirror": self.mirror_links(),
            "listeners": [{
                "listener": "devices",
                "tls": self.net.tls.is_some(),
                "connections": self.net.stats.active.load(std::sync::atomic::Ordering::Relaxed),
                "connections_max": self.net.limits.connections_max,
            }],
        })
        .to_string()
    }

    fn storage_status(&self) -> Value {
        let dir = self.storage.path();
        let (free, total) = match rustix::fs::statvfs(dir) {
            Ok(s) => (
                Some(s.f_bavail.saturating_mul(s.f_frsize)),
                Some(s.f_blocks.saturating_mul(s.f_frsize)),
            ),
            Err(_) => (None, None),
        };
        json!({
            "data_dir": dir.parent().unwrap_or(dir).display().to_string(),
            "stored_bytes": self.storage.used_bytes(),
            "budget_bytes": self.storage.budget_bytes(),
            "disk_free_bytes": free,
            "disk_total_bytes": total,
            "failed": self.storage.has_failed(),
        })
    }

    /// Topics with per-partition watermarks and the ingest rate since the
    /// previous render.
    fn topics(&self) -> Vec<Value> {
        let now = Instant::now();
        let topics = self.storage.topics();
        let ends: BTreeMap<String, u64> = topics
            .iter()
            .map(|t| {
                let end = t.partitions().iter().map(|p| p.log_end()).sum();
                (t.meta.name.clone(), end)
            })
            .collect();
        let mut last = self.last.lock().expect("status sample");
        let base = last.clone();
        let fresh = base.as_ref().is_none_or(|(at, _)| {
            now.duration_since(*at).as_millis() >= u128::from(STATUS_RATE_WINDOW_MS_MIN)
        });
        if fresh {
            *last = Some((now, ends.clone()));
        }
        drop(last);
        topics
            .iter()
            .map(|t| {
                let name = &t.meta.name;
                let rate = base.as_ref().and_then(|(at, before)| {
                    let s = now.duration_since(*at).as_secs_f64();
                    let before = before.get(name)?;
                    (s > 0.0).then(|| ends[name].saturating_sub(*before) as f64 / s)
                });
                let partitions: Vec<Value> = t
                    .partitions()
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let marks = p.watermarks();
                        json!({
                            "partition": i,
                            "log_start": marks.log_start,
                            "log_end": marks.log_end,
                            "durable": marks.durable,
                            "stored_bytes": p.stored_bytes(),
                        })
                    })
                    .collect();
                json!({
                    "topic": name,
                    "partitions": partitions,
                    "records": ends[name],
                    "records_per_s": rate.unwrap_or(0.0),
                })
            })
            .collect()
    }

    /// Groups with offsets, and their lag per topic (log end - committed).
    fn groups(&self) -> Vec<Value> {
        let topics = self.storage.topics();
        let Ok(groups) = self.storage.groups_with_offsets() else {
            return Vec::new();
        };
        groups
            .into_iter()
            .map(|group| {
                let mut lag: BTreeMap<String, u64> = BTreeMap::new();
                for c in self.storage.committed_offsets(&group).unwrap_or_default() {
                    let Some(topic) = topics.iter().find(|t| t.meta.name == c.topic) else {
                        continue;
                    };
                    let Some(log) = topic.partition(c.partition) else {
                        continue;
                    };
                    *lag.entry(c.topic.clone()).or_default() +=
                        log.log_end().saturating_sub(c.offset);
                }
                let total: u64 = lag.values().sum();
                json!({"group": group, "lag_records": total, "lag_by_topic": lag})
            })
            .collect()
    }

    fn mirror_links(&self) -> Vec<Value> {
        let Some(state) = &self.mirror else {
            return Vec::new();
        };
        state
            .snapshot()
            .iter()
            .map(|l| {
                json!({
                    "link": l.name,
                    "upstream": l.upstream,
                    "state": l.state.name(),
                    "since_ms": l.since_ms,
                    "last_error": l.last_error,
                    "records_mirrored": l.records_mirrored,
                    "lag_records": l.partitions.iter().map(|p| p.lag_records).sum::<u64>(),
                    "lag_bytes": l.partitions.iter().map(|p| p.lag_bytes).sum::<u64>(),
                })
            })
            .collect()
    }
}
