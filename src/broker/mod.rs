//! The broker: applies decoded requests to storage and encodes the answers.
//!
//! A request is handled in two steps. [`Broker::handle`] is awaited by the
//! connection before it reads its next request: it validates, routes and
//! appends (so pipelined produces to one partition keep their order). What
//! must wait — a produce for its fsync, a fetch for new data — is returned as
//! a future ([`Reply::Pending`]) that the connection runs concurrently with
//! the next requests, up to its in-flight limit.
//!
//! Storage calls block (sled takes locks and may read the disk), so they run
//! on smol's blocking thread pool (`smol::unblock`), never on the executor
//! threads that serve every connection's I/O.
//!
//! The broker never touches sled (storage does) or sockets (net does); it
//! speaks the wire types and returns encoded response frames.

mod access;
mod admin;
mod answer_budget;
mod authorize;
mod group_ops;
pub mod groups;
mod mirror;
pub mod ops;
mod positions;
pub mod produce;
pub mod producer_sessions;
pub mod topic_ops;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::config::{FETCH_RESPONSE_OVERHEAD_BYTES, FETCH_WAIT_MS_MAX, PRODUCE_TIMEOUT_MS_MAX};
use crate::mirror::MirrorState;
use crate::shutdown::Shutdown;
use crate::storage::{Storage, StorageError, Topic};
use crate::time::now_ms;
use crate::wire::batch::{batch_len, Batch, BatchError, BatchHeader};
use crate::wire::{
    self, Acks, ConfigEntry, CreateTopic, ErrorCode, ErrorReply, Fetch, FetchPartition, Fetched,
    FetchedPartition, HelloOk, Metadata, MetadataReply, MirrorWatermark, PartitionAck,
    PartitionWatermarks, Produce, Produced, Request, Response, ResponseFrame, TopicDescription,
    TopicSummary,
};
use ops::Appended;

pub use answer_budget::{AnswerBudget, Reservation};
pub use authorize::Caller;
pub use ops::{AckLevel, BrokerError, Landed, PartitionData};

/// Produced batches up to this size are appended on the executor thread;
/// larger ones on the blocking pool (a sled batch insert can take a
/// millisecond and sled's global write lock).
const INLINE_APPEND_BYTES_MAX: usize = 4 << 10;

/// A response, ready now or later.
pub enum Reply {
    /// An encoded response frame.
    Ready(Vec<u8>),
    /// Completes with an encoded response frame.
    Pending(Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'static>>),
}

/// Settings the broker needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub hub_id: String,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub frame_bytes_max: u32,
    pub batch_bytes_max: u32,
    pub inflight_max: u32,
    /// Most topics, and most partitions of all topics together
    /// ([`crate::config::Limits`]).
    pub topics_max: usize,
    pub partitions_total_max: u64,
}

/// Counters of the broker (for metrics and the bench).
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub batches_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Fetches currently long-polling for data (a gauge).
    pub fetches_waiting: AtomicU64,
    /// Times a parked long-poll was woken to look again (a counter): a
    /// flush round wakes only the long-polls of partitions it made durable.
    pub fetch_wakeups: AtomicU64,
    /// Idempotent resends answered with their original offsets.
    pub duplicates: AtomicU64,
    /// Error responses sent, by code (the connection layer counts its own
    /// protocol errors here too).
    pub errors: ErrorCounts,
    /// Traffic per topic; an entry lives as long as its topic.
    topics: RwLock<HashMap<String, Arc<TopicTraffic>>>,
}

/// Traffic of one topic since the server started.
#[derive(Debug, Default)]
pub struct TopicTraffic {
    /// Records and bytes (as produced, on the wire) appended.
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Records and bytes of the batches sent to consumers.
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl BrokerStats {
    /// The counters of `topic`, created on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicTraffic> {
        if let Some(t) = self.topics.read().expect("traffic lock").get(topic) {
            return t.clone();
        }
        let mut topics = self.topics.write().expect("traffic lock");
        topics.entry(topic.to_string()).or_default().clone()
    }

