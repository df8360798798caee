//! The SUBSCRIBE flow: a subscription to an MQTT filter reads the eddy
//! topics its routes map to, live from their durable end, or for a
//! persistent session from the positions it committed, and hands every
//! record whose MQTT topic matches the filter to the connection as a
//! [`Delivery`] — whoever produced it (MQTT, native, Kafka).
//!
//! One task per (filter, eddy topic): it fetches durable batches of every
//! partition through the broker, long-polls when there is nothing new, and
//! waits when the connection's delivery queue
//! ([`super::DELIVERIES_QUEUED_MAX`]) is full, so a slow subscriber
//! slows its own reads, nobody else's. Order per partition (per key) is
//! kept. A topic that does not exist yet is read from its start once it
//! appears. Dropping the task's handle (UNSUBSCRIBE, disconnect) stops it.
//!
//! This file reads through the broker and sends to a channel; the
//! connection writes the packets and tracks acknowledgements.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{Message, MessageProps};
use super::routes::{self, HEADER_CONTENT_TYPE, HEADER_PAYLOAD_FORMAT, HEADER_TOPIC};
use crate::broker::Broker;
use crate::storage::Topic;
use crate::wire::batch::{Batches, Record};

/// Most bytes one read of a subscription asks for.
const SUBSCRIPTION_FETCH_BYTES_MAX: usize = 256 << 10;
/// Longest one long poll of a subscription waits before looking again
/// (new partitions, a deleted topic), in ms.
const SUBSCRIPTION_WAIT_MS: u64 = 5_000;

/// A record for the connection to send.
#[derive(Debug)]
pub struct Delivery {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// At the subscription's granted QoS.
    pub message: Message,
}

/// Where a subscription starts in each partition.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Committed positions (persistent session), by partition; partitions
    /// without one start at their durable end.
    pub positions: HashMap<u32, u64>,
}

/// The MQTT message of a stored record, or `None` when its MQTT topic
/// does not match `filter`.
pub(super) fn message_of(
    topic: &str,
    record: &Record<'_>,
    filter: &str,
    qos: u8,
) -> Option<Message> {
    let mut mqtt_topic = None;
    let mut props = MessageProps::default();
    for (name, value) in record.headers.iter().flatten() {
        match name {
            HEADER_TOPIC => mqtt_topic = Some(value),
            HEADER_CONTENT_TYPE => {
                props.content_type = std::str::from_utf8(value).ok().map(str::to_string)
            }
            HEADER_PAYLOAD_FORMAT => {
                props.payload_format = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
            }
            name if name.starts_with("mqtt.") => {}
            name => {
                if let Ok(v) = std::str::from_utf8(value) {
                    props.user.push((name.to_string(), v.to_string()));
                }
            }
        }
    }
    let mqtt_topic = routes::mqtt_topic_of(topic, record.key, mqtt_topic)?;
    if !routes::matches(filter, &mqtt_topic) {
        return None;
    }
    Some(Message {
        topic: mqtt_topic,
        payload: record.value.to_vec(),
        qos,
        retain: false,
        props,
    })
}

