//! The broker's protocol-neutral operations: what every front end (the
//! native protocol, Kafka, MQTT next) calls, with typed errors
//! ([`BrokerError`]) and no protocol's types in their signatures.
//!
//! - [`Broker::produce_to`]: one batch to a partition of a topic
//!   (auto-created when allowed), answered at an [`AckLevel`].
//! - [`Broker::fetch_from`]: durable batches from offsets, with a long poll
//!   ([`Broker::wait_for_data`]).
//! - [`Broker::list_offset`]: earliest, latest (durable end) or by time.
//! - [`Broker::topics_for`]: topic metadata.
//!
//! The native handlers in `mod.rs` call the same functions for appending
//! ([`Broker::append_batch`]), auto-creating topics, waiting for fsync and
//! long-polling; they map [`BrokerError`] to their wire code with
//! [`BrokerError::code`]. Translation to and from a protocol's types is the
//! front end's job; this file does no encoding and touches no socket.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::produce::{rebuild, route_with, Routes};
use super::{
    any_of, read_partitions, Broker, Failure, PartitionRead, WaitingFetch, INLINE_APPEND_BYTES_MAX,
};
use crate::config::{FETCH_WAIT_MS_MAX, PRODUCE_TIMEOUT_MS_MAX};
use crate::storage::producers::IdempotentAppend;
use crate::storage::{PartitionLog, StorageError, Topic, STORED_BATCH_BYTES_TARGET};
use crate::time::now_ms_i64;
use crate::wire::batch::{stamp_arrival_time, Batch, BatchError, ProducerStamp};
use crate::wire::{self, ErrorCode, FetchPartition};

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
    #[error("{0}")]
    InvalidRequest(String),
    #[error("batch of {len} bytes exceeds batch_bytes_max ({max})")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("batch rejected: {0}")]
    Corrupt(BatchError),
    #[error(
        "topic {topic} is a mirror of {source_hub} and only that hub's mirror link writes it; \
         produce to the source hub, or remove the setting with \
         `eddy topics alter {topic} --delete-config mirror.source`"
    )]
    WrittenByMirror { topic: String, source_hub: String },
    #[error("appended, but not fsynced within {timeout_ms} ms")]
    Timeout { timeout_ms: u128 },
    #[error("{identity} may not {what}: ask the hub's operator for an ACL rule (`eddy acl check {identity} …` explains)")]
    NotAuthorized { identity: String, what: String },
    #[error("{0}")]
    Storage(StorageError),
    /// A group coordinator's refusal (unknown member, stale generation,
    /// rebalance in progress, …).
    #[error("{message}")]
    Group { code: ErrorCode, message: String },
    #[error(
        "group {group} has {members}: a group id is used by one protocol at a time; \
         use another group id, or stop those consumers first"
    )]
    GroupProtocolMismatch {
        group: String,
        members: &'static str,
    },
}

impl BrokerError {
    /// The native protocol's code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            BrokerError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            BrokerError::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
            BrokerError::Corrupt(_) => ErrorCode::CorruptBatch,
            BrokerError::WrittenByMirror { .. } => ErrorCode::MirrorConflict,
            BrokerError::Timeout { .. } => ErrorCode::Timeout,
            BrokerError::NotAuthorized { .. } => ErrorCode::NotAuthorized,
            BrokerError::Storage(e) => storage_code(e),
            BrokerError::Group { code, .. } => *code,
            BrokerError::GroupProtocolMismatch { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// A storage error's code, without logging it (see [`super::failure`]).
pub(super) fn storage_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        StorageError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        StorageError::TopicExists(_) => ErrorCode::TopicExists,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::Corrupt { .. } => ErrorCode::CorruptBatch,
        StorageError::DiskFull { .. }
        | StorageError::BudgetFull { .. }
        | StorageError::DiskReserve { .. } => ErrorCode::DiskFull,
        StorageError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        StorageError::Closed => ErrorCode::ShuttingDown,
        StorageError::Failed(_)
        | StorageError::Sled { .. }
        | StorageError::Io { .. }
        | StorageError::BadMeta { .. } => ErrorCode::StorageError,
        StorageError::UnknownProducer { .. } => ErrorCode::UnknownProducer,
        StorageError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        StorageError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
        StorageError::MirrorConflict(_) => ErrorCode::MirrorConflict,
    }
}

