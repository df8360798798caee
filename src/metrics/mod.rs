//! Metrics: eddy's counters in the Prometheus/OpenMetrics text format, served
//! at `/metrics` ([`http`]).
//!
//! Each layer keeps its own counters (`net::NetStats`, `broker::BrokerStats`,
//! `storage::FlushStats`, `reload::ReloadStats`); a collector here reads them
//! at scrape time and writes them out with `prometheus-client`, the
//! Prometheus project's Rust client. Nothing in the data path knows this
//! module exists, and a scrape takes no lock the data path holds for longer
//! than a counter copy.
//!
//! Adding metrics for a new component (as consumer-group lag and the
//! mirror state and lag per link were added): implement
//! [`prometheus_client::collector::Collector`] for a small wrapper around the
//! component's stats, like the ones below, and add it to the list
//! `server::start` passes to [`registry`]. One family must come from one
//! collector (a scrape must not name a family twice).
//!
//! Names, units and labels are documented in README.md ("Metrics"); the
//! unit is the last part of each name (`_bytes`, `_seconds`).
//!
//! This module serves no HTTP itself and keeps no counters of its own.

pub mod http;
mod mirror;
pub mod status;

pub use mirror::mirror_collector;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::net::NetContext;
use crate::reload::Reloader;
use crate::storage::{Storage, FSYNC_BUCKETS_US};

/// A registry of `collectors`; encode it with [`encode`].
pub fn registry(collectors: Vec<Box<dyn Collector>>) -> Registry {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    registry
}

/// The registry in the OpenMetrics text format (what Prometheus scrapes).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4 << 10);
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The collectors of a running server, in exposition order.
pub fn server_collectors(
    net: &Arc<NetContext>,
    broker: &Arc<Broker>,
    storage: &Arc<Storage>,
    reloader: &Arc<Reloader>,
) -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(BuildInfo),
        Box::new(NetMetrics(net.clone())),
        Box::new(BrokerMetrics(broker.clone())),
        Box::new(StorageMetrics(storage.clone())),
        Box::new(ReloadMetrics(reloader.clone())),
        Box::new(ProcessMetrics),
    ]
}

// Small helpers over prometheus-client's descriptor API.

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family with one label.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, value) in values {
        family
            .encode_family(&[(label, value_label)])?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// A gauge family with one label.
fn gauges<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_label, value) in values {
        family
            .encode_family(&[(label, value_label)])?
            .encode_gauge(&value)?;
    }
    Ok(())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

macro_rules! named_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}

/// `eddy_build_info{version}`.
struct BuildInfo;
/// Connections (`net`).
struct NetMetrics(Arc<NetContext>);
/// Traffic per topic and errors by code (`broker`).
struct BrokerMetrics(Arc<Broker>);
/// fsync latency, disk use, drops (`storage`).
struct StorageMetrics(Arc<Storage>);
/// Reloads of TLS files (`reload`).
struct ReloadMetrics(Arc<Reloader>);
/// Memory and file descriptors of this process (from /proc).
struct ProcessMetrics;

named_debug!(
    BuildInfo,
    NetMetrics,
    BrokerMetrics,
    StorageMetrics,
    ReloadMetrics,
    ProcessMetrics
);

impl Collector for BuildInfo {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        e.encode_descriptor("eddy_build", "eddy version", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])
    }
}

impl Collector for NetMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut e,
            "eddy_connections_active",
            "Device and client connections open now",
            int(s.active.load(Ordering::Relaxed) as u64),
        )?;
        counter(
            &mut e,
            "eddy_connections_accepted",
            "Connections accepted",
            load(&s.accepted),
        )?;
        counters(
            &mut e,
            "eddy_connections_refused",
            "Connections refused, by reason (limit: connections_max reached; per_ip: connections_per_ip_max reached)",
            "reason",
            [
                ("limit", load(&s.rejected_limit)),
                ("per_ip", load(&s.rejected_per_ip)),
            ],
        )?;
        counter(
            &mut e,
            "eddy_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            load(&s.handshake_failures),
        )
    }
}