    /// Every topic's counters, sorted by topic name.
    pub fn topics(&self) -> Vec<(String, Arc<TopicTraffic>)> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .expect("traffic lock")
            .iter()
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn forget_topic(&self, topic: &str) {
        self.topics.write().expect("traffic lock").remove(topic);
    }
}

/// Error responses by code. Errors are the exception, so a short locked
/// list is enough; it has at most one entry per [`ErrorCode`].
#[derive(Debug, Default)]
pub struct ErrorCounts(Mutex<Vec<(ErrorCode, u64)>>);

impl ErrorCounts {
    /// Counts one error response with `code`.
    pub fn count(&self, code: ErrorCode) {
        let mut counts = self.0.lock().expect("error counts lock");
        match counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => counts.push((code, 1)),
        }
    }

    /// Every code seen so far and its count.
    pub fn snapshot(&self) -> Vec<(ErrorCode, u64)> {
        self.0.lock().expect("error counts lock").clone()
    }
}

/// Counts a waiting fetch for as long as it lives.
struct WaitingFetch<'a>(&'a AtomicU64);

impl<'a> WaitingFetch<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        WaitingFetch(gauge)
    }
}

impl Drop for WaitingFetch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared by every connection.
pub struct Broker {
    storage: Arc<Storage>,
    config: BrokerConfig,
    shutdown: Arc<Shutdown>,
    pub stats: BrokerStats,
    /// Consumer groups.
    coordinator: groups::Coordinator,
    /// Per-partition producers of producer sessions (Kafka's idempotent
    /// producers).
    producer_sessions: producer_sessions::ProducerSessions,
    /// The ACL in force; `None`: ACLs off ([`Broker::handle_as`]).
    acl: Option<Arc<crate::acl::AclStore>>,
    /// Bounds the denial log lines.
    denial_log: crate::log_limit::LogLimiter,
    /// The mirror's state, when the hub has mirror links.
    mirror: OnceLock<Arc<MirrorState>>,
    /// Serialises topic creation, so the topic and partition limits are
    /// checked against a count no other create is changing.
    create_lock: smol::lock::Mutex<()>,
}

/// A failed request: code and message.
type Failure = (ErrorCode, String);

impl Broker {
    pub fn new(storage: Arc<Storage>, config: BrokerConfig, shutdown: Arc<Shutdown>) -> Broker {
        let coordinator = groups::Coordinator::new(storage.clone(), Arc::new(now_ms));
        Broker {
            storage,
            config,
            shutdown,
            stats: BrokerStats::default(),
            coordinator,
            producer_sessions: producer_sessions::ProducerSessions::default(),
            acl: None,
            denial_log: crate::log_limit::LogLimiter::new(),
            mirror: OnceLock::new(),
            create_lock: smol::lock::Mutex::new(()),
        }
    }

    /// Turns ACLs on: every request through [`Broker::handle_as`] is checked
    /// against `acl`'s rules in force at that moment.
    pub fn with_acl(mut self, acl: Option<Arc<crate::acl::AclStore>>) -> Broker {
        self.acl = acl;
        self
    }

    /// Connects the mirror's state (`acks=mirrored`, `mirrored`
    /// watermarks, `MirrorStatus`). Once, at start.
    pub fn attach_mirror(&self, state: Arc<MirrorState>) {
        let _ = self.mirror.set(state);
    }

    /// The mirror's state, if the hub has mirror links.
    pub fn mirror(&self) -> Option<&Arc<MirrorState>> {
        self.mirror.get()
    }