/// The native handlers' (code, message) from a typed error; storage errors
/// go through [`super::failure`] (which logs faults).
impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Failure {
        match e {
            BrokerError::Storage(e) => super::failure(e),
            e => (e.code(), e.to_string()),
        }
    }
}

/// Where a batch's records landed: one entry per partition written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub partition: u32,
    pub base_offset: u64,
    pub record_count: u32,
}

/// An appended batch, and what to wait for before it is durable.
pub struct Appended {
    pub landed: Vec<Landed>,
    pub waits: Vec<(Arc<PartitionLog>, u64)>,
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

/// Which offset [`Broker::list_offset`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    /// The durable end (what a consumer can read up to).
    Latest,
    /// The first record with a timestamp ≥ this (ms); `None` when none.
    Timestamp(i64),
}

impl Broker {
    /// Appends one batch (eddy's format) to `partition` of `topic_name`
    /// (auto-created when the hub allows) and returns a future that
    /// completes at `acks`. `timeout`: the longest the durable wait may take.
    pub async fn produce_to(
        self: &Arc<Self>,
        owner: &str,
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
        // Checked before the topic is looked up: a corrupt batch must not
        // auto-create a topic.
        let batch = Batch::parse(&raw).map_err(BrokerError::Corrupt)?;
        batch.validate_produced().map_err(BrokerError::Corrupt)?;
        let topic = self.topic_or_create(topic_name).await?;
        if let Some(source) = &topic.config().mirror_source {
            return Err(BrokerError::WrittenByMirror {
                topic: topic.meta.name.clone(),
                source_hub: source.clone(),
            });
        }
        let Appended { landed, waits } = self
            .append_batch(owner, &topic, &batch, &raw, Some(partition))
            .await?;
        let first = landed.first().copied();
        let last = landed.last().copied();
        let landed = match (first, last) {
            (Some(first), Some(last)) => Landed {
                partition,
                base_offset: first.base_offset,
                record_count: u32::try_from(
                    last.base_offset + u64::from(last.record_count) - first.base_offset,
                )
                .unwrap_or(u32::MAX),
            },
            _ => return Err(BrokerError::Corrupt(BatchError::Empty)),
        };
        let broker = self.clone();
        let timeout = timeout.min(Duration::from_millis(u64::from(PRODUCE_TIMEOUT_MS_MAX)));
        Ok(async move {
            if acks == AckLevel::Durable {
                broker.wait_durable(&waits, timeout).await?;
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
            .map(|r: PartitionRead| PartitionData {
                partition: r.partition,
                error: r.error,
                log_start: r.log_start,
                high_watermark: r.high_watermark,
                bytes: r.bytes,
            })
            .collect()
    }

    /// The longest long poll a fetch may ask for.
    pub fn fetch_wait_max(&self) -> Duration {
        Duration::from_millis(u64::from(FETCH_WAIT_MS_MAX))
    }

    /// Long poll: waits until `has_data()`, the deadline, shutdown or a
    /// storage failure. Woken only when one of `logs`' durable ends moves
    /// (never by other partitions' flushes); with no `logs` (waiting for a
    /// topic to appear), by any partition's.
    pub async fn wait_for_data(
        &self,
        logs: &[Arc<PartitionLog>],
        has_data: impl Fn() -> bool,
        deadline: Instant,
    ) {
        let waiting = WaitingFetch::new(&self.stats.fetches_waiting);
        loop {
            let listener = if logs.is_empty() {
                vec![self.storage.durable_event().listen()]
            } else {
                logs.iter()
                    .map(|log| log.durable_event().listen())
                    .collect()
            };
            let listener = any_of(listener);
            if has_data()
                || self.shutdown.is_triggered()
                || Instant::now() >= deadline
                || self.storage.check_healthy().is_err()
            {
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
            self.stats.fetch_wakeups.fetch_add(1, Ordering::Relaxed);
        }
        drop(waiting);
    }

    /// A topic by name.
    pub fn topic_named(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.storage
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Every topic (sorted by name), or those of `names` that exist.
    pub fn topics_for(&self, names: Option<&[String]>) -> Vec<Arc<Topic>> {
        match names {
            None => self.storage.topics(),
            Some(names) => names.iter().filter_map(|n| self.storage.topic(n)).collect(),
        }
    }

    /// The offset `spec` finds in a partition, and the timestamp of that
    /// record for a time lookup (`None`: no record that late, or not a time
    /// lookup).
    pub async fn list_offset(
        &self,
        topic: Arc<Topic>,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<Option<u64>, BrokerError> {
        let log = topic
            .partition(partition)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.meta.name.clone(),
                partition,
                partitions: topic.partition_count(),
            })?
            .clone();
        match spec {
            OffsetSpec::Earliest => Ok(Some(log.watermarks().log_start)),
            OffsetSpec::Latest => Ok(Some(log.durable_end())),
            OffsetSpec::Timestamp(ts) => {
                let (offset, end) = smol::unblock(move || {
                    let end = log.durable_end();
                    log.offset_for_timestamp(ts).map(|o| (o, end))
                })
                .await
                .map_err(BrokerError::Storage)?;
                Ok((offset < end).then_some(offset))
            }
        }
    }

    /// The topic, created with the hub's default partitions when it does
    /// not exist and auto-creation is on.
    pub async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        if let Some(topic) = self.storage.topic(name) {
            return Ok(topic);
        }
        if !self.config.auto_create_topics {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        if !wire::is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName(name.to_string()));
        }
        match self
            .create_within_limits(name, self.config.default_partitions, Vec::new())
            .await
        {
            Ok(topic) => {
                log::info!(
                    "auto-created topic {name} with {} partitions",
                    self.config.default_partitions
                );
                Ok(topic)
            }
            // Another connection created it first.
            Err(Err(StorageError::TopicExists(_))) => self
                .storage
                .topic(name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
            Err(Err(e)) => Err(BrokerError::Storage(e)),
            Err(Ok((_, refused))) => Err(BrokerError::InvalidRequest(refused)),
        }
    }

    /// Routes `batch` (whose bytes are `raw`) to partitions of `topic`
    /// (`explicit`, else by key) and appends it: idempotent batches through
    /// the producer's sequence check (a duplicate lands where it first did),
    /// others as they came or cut into stored batches. Counts the traffic.
    pub(super) async fn append_batch(
        &self,
        owner: &str,
        topic: &Arc<Topic>,
        batch: &Batch<'_>,
        raw: &[u8],
        explicit: Option<u32>,
    ) -> Result<Appended, BrokerError> {
        let len = raw.len();
        let name = topic.meta.name.clone();
        let partitions = topic.partition_count();
        if let Some(explicit) = explicit {
            if explicit >= partitions {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.meta.name.clone(),
                    partition: explicit,
                    partitions,
                });
            }
        }
        // Keyless records: one partition per batch, rotating per topic.
        let routes = route_with(batch, partitions, explicit, || {
            topic.next_keyless_partition()
        })
        .map_err(BrokerError::Corrupt)?;
        let stamp = ProducerStamp {
            producer_id: batch.header.producer_id,
            producer_epoch: batch.header.producer_epoch,
            base_sequence: batch.header.base_sequence,
        };
        let idempotent = stamp.producer_id >= 0;
        if idempotent && matches!(routes, Routes::PerRecord(_)) {
            return Err(BrokerError::InvalidRequest(
                "an idempotent batch must go to one partition: give its records one key, \
                 no key, or an explicit partition"
                    .into(),
            ));
        }
        let arrival_ms = now_ms_i64();
        let per_partition: Vec<(u32, Vec<Vec<u8>>, u32)> = match routes {
            Routes::Single(partition) if len <= STORED_BATCH_BYTES_TARGET => {
                // Small and for one partition: store it as it came (with its
                // producer stamp, which crash recovery replays).
                let mut encoded = raw.to_vec();
                stamp_arrival_time(&mut encoded, arrival_ms).map_err(BrokerError::Corrupt)?;
                vec![(partition, vec![encoded], batch.record_count())]
            }
            routes => rebuild(batch, &routes, arrival_ms, STORED_BATCH_BYTES_TARGET, stamp)
                .map_err(BrokerError::Corrupt)?
                .into_iter()
                .map(|(partition, chunks)| (partition, chunks.batches, chunks.record_count))
                .collect(),
        };

        let record_count = batch.record_count();
        let storage = self.storage.clone();
        let topic = topic.clone();
        let owner = owner.to_string();
        let append = move || {
            if idempotent {
                // Dedupe by producer sequence; one partition (checked above).
                let Some((partition, mut batches, _)) = per_partition.into_iter().next() else {
                    return Err(StorageError::Failed("empty idempotent batch".into()));
                };
                let log = topic
                    .partition(partition)
                    .expect("routed to an existing partition")
                    .clone();
                let (landed, appended) = match storage.append_idempotent(
                    &owner,
                    &topic,
                    &log,
                    stamp,
                    record_count,
                    &mut batches,
                )? {
                    IdempotentAppend::Appended(landed) => (landed, true),
                    IdempotentAppend::Duplicate(landed) => (landed, false),
                };
                let mut acks = Vec::with_capacity(landed.len());
                let mut waits = Vec::with_capacity(landed.len());
                for part in landed {
                    if let Some(log) = topic.partition(part.partition) {
                        waits.push((log.clone(), part.base_offset + u64::from(part.record_count)));
                    }
                    acks.push(Landed {
                        partition: part.partition,
                        base_offset: part.base_offset,
                        record_count: part.record_count,
                    });
                }
                return Ok::<_, StorageError>((acks, waits, appended));
            }
            let mut acks = Vec::with_capacity(per_partition.len());
            let mut waits: Vec<(Arc<PartitionLog>, u64)> = Vec::with_capacity(per_partition.len());
            for (partition, mut batches, record_count) in per_partition {
                let log = topic
                    .partition(partition)
                    .expect("routed to an existing partition")
                    .clone();
                let (first, end) = storage.append(&log, &mut batches)?;
                acks.push(Landed {
                    partition,
                    base_offset: first,
                    record_count,
                });
                waits.push((log, end));
            }
            Ok::<_, StorageError>((acks, waits, true))
        };
        // A single small batch is a few sled inserts: cheaper to do right
        // here than to hand to another thread. Larger appends go to the
        // blocking pool so the executor keeps serving other connections.
        let (acks, waits, appended) = if len <= INLINE_APPEND_BYTES_MAX {
            append()
        } else {
            smol::unblock(append).await
        }
        .map_err(BrokerError::Storage)?;
        if appended {
            self.stats
                .records_in
                .fetch_add(u64::from(record_count), Ordering::Relaxed);
            self.stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
            let traffic = self.stats.topic(&name);
            traffic
                .records_in
                .fetch_add(u64::from(record_count), Ordering::Relaxed);
            traffic.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        } else {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        }

        Ok(Appended {
            landed: acks,
            waits,
        })
    }

    /// Waits until every `(log, end)` is durable, or the timeout passes, or
    /// storage fails.
    pub(super) async fn wait_durable(
        &self,
        waits: &[(Arc<PartitionLog>, u64)],
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let deadline = Instant::now() + timeout;
        loop {
            // The first partition not yet durable enough: only its flush
            // (or storage failing) can finish the wait from here.
            let Some((log, _)) = waits.iter().find(|(log, end)| log.durable_end() < *end) else {
                return Ok(());
            };
            let listener = log.durable_event().listen();
            if waits.iter().all(|(log, end)| log.durable_end() >= *end) {
                return Ok(());
            }
            self.storage.check_healthy().map_err(BrokerError::Storage)?;
            let timed_out = smol::future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    smol::Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                if waits.iter().all(|(log, end)| log.durable_end() >= *end) {
                    return Ok(());
                }
                return Err(BrokerError::Timeout {
                    timeout_ms: timeout.as_millis(),
                });
            }
        }
    }
}
