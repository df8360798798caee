//! One link's task: sessions with the upstream, retried with backoff, each
//! forwarding durable batches in topic-priority order.
//!
//! A session: connect (bulk and a liveness connection), set up every
//! selected topic upstream and learn where each partition stands there
//! (that, not the local cursor, is where sending resumes), then pump:
//! read up to `request_bytes_max` from the highest-priority partition that
//! has durable data not yet sent (round robin within a priority), convert
//! it on the blocking pool, send it (at most `inflight_max` requests in
//! flight, under the optional bandwidth cap), and as the upstream
//! acknowledges, in order, advance the `mirrored` watermark, the durable
//! cursor and `keep_from`. New local topics are picked up every
//! [`TOPIC_SCAN_MS`]. Any failure (an error, a request or ping timeout)
//! ends the session; the next one starts from the upstream's tails again.
//!
//! Only durable records are forwarded: a record the upstream has can never
//! be lost here in a crash and its offset reassigned.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::backoff::Backoff;
use super::chain::{self, ChainInputs};
use super::eddy::EddySession;
use super::kafka::{KafkaPinger, KafkaSession, UNKNOWN_PRODUCER_ID};
use super::records::{to_kafka, BatchContext};
use super::state::{LinkState, MirrorState, PartitionProgress};
use super::throttle::Throttle;
use super::{MirrorError, UpstreamEnd};
use crate::client::Client;
use crate::config::mirror::UpstreamKind;
use crate::shutdown::Shutdown;
use crate::storage::{MirrorCursor, PartitionLog, ProducerChain, Storage, StorageError, Topic};
use crate::wire::batch::{batch_len, clear_producer, BatchHeader};
use crate::wire::producer::sequence_after;
use crate::wire::MirrorLinkState;

/// How often a session looks for new (or deleted) local topics, in ms.
pub const TOPIC_SCAN_MS: u64 = 1_000;
/// How long a topic whose upstream set-up failed waits before the next
/// attempt within a session, in ms.
pub const TOPIC_RETRY_MS: u64 = 30_000;

