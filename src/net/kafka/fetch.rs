//! Fetch (v4–v12) and ListOffsets (v1–v7): reading eddy's partitions as
//! Kafka record batches.
//!
//! Only durable records are fetchable: the high watermark and the last
//! stable offset are both the partition's durable end (librdkafka reads up
//! to the last stable offset). A fetch offset inside a stored batch gets
//! that whole batch (clients skip the records before their offset); each
//! stored batch becomes one Kafka batch with the same offsets
//! ([`crate::kafka_records::fetched_to_kafka`]). A partition with nothing
//! new has an empty record set, never a null one. With nothing to return
//! the fetch long-polls up to `max_wait_ms` (at most
//! [`crate::config::FETCH_WAIT_MS_MAX`]) for any asked partition to grow.
//! `max_bytes` bounds the whole answer (but the first batch is sent even
//! when larger, as Kafka does), and is itself bounded by the frame size;
//! `partition_max_bytes` and `min_bytes` are not used (one byte is enough
//! to answer). No fetch sessions (KIP-227): session id 0, every fetch
//! names its partitions.
//!
//! ListOffsets: −2 earliest (the log start), −1 latest (the durable end),
//! any other value the first offset whose timestamp is at least that
//! (−1/−1 when there is none, as Kafka answers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};

use super::conn::{frame, now, Answer, Out};
use super::errors::{broker_code, kafka_code};
use super::KafkaContext;
use crate::acl::{Operation, Resource};
use crate::broker::ops::{OffsetSpec, PartitionData as Read};
use crate::broker::{Broker, Caller};
use crate::config::FETCH_RESPONSE_OVERHEAD_BYTES;
use crate::kafka_records::fetched_to_kafka;
use crate::storage::Topic;

/// ListOffsets' "latest" and "earliest" timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

/// One topic of a fetch: the topic (if the caller may read it) and the
/// asked `(partition, offset)` pairs.
struct Wanted {
    name: TopicName,
    topic: Result<Arc<Topic>, i16>,
    partitions: Vec<(i32, i64)>,
}

/// Handles a Fetch: reads now, or long-polls and reads again.
pub(super) async fn fetch(
    correlation_id: i32,
    version: i16,
    request: FetchRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Answer {
    let broker = ctx.net.broker.clone();
    let wanted: Vec<Wanted> = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let topic = broker
                .authorize(caller, Operation::Consume, Resource::Topic(&name))
                .and_then(|()| broker.topic_named(&name))
                .map_err(|e| broker_code(&e));
            Wanted {
                name: t.topic,
                topic,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.fetch_offset))
                    .collect(),
            }
        })
        .collect();
    let cap = ctx
        .net
        .limits
        .frame_bytes_max
        .saturating_sub(FETCH_RESPONSE_OVERHEAD_BYTES);
    let max_bytes = usize::try_from(
        request
            .max_bytes
            .clamp(1, i32::try_from(cap).unwrap_or(i32::MAX)),
    )
    .unwrap_or(1);
    let first = read_all(&broker, &wanted, max_bytes).await;
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
        .min(broker.fetch_wait_max());
    if wait.is_zero() || first.has_news {
        return now(frame(correlation_id, version, &first.response));
    }
    let deadline = Instant::now() + wait;
    Box::pin(async move {
        let has_data = || {
            wanted.iter().any(|w| {
                let Ok(topic) = &w.topic else { return false };
                w.partitions.iter().any(|&(p, offset)| {
                    u32::try_from(p)
                        .ok()
                        .and_then(|p| topic.partition(p))
                        .is_some_and(|log| {
                            i64::try_from(log.durable_end()).unwrap_or(i64::MAX) > offset
                        })
                })
            })
        };
        let logs: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.topic.as_ref().ok())
            .flat_map(|t| t.partitions().iter().cloned())
            .collect();
        broker.wait_for_data(&logs, has_data, deadline).await;
        let read = read_all(&broker, &wanted, max_bytes).await;
        frame(correlation_id, version, &read.response)
    })
}

/// A fetch answer, and whether it has records or an error (else it may
/// wait).
struct Fetched {
    response: FetchResponse,
    has_news: bool,
}

