//! The PUBLISH flow: an MQTT message becomes one record of the eddy topic
//! and key its route names, appended through the broker; the PUBACK
//! (QoS 1) or PUBREC (QoS 2) is sent only once the record is at the
//! route's ack level (durable by default).
//!
//! The record: key from the route, value the payload, timestamp the
//! arrival, headers [`routes::HEADER_TOPIC`] (the MQTT topic), and for
//! MQTT 5 the content type, payload format indicator and user properties
//! (by their own names). The partition is murmur2 of the key, as for every
//! eddy producer; keyless records rotate.
//!
//! A denial (ACL) or failure is a PUBACK/PUBREC reason code for MQTT 5
//! and a closed connection for 3.1.1, which has no way to say it.
//! This file builds records and asks the broker; it writes no packet.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::codec::{reason, Message, Outbound, Version};
use super::exactly_once::{self, Mark};
use super::routes::{self, HEADER_CONTENT_TYPE, HEADER_PAYLOAD_FORMAT, HEADER_TOPIC};
use super::MqttContext;
use crate::acl::Operation;
use crate::broker::BrokerError;
use crate::config::PRODUCE_TIMEOUT_MS_MAX;
use crate::storage::StorageError;
use crate::time::now_ms_i64;
use crate::wire::batch::{record_len_max, BatchBuilder, Headers};
use crate::wire::partitioner::partition_for_key;

/// An acknowledgement that may wait (for an fsync).
pub type AckFuture = Pin<Box<dyn Future<Output = Acked> + Send>>;

/// What a PUBLISH's handling ended with, once it could be answered.
#[derive(Debug)]
pub enum Acked {
    /// Send this (PUBACK / PUBREC); `qos2`: the packet id to remember.
    Send { packet: Outbound, qos2: Option<u16> },
    /// QoS 0: nothing to send.
    Nothing,
    /// 3.1.1 cannot say no: close the connection (why, for the log).
    Close(String),
}

/// The reason code for a broker error.
fn reason_of(e: &BrokerError) -> u8 {
    match e {
        BrokerError::InvalidTopicName(_) | BrokerError::UnknownTopic(_) => {
            reason::TOPIC_NAME_INVALID
        }
        BrokerError::RecordTooLarge { .. } => reason::PACKET_TOO_LARGE,
        BrokerError::Storage(
            StorageError::DiskFull { .. }
            | StorageError::BudgetFull { .. }
            | StorageError::DiskReserve { .. },
        ) => reason::QUOTA_EXCEEDED,
        _ => reason::UNSPECIFIED_ERROR,
    }
}

/// The answer to a refused PUBLISH.
pub(super) fn refuse(version: Version, qos: u8, pkid: u16, code: u8, why: String) -> Acked {
    match (version, qos) {
        (_, 0) => Acked::Nothing,
        (Version::V311, _) => Acked::Close(why),
        (Version::V5, 1) => Acked::Send {
            packet: Outbound::Puback { pkid, code },
            qos2: None,
        },
        (Version::V5, _) => Acked::Send {
            packet: Outbound::Pubrec { pkid, code },
            qos2: None,
        },
    }
}

/// The record's headers: the MQTT topic, a QoS 2 message's nonce
/// ([`exactly_once`]) and MQTT 5 properties.
fn headers_of(message: &Message, nonce: Option<&str>) -> Vec<u8> {
    let format = message.props.payload_format.map(|f| f.to_string());
    let mut pairs: Vec<(&str, &[u8])> = vec![(HEADER_TOPIC, message.topic.as_bytes())];
    if let Some(nonce) = nonce {
        pairs.push((exactly_once::HEADER_NONCE, nonce.as_bytes()));
    }
    if let Some(ct) = &message.props.content_type {
        pairs.push((HEADER_CONTENT_TYPE, ct.as_bytes()));
    }
    if let Some(f) = &format {
        pairs.push((HEADER_PAYLOAD_FORMAT, f.as_bytes()));
    }
    for (k, v) in &message.props.user {
        pairs.push((k.as_str(), v.as_bytes()));
    }
    Headers::encode_vec(&pairs)
}

/// One record in eddy's batch format.
pub(super) fn record_batch(
    key: Option<&[u8]>,
    message: &Message,
    nonce: Option<&str>,
) -> Result<Vec<u8>, BrokerError> {
    let headers = headers_of(message, nonce);
    let now = now_ms_i64();
    let len = record_len_max(key, &message.payload, Headers(&headers)) + 128;
    let mut builder = BatchBuilder::with_capacity(len, now).map_err(BrokerError::Corrupt)?;
    builder
        .push(now, key, &message.payload, Headers(&headers))
        .map_err(BrokerError::Corrupt)?;
    Ok(builder.finish_vec())
}

/// How a QoS 2 message is kept exactly once ([`exactly_once`]).
pub enum Once {
    /// A new message of this client id: mark it, then append.
    New { client_id: String },
    /// A resend whose record is not stored: append it where its mark says.
    Resend(Mark),
}