/// Runs the link until shutdown.
pub(super) async fn run(
    state: Arc<MirrorState>,
    link: Arc<LinkState>,
    storage: Arc<Storage>,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: Arc<Shutdown>,
) {
    let config = &link.config;
    let mut backoff = Backoff::new(config.backoff_min_ms, config.backoff_max_ms);
    // Kafka partitions whose producer the upstream said it does not know.
    let mut unknown_producers: HashSet<(String, u32)> = HashSet::new();
    while !shutdown.is_triggered() {
        if let Err(e) = track_local(&state, &link, &storage) {
            log::warn!("mirror link {}: {e}", link.name());
        }
        link.set_state(MirrorLinkState::Connecting);
        let mut driver = Driver {
            state: state.clone(),
            link: link.clone(),
            storage: storage.clone(),
            parts: Vec::new(),
            topics: HashMap::new(),
            rr: 0,
            progressed: false,
            throttle: None,
            unknown_producers: std::mem::take(&mut unknown_producers),
            fresh_producer: None,
        };
        let outcome = smol::future::or(driver.session(tls.clone()), async {
            shutdown.wait().await;
            Ok(())
        })
        .await;
        unknown_producers = std::mem::take(&mut driver.unknown_producers);
        let Err(e) = outcome else {
            break;
        };
        if let MirrorError::ProducerState {
            topic,
            partition,
            code: UNKNOWN_PRODUCER_ID,
            ..
        } = &e
        {
            // The broker no longer knows the partition's producer (it
            // expired, or its batches were removed): the next session
            // starts a fresh chain there (see `chain`).
            unknown_producers.insert((topic.clone(), *partition));
        }
        link.reconnects.fetch_add(1, Ordering::Relaxed);
        link.set_error(e.to_string());
        link.set_state(MirrorLinkState::Down);
        if driver.progressed {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        log::warn!(
            "mirror link {} to {}: {e}; next attempt in {} ms",
            link.name(),
            config.url,
            delay.as_millis()
        );
        // While waiting, keep the status (lag of new topics) current.
        let retry_at = Instant::now() + delay;
        while !shutdown.is_triggered() && Instant::now() < retry_at {
            let step = retry_at.min(Instant::now() + Duration::from_millis(TOPIC_SCAN_MS));
            smol::future::or(
                async {
                    smol::Timer::at(step).await;
                },
                shutdown.wait(),
            )
            .await;
            if let Err(e) = track_local(&state, &link, &storage) {
                log::warn!("mirror link {}: {e}", link.name());
            }
        }
    }
}

/// Starts tracking the link's selected local topics it does not track yet
/// (from the durable cursor, else the log start) and forgets deleted ones;
/// needs no upstream.
pub(super) fn track_local(
    state: &MirrorState,
    link: &LinkState,
    storage: &Storage,
) -> Result<(), StorageError> {
    let topics = storage.topics();
    for name in link.tracked_topics() {
        if !topics.iter().any(|t| t.meta.name == name) {
            link.forget_topic(&name);
        }
    }
    for topic in topics {
        if !link.selector.selects(&topic.meta.name) {
            continue;
        }
        let upstream = link.config.upstream_topic(&state.hub_id, &topic.meta.name);
        for log in topic.partitions() {
            let p = log.partition();
            if link
                .progress(&topic.meta.name, p)
                .is_some_and(|progress| progress.topic_id == topic.meta.id)
            {
                continue;
            }
            let cursor = storage.mirror_cursor(link.name(), &topic, p)?;
            let start = match cursor {
                Some(cursor) => cursor.offset,
                None => {
                    // From here on, whatever is removed before the link
                    // forwards it counts as dropped (also after a restart).
                    let start = log.watermarks().log_start;
                    let cursor = MirrorCursor {
                        offset: start,
                        chain: None,
                    };
                    storage.save_mirror_cursor(link.name(), &topic, p, cursor)?;
                    start
                }
            };
            let progress = link.track(&topic, log, &upstream, start);
            state.update_keep_from(&progress);
        }
    }
    Ok(())
}

/// The upstream of a session.
enum Upstream {
    Eddy(EddySession),
    Kafka(Box<KafkaSession>),
}

/// The liveness probe of a session.
enum Pinger {
    Eddy(Arc<Client>),
    Kafka(KafkaPinger),
}

impl Pinger {
    async fn ping(&mut self) -> Result<(), MirrorError> {
        match self {
            Pinger::Eddy(client) => client.ping().await.map(|_| ()).map_err(Into::into),
            Pinger::Kafka(pinger) => pinger.ping().await,
        }
    }
}

/// One partition being forwarded in this session.
struct Part {
    topic: Arc<Topic>,
    log: Arc<PartitionLog>,
    progress: Arc<PartitionProgress>,
    upstream: Arc<str>,
    priority: u8,
    /// The next offset to read and send.
    next_send: u64,
    /// The durable end at which a read found nothing to send (not ready
    /// again until the durable end moves).
    idle_at: u64,
    /// The upstream had appended up to here when the session began, but
    /// not yet durably: `mirrored` catches up once its durable end (or an
    /// acknowledgement) passes it ([`Driver::catch_up`]).
    not_durable_upstream: Option<u64>,
    /// `kafka://`: the idempotent producer and the sequence of the next
    /// record sent ([`super::chain`]).
    chain: Option<ProducerChain>,
}

/// Where a partition resumes: `(send_from, acked)`. The upstream decides
/// (sending resumes at what it has, only what it has durably counts as
/// acknowledged); an empty one continues after the local cursor (nothing
/// before it may be stored here any more), else from the log start.
fn resume_point(upstream: Option<UpstreamEnd>, cursor: Option<u64>, log_start: u64) -> (u64, u64) {
    match upstream {
        Some(at) => (at.send_from, at.durable.min(at.send_from)),
        None => {
            let start = cursor.unwrap_or(log_start);
            (start, start)
        }
    }
}

/// A topic of the session and whether its set-up failed.
struct TopicEntry {
    id: u64,
    failed_at: Option<Instant>,
}

/// What was read from a partition for one request.
enum Read {
    /// Whole stored batches from `from`, up to `end`.
    Batches {
        bytes: Vec<u8>,
        end: u64,
        records: u64,
    },
    /// `from` is below the log start: records up to `log_start` were
    /// removed before this link forwarded them.
    Dropped { log_start: u64 },
    /// Nothing durable at `from` (yet).
    Nothing,
}

/// A request in flight (or a part done without a request).
struct Inflight {
    progress: Arc<PartitionProgress>,
    topic: Arc<Topic>,
    end: u64,
    /// `kafka://`: the partition's producer chain after this request (kept
    /// with the cursor once acknowledged).
    chain: Option<ProducerChain>,
    records: u64,
    bytes: u64,
    task: Option<smol::Task<Result<(), MirrorError>>>,
}

struct Driver {
    state: Arc<MirrorState>,
    link: Arc<LinkState>,
    storage: Arc<Storage>,
    /// Sorted by priority, highest first.
    parts: Vec<Part>,
    topics: HashMap<String, TopicEntry>,
    /// Round-robin position (an index into `parts`).
    rr: usize,
    /// Whether the upstream acknowledged anything in this session.
    progressed: bool,
    throttle: Option<Throttle>,
    /// Kafka partitions (upstream topic, partition) that must start a
    /// fresh producer chain (carried from session to session).
    unknown_producers: HashSet<(String, u32)>,
    /// The producer id this session obtained for fresh chains.
    fresh_producer: Option<(i64, i16)>,
}

impl Driver {
    async fn session(&mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Result<(), MirrorError> {
        let config = self.link.config.clone();
        let hub = self.state.hub_id.clone();
        // Failures noticed off the pump: a ping that fails, a lost connection.
        let (fail_tx, fail_rx) = smol::channel::bounded::<MirrorError>(1);
        let (mut upstream, pinger) = match config.kind {
            UpstreamKind::Eddy => {
                let session = EddySession::connect(&config, tls, &hub).await?;
                let pinger = Pinger::Eddy(session.control());
                (Upstream::Eddy(session), pinger)
            }
            UpstreamKind::Kafka => {
                let (session, pinger) =
                    KafkaSession::connect(&config, tls, &hub, fail_tx.clone()).await?;
                (Upstream::Kafka(Box::new(session)), Pinger::Kafka(pinger))
            }
        };
        let interval = Duration::from_millis(config.ping_interval_ms);
        let timeout_ms = config.ping_timeout_ms;
        let _pinger = smol::spawn(async move {
            let mut pinger = pinger;
            loop {
                smol::Timer::after(interval).await;
                let answered = smol::future::or(pinger.ping(), async {
                    smol::Timer::after(Duration::from_millis(timeout_ms)).await;
                    Err(MirrorError::Timeout {
                        what: "a ping".into(),
                        ms: timeout_ms,
                    })
                })
                .await;
                if let Err(e) = answered {
                    let _ = fail_tx.try_send(e);
                    return;
                }
            }
        });
        if config.bandwidth_bytes_per_s > 0 {
            self.throttle = Some(Throttle::new(
                config.bandwidth_bytes_per_s,
                u64::from(config.request_bytes_max),
                Instant::now(),
            ));
        }
        // Whatever the session waits on (a topic's set-up, a write into a
        // full socket buffer of a stalled link, an answer), a failed ping
        // or a lost connection ends it.
        let work = async {
            self.scan(&mut upstream).await?;
            self.link.set_state(MirrorLinkState::Up);
            log::info!(
                "mirror link {} to {} is up ({} partitions)",
                self.link.name(),
                config.url,
                self.parts.len()
            );
            self.pump(&mut upstream, &fail_rx).await
        };
        smol::future::or(work, async {
            Err(fail_rx
                .recv()
                .await
                .unwrap_or_else(|_| MirrorError::Upstream("liveness check stopped".into())))
        })
        .await
    }

    /// Sets up selected local topics that the session does not forward yet
    /// and drops deleted ones.
    async fn scan(&mut self, upstream: &mut Upstream) -> Result<(), MirrorError> {
        // The status shows every selected topic, set up upstream or not.
        track_local(&self.state, &self.link, &self.storage)?;
        let hub = self.state.hub_id.clone();
        let local = self.storage.topics();
        let before = self.parts.len();
        self.parts.retain(|part| {
            local
                .iter()
                .any(|t| t.meta.name == part.topic.meta.name && t.meta.id == part.topic.meta.id)
        });
        for topic in self.link.tracked_topics() {
            if !local.iter().any(|t| t.meta.name == topic) {
                self.link.forget_topic(&topic);
                self.topics.remove(&topic);
            }
        }
        let mut changed = self.parts.len() != before;
        for topic in local {
            let name = topic.meta.name.clone();
            if !self.link.selector.selects(&name) {
                continue;
            }
            match self.topics.get(&name) {
                Some(entry) if entry.id == topic.meta.id && entry.failed_at.is_none() => continue,
                Some(entry)
                    if entry.id == topic.meta.id
                        && entry.failed_at.is_some_and(|at| {
                            at.elapsed() < Duration::from_millis(TOPIC_RETRY_MS)
                        }) =>
                {
                    continue
                }
                _ => {}
            }
            let upstream_name = self.link.config.upstream_topic(&hub, &name);
            let partitions = topic.partition_count();
            let resume = match upstream {
                Upstream::Eddy(s) => s.prepare(&upstream_name, &name, partitions).await,
                Upstream::Kafka(s) => s.prepare(&upstream_name, &name, partitions).await,
            };
            let resume = match resume {
                Ok(resume) => resume,
                Err(e @ MirrorError::Topic { .. }) => {
                    log::warn!("mirror link {}: {e}", self.link.name());
                    self.link.set_error(e.to_string());
                    self.topics.insert(
                        name,
                        TopicEntry {
                            id: topic.meta.id,
                            failed_at: Some(Instant::now()),
                        },
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.parts.retain(|p| p.topic.meta.name != name);
            let upstream_name: Arc<str> = upstream_name.into();
            for log in topic.partitions() {
                let p = log.partition();
                let cursor = self.storage.mirror_cursor(self.link.name(), &topic, p)?;
                let upstream_at = resume
                    .get(usize::try_from(p).unwrap_or(usize::MAX))
                    .copied()
                    .flatten();
                let log_start = log.watermarks().log_start;
                let (send_from, acked) =
                    resume_point(upstream_at, cursor.map(|c| c.offset), log_start);
                let progress = self.link.track(&topic, log, &upstream_name, acked);
                progress.mirrored.store(acked, Ordering::Release);
                self.state.update_keep_from(&progress);
                let chain = match upstream {
                    Upstream::Eddy(_) => None,
                    Upstream::Kafka(s) => {
                        let inputs = ChainInputs {
                            send_from,
                            log_start,
                            tail: upstream_at.and_then(|at| at.tail_chain),
                            cursor,
                            link_producer: self
                                .storage
                                .mirror_producer(&producer_key(&self.link))?,
                            unknown_producer: self
                                .unknown_producers
                                .contains(&(upstream_name.to_string(), p)),
                        };
                        let chain = match chain::choose(&inputs) {
                            Some(chain) => chain,
                            None => {
                                let chain = self
                                    .fresh_chain(s, &topic, p, send_from.max(log_start))
                                    .await?;
                                self.unknown_producers
                                    .remove(&(upstream_name.to_string(), p));
                                chain
                            }
                        };
                        Some(chain)
                    }
                };
                // The cursor moves to what the upstream has (with the chain
                // that continues there), unless it already names where
                // sending really starts (past records removed here) and the
                // chain chosen (a fresh one, just written, or the one
                // recorded there).
                let current = self.storage.mirror_cursor(self.link.name(), &topic, p)?;
                let current_holds = current.is_some_and(|c| {
                    chain.is_some() && c.chain == chain && c.offset == send_from.max(log_start)
                });
                if !current_holds && current.map(|c| c.offset) != Some(acked) {
                    let recorded = MirrorCursor {
                        offset: acked,
                        chain: chain.filter(|_| send_from == acked),
                    };
                    self.storage
                        .save_mirror_cursor(self.link.name(), &topic, p, recorded)?;
                }
                self.parts.push(Part {
                    topic: topic.clone(),
                    log: log.clone(),
                    progress,
                    upstream: upstream_name.clone(),
                    priority: topic.config().priority,
                    next_send: send_from,
                    idle_at: u64::MAX,
                    not_durable_upstream: (acked < send_from).then_some(send_from),
                    chain,
                });
            }
            self.topics.insert(
                name,
                TopicEntry {
                    id: topic.meta.id,
                    failed_at: None,
                },
            );
            changed = true;
        }
        for part in &mut self.parts {
            let priority = part.topic.config().priority;
            changed |= priority != part.priority;
            part.priority = priority;
        }
        if changed {
            self.parts.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then_with(|| a.topic.meta.name.cmp(&b.topic.meta.name))
                    .then_with(|| a.log.partition().cmp(&b.log.partition()))
            });
            self.rr = 0;
        }
        Ok(())
    }

    /// The next partition to send from: the highest priority that has
    /// durable data not yet sent, round robin within it.
    fn pick(&mut self) -> Option<usize> {
        let ready = |p: &Part| {
            let durable = p.log.durable_end();
            p.next_send < durable && durable != p.idle_at
        };
        let first = self.parts.iter().position(ready)?;
        let priority = self.parts[first].priority;
        let level_end = self.parts[first..]
            .iter()
            .position(|p| p.priority != priority)
            .map_or(self.parts.len(), |n| first + n);
        let after = (self.rr.max(first)..level_end).find(|&i| ready(&self.parts[i]));
        let chosen = after.unwrap_or(first);
        self.rr = if chosen + 1 >= level_end {
            first
        } else {
            chosen + 1
        };
        Some(chosen)
    }

    async fn pump(
        &mut self,
        upstream: &mut Upstream,
        failures: &smol::channel::Receiver<MirrorError>,
    ) -> Result<(), MirrorError> {
        let config = self.link.config.clone();
        let inflight_max = usize::try_from(config.inflight_max).unwrap_or(1);
        let request_bytes = match upstream {
            Upstream::Eddy(s) => s.request_bytes_max(),
            Upstream::Kafka(_) => usize::try_from(config.request_bytes_max).unwrap_or(usize::MAX),
        };
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let hub = self.state.hub_id.clone();
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut next_scan = Instant::now() + Duration::from_millis(TOPIC_SCAN_MS);
        loop {
            if Instant::now() >= next_scan {
                self.scan(upstream).await?;
                self.catch_up(upstream).await?;
                next_scan = Instant::now() + Duration::from_millis(TOPIC_SCAN_MS);
            }
            while inflight.len() < inflight_max {
                let Some(i) = self.pick() else { break };
                let part = &mut self.parts[i];
                let from = part.next_send;
                let log = part.log.clone();
                let read = smol::unblock(move || read_from(&log, from, request_bytes)).await?;
                let (bytes, end, records) = match read {
                    Read::Nothing => {
                        part.idle_at = part.log.durable_end();
                        continue;
                    }
                    Read::Dropped { log_start } => {
                        let lost = log_start - from;
                        self.link.dropped_records.fetch_add(lost, Ordering::Relaxed);
                        log::warn!(
                            "mirror link {}: {}/{} offsets {from}..{log_start} were removed here \
                             before they were mirrored (the topic allows on_full.unmirrored=drop, or retention)",
                            self.link.name(),
                            part.topic.meta.name,
                            part.log.partition()
                        );
                        part.next_send = log_start;
                        inflight.push_back(Inflight {
                            progress: part.progress.clone(),
                            topic: part.topic.clone(),
                            end: log_start,
                            chain: part.chain,
                            records: 0,
                            bytes: 0,
                            task: None,
                        });
                        continue;
                    }
                    Read::Batches {
                        bytes,
                        end,
                        records,
                    } => (bytes, end, records),
                };
                part.next_send = end;
                let size = bytes.len() as u64;
                if let Some(throttle) = &mut self.throttle {
                    let wait = throttle.take(size, Instant::now());
                    if !wait.is_zero() {
                        smol::Timer::after(wait).await;
                    }
                }
                let part = &self.parts[i];
                let partition = part.log.partition();
                let (task, chain) = match upstream {
                    Upstream::Eddy(s) => {
                        let cleared = smol::unblock(move || clear_stamps(bytes)).await?;
                        let (task, sent) = s
                            .send(&part.upstream, &part.topic.meta.name, partition, cleared)
                            .await?;
                        self.count_sent(size, sent);
                        (
                            Some(smol::spawn(async move { task.await.map(|_| ()) })),
                            None,
                        )
                    }
                    Upstream::Kafka(s) => {
                        let Some(chain) = part.chain else {
                            return Err(MirrorError::Protocol(format!(
                                "{}/{partition} has no producer chain",
                                part.topic.meta.name
                            )));
                        };
                        let hub = hub.clone();
                        let topic = part.topic.meta.name.clone();
                        let compression = config.compression;
                        let tombstones = part.topic.config().compact;
                        // Batches are encoded one at a time, in send order,
                        // each from the partition's next sequence.
                        let batch = smol::unblock(move || {
                            let context = BatchContext {
                                hub: &hub,
                                topic: &topic,
                                partition,
                                producer_id: chain.producer_id,
                                producer_epoch: chain.producer_epoch,
                                compression,
                                tombstones,
                            };
                            to_kafka(Bytes::from(bytes), from, &context, |_| chain.next_sequence)
                        })
                        .await
                        .map_err(MirrorError::Protocol)?;
                        match batch {
                            // Every record was below `from` (compaction
                            // gaps after a resume): nothing to send.
                            None => (None, Some(chain)),
                            Some(batch) => {
                                let after = ProducerChain {
                                    next_sequence: sequence_after(
                                        chain.next_sequence,
                                        batch.records,
                                    ),
                                    ..chain
                                };
                                let upstream_topic = part.upstream.clone();
                                self.parts[i].chain = Some(after);
                                self.count_sent(size, batch.bytes.len());
                                let task = s.send(&upstream_topic, partition, batch).await?;
                                (
                                    Some(smol::spawn(async move { task.await.map(|_| ()) })),
                                    Some(after),
                                )
                            }
                        }
                    }
                };
                let part = &self.parts[i];
                inflight.push_back(Inflight {
                    progress: part.progress.clone(),
                    topic: part.topic.clone(),
                    end,
                    chain,
                    records,
                    bytes: size,
                    task,
                });
            }
            let Some(front) = inflight.pop_front() else {
                // Idle: wait for new durable data, the next scan or a failure.
                let listener = self.storage.durable_event().listen();
                if self.pick().is_some() {
                    continue;
                }
                let failed = smol::future::or(
                    async {
                        listener.await;
                        None
                    },
                    smol::future::or(
                        async {
                            smol::Timer::at(next_scan).await;
                            None
                        },
                        async { failures.recv().await.ok() },
                    ),
                )
                .await;
                if let Some(e) = failed {
                    return Err(e);
                }
                continue;
            };
            let mut front = front;
            if let Some(task) = front.task.take() {
                let ms = config.request_timeout_ms;
                smol::future::or(
                    task,
                    smol::future::or(
                        async {
                            smol::Timer::after(request_timeout).await;
                            Err(MirrorError::Timeout {
                                what: "a batch".into(),
                                ms,
                            })
                        },
                        async {
                            Err(failures.recv().await.unwrap_or_else(|_| {
                                MirrorError::Upstream("liveness check stopped".into())
                            }))
                        },
                    ),
                )
                .await?;
            }
            self.acknowledged(&front)?;
        }
    }

    /// Counts a request's stored bytes and the payload bytes that carried
    /// them upstream (the compression metrics).
    fn count_sent(&self, raw_bytes: u64, sent_bytes: usize) {
        let link = &self.link;
        link.sent_raw_bytes.fetch_add(raw_bytes, Ordering::Relaxed);
        link.sent_compressed_bytes
            .fetch_add(sent_bytes as u64, Ordering::Relaxed);
    }

    /// A fresh producer chain for a partition that sends from `first`: a
    /// producer id new to the upstream (one per session), made durable
    /// here (with the cursor, and as the link's producer when it has none)
    /// before any batch uses it, so that a later session continues it
    /// rather than start yet another one.
    async fn fresh_chain(
        &mut self,
        session: &mut KafkaSession,
        topic: &Topic,
        partition: u32,
        first: u64,
    ) -> Result<ProducerChain, MirrorError> {
        let (producer_id, producer_epoch) = match self.fresh_producer {
            Some(producer) => producer,
            None => {
                let producer = session.init_producer().await?;
                self.fresh_producer = Some(producer);
                producer
            }
        };
        let chain = ProducerChain {
            producer_id,
            producer_epoch,
            next_sequence: 0,
        };
        let mut ticket = self.storage.save_mirror_cursor(
            self.link.name(),
            topic,
            partition,
            MirrorCursor {
                offset: first,
                chain: Some(chain),
            },
        )?;
        let key = producer_key(&self.link);
        if self.storage.mirror_producer(&key)?.is_none() {
            ticket = self
                .storage
                .save_mirror_producer(&key, producer_id, producer_epoch)?;
        }
        wait_committed(&self.storage, ticket).await?;
        log::info!(
            "mirror link {}: {}/{partition} continues from offset {first} with producer {producer_id} \
             (epoch {producer_epoch}) from sequence 0",
            self.link.name(),
            topic.meta.name
        );
        Ok(chain)
    }

    /// Moves the `mirrored` watermark of partitions that began the session
    /// ahead of the upstream's durable end as that end advances (an
    /// acknowledgement of a later request moves it as well).
    async fn catch_up(&mut self, upstream: &mut Upstream) -> Result<(), MirrorError> {
        let Upstream::Eddy(session) = upstream else {
            return Ok(());
        };
        let mut topics: Vec<Arc<str>> = Vec::new();
        for part in &mut self.parts {
            let Some(target) = part.not_durable_upstream else {
                continue;
            };
            if part.progress.mirrored.load(Ordering::Acquire) >= target {
                part.not_durable_upstream = None;
            } else if !topics.contains(&part.upstream) {
                topics.push(part.upstream.clone());
            }
        }
        for upstream_topic in topics {
            let ends = session.durable_ends(&upstream_topic).await?;
            for i in 0..self.parts.len() {
                let part = &self.parts[i];
                let Some(target) = part.not_durable_upstream else {
                    continue;
                };
                if part.upstream != upstream_topic {
                    continue;
                }
                let partition = part.log.partition();
                let Some(&(_, durable)) = ends.iter().find(|(p, _)| *p == partition) else {
                    continue;
                };
                let reached = durable.min(target);
                if reached > part.progress.mirrored.load(Ordering::Acquire) {
                    let done = Inflight {
                        progress: part.progress.clone(),
                        topic: part.topic.clone(),
                        end: reached,
                        chain: None,
                        records: 0,
                        bytes: 0,
                        task: None,
                    };
                    self.acknowledged(&done)?;
                }
                if durable >= target {
                    self.parts[i].not_durable_upstream = None;
                }
            }
        }
        Ok(())
    }

    /// The upstream has everything of a partition below `done.end`.
    fn acknowledged(&mut self, done: &Inflight) -> Result<(), MirrorError> {
        self.state.advance(&done.progress, done.end);
        self.link
            .records_mirrored
            .fetch_add(done.records, Ordering::Relaxed);
        self.link
            .bytes_mirrored
            .fetch_add(done.bytes, Ordering::Relaxed);
        self.progressed = true;
        let cursor = MirrorCursor {
            offset: done.end,
            chain: done.chain,
        };
        match self.storage.save_mirror_cursor(
            self.link.name(),
            &done.topic,
            done.progress.log.partition(),
            cursor,
        ) {
            Ok(_) => Ok(()),
            // The topic was deleted meanwhile, or storage is closing.
            Err(StorageError::Closed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Under which name storage keeps a link's Kafka producer id: the link's
/// name and upstream, so a link pointed at another cluster starts with a
/// producer id of that cluster's.
fn producer_key(link: &LinkState) -> String {
    format!("{} {}", link.name(), link.config.url)
}

/// Waits until everything written before `ticket` was issued is fsynced.
async fn wait_committed(storage: &Storage, ticket: u64) -> Result<(), MirrorError> {
    loop {
        let listener = storage.durable_event().listen();
        if storage.is_committed(ticket) {
            return Ok(());
        }
        storage.check_healthy()?;
        listener.await;
    }
}

/// Reads whole durable batches from `from` (blocking: sled).
fn read_from(log: &PartitionLog, from: u64, max_bytes: usize) -> Result<Read, StorageError> {
    let mut bytes = Vec::with_capacity(max_bytes.min(4 << 20));
    match log.read(from, max_bytes, &mut bytes) {
        Ok(outcome) if outcome.bytes == 0 => Ok(Read::Nothing),
        Ok(outcome) => Ok(Read::Batches {
            records: count_records(&bytes, from),
            bytes,
            end: outcome.next_offset,
        }),
        Err(StorageError::OffsetOutOfRange { log_start, .. }) if from < log_start => {
            Ok(Read::Dropped { log_start })
        }
        Err(e) => Err(e),
    }
}

/// Records in concatenated batches, from their headers (at or above
/// `from` for a first batch that starts earlier: an estimate by offsets).
fn count_records(mut batches: &[u8], from: u64) -> u64 {
    let mut records = 0u64;
    while let Ok(len) = batch_len(batches) {
        if let Ok(h) = BatchHeader::read(batches) {
            records += if h.base_offset < from {
                h.end_offset().saturating_sub(from)
            } else {
                u64::from(h.record_count)
            };
        }
        batches = &batches[len..];
    }
    records
}

/// Removes the producer stamps of stored batches (the ids are this hub's).
fn clear_stamps(mut bytes: Vec<u8>) -> Result<Vec<u8>, MirrorError> {
    let mut at = 0;
    while at < bytes.len() {
        let len = batch_len(&bytes[at..])
            .map_err(|e| MirrorError::Protocol(format!("stored batch unreadable: {e}")))?;
        clear_producer(&mut bytes[at..at + len])
            .map_err(|e| MirrorError::Protocol(format!("stored batch unreadable: {e}")))?;
        at += len;
    }
    Ok(bytes)
}
