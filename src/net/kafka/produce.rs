//! Produce (v3–v9): Kafka record batches v2 → eddy batches → the broker's
//! [`crate::broker::Broker::produce_to`].
//!
//! acks=0 and acks=1 are answered once appended (eddy's `received`; acks=0
//! gets no answer at all), acks=all (−1) once fsynced (`durable`). Each
//! partition's batches are appended in order while the request is read
//! (so pipelined requests keep their order); only the durable wait runs
//! after. Compressed batches: Snappy is decoded, gzip, LZ4 and zstd are
//! refused with UNSUPPORTED_COMPRESSION_TYPE (each codec costs binary
//! size on the gateway); message format v0/v1 with
//! UNSUPPORTED_FOR_MESSAGE_FORMAT. Transactional produces (a
//! transactional id) are refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
//! eddy has no transactions. Errors carry a message from v8 on.
//!
//! Idempotent batches (a producer id from InitProducerId, also here) are
//! restamped with the eddy producer of their session and partition
//! ([`crate::broker::producer_sessions`]): a resend is stored once and
//! answered with its first offsets, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::{frame, now, Answer, Out};
use super::errors::broker_code;
use super::KafkaContext;
use crate::acl::{Operation, Resource};
use crate::broker::ops::{AckLevel, BrokerError, Landed};
use crate::broker::Caller;
use crate::kafka_records::{codec_supported, compression_of, from_kafka};

/// A partition's outcome once its acks level is reached.
type PartitionWait = Pin<Box<dyn Future<Output = Result<Landed, BrokerError>> + Send>>;

/// What one partition of a request came to.
enum Outcome {
    /// Refused before anything was appended.
    Refused(i16, String),
    /// Appended; completes at the acks level (one future per batch).
    Appended(Vec<PartitionWait>),
}

/// Handles a Produce request: appends now, answers at the acks level.
pub(super) async fn produce(
    correlation_id: i32,
    version: i16,
    request: ProduceRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Answer {
    let acks = match request.acks {
        0 | 1 => AckLevel::Received,
        -1 => AckLevel::Durable,
        other => {
            log::debug!("Kafka produce with acks={other} from {}", caller.peer);
            AckLevel::Durable
        }
    };
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let transactional = request.transactional_id.is_some();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for t in request.topic_data {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let outcome = if transactional {
                Outcome::Refused(
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "eddy has no transactions".into(),
                )
            } else {
                partition(&name, p.index, p.records, acks, timeout, caller, ctx).await
            };
            partitions.push((p.index, outcome));
        }
        topics.push((t.name, partitions));
    }
    if request.acks == 0 {
        return now(Out::Silent);
    }
    Box::pin(async move {
        let mut answer = ProduceResponse::default();
        for (name, partitions) in topics {
            let mut topic = TopicProduceResponse::default();
            topic.name = name;
            for (index, outcome) in partitions {
                let mut out = PartitionProduceResponse::default();
                out.index = index;
                let result = match outcome {
                    Outcome::Refused(code, message) => Err((code, message)),
                    Outcome::Appended(waits) => settle(waits).await,
                };
                match result {
                    Ok(base_offset) => out.base_offset = base_offset,
                    Err((code, message)) => {
                        out.error_code = code;
                        out.base_offset = -1;
                        if version >= 8 {
                            out.error_message = Some(StrBytes::from_string(message));
                        }
                    }
                }
                topic.partition_responses.push(out);
            }
            answer.responses.push(topic);
        }
        frame(correlation_id, version, &answer)
    })
}

/// Waits for every batch of a partition; the first batch's base offset.
async fn settle(waits: Vec<PartitionWait>) -> Result<i64, (i16, String)> {
    let mut base = None;
    for wait in waits {
        let landed = wait.await.map_err(|e| (broker_code(&e), e.to_string()))?;
        base.get_or_insert(landed.base_offset);
    }
    let base = base.ok_or((ResponseError::CorruptMessage.code(), "no batch".to_string()))?;
    Ok(i64::try_from(base).unwrap_or(i64::MAX))
}

/// Checks, converts and appends one partition's record batches.
async fn partition(
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: AckLevel,
    timeout: Duration,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Outcome {
    let broker = &ctx.net.broker;
    if let Err(e) = broker.authorize(caller, Operation::Produce, Resource::Topic(topic)) {
        return Outcome::Refused(broker_code(&e), e.to_string());
    }
    let Ok(partition) = u32::try_from(index) else {
        return Outcome::Refused(
            ResponseError::UnknownTopicOrPartition.code(),
            format!("partition {index} does not exist"),
        );
    };
    let records = records.unwrap_or_default();
    match compression_of(&records) {
        None => {
            return Outcome::Refused(
                ResponseError::CorruptMessage.code(),
                "no record batch".into(),
            )
        }
        Some((magic, _)) if magic != 2 => {
            return Outcome::Refused(
                ResponseError::UnsupportedForMessageFormat.code(),
                format!("record batch v{magic}: eddy takes v2 only"),
            )
        }
        Some((_, codec)) if !codec_supported(codec) => {
            return Outcome::Refused(
                ResponseError::UnsupportedCompressionType.code(),
                format!("{codec:?} compression is not supported: use none or snappy"),
            )
        }
        Some(_) => {}
    }
    let mut converted = match from_kafka(&records) {
        Ok(converted) => converted,
        Err(e) => return Outcome::Refused(ResponseError::CorruptMessage.code(), e.to_string()),
    };
    if converted.iter().any(|c| c.producer.producer_id >= 0) {
        // Idempotent: the session's sequence counts in this partition.
        let topic = match broker.topic_or_create(topic).await {
            Ok(topic) => topic,
            Err(e) => return Outcome::Refused(broker_code(&e), e.to_string()),
        };
        for c in &mut converted {
            let restamped =
                broker.restamp_for_partition(&caller.identity, &topic, partition, &mut c.batch);
            if let Err(e) = restamped {
                return Outcome::Refused(broker_code(&e), e.to_string());
            }
        }
    }
    let mut waits: Vec<PartitionWait> = Vec::with_capacity(converted.len());
    for batch in converted {
        match broker
            .produce_to(
                &caller.identity,
                topic,
                partition,
                batch.batch,
                acks,
                timeout,
            )
            .await
        {
            Ok(wait) => waits.push(Box::pin(wait)),
            Err(e) if waits.is_empty() => return Outcome::Refused(broker_code(&e), e.to_string()),
            Err(e) => {
                // Earlier batches of this request landed; report the error.
                waits.push(Box::pin(std::future::ready(Err(e))));
                break;
            }
        }
    }
    Outcome::Appended(waits)
}

/// The answer to InitProducerId (v0–v4): a new producer session (epoch 0)
/// for an idempotent producer, also when the client asks to bump its epoch
/// (KIP-360); a transactional id is refused (eddy has no transactions).
pub(super) async fn init_producer_id(
    correlation_id: i32,
    version: i16,
    request: InitProducerIdRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = InitProducerIdResponse::default();
    answer.producer_id = ProducerId(-1);
    answer.producer_epoch = -1;
    if request.transactional_id.is_some_and(|t| !t.0.is_empty()) {
        answer.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return frame(correlation_id, version, &answer);
    }
    match ctx.net.broker.new_producer_session(&caller.identity).await {
        Ok((id, epoch)) => {
            answer.producer_id = ProducerId(id);
            answer.producer_epoch = epoch;
        }
        Err(e) => answer.error_code = broker_code(&e),
    }
    frame(correlation_id, version, &answer)
}