/// Appends `message` (its topic already resolved) for `identity` and
/// returns the acknowledgement to send when it is due.
pub async fn publish(
    ctx: &Arc<MqttContext>,
    identity: &str,
    version: Version,
    pkid: u16,
    message: Message,
    once: Option<Once>,
) -> AckFuture {
    let qos = message.qos;
    let target = match ctx.router.route(&message.topic) {
        Ok(t) => t,
        Err(e) => {
            let acked = refuse(
                version,
                qos,
                pkid,
                reason::TOPIC_NAME_INVALID,
                e.to_string(),
            );
            return Box::pin(std::future::ready(acked));
        }
    };
    if let Err(why) = ctx
        .net
        .broker
        .check_topic_access(identity, Operation::Produce, &target.topic)
    {
        ctx.stats.denied.fetch_add(1, Ordering::Relaxed);
        ctx.log_client(format_args!(
            "{identity} may not publish to {:?} (eddy topic {}): {why}",
            message.topic, target.topic
        ));
        let acked = refuse(version, qos, pkid, reason::NOT_AUTHORIZED, why);
        return Box::pin(std::future::ready(acked));
    }
    let appended = append(ctx, identity, &target, &message, pkid, once).await;
    let pending = match appended {
        Ok(pending) => pending,
        Err(e) => {
            let acked = refuse(version, qos, pkid, reason_of(&e), e.to_string());
            return Box::pin(std::future::ready(acked));
        }
    };
    ctx.stats.published.fetch_add(1, Ordering::Relaxed);
    Box::pin(async move {
        let landed = pending.await;
        match (landed, qos) {
            (_, 0) => Acked::Nothing,
            (Ok(_), 1) => Acked::Send {
                packet: Outbound::Puback {
                    pkid,
                    code: reason::SUCCESS,
                },
                qos2: None,
            },
            (Ok(_), _) => Acked::Send {
                packet: Outbound::Pubrec {
                    pkid,
                    code: reason::SUCCESS,
                },
                qos2: Some(pkid),
            },
            (Err(e), _) => refuse(version, qos, pkid, reason_of(&e), e.to_string()),
        }
    })
}

type Landing = Pin<Box<dyn Future<Output = Result<crate::broker::Landed, BrokerError>> + Send>>;

/// Builds the record and appends it; the future completes at the route's
/// ack level.
async fn append(
    ctx: &Arc<MqttContext>,
    identity: &str,
    target: &routes::Target,
    message: &Message,
    pkid: u16,
    once: Option<Once>,
) -> Result<Landing, BrokerError> {
    let broker = &ctx.net.broker;
    let topic = broker.topic_or_create(&target.topic).await?;
    let key = target.key.as_deref().map(str::as_bytes);
    let mut partition = match key {
        Some(k) => partition_for_key(k, topic.partition_count()),
        None => topic.next_keyless_partition(),
    };
    let nonce = match once {
        None => None,
        Some(Once::New { client_id }) => {
            // Durable before the record can be (see exactly_once).
            let mark = exactly_once::new_mark(ctx, &target.topic, partition);
            let mark = ctx
                .marks
                .make(ctx, identity, &client_id, pkid, mark)
                .await?;
            Some(mark.nonce_text())
        }
        Some(Once::Resend(mark)) => {
            // Where a later resend will look for it. The route is the same
            // topic unless the routes changed; then it lands where the
            // route says now and is stored again only if resent once more.
            if mark.topic == target.topic && mark.partition < topic.partition_count() {
                partition = mark.partition;
            }
            Some(mark.nonce_text())
        }
    };
    let raw = record_batch(key, message, nonce.as_deref())?;
    let timeout = Duration::from_millis(u64::from(PRODUCE_TIMEOUT_MS_MAX));
    let pending = broker
        .produce_to(
            identity,
            &target.topic,
            partition,
            raw,
            target.acks,
            timeout,
        )
        .await?;
    Ok(Box::pin(pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::Batch;

    #[test]
    fn a_message_becomes_one_record_with_its_topic_and_properties() {
        let mut message = Message {
            topic: "plant/7/3/temp".into(),
            payload: b"21.5".to_vec(),
            qos: 1,
            retain: false,
            props: Default::default(),
        };
        message.props.content_type = Some("text/plain".into());
        message.props.user = vec![("site".into(), "north".into())];
        let raw = record_batch(Some(b"7/3"), &message, None).unwrap();
        let batch = Batch::parse(&raw).unwrap();
        let records: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, Some(&b"7/3"[..]));
        assert_eq!(records[0].value, b"21.5");
        let headers: Vec<(&str, &[u8])> =
            records[0].headers.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            headers,
            vec![
                (HEADER_TOPIC, &b"plant/7/3/temp"[..]),
                (HEADER_CONTENT_TYPE, &b"text/plain"[..]),
                ("site", &b"north"[..]),
            ]
        );
    }
}