async fn read_all(broker: &Broker, wanted: &[Wanted], max_bytes: usize) -> Fetched {
    let mut response = FetchResponse::default();
    let mut has_news = false;
    let mut budget = max_bytes;
    for w in wanted {
        let mut topic_out = FetchableTopicResponse::default();
        topic_out.topic = w.name.clone();
        let reads = match &w.topic {
            Err(code) => {
                has_news = true;
                topic_out.partitions = w
                    .partitions
                    .iter()
                    .map(|&(p, _)| failed(p, *code))
                    .collect();
                response.responses.push(topic_out);
                continue;
            }
            Ok(topic) => {
                let asks: Vec<(u32, u64)> = w
                    .partitions
                    .iter()
                    .filter_map(|&(p, o)| Some((u32::try_from(p).ok()?, u64::try_from(o).ok()?)))
                    .collect();
                broker.fetch_from(topic.clone(), asks, budget.max(1)).await
            }
        };
        let tombstones = w.topic.as_ref().is_ok_and(|t| t.config().compact);
        for &(p, offset) in &w.partitions {
            let read = u32::try_from(p)
                .ok()
                .zip(u64::try_from(offset).ok())
                .and_then(|(p, _)| reads.iter().find(|r| r.partition == p));
            let Some(read) = read else {
                has_news = true;
                topic_out
                    .partitions
                    .push(failed(p, ResponseError::OffsetOutOfRange.code()));
                continue;
            };
            budget = budget.saturating_sub(read.bytes.len());
            let out = converted(p, read, tombstones);
            has_news |= out.error_code != 0 || !read.bytes.is_empty();
            topic_out.partitions.push(out);
        }
        response.responses.push(topic_out);
    }
    Fetched { response, has_news }
}

fn failed(partition: i32, code: i16) -> PartitionData {
    let mut out = PartitionData::default();
    out.partition_index = partition;
    out.error_code = code;
    out.high_watermark = -1;
    out.records = Some(Bytes::new());
    out
}

fn converted(partition: i32, read: &Read, tombstones: bool) -> PartitionData {
    let mut out = PartitionData::default();
    out.partition_index = partition;
    let high_watermark = i64::try_from(read.high_watermark).unwrap_or(i64::MAX);
    out.high_watermark = high_watermark;
    out.last_stable_offset = high_watermark;
    out.log_start_offset = i64::try_from(read.log_start).unwrap_or(i64::MAX);
    if let Some(code) = read.error {
        out.error_code = kafka_code(code);
        out.records = Some(Bytes::new());
        return out;
    }
    let stored = Bytes::copy_from_slice(&read.bytes);
    let mut records = BytesMut::with_capacity(stored.len() + stored.len() / 4 + 64);
    match fetched_to_kafka(&stored, tombstones, &mut records) {
        Ok(_) => out.records = Some(records.freeze()),
        Err(e) => {
            log::error!("converting stored batches of partition {partition} for Kafka failed: {e}");
            out.error_code = ResponseError::KafkaStorageError.code();
            out.records = Some(Bytes::new());
        }
    }
    out
}

/// Handles ListOffsets.
pub(super) async fn list_offsets(
    correlation_id: i32,
    version: i16,
    request: ListOffsetsRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let mut answer = ListOffsetsResponse::default();
    for t in request.topics {
        let name = t.name.0.to_string();
        let topic = broker
            .authorize(caller, Operation::Consume, Resource::Topic(&name))
            .and_then(|()| broker.topic_named(&name));
        let mut topic_out = ListOffsetsTopicResponse::default();
        topic_out.name = t.name;
        for p in t.partitions {
            let mut out = ListOffsetsPartitionResponse::default();
            out.partition_index = p.partition_index;
            out.timestamp = -1;
            out.offset = -1;
            let spec = match p.timestamp {
                LATEST_TIMESTAMP => OffsetSpec::Latest,
                EARLIEST_TIMESTAMP => OffsetSpec::Earliest,
                ts => OffsetSpec::Timestamp(ts),
            };
            let found = match (&topic, u32::try_from(p.partition_index)) {
                (Err(e), _) => Err(broker_code(e)),
                (Ok(_), Err(_)) => Err(ResponseError::UnknownTopicOrPartition.code()),
                (Ok(topic), Ok(partition)) => broker
                    .list_offset(topic.clone(), partition, spec)
                    .await
                    .map_err(|e| broker_code(&e)),
            };
            match found {
                Ok(Some(offset)) => {
                    out.offset = i64::try_from(offset).unwrap_or(i64::MAX);
                    if let OffsetSpec::Timestamp(ts) = spec {
                        // The record's own timestamp is at least `ts`;
                        // clients use the offset.
                        out.timestamp = ts;
                    }
                }
                Ok(None) => {}
                Err(code) => out.error_code = code,
            }
            if version >= 4 {
                out.leader_epoch = 0;
            }
            topic_out.partitions.push(out);
        }
        answer.topics.push(topic_out);
    }
    frame(correlation_id, version, &answer)
}