impl Collector for BrokerMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0.stats;
        let topics = s.topics();
        let per_topic = |f: fn(&crate::broker::TopicTraffic) -> u64| {
            topics
                .iter()
                .map(move |(name, t)| (name.as_str(), f(t)))
                .collect::<Vec<_>>()
        };
        counters(
            &mut e,
            "eddy_records_in",
            "Records appended, by topic",
            "topic",
            per_topic(|t| t.records_in.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut e,
            "eddy_bytes_in",
            "Bytes of produced batches appended, by topic",
            "topic",
            per_topic(|t| t.bytes_in.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut e,
            "eddy_records_out",
            "Records in the batches sent to consumers, by topic",
            "topic",
            per_topic(|t| t.records_out.load(Ordering::Relaxed)),
        )?;
        counters(
            &mut e,
            "eddy_bytes_out",
            "Bytes of batches sent to consumers, by topic",
            "topic",
            per_topic(|t| t.bytes_out.load(Ordering::Relaxed)),
        )?;
        let mut errors = s.errors.snapshot();
        errors.sort_by_key(|(code, _)| code.name());
        counters(
            &mut e,
            "eddy_errors",
            "Error responses sent to clients, by error code (see the protocol's ErrorCode)",
            "code",
            errors.iter().map(|(code, n)| (code.name(), *n)),
        )?;
        gauge(
            &mut e,
            "eddy_fetches_waiting",
            "Fetches long-polling for new records now",
            int(s.fetches_waiting.load(Ordering::Relaxed)),
        )
    }
}

