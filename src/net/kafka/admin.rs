//! The admin calls AdminClients and MirrorMaker 2 make: CreateTopics,
//! DeleteTopics, DescribeConfigs, ListGroups, DescribeAcls.
//!
//! Translation only; the topic operations are the broker's
//! ([`crate::broker::topic_ops`]). Creating and deleting need `admin` on
//! the topic (as natively); describing a topic's settings needs any right
//! on it; a group is listed to callers with `consume` or `admin` on it.
//! Settings keep Kafka's names where eddy has the setting (`retention.ms`,
//! `retention.bytes`, `cleanup.policy`, `delete.retention.ms`,
//! `min.cleanable.dirty.ratio`), plus eddy's own (`priority`, `on_full`, …).
//! A replication factor other than 1 (or −1) is INVALID_REPLICATION_FACTOR,
//! manual replica assignments INVALID_REQUEST. DescribeAcls: eddy's rules
//! live in its ACL file (`eddy acl check` explains them); the answer is
//! SECURITY_DISABLED without an ACL, CLUSTER_AUTHORIZATION_FAILED with one.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeAclsResponse, DescribeConfigsRequest, DescribeConfigsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::{frame, Out};
use super::errors::broker_code;
use super::metadata::topic_name;
use super::KafkaContext;
use crate::acl::{Operation, Resource};
use crate::broker::topic_ops::TopicSetting;
use crate::broker::Caller;
use crate::wire::GroupState;

/// DescribeConfigs' resource type of a topic (and of a broker).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs' config sources: set on the topic, or the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The answer to CreateTopics (v2–v7).
pub(super) async fn create_topics(
    correlation_id: i32,
    version: i16,
    request: CreateTopicsRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let mut answer = CreateTopicsResponse::default();
    for t in request.topics {
        let name = t.name.0.to_string();
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        out.num_partitions = -1;
        out.replication_factor = -1;
        let partitions = if t.num_partitions == -1 {
            broker.config().default_partitions
        } else {
            u32::try_from(t.num_partitions).unwrap_or(0)
        };
        let refusal =
            if let Err(e) = broker.authorize(caller, Operation::Admin, Resource::Topic(&name)) {
                Some((broker_code(&e), e.to_string()))
            } else if !matches!(t.replication_factor, -1 | 1) {
                Some((
                    ResponseError::InvalidReplicationFactor.code(),
                    "eddy keeps one copy: use replication factor 1 (or -1)".to_string(),
                ))
            } else if !t.assignments.is_empty() {
                Some((
                    ResponseError::InvalidRequest.code(),
                    "eddy places partitions itself: give a partition count".to_string(),
                ))
            } else {
                let configs = t
                    .configs
                    .iter()
                    .map(|c| {
                        let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                        (c.name.to_string(), value)
                    })
                    .collect();
                match broker
                    .create_topic_checked(&name, partitions, configs, request.validate_only)
                    .await
                {
                    Ok(topic) => {
                        out.num_partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
                        out.replication_factor = 1;
                        if let Some(topic) = topic {
                            let settings = broker.topic_settings(&topic);
                            out.configs = Some(settings.iter().map(created_config).collect());
                        }
                        None
                    }
                    Err(e) => Some((broker_code(&e), e.to_string())),
                }
            };
        if let Some((code, message)) = refusal {
            out.error_code = code;
            out.error_message = Some(text(&message));
        }
        answer.topics.push(out);
    }
    frame(correlation_id, version, &answer)
}

fn created_config(s: &TopicSetting) -> CreatableTopicConfigs {
    let mut out = CreatableTopicConfigs::default();
    out.name = text(s.name);
    out.value = Some(text(&s.value));
    out.config_source = if s.is_default {
        SOURCE_DEFAULT
    } else {
        SOURCE_TOPIC
    };
    out
}

