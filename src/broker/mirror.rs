//! The broker's side of mirroring: `acks=mirrored`, appends forwarded by
//! another hub's mirror link (`MirrorProduce`), and `MirrorStatus`.
//!
//! The mirror itself (reading local topics, talking to upstreams) is
//! `crate::mirror`; the broker only reads its shared state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{corrupt, encode, error_frame, failure, Broker, Failure, Reply};
use crate::compression::decompress;
use crate::mirror::MirrorState;
use crate::storage::{PartitionLog, Topic};
use crate::wire::batch::Batches;
use crate::wire::{
    ErrorCode, MirrorLinkStatus, MirrorPartitionStatus, MirrorProduce, MirrorProduceCompressed,
    MirrorProduced, Produced, Response,
};

/// The answer to an ordinary produce to a topic only a mirror writes.
pub(super) fn written_by_mirror(topic: &str, source: &str) -> Failure {
    (
        ErrorCode::MirrorConflict,
        format!(
            "topic {topic} is a mirror of {source} and only that hub's mirror link writes it; \
             produce to the source hub, or remove the setting with \
             `eddy topics alter {topic} --delete-config mirror.source`"
        ),
    )
}

impl Broker {
    /// `Ok` when a mirror link forwards `topic` (so `acks=mirrored` can be
    /// answered).
    pub(super) fn check_mirrored(&self, topic: &Topic) -> Result<(), Failure> {
        let Some(state) = self.mirror() else {
            return Err((
                ErrorCode::NotSupported,
                "acks=mirrored needs an upstream mirror link, and this hub has none \
                 (eddy serve --mirror URL)"
                    .into(),
            ));
        };
        if !state.is_mirrored(&topic.meta.name) {
            return Err((
                ErrorCode::NotSupported,
                format!(
                    "acks=mirrored: no mirror link forwards topic {}; add it to a link's topics or use acks=durable",
                    topic.meta.name
                ),
            ));
        }
        Ok(())
    }

    /// Answers `produced` once every link that mirrors `topic` has
    /// forwarded every `(log, end)` (and the upstream acknowledged), or
    /// `Timeout` after `timeout` (the records stay appended).
    pub(super) fn wait_mirrored_reply(
        self: &Arc<Self>,
        correlation_id: u32,
        topic: Arc<Topic>,
        produced: Produced,
        waits: Vec<(Arc<PartitionLog>, u64)>,
        timeout: Duration,
    ) -> Reply {
        let broker = self.clone();
        Reply::Pending(Box::pin(async move {
            let state = broker.mirror().expect("checked before the append").clone();
            let deadline = Instant::now() + timeout;
            let done = |state: &MirrorState| {
                waits.iter().all(|(log, end)| {
                    state
                        .min_mirrored(&topic, log.partition())
                        .is_some_and(|m| m >= *end)
                })
            };
            loop {
                let listener = state.progress_event().listen();
                if done(&state) {
                    return encode(correlation_id, Response::Produced(produced));
                }
                let failed = broker.storage.check_healthy().err();
                if failed.is_some() || Instant::now() >= deadline || broker.shutdown.is_triggered()
                {
                    let (code, message) = match failed {
                        Some(e) => failure(e),
                        None => (
                            ErrorCode::Timeout,
                            format!(
                                "appended, but not acknowledged upstream within {} ms; \
                                 `eddy mirror status` shows the links and their lag",
                                timeout.as_millis()
                            ),
                        ),
                    };
                    broker.stats.errors.count(code);
                    return error_frame(correlation_id, code, &message);
                }
                smol::future::or(listener, async {
                    smol::future::or(
                        async {
                            smol::Timer::at(deadline).await;
                        },
                        broker.shutdown.wait(),
                    )
                    .await;
                })
                .await;
            }
        }))
    }

    /// [`Broker::mirror_produce`] of compressed batches: decompressed on the
    /// blocking pool into at most the frame limit (what an uncompressed
    /// request could carry), then appended the same way.
    pub(super) async fn mirror_produce_compressed(
        self: &Arc<Self>,
        correlation_id: u32,
        m: &MirrorProduceCompressed<'_>,
    ) -> Result<Reply, Failure> {
        let compressed = m.produce.batches.to_vec();
        let (codec, raw_bytes) = (m.compression, m.raw_bytes);
        let limit_bytes = self.config.frame_bytes_max;
        let raw = smol::unblock(move || decompress(codec, &compressed, raw_bytes, limit_bytes))
            .await
            .map_err(|e| (ErrorCode::CorruptBatch, format!("batches rejected: {e}")))?;
        let produce = MirrorProduce {
            batches: &raw,
            ..m.produce.clone()
        };
        self.mirror_produce(correlation_id, &produce).await
    }