impl Collector for StorageMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let storage = &self.0;
        let flush = storage.flush_stats();
        let mut buckets: Vec<(f64, u64)> = FSYNC_BUCKETS_US
            .iter()
            .zip(flush.sync_us_buckets.iter())
            .map(|(&upper_us, &n)| (upper_us as f64 / 1e6, n))
            .collect();
        buckets.push((f64::INFINITY, flush.sync_us_buckets[FSYNC_BUCKETS_US.len()]));
        e.encode_descriptor(
            "eddy_fsync_duration_seconds",
            "Group-commit rounds (flush + fdatasync) by duration",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            flush.sync_us_total as f64 / 1e6,
            flush.rounds,
            &buckets,
            None,
        )?;
        let topics = storage.topics();
        gauges(
            &mut e,
            "eddy_stored_bytes",
            "Bytes of record batches stored, by topic",
            "topic",
            topics.iter().map(|t| {
                let bytes: u64 = t.partitions().iter().map(|p| p.stored_bytes()).sum();
                (t.meta.name.as_str(), int(bytes))
            }),
        )?;
        gauges(
            &mut e,
            "eddy_topic_partitions",
            "Partitions, by topic",
            "topic",
            topics
                .iter()
                .map(|t| (t.meta.name.as_str(), i64::from(t.partition_count()))),
        )?;
        // A scrape runs on the blocking pool (see `http`): the walk is fine.
        match storage.disk_bytes() {
            Ok(bytes) => gauge(
                &mut e,
                "eddy_disk_used_bytes",
                "Bytes the data directory's storage files take on disk",
                int(bytes),
            )?,
            Err(err) => log::warn!("metrics: cannot size the data directory: {err}"),
        }
        if let Some(budget) = storage.budget_bytes() {
            gauge(
                &mut e,
                "eddy_disk_budget_bytes",
                "The disk budget (storage.disk_budget_mb): stored batch bytes allowed over all topics",
                int(budget),
            )?;
        }
        gauge(
            &mut e,
            "eddy_disk_budget_used_bytes",
            "Stored batch bytes over all topics, as the disk budget counts them",
            int(storage.used_bytes()),
        )?;
        counters(
            &mut e,
            "eddy_dropped_batches",
            "Record batches dropped, by reason (unreadable_at_recovery: a torn tail found at start)",
            "reason",
            [("unreadable_at_recovery", storage.dropped_at_recovery())],
        )?;
        // What maintenance removed, by topic and reason: retention (age or
        // size), compaction (superseded keys, expired tombstones), the disk
        // budget's drop_oldest.
        let mut family = e.encode_descriptor(
            "eddy_removed_records",
            "Records removed since start, by topic and reason (retention, compaction, budget_dropped)",
            None,
            MetricType::Counter,
        )?;
        for t in &topics {
            let (mut retention, mut compaction, mut dropped) = (0u64, 0u64, 0u64);
            for p in t.partitions() {
                let stats = p.stats();
                retention += stats.retention_removed_records;
                compaction += stats.compaction_removed_records;
                dropped += stats.dropped_records;
            }
            for (reason, n) in [
                ("retention", retention),
                ("compaction", compaction),
                ("budget_dropped", dropped),
            ] {
                family
                    .encode_family(&[("topic", t.meta.name.as_str()), ("reason", reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        // Consumer group lag: log end minus committed offset, summed per
        // group and topic, from the committed offsets storage holds.
        let mut family = e.encode_descriptor(
            "eddy_group_lag_records",
            "Records a consumer group has not committed yet (log end - committed offset), by group and topic",
            None,
            MetricType::Gauge,
        )?;
        match storage.groups_with_offsets() {
            Ok(groups) => {
                for group in groups {
                    let Ok(offsets) = storage.committed_offsets(&group) else {
                        continue;
                    };
                    let mut per_topic: std::collections::BTreeMap<&str, u64> =
                        std::collections::BTreeMap::new();
                    for c in &offsets {
                        let Some(topic) = topics.iter().find(|t| t.meta.name == c.topic) else {
                            continue;
                        };
                        let Some(log) = topic.partition(c.partition) else {
                            continue;
                        };
                        *per_topic.entry(topic.meta.name.as_str()).or_default() +=
                            log.log_end().saturating_sub(c.offset);
                    }
                    for (topic, lag) in per_topic {
                        family
                            .encode_family(&[("group", group.as_str()), ("topic", topic)])?
                            .encode_gauge(&int(lag))?;
                    }
                }
            }
            Err(err) => log::warn!("metrics: cannot read committed offsets: {err}"),
        }
        gauge(
            &mut e,
            "eddy_storage_failed",
            "1 once a flush or fsync failed (storage refuses writes until restart), else 0",
            i64::from(storage.has_failed()),
        )
    }
}

impl Collector for ReloadMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let mut family = e.encode_descriptor(
            "eddy_reloads",
            "Reloads of files (what: tls) by result (ok, failed: the previous version stayed)",
            None,
            MetricType::Counter,
        )?;
        for (what, stats) in self.0.stats() {
            for (result, n) in [("ok", &stats.ok), ("failed", &stats.failed)] {
                family
                    .encode_family(&[("what", what), ("result", result)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n.load(Ordering::Relaxed), None)?;
            }
        }
        let mut family = e.encode_descriptor(
            "eddy_reload_loaded_timestamp_seconds",
            "When the version in use was loaded (Unix time), by what",
            None,
            MetricType::Gauge,
        )?;
        for (what, stats) in self.0.stats() {
            let ms = stats.loaded_unix_ms.load(Ordering::Relaxed);
            family
                .encode_family(&[("what", what)])?
                .encode_gauge(&(ms as f64 / 1e3))?;
        }
        Ok(())
    }
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // The standard names of Prometheus' process collector.
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                int(rss),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut e,
                "process_open_fds",
                "Number of open file descriptors",
                int(fds.count() as u64),
            )?;
        }
        if let Some(max) = max_fds() {
            gauge(
                &mut e,
                "process_max_fds",
                "Maximum number of open file descriptors (LimitNOFILE)",
                int(max),
            )?;
        }
        Ok(())
    }
}

/// VmRSS from /proc/self/status, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of "Max open files" from /proc/self/limits.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