    /// Settings in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The storage this broker writes to.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The answer to a `Hello`.
    pub fn hello_ok(&self) -> HelloOk<'_> {
        HelloOk {
            protocol_version: wire::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION"),
            hub_id: &self.config.hub_id,
            frame_bytes_max: self.config.frame_bytes_max,
            batch_bytes_max: self.config.batch_bytes_max,
            inflight_max: self.config.inflight_max,
        }
    }

    /// Handles one request (not `Hello`, which the connection handles) for
    /// `caller`, whose ACL check passed ([`Broker::handle_as`]).
    async fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        correlation_id: u32,
        request: Request<'_>,
    ) -> Reply {
        let result = match request {
            Request::Hello(_) => Err((
                ErrorCode::InvalidRequest,
                "Hello may only be sent once, first".to_string(),
            )),
            Request::Ping(ping) => Ok(Reply::Ready(encode(correlation_id, Response::Pong(ping)))),
            Request::Produce(p) => self.produce(caller, correlation_id, &p).await,
            Request::Fetch(f) => self.fetch(caller, correlation_id, &f).await,
            Request::Metadata(m) => Ok(Reply::Ready(self.metadata(correlation_id, &m))),
            Request::CreateTopic(c) => self.create_topic(correlation_id, &c).await,
            Request::DeleteTopic(t) => self
                .delete_topic_named(t.topic)
                .await
                .map(|()| Reply::Ready(encode(correlation_id, Response::Deleted)))
                .map_err(Failure::from),
            Request::DescribeTopic(t) => self.describe_topic(correlation_id, t.topic),
            Request::Watermarks(t) => self.watermarks(correlation_id, t.topic),
            Request::GroupHeartbeat(h) => self.group_heartbeat(correlation_id, &h),
            Request::CommitOffsets(c) => self.commit_offsets(correlation_id, &c).await,
            Request::FetchOffsets(f) => self.fetch_offsets(correlation_id, &f, &|_| true).await,
            Request::ListGroups => self.list_groups_visible(correlation_id, &|_| true).await,
            Request::DescribeGroup(g) => {
                self.describe_group(correlation_id, g.group, &|_| true)
                    .await
            }
            Request::DeleteGroup(g) => self.delete_group(correlation_id, g.group).await,
            Request::AlterTopicConfig(a) => self.alter_topic_config(correlation_id, &a).await,
            Request::TopicStats(t) => self.topic_stats(correlation_id, t.topic),
            Request::OffsetsForTimestamp(o) => self.offsets_for_timestamp(correlation_id, &o).await,
            Request::InitProducer(i) => {
                self.init_producer(&caller.identity, correlation_id, i.name)
                    .await
            }
            Request::MirrorProduce(m) => self.mirror_produce(correlation_id, &m).await,
            Request::MirrorStatus => Ok(Reply::Ready(self.mirror_status(correlation_id))),
        };
        result.unwrap_or_else(|(code, message)| {
            self.stats.errors.count(code);
            Reply::Ready(error_frame(correlation_id, code, &message))
        })
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, Failure> {
        self.storage.topic(name).ok_or_else(|| unknown_topic(name))
    }

    /// Creates a topic on the blocking pool (never on the executor
    /// threads), unless it would take the hub past `topics_max` or
    /// `partitions_total_max`: `Err(Ok(refusal))` then, `Err(Err(_))` when
    /// storage fails.
    async fn create_within_limits(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<(String, String)>,
    ) -> Result<Arc<Topic>, Result<Failure, StorageError>> {
        let _creating = self.create_lock.lock().await;
        let topics = self.storage.topics();
        if topics.iter().any(|t| t.meta.name == name) {
            return Err(Err(StorageError::TopicExists(name.to_string())));
        }
        if topics.len() >= self.config.topics_max {
            return Err(Ok((
                ErrorCode::InvalidRequest,
                format!(
                    "the hub has {} topics, its limit (limits.topics_max): delete one or raise the limit",
                    topics.len()
                ),
            )));
        }
        let total: u64 = topics.iter().map(|t| u64::from(t.partition_count())).sum();
        if total + u64::from(partitions) > self.config.partitions_total_max {
            return Err(Ok((
                ErrorCode::InvalidRequest,
                format!(
                    "{partitions} more partitions would make {} in all, over the limit of {} (limits.partitions_total_max): use fewer, delete a topic or raise the limit",
                    total + u64::from(partitions),
                    self.config.partitions_total_max
                ),
            )));
        }
        let storage = self.storage.clone();
        let owned = name.to_string();
        smol::unblock(move || storage.create_topic(&owned, partitions, configs, now_ms()))
            .await
            .map_err(Err)
    }

    async fn produce(
        self: &Arc<Self>,
        caller: &Caller,
        correlation_id: u32,
        p: &Produce<'_>,
    ) -> Result<Reply, Failure> {
        let len = p.batch.len();
        if len > usize::try_from(self.config.batch_bytes_max).unwrap_or(usize::MAX) {
            return Err((
                ErrorCode::RecordTooLarge,
                format!(
                    "batch of {len} bytes exceeds batch_bytes_max ({})",
                    self.config.batch_bytes_max
                ),
            ));
        }
        // Checked before the topic is looked up: a corrupt batch must not
        // auto-create a topic; nor may a header that lies about its records.
        let batch = Batch::parse(p.batch).map_err(corrupt)?;
        batch.validate_produced().map_err(corrupt)?;
        let topic = self.topic_or_create(p.topic).await?;
        if p.acks == Acks::Mirrored {
            self.check_mirrored(&topic)?;
        }
        if let Some(source) = &topic.config().mirror_source {
            return Err(mirror::written_by_mirror(&topic.meta.name, source));
        }
        let mirrored_topic = (p.acks == Acks::Mirrored).then(|| topic.clone());
        let Appended { landed, waits } = self
            .append_batch(&caller.identity, &topic, &batch, p.batch, p.partition)
            .await?;
        let acks = landed
            .into_iter()
            .map(|l| PartitionAck {
                partition: l.partition,
                base_offset: l.base_offset,
                record_count: l.record_count,
            })
            .collect();
        let produced = Produced { partitions: acks };
        if let Some(topic) = mirrored_topic {
            let timeout =
                Duration::from_millis(u64::from(p.timeout_ms.min(PRODUCE_TIMEOUT_MS_MAX)));
            return Ok(self.wait_mirrored_reply(correlation_id, topic, produced, waits, timeout));
        }
        if p.acks == Acks::Received || waits.iter().all(|(log, end)| log.durable_end() >= *end) {
            return Ok(Reply::Ready(encode(
                correlation_id,
                Response::Produced(produced),
            )));
        }
        let timeout = Duration::from_millis(u64::from(p.timeout_ms.min(PRODUCE_TIMEOUT_MS_MAX)));
        let broker = self.clone();
        Ok(Reply::Pending(Box::pin(async move {
            match broker.wait_durable(&waits, timeout).await {
                Ok(()) => encode(correlation_id, Response::Produced(produced)),
                Err(e) => {
                    let (code, message) = Failure::from(e);
                    broker.stats.errors.count(code);
                    error_frame(correlation_id, code, &message)
                }
            }
        })))
    }

    /// Maps a stable producer name to its id and a new epoch; answers once
    /// that is fsynced (group commit), so an id a device was given survives
    /// a crash of the hub.
    async fn init_producer(
        &self,
        owner: &Arc<str>,
        correlation_id: u32,
        name: &str,
    ) -> Result<Reply, Failure> {
        if !wire::producer::is_valid_producer_name(name) {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "producer name must be 1–{} bytes (a stable device id)",
                    wire::producer::PRODUCER_NAME_BYTES_MAX
                ),
            ));
        }
        let storage = self.storage.clone();
        let (owner, owned) = (owner.clone(), name.to_string());
        let (init, ticket) = smol::unblock(move || storage.init_producer(&owner, &owned))
            .await
            .map_err(failure)?;
        loop {
            let listener = self.storage.durable_event().listen();
            if self.storage.is_committed(ticket) {
                break;
            }
            self.storage.check_healthy().map_err(failure)?;
            listener.await;
        }
        log::debug!(
            "producer {name:?} is id {} epoch {} (next sequence {})",
            init.producer_id,
            init.producer_epoch,
            init.next_sequence
        );
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::ProducerInit(init),
        )))
    }

    /// Reads at once; with nothing to read and a wait asked for, parks until
    /// a wanted partition's durable end moves past the fetched offset. Each
    /// read first reserves the most its answer may carry from the caller's
    /// [`AnswerBudget`] (a parked fetch holds no reservation).
    async fn fetch(
        self: &Arc<Self>,
        caller: &Caller,
        correlation_id: u32,
        f: &Fetch<'_>,
    ) -> Result<Reply, Failure> {
        let topic = self.topic(f.topic)?;
        if f.partitions.is_empty() {
            return Err((ErrorCode::InvalidRequest, "fetch names no partition".into()));
        }
        if f.partitions.len() > usize::try_from(topic.partition_count()).unwrap_or(usize::MAX) {
            return Err((
                ErrorCode::InvalidRequest,
                "fetch names more partitions than the topic has".into(),
            ));
        }
        let cap = self
            .config
            .frame_bytes_max
            .saturating_sub(FETCH_RESPONSE_OVERHEAD_BYTES);
        let max_bytes = usize::try_from(f.max_bytes.clamp(1, cap)).unwrap_or(usize::MAX);
        let wants: Vec<FetchPartition> = f.partitions.to_vec();
        let answer_max = max_bytes.saturating_add(FETCH_RESPONSE_OVERHEAD_BYTES as usize);
        let answers = caller.answers.clone();
        let reservation = answers.reserve(answer_max).await;
        let (topic, wants, first) = read_partitions(topic, wants, max_bytes).await;
        let wait_ms = f.max_wait_ms.min(FETCH_WAIT_MS_MAX);
        if wait_ms == 0
            || first
                .iter()
                .any(|r| r.error.is_some() || !r.bytes.is_empty())
        {
            return Ok(Reply::Ready(self.encode_fetched(
                correlation_id,
                &topic.meta.name,
                &first,
            )));
        }
        drop(reservation);
        let broker = self.clone();
        Ok(Reply::Pending(Box::pin(async move {
            let deadline = Instant::now() + Duration::from_millis(u64::from(wait_ms));
            let has_data = || {
                wants.iter().any(|w| {
                    topic
                        .partition(w.partition)
                        .is_some_and(|log| log.durable_end() > w.offset)
                })
            };
            let logs: Vec<_> = wants
                .iter()
                .filter_map(|w| topic.partition(w.partition).cloned())
                .collect();
            broker.wait_for_data(&logs, has_data, deadline).await;
            let _reservation = answers.reserve(answer_max).await;
            let (topic, _, results) = read_partitions(topic, wants, max_bytes).await;
            broker.encode_fetched(correlation_id, &topic.meta.name, &results)
        })))
    }

    fn encode_fetched(
        &self,
        correlation_id: u32,
        topic: &str,
        results: &[PartitionRead],
    ) -> Vec<u8> {
        let mut bytes_out = 0;
        let mut batches_out = 0;
        let mut records_out = 0;
        let partitions = results
            .iter()
            .map(|r| {
                bytes_out += r.bytes.len() as u64;
                batches_out += u64::from(!r.bytes.is_empty());
                records_out += records_in(&r.bytes);
                FetchedPartition {
                    partition: r.partition,
                    error: r.error,
                    log_start: r.log_start,
                    high_watermark: r.high_watermark,
                    batches: &r.bytes,
                }
            })
            .collect();
        self.stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if bytes_out > 0 {
            let traffic = self.stats.topic(topic);
            traffic.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
            traffic
                .records_out
                .fetch_add(records_out, Ordering::Relaxed);
        }
        self.stats
            .batches_out
            .fetch_add(batches_out, Ordering::Relaxed);
        encode(correlation_id, Response::Fetched(Fetched { partitions }))
    }

    fn metadata(&self, correlation_id: u32, m: &Metadata<'_>) -> Vec<u8> {
        self.metadata_visible(correlation_id, m, &|_| true)
    }

    /// Metadata of the topics `visible` lets through.
    fn metadata_visible(
        &self,
        correlation_id: u32,
        m: &Metadata<'_>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<u8> {
        let mut topics = if m.topics.is_empty() {
            self.storage.topics()
        } else {
            m.topics
                .iter()
                .filter_map(|name| self.storage.topic(name))
                .collect()
        };
        topics.retain(|t| visible(&t.meta.name));
        let summaries = topics
            .iter()
            .map(|t| TopicSummary {
                name: &t.meta.name,
                partitions: t.partition_count(),
            })
            .collect();
        encode(
            correlation_id,
            Response::Metadata(MetadataReply {
                hub_id: &self.config.hub_id,
                topics: summaries,
            }),
        )
    }

    async fn create_topic(
        &self,
        correlation_id: u32,
        c: &CreateTopic<'_>,
    ) -> Result<Reply, Failure> {
        let configs: Vec<(String, String)> = c
            .configs
            .iter()
            .map(|e| (e.name.to_string(), e.value.to_string()))
            .collect();
        let topic = self
            .create_topic_checked(c.name, c.partitions, configs, false)
            .await?
            .ok_or_else(|| unknown_topic(c.name))?;
        Ok(Reply::Ready(encode_description(
            correlation_id,
            &topic,
            self.mirror(),
        )))
    }

    fn describe_topic(&self, correlation_id: u32, name: &str) -> Result<Reply, Failure> {
        let topic = self.topic(name)?;
        Ok(Reply::Ready(encode_description(
            correlation_id,
            &topic,
            self.mirror(),
        )))
    }

    fn watermarks(&self, correlation_id: u32, name: &str) -> Result<Reply, Failure> {
        let topic = self.topic(name)?;
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::Watermarks(partition_watermarks(&topic, self.mirror())),
        )))
    }
}

