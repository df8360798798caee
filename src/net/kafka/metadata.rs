//! Metadata: the topics a client may see, each partition led by this node
//! at the advertised address.
//!
//! A listing (no topic names) is filtered to the topics the caller may
//! describe, as the native protocol's is. A named topic that does not exist
//! is auto-created when the request allows it, the hub auto-creates
//! topics, and the caller may produce to it (what a Kafka producer's first
//! Metadata does); otherwise UNKNOWN_TOPIC_OR_PARTITION. A named topic the
//! caller may not describe is TOPIC_AUTHORIZATION_FAILED.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::conn::{frame, Out};
use super::errors::broker_code;
use super::{KafkaContext, NODE_ID};
use crate::acl::{Operation, Resource};
use crate::broker::Caller;
use crate::storage::Topic;

pub(super) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn described(topic: &Topic) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(topic_name(&topic.meta.name));
    out.partitions = (0..topic.partition_count())
        .map(|p| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = i32::try_from(p).unwrap_or(i32::MAX);
            partition.leader_id = BrokerId(NODE_ID);
            partition.leader_epoch = 0;
            partition.replica_nodes = vec![BrokerId(NODE_ID)];
            partition.isr_nodes = vec![BrokerId(NODE_ID)];
            partition
        })
        .collect();
    out
}

fn failed(name: &str, code: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(topic_name(name));
    out.error_code = code;
    out
}

/// One named topic: described, auto-created, or an error.
async fn named(
    name: &str,
    auto_create: bool,
    caller: &Caller,
    ctx: &KafkaContext,
) -> MetadataResponseTopic {
    let broker = &ctx.net.broker;
    if let Ok(topic) = broker.topic_named(name) {
        if !broker.may_describe(caller, name) {
            return failed(name, ResponseError::TopicAuthorizationFailed.code());
        }
        return described(&topic);
    }
    if !auto_create || !broker.config().auto_create_topics {
        return failed(name, ResponseError::UnknownTopicOrPartition.code());
    }
    if let Err(e) = broker.authorize(caller, Operation::Produce, Resource::Topic(name)) {
        return failed(name, broker_code(&e));
    }
    match broker.topic_or_create(name).await {
        Ok(topic) => described(&topic),
        Err(e) => failed(name, broker_code(&e)),
    }
}

/// The answer to Metadata.
pub(super) async fn metadata(
    correlation_id: i32,
    version: i16,
    request: MetadataRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let mut answer = MetadataResponse::default();
    let mut node = MetadataResponseBroker::default();
    node.node_id = BrokerId(NODE_ID);
    node.host = StrBytes::from_string(ctx.advertised_host.clone());
    node.port = i32::from(ctx.advertised_port);
    answer.brokers = vec![node];
    answer.cluster_id = Some(StrBytes::from_string(broker.config().hub_id.clone()));
    answer.controller_id = BrokerId(NODE_ID);
    match request.topics {
        None => {
            answer.topics = broker
                .topics_for(None)
                .iter()
                .filter(|t| broker.may_describe(caller, &t.meta.name))
                .map(|t| described(t))
                .collect();
        }
        Some(topics) => {
            for t in topics {
                // Lookups by topic id (v10+) are not supported: eddy topics
                // have no ids; such an entry has no name.
                let Some(name) = t.name else {
                    answer
                        .topics
                        .push(failed("", ResponseError::UnknownTopicId.code()));
                    continue;
                };
                let topic = named(&name.0, request.allow_auto_topic_creation, caller, ctx).await;
                answer.topics.push(topic);
            }
        }
    }
    frame(correlation_id, version, &answer)
}
