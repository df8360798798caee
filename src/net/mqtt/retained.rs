//! Retained messages: the latest per MQTT topic, kept durably in the
//! compacted eddy topic [`RETAINED_TOPIC`] (key = MQTT topic, value = the
//! payload; an empty payload deletes, as in MQTT), and delivered to a new
//! subscription whose filter matches.
//!
//! A retained PUBLISH is stored before the PUBLISH itself is routed, and
//! only when the identity may publish to the route's topic. Reading for a
//! subscription scans the whole (compacted) topic, at most
//! [`RETAINED_READ_BYTES_MAX`]. Nothing here writes packets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::codec::Message;
use super::MqttContext;
use crate::acl::Operation;
use crate::broker::AckLevel;
use crate::wire::batch::Batches;

/// The eddy topic holding retained messages.
pub const RETAINED_TOPIC: &str = "mqtt.retained";
/// Most bytes read from [`RETAINED_TOPIC`] for one subscription.
pub const RETAINED_READ_BYTES_MAX: usize = 16 << 20;
/// Longest a retained message waits to be durable, in ms.
const RETAINED_TIMEOUT_MS: u64 = 30_000;

/// Stores `message` as its topic's retained message (or deletes it, for
/// an empty payload).
pub async fn store(ctx: &Arc<MqttContext>, identity: &str, message: &Message) {
    let broker = &ctx.net.broker;
    let allowed = ctx.router.route(&message.topic).is_ok_and(|t| {
        broker
            .check_topic_access(identity, Operation::Produce, &t.topic)
            .is_ok()
    });
    if !allowed {
        return;
    }
    let configs = vec![("cleanup.policy".to_string(), "compact".to_string())];
    let stored = async {
        broker.ensure_topic(RETAINED_TOPIC, 1, configs).await?;
        let raw = super::publish::record_batch(Some(message.topic.as_bytes()), message, None)?;
        let timeout = Duration::from_millis(RETAINED_TIMEOUT_MS);
        broker
            .produce_to(identity, RETAINED_TOPIC, 0, raw, AckLevel::Durable, timeout)
            .await?
            .await
    };
    if let Err(e) = stored.await {
        log::warn!(
            "mqtt: could not keep the retained message of {:?}: {e}",
            message.topic
        );
    }
}

/// The retained messages whose topic matches `filter`, at `qos`.
pub async fn matching(ctx: &Arc<MqttContext>, filter: &str, qos: u8) -> Vec<Message> {
    let broker = &ctx.net.broker;
    let Ok(topic) = broker.topic_named(RETAINED_TOPIC) else {
        return Vec::new();
    };
    let start = topic
        .partition(0)
        .map_or(0, |log| log.watermarks().log_start);
    let reads = broker
        .fetch_from(topic, vec![(0, start)], RETAINED_READ_BYTES_MAX)
        .await;
    let mut latest: BTreeMap<String, Message> = BTreeMap::new();
    for read in reads {
        for batch in Batches::new(&read.bytes).flatten() {
            for record in batch.records().flatten() {
                let Some(key) = record.key.and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                if record.value.is_empty() {
                    latest.remove(key);
                    continue;
                }
                if let Some(mut m) = super::subscribe::message_of("", &record, filter, qos) {
                    m.retain = true;
                    latest.insert(key.to_string(), m);
                } else {
                    latest.remove(key);
                }
            }
        }
    }
    latest.into_values().collect()
}