/// Completes when any of `listeners` is notified.
pub(super) async fn any_of(mut listeners: Vec<event_listener::EventListener>) {
    std::future::poll_fn(|cx| {
        for listener in &mut listeners {
            if std::pin::Pin::new(listener).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Records in concatenated batches, from their headers (storage checked
/// them when it read them).
fn records_in(mut batches: &[u8]) -> u64 {
    let mut records = 0;
    while let Ok(len) = batch_len(batches) {
        if let Ok(header) = BatchHeader::read(batches) {
            records += u64::from(header.record_count);
        }
        batches = &batches[len..];
    }
    records
}

/// What one partition of a fetch read.
struct PartitionRead {
    partition: u32,
    error: Option<ErrorCode>,
    log_start: u64,
    high_watermark: u64,
    bytes: Vec<u8>,
}

/// [`read_partitions_blocking`] on the blocking pool; hands the inputs back.
async fn read_partitions(
    topic: Arc<Topic>,
    wants: Vec<FetchPartition>,
    max_bytes: usize,
) -> (Arc<Topic>, Vec<FetchPartition>, Vec<PartitionRead>) {
    smol::unblock(move || {
        let reads = read_partitions_blocking(&topic, &wants, max_bytes);
        (topic, wants, reads)
    })
    .await
}

/// Reads each wanted partition until `max_bytes` are gathered; the first
/// batch found is returned even when larger.
fn read_partitions_blocking(
    topic: &Topic,
    wants: &[FetchPartition],
    max_bytes: usize,
) -> Vec<PartitionRead> {
    let mut total = 0usize;
    wants
        .iter()
        .map(|w| {
            let Some(log) = topic.partition(w.partition) else {
                return PartitionRead {
                    partition: w.partition,
                    error: Some(ErrorCode::UnknownPartition),
                    log_start: 0,
                    high_watermark: 0,
                    bytes: Vec::new(),
                };
            };
            let marks = log.watermarks();
            let mut read = PartitionRead {
                partition: w.partition,
                error: None,
                log_start: marks.log_start,
                high_watermark: marks.durable,
                bytes: Vec::new(),
            };
            // Once the budget is spent, the remaining partitions report
            // watermarks only (the first batch overall may exceed it).
            let budget = if total == 0 {
                max_bytes
            } else {
                max_bytes.saturating_sub(total)
            };
            if budget == 0 || (total > 0 && total >= max_bytes) {
                return read;
            }
            match log.read(w.offset, budget, &mut read.bytes) {
                Ok(outcome) => {
                    read.log_start = outcome.log_start;
                    read.high_watermark = outcome.high_watermark;
                    total += outcome.bytes;
                }
                Err(StorageError::OffsetOutOfRange {
                    log_start,
                    high_watermark,
                    ..
                }) => {
                    read.error = Some(ErrorCode::OffsetOutOfRange);
                    read.log_start = log_start;
                    read.high_watermark = high_watermark;
                }
                Err(e) => {
                    log::error!(
                        "fetch {}/{} at {}: {e}",
                        topic.meta.name,
                        w.partition,
                        w.offset
                    );
                    read.error = Some(failure(e).0);
                }
            }
            read
        })
        .collect()
}

fn partition_watermarks<'a>(
    topic: &Topic,
    mirror: Option<&'a Arc<MirrorState>>,
) -> Vec<PartitionWatermarks<'a>> {
    topic
        .partitions()
        .iter()
        .map(|log| {
            let m = log.watermarks();
            PartitionWatermarks {
                partition: log.partition(),
                log_start: m.log_start,
                log_end: m.log_end,
                durable: m.durable,
                mirrored: mirror
                    .map(|state| {
                        state
                            .watermarks(topic, log.partition())
                            .into_iter()
                            .map(|(link, offset)| MirrorWatermark { link, offset })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

pub(crate) fn encode_description(
    correlation_id: u32,
    topic: &Topic,
    mirror: Option<&Arc<MirrorState>>,
) -> Vec<u8> {
    let configs = topic
        .meta
        .configs
        .iter()
        .map(|(n, v)| ConfigEntry { name: n, value: v })
        .collect();
    encode(
        correlation_id,
        Response::Topic(TopicDescription {
            name: &topic.meta.name,
            partitions: topic.partition_count(),
            created_ms: topic.meta.created_ms,
            configs,
            watermarks: partition_watermarks(topic, mirror),
        }),
    )
}

fn unknown_topic(name: &str) -> Failure {
    (
        ErrorCode::UnknownTopic,
        format!("no topic named {name:?}; create it with `eddy topics create {name}`"),
    )
}

fn corrupt(e: BatchError) -> Failure {
    (ErrorCode::CorruptBatch, format!("batch rejected: {e}"))
}

/// Maps a storage error to its wire code and message.
pub fn failure(e: StorageError) -> Failure {
    let code = ops::storage_code(&e);
    // A full disk budget or free-space reserve is policy, answered to the
    // producer (and logged once when it starts refusing), not a fault to
    // log per request.
    let budget = matches!(
        e,
        StorageError::BudgetFull { .. } | StorageError::DiskReserve { .. }
    );
    if code == ErrorCode::StorageError || (code == ErrorCode::DiskFull && !budget) {
        log::error!("{e}");
    }
    (code, e.to_string())
}

/// Encodes a response frame.
pub fn encode(correlation_id: u32, response: Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_response(
        &ResponseFrame {
            correlation_id,
            response,
        },
        &mut out,
    );
    out
}

/// Encodes an error response frame.
pub fn error_frame(correlation_id: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    encode(
        correlation_id,
        Response::Error(ErrorReply { code, message }),
    )
}