    /// Appends batches another hub's mirror forwarded, at their source
    /// offsets; answers once everything below the new log end is durable.
    pub(super) async fn mirror_produce(
        self: &Arc<Self>,
        correlation_id: u32,
        m: &MirrorProduce<'_>,
    ) -> Result<Reply, Failure> {
        let topic = self.topic(m.topic)?;
        let expected = format!("{}/{}", m.source_hub, m.source_topic);
        match topic.config().mirror_source.as_deref() {
            Some(source) if source == expected => {}
            recorded => {
                return Err((
                    ErrorCode::MirrorConflict,
                    format!(
                        "topic {} is not a mirror of {expected} (mirror.source = {}): \
                         a mirror link creates its upstream topics itself; pick another topic_name",
                        m.topic,
                        recorded.unwrap_or("unset")
                    ),
                ))
            }
        }
        let log = topic
            .partition(m.partition)
            .ok_or_else(|| {
                (
                    ErrorCode::UnknownPartition,
                    format!(
                        "topic {} has partitions 0..{}, not {}",
                        m.topic,
                        topic.partition_count(),
                        m.partition
                    ),
                )
            })?
            .clone();
        let mut batches = Vec::new();
        for batch in Batches::new(m.batches) {
            let batch = batch.map_err(corrupt)?;
            batch.validate().map_err(corrupt)?;
            batches.push(batch.as_bytes().to_vec());
        }
        if batches.is_empty() {
            return Err((
                ErrorCode::InvalidRequest,
                "MirrorProduce carries no batch".into(),
            ));
        }
        let bytes = m.batches.len() as u64;
        let storage = self.storage.clone();
        let append_log = log.clone();
        let outcome = smol::unblock(move || storage.append_mirrored(&append_log, batches))
            .await
            .map_err(failure)?;
        if outcome.appended_records > 0 {
            let traffic = self.stats.topic(m.topic);
            traffic.records_in.fetch_add(
                outcome.appended_records,
                std::sync::atomic::Ordering::Relaxed,
            );
            traffic
                .bytes_in
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        let done = MirrorProduced {
            partition: m.partition,
            log_end: outcome.log_end,
            skipped_records: outcome.skipped_records,
        };
        if log.durable_end() >= outcome.log_end {
            return Ok(Reply::Ready(encode(
                correlation_id,
                Response::MirrorProduced(done),
            )));
        }
        let timeout = Duration::from_millis(u64::from(
            m.timeout_ms.min(crate::config::PRODUCE_TIMEOUT_MS_MAX),
        ));
        let broker = self.clone();
        let waits = vec![(log, outcome.log_end)];
        Ok(Reply::Pending(Box::pin(async move {
            match broker.wait_durable(&waits, timeout).await {
                Ok(()) => encode(correlation_id, Response::MirrorProduced(done)),
                Err(e) => {
                    let (code, message) = Failure::from(e);
                    broker.stats.errors.count(code);
                    error_frame(correlation_id, code, &message)
                }
            }
        })))
    }

    /// Every mirror link's state, watermarks and lag.
    pub(super) fn mirror_status(&self, correlation_id: u32) -> Vec<u8> {
        let snapshots = self
            .mirror()
            .map(|state| state.snapshot())
            .unwrap_or_default();
        let links = snapshots
            .iter()
            .map(|l| MirrorLinkStatus {
                link: &l.name,
                upstream: &l.upstream,
                state: l.state,
                state_since_ms: l.since_ms,
                last_error: l.last_error.as_deref(),
                last_error_ms: l.last_error_ms,
                reconnects: l.reconnects,
                records_mirrored: l.records_mirrored,
                bytes_mirrored: l.bytes_mirrored,
                dropped_records: l.dropped_records,
                partitions: l
                    .partitions
                    .iter()
                    .map(|p| MirrorPartitionStatus {
                        topic: &p.topic,
                        upstream_topic: &p.upstream_topic,
                        partition: p.partition,
                        mirrored: p.mirrored,
                        log_end: p.log_end,
                        lag_records: p.lag_records,
                        lag_bytes: p.lag_bytes,
                    })
                    .collect(),
            })
            .collect();
        encode(correlation_id, Response::MirrorStatus(links))
    }
}