/// The answer to DeleteTopics (v1–v6; by name, v6 ids are unknown here).
pub(super) async fn delete_topics(
    correlation_id: i32,
    version: i16,
    request: DeleteTopicsRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let names: Vec<Option<String>> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| Some(n.0.to_string()))
            .collect()
    };
    let mut answer = DeleteTopicsResponse::default();
    for name in names {
        let mut out = DeletableTopicResult::default();
        let Some(name) = name else {
            out.error_code = ResponseError::UnknownTopicId.code();
            answer.responses.push(out);
            continue;
        };
        out.name = Some(topic_name(&name));
        let deleted = match broker.authorize(caller, Operation::Admin, Resource::Topic(&name)) {
            Ok(()) => broker.delete_topic_named(&name).await,
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            out.error_code = broker_code(&e);
            out.error_message = Some(text(&e.to_string()));
        }
        answer.responses.push(out);
    }
    frame(correlation_id, version, &answer)
}

/// The answer to DescribeConfigs (v1–v4): a topic's settings; a broker's
/// are none.
pub(super) fn describe_configs(
    correlation_id: i32,
    version: i16,
    request: DescribeConfigsRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let mut answer = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.to_string();
        match resource.resource_type {
            RESOURCE_BROKER => {}
            RESOURCE_TOPIC if !broker.may_describe(caller, &name) => {
                out.error_code = ResponseError::TopicAuthorizationFailed.code();
            }
            RESOURCE_TOPIC => match broker.topic_named(&name) {
                Ok(topic) => {
                    let keys = resource.configuration_keys.as_ref();
                    out.configs = broker
                        .topic_settings(&topic)
                        .iter()
                        .filter(|s| keys.is_none_or(|k| k.iter().any(|k| **k == *s.name)))
                        .map(|s| described_config(s, request.include_documentation))
                        .collect();
                }
                Err(e) => {
                    out.error_code = broker_code(&e);
                    out.error_message = Some(text(&e.to_string()));
                }
            },
            _ => out.error_code = ResponseError::InvalidRequest.code(),
        }
        answer.results.push(out);
    }
    frame(correlation_id, version, &answer)
}

fn described_config(s: &TopicSetting, documentation: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = text(s.name);
    out.value = Some(text(&s.value));
    out.config_source = if s.is_default {
        SOURCE_DEFAULT
    } else {
        SOURCE_TOPIC
    };
    // STRING: eddy keeps every setting as text.
    out.config_type = 2;
    if documentation {
        out.documentation = Some(text(s.documentation));
    }
    out
}

/// The answer to ListGroups (v0–v4): the groups the caller may see, with
/// Kafka's state names (v4 filters by state).
pub(super) async fn list_groups(
    correlation_id: i32,
    version: i16,
    request: ListGroupsRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let broker = &ctx.net.broker;
    let mut answer = ListGroupsResponse::default();
    match broker.group_states().await {
        Ok(groups) => {
            for (id, state) in groups {
                let state = match state {
                    GroupState::Empty => "Empty",
                    GroupState::Stable => "Stable",
                    GroupState::Reconciling => "PreparingRebalance",
                };
                let wanted = request.states_filter.is_empty()
                    || request.states_filter.iter().any(|s| **s == *state);
                if !wanted || !broker.may_see_group(caller, &id) {
                    continue;
                }
                let mut group = ListedGroup::default();
                group.group_id = GroupId(text(&id));
                group.protocol_type = text("consumer");
                group.group_state = text(state);
                answer.groups.push(group);
            }
        }
        Err(e) => answer.error_code = broker_code(&e),
    }
    frame(correlation_id, version, &answer)
}

/// The answer to DescribeAcls (v1–v3): eddy's rules are not Kafka ACLs.
pub(super) fn describe_acls(correlation_id: i32, version: i16, ctx: &KafkaContext) -> Out {
    let mut answer = DescribeAclsResponse::default();
    if ctx.net.broker.has_acl() {
        answer.error_code = ResponseError::ClusterAuthorizationFailed.code();
        answer.error_message = Some(text(
            "eddy's ACL is its acl file, not Kafka ACLs: `eddy acl check IDENTITY …` explains it",
        ));
    } else {
        answer.error_code = ResponseError::SecurityDisabled.code();
        answer.error_message = Some(text("this hub has no ACL"));
    }
    frame(correlation_id, version, &answer)
}