/// Runs one subscription until the connection's queue closes.
pub async fn run(
    broker: Arc<Broker>,
    topic_name: String,
    filter: String,
    qos: u8,
    start: Start,
    deliveries: smol::channel::Sender<Delivery>,
) {
    let name: Arc<str> = Arc::from(topic_name.as_str());
    // Positions by partition; a topic created after the subscription is
    // read from its start.
    let mut positions: Vec<u64> = Vec::new();
    let mut existed = broker.topic_named(&topic_name).is_ok();
    loop {
        let deadline = Instant::now() + Duration::from_millis(SUBSCRIPTION_WAIT_MS);
        let Ok(topic) = broker.topic_named(&topic_name) else {
            existed = false;
            broker
                .wait_for_data(&[], || broker.topic_named(&topic_name).is_ok(), deadline)
                .await;
            if deliveries.is_closed() {
                return;
            }
            continue;
        };
        extend_positions(&topic, &mut positions, &start, existed);
        existed = true;
        let wants: Vec<(u32, u64)> = positions
            .iter()
            .enumerate()
            .filter_map(|(p, o)| Some((u32::try_from(p).ok()?, *o)))
            .filter(|(p, o)| {
                topic
                    .partition(*p)
                    .is_some_and(|log| log.durable_end() > *o)
            })
            .collect();
        if wants.is_empty() {
            let has_data = || {
                positions.iter().enumerate().any(|(p, o)| {
                    u32::try_from(p)
                        .ok()
                        .and_then(|p| topic.partition(p))
                        .is_some_and(|log| log.durable_end() > *o)
                }) || topic.partition_count() as usize != positions.len()
            };
            let logs = topic.partitions().to_vec();
            broker.wait_for_data(&logs, has_data, deadline).await;
            if deliveries.is_closed() {
                return;
            }
            continue;
        }
        let reads = broker
            .fetch_from(topic.clone(), wants, SUBSCRIPTION_FETCH_BYTES_MAX)
            .await;
        for read in reads {
            let Some(position) = positions.get_mut(read.partition as usize) else {
                continue;
            };
            if read.error.is_some() {
                // Retention removed what was not read: go on from the start.
                *position = (*position).max(read.log_start);
                continue;
            }
            for batch in Batches::new(&read.bytes).flatten() {
                for record in batch.records().flatten() {
                    let offset = batch.base_offset() + u64::from(record.offset_delta);
                    if offset < *position {
                        continue;
                    }
                    *position = offset + 1;
                    let Some(message) = message_of(&name, &record, &filter, qos) else {
                        continue;
                    };
                    let delivery = Delivery {
                        topic: name.clone(),
                        partition: read.partition,
                        offset,
                        message,
                    };
                    if deliveries.send(delivery).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Adds positions for partitions not yet known: the committed position,
/// else the durable end when the topic existed at the subscription, else
/// 0 (a topic or partition that appeared later holds only newer records).
fn extend_positions(topic: &Topic, positions: &mut Vec<u64>, start: &Start, existed: bool) {
    let initial = positions.is_empty();
    for p in positions.len()..topic.partition_count() as usize {
        let Ok(partition) = u32::try_from(p) else {
            return;
        };
        let position = match start.positions.get(&partition) {
            Some(o) => *o,
            None if existed && initial => topic
                .partition(partition)
                .map_or(0, |log| log.durable_end()),
            None => 0,
        };
        positions.push(position);
    }
}

/// Eddy topics the MQTT listener keeps for itself (never subscribed to
/// through a wildcard).
pub const INTERNAL_TOPIC_PREFIX: &str = "mqtt.";

/// One connection's subscriptions: the delivery tasks of each filter.
pub struct Subscriptions {
    /// By filter: the QoS granted and the delivery tasks.
    tasks: HashMap<String, (u8, Vec<smol::Task<()>>)>,
    deliveries: smol::channel::Sender<Delivery>,
}

/// Who subscribes, for the access checks and positions.
pub struct Subscriber<'a> {
    pub identity: &'a str,
    pub client_id: &'a str,
    pub persistent: bool,
}

impl Subscriptions {
    pub fn new(deliveries: smol::channel::Sender<Delivery>) -> Subscriptions {
        Subscriptions {
            tasks: HashMap::new(),
            deliveries,
        }
    }

    /// Stops the delivery tasks of `filter`.
    pub fn unsubscribe(&mut self, filter: &str) {
        self.tasks.remove(filter);
    }

    /// Subscribes to each `(filter, qos)`; returns the SUBACK codes.
    pub async fn subscribe(
        &mut self,
        ctx: &Arc<super::MqttContext>,
        who: &Subscriber<'_>,
        filters: &[(String, u8)],
    ) -> Vec<u8> {
        let broker = &ctx.net.broker;
        let existing: Vec<String> = broker
            .topics_for(None)
            .iter()
            .map(|t| t.meta.name.clone())
            .filter(|n| !n.starts_with(INTERNAL_TOPIC_PREFIX))
            .collect();
        let committed = if who.persistent {
            broker
                .positions(&super::session::group_of(who.client_id))
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut codes = Vec::with_capacity(filters.len());
        for (filter, qos) in filters {
            let code = self
                .subscribe_one(ctx, who, filter, *qos, &existing, &committed)
                .await;
            codes.push(code);
        }
        codes
    }

    async fn subscribe_one(
        &mut self,
        ctx: &Arc<super::MqttContext>,
        who: &Subscriber<'_>,
        filter: &str,
        qos: u8,
        existing: &[String],
        committed: &[(String, u32, u64)],
    ) -> u8 {
        use super::codec::reason;
        if filter.starts_with("$share/") {
            return reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED;
        }
        if !routes::is_valid_filter(filter) {
            return reason::TOPIC_FILTER_INVALID;
        }
        let broker = &ctx.net.broker;
        let topics = ctx.router.topics_for(filter, existing);
        for topic in &topics {
            if let Err(why) =
                broker.check_topic_access(who.identity, crate::acl::Operation::Consume, topic)
            {
                ctx.stats
                    .denied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.log_client(format_args!(
                    "{} may not subscribe to {filter:?} (eddy topic {topic}): {why}",
                    who.identity
                ));
                return reason::NOT_AUTHORIZED;
            }
        }
        let granted = qos.min(1);
        if self.tasks.get(filter).is_some_and(|(q, _)| *q == granted) {
            // The same subscription again (a client resubscribing after it
            // resumed its session): the flow of messages must not be
            // interrupted, nor restarted from the last committed position
            // (which would deliver again what is in flight).
            return granted;
        }
        let mut tasks = Vec::with_capacity(topics.len());
        for topic in topics {
            let start = self.start_of(ctx, who, &topic, committed).await;
            tasks.push(ctx.net.executor.spawn(run(
                broker.clone(),
                topic,
                filter.to_string(),
                granted,
                start,
                self.deliveries.clone(),
            )));
        }
        self.tasks.insert(filter.to_string(), (granted, tasks));
        granted
    }

    /// Where a subscription to `topic` starts: a persistent session's
    /// committed positions; partitions without one start at their durable
    /// end, committed right away so that what arrives while the client is
    /// away is kept for it (the topic is auto-created for that).
    async fn start_of(
        &self,
        ctx: &Arc<super::MqttContext>,
        who: &Subscriber<'_>,
        topic: &str,
        committed: &[(String, u32, u64)],
    ) -> Start {
        let mut start = Start::default();
        if !who.persistent {
            return start;
        }
        for (t, partition, offset) in committed {
            if t == topic {
                start.positions.insert(*partition, *offset);
            }
        }
        let broker = &ctx.net.broker;
        // Created now (as a publish would) so that the position is kept
        // from this moment even for a topic nobody has published to yet.
        let Ok(eddy_topic) = broker.topic_or_create(topic).await else {
            return start;
        };
        let mut fresh = Vec::new();
        for (p, log) in eddy_topic.partitions().iter().enumerate() {
            let Ok(p) = u32::try_from(p) else { break };
            if let std::collections::hash_map::Entry::Vacant(e) = start.positions.entry(p) {
                let end = log.durable_end();
                e.insert(end);
                fresh.push((topic.to_string(), p, end));
            }
        }
        let group = super::session::group_of(who.client_id);
        if let Err(e) = broker.commit_positions(&group, fresh).await {
            log::warn!("mqtt: could not record the start of {group} on {topic}: {e}");
        }
        start
    }
}
