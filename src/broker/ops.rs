//! The broker's protocol-neutral operations that the MQTT front end calls,
//! with typed errors ([`BrokerError`]) and no protocol's types in their
//! signatures.
//!
//! - [`Broker::produce_to`]: one batch to a partition of a topic
//!   (auto-created when allowed), answered at an [`AckLevel`].
//! - [`Broker::fetch_from`]: durable batches from offsets;
//!   [`Broker::wait_for_data`] is the long poll.
//! - [`Broker::topic_named`], [`Broker::topics_for`].
//!
//! The signatures are those of the Kafka listener's branch (`wt-kafka`,
//! same file name), which was not committed when this was written: when
//! both land, its fuller file replaces this one. This file does no
//! encoding and touches no socket; it does not replace the native
//! handlers in `mod.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{read_partitions, Broker, WaitingFetch};
use crate::config::PRODUCE_TIMEOUT_MS_MAX;
use crate::storage::{StorageError, Topic};
use crate::time::now_ms_i64;
use crate::wire::batch::{stamp_arrival_time, Batch, BatchError};
use crate::wire::{ErrorCode, FetchPartition};

/// When a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Appended (in memory and sled's log, not yet fsynced).
    Received,
    /// Appended and fsynced (the partition's durable end passed it).
    Durable,
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no topic named {0:?}; create it with `eddy topics create {0}`")]
    UnknownTopic(String),
    #[error("topic {topic} has partitions 0..{partitions}, not {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("topic name {0:?} is invalid: use 1–249 characters of [a-zA-Z0-9._-]")]
    InvalidTopicName(String),
    #[error("batch of {len} bytes exceeds batch_bytes_max ({max})")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("batch rejected: {0}")]
    Corrupt(BatchError),
    #[error("topic {topic} is a mirror of {source_hub} and only that hub's mirror link writes it")]
    WrittenByMirror { topic: String, source_hub: String },
    #[error("appended, but not fsynced within {timeout_ms} ms")]
    Timeout { timeout_ms: u128 },
    #[error("{0}")]
    Storage(StorageError),
}

/// Where a batch's records landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub partition: u32,
    pub base_offset: u64,
    pub record_count: u32,
}

/// What a partition read returned, for a front end to translate.
pub struct PartitionData {
    pub partition: u32,
    /// Why nothing was read (the native code; front ends map it).
    pub error: Option<ErrorCode>,
    pub log_start: u64,
    /// The durable end: consumers never read past it.
    pub high_watermark: u64,
    /// Whole stored batches, the first holding the asked offset.
    pub bytes: Vec<u8>,
}

impl Broker {
    /// Appends one batch (eddy's format) to `partition` of `topic_name`
    /// (auto-created when the hub allows) and returns a future that
    /// completes at `acks`. `timeout`: the longest the durable wait may take.
    pub async fn produce_to(
        self: &Arc<Self>,
        topic_name: &str,
        partition: u32,
        raw: Vec<u8>,
        acks: AckLevel,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<Landed, BrokerError>> + Send + 'static, BrokerError>
    {
        let max = self.config.batch_bytes_max;
        if raw.len() > usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(BrokerError::RecordTooLarge {
                len: raw.len(),
                max,
            });
        }
        let record_count = Batch::parse(&raw)
            .map_err(BrokerError::Corrupt)?
            .record_count();
        let topic = self.topic_or_auto_create(topic_name).await?;
        if let Some(source) = &topic.config().mirror_source {
            return Err(BrokerError::WrittenByMirror {
                topic: topic.meta.name.clone(),
                source_hub: source.clone(),
            });
        }
        let log = topic
            .partition(partition)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.meta.name.clone(),
                partition,
                partitions: topic.partition_count(),
            })?
            .clone();
        let mut stored = raw;
        stamp_arrival_time(&mut stored, now_ms_i64()).map_err(BrokerError::Corrupt)?;
        let len = stored.len() as u64;
        let storage = self.storage.clone();
        let append_log = log.clone();
        let (first, end) = smol::unblock(move || storage.append(&append_log, &mut [stored]))
            .await
            .map_err(BrokerError::Storage)?;
        let traffic = self.stats.topic(&topic.meta.name);
        for counter in [&self.stats.records_in, &traffic.records_in] {
            counter.fetch_add(
                u64::from(record_count),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for counter in [&self.stats.bytes_in, &traffic.bytes_in] {
            counter.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
        let landed = Landed {
            partition,
            base_offset: first,
            record_count,
        };
        let broker = self.clone();
        let timeout = timeout.min(Duration::from_millis(u64::from(PRODUCE_TIMEOUT_MS_MAX)));
        Ok(async move {
            if acks == AckLevel::Durable {
                broker
                    .wait_durable(&[(log, end)], timeout)
                    .await
                    .map_err(|_| BrokerError::Timeout {
                        timeout_ms: timeout.as_millis(),
                    })?;
            }
            Ok(landed)
        })
    }

    /// Reads durable batches of `topic` from each `(partition, offset)`,
    /// up to `max_bytes` in all (the first batch found is returned even
    /// when larger).
    pub async fn fetch_from(
        &self,
        topic: Arc<Topic>,
        wants: Vec<(u32, u64)>,
        max_bytes: usize,
    ) -> Vec<PartitionData> {
        let wants = wants
            .into_iter()
            .map(|(partition, offset)| FetchPartition { partition, offset })
            .collect();
        let (_, _, reads) = read_partitions(topic, wants, max_bytes).await;
        reads
            .into_iter()
            .map(|r| PartitionData {
                partition: r.partition,
                error: r.error,
                log_start: r.log_start,
                high_watermark: r.high_watermark,
                bytes: r.bytes,
            })
            .collect()
    }

    /// Long poll: waits until `has_data()`, the deadline, or shutdown.
    /// `has_data` is checked after each durable advance of any partition.
    pub async fn wait_for_data(&self, has_data: impl Fn() -> bool, deadline: Instant) {
        let waiting = WaitingFetch::new(&self.stats.fetches_waiting);
        loop {
            let listener = self.storage.durable_event().listen();
            if has_data() || self.shutdown.is_triggered() || Instant::now() >= deadline {
                break;
            }
            smol::future::or(listener, async {
                smol::future::or(smol::Timer::at(deadline), async {
                    self.shutdown.wait().await;
                    Instant::now()
                })
                .await;
            })
            .await;
        }
        drop(waiting);
    }

    /// A topic by name.
    pub fn topic_named(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.storage
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }
}

impl Broker {
    /// Every topic (sorted by name), or those of `names` that exist.
    pub fn topics_for(&self, names: Option<&[String]>) -> Vec<Arc<Topic>> {
        match names {
            None => self.storage.topics(),
            Some(names) => names.iter().filter_map(|n| self.storage.topic(n)).collect(),
        }
    }
}
