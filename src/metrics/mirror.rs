//! Mirror metrics: per link its state, traffic, reconnects and drops, and
//! per (link, topic) the lag (summed over the topic's partitions, so the
//! series count does not grow with partitions).
//!
//! Reads `crate::mirror::MirrorState` at scrape time; keeps nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counters, int};
use crate::mirror::MirrorState;
use crate::wire::MirrorLinkState;

/// The collector of a hub's mirror links (`server::start` adds it when
/// the hub has links).
pub fn mirror_collector(state: &Arc<MirrorState>) -> Box<dyn Collector> {
    Box::new(MirrorMetrics(state.clone()))
}

struct MirrorMetrics(Arc<MirrorState>);

impl fmt::Debug for MirrorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MirrorMetrics")
    }
}

impl Collector for MirrorMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let links = self.0.snapshot();
        let mut family = e.encode_descriptor(
            "eddy_mirror_link_state",
            "1 for the state each mirror link is in (connecting, up, down), else 0",
            None,
            MetricType::Gauge,
        )?;
        for link in &links {
            for state in [
                MirrorLinkState::Connecting,
                MirrorLinkState::Up,
                MirrorLinkState::Down,
            ] {
                family
                    .encode_family(&[("link", link.name.as_str()), ("state", state.name())])?
                    .encode_gauge(&i64::from(link.state == state))?;
            }
        }
        counters(
            &mut e,
            "eddy_mirror_records",
            "Records the upstream acknowledged, by link",
            "link",
            links.iter().map(|l| (l.name.as_str(), l.records_mirrored)),
        )?;
        counters(
            &mut e,
            "eddy_mirror_bytes",
            "Bytes of stored batches the upstream acknowledged, by link",
            "link",
            links.iter().map(|l| (l.name.as_str(), l.bytes_mirrored)),
        )?;
        counters(
            &mut e,
            "eddy_mirror_sent_raw_bytes",
            "Stored batch bytes sent upstream, before compression, by link",
            "link",
            links.iter().map(|l| (l.name.as_str(), l.sent_raw_bytes)),
        )?;
        counters(
            &mut e,
            "eddy_mirror_sent_compressed_bytes",
            "Payload bytes of the requests that carried them, after compression \
             (eddy://: the compressed batches; kafka://: the record batches), by link",
            "link",
            links
                .iter()
                .map(|l| (l.name.as_str(), l.sent_compressed_bytes)),
        )?;
        counters(
            &mut e,
            "eddy_mirror_reconnects",
            "Mirror sessions that ended in an error (then retried with backoff), by link",
            "link",
            links.iter().map(|l| (l.name.as_str(), l.reconnects)),
        )?;
        counters(
            &mut e,
            "eddy_mirror_dropped_records",
            "Records removed here (retention, or the disk budget where on_full.unmirrored=drop) before the link forwarded them",
            "link",
            links.iter().map(|l| (l.name.as_str(), l.dropped_records)),
        )?;
        for (name, help, pick) in [
            (
                "eddy_mirror_lag_records",
                "Offsets not yet acknowledged upstream, by link and topic",
                0usize,
            ),
            (
                "eddy_mirror_lag_bytes",
                "Stored bytes not yet acknowledged upstream (estimated), by link and topic",
                1,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for link in &links {
                let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
                for p in &link.partitions {
                    let lag = if pick == 0 {
                        p.lag_records
                    } else {
                        p.lag_bytes
                    };
                    *per_topic.entry(p.topic.as_str()).or_default() += lag;
                }
                for (topic, lag) in per_topic {
                    family
                        .encode_family(&[("link", link.name.as_str()), ("topic", topic)])?
                        .encode_gauge(&int(lag))?;
                }
            }
        }
        let mut family = e.encode_descriptor(
            "eddy_mirror_last_error_timestamp_seconds",
            "When the link last failed (Unix time; 0: never)",
            None,
            MetricType::Gauge,
        )?;
        for link in &links {
            family
                .encode_family(&[("link", link.name.as_str())])?
                .encode_gauge(&(link.last_error_ms as f64 / 1e3))?;
        }
        Ok(())
    }
}
