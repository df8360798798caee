//! Consumer groups over Kafka's classic protocol: FindCoordinator,
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch.
//!
//! Translation only: the group state machine is the broker's
//! ([`crate::broker::groups::classic`]), committed offsets are eddy's
//! (`eddy groups describe` shows a Kafka group's lag, `eddy groups reset`
//! moves it). The assignment stays the client's (client-side assignment);
//! for `consumer` groups the partitions in each member's assignment are
//! read here so that describe can name their owners. This node coordinates
//! every group. ACLs: `consume` on the group for every call, and on the
//! topic for each committed or fetched partition.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, FindCoordinatorRequest, FindCoordinatorResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::conn::{frame, Out};
use super::errors::group_code;
use super::metadata::topic_name;
use super::{KafkaContext, NODE_ID};
use crate::acl::{Operation, Resource};
use crate::broker::groups::classic::{AssignmentIn, JoinIn};
use crate::broker::groups::Tp;
use crate::broker::ops::BrokerError;
use crate::broker::Caller;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn may_use_group(caller: &Caller, ctx: &KafkaContext, group: &str) -> Result<(), i16> {
    ctx.net
        .broker
        .authorize(caller, Operation::Consume, Resource::Group(group))
        .map_err(|e| group_code(&e))
}

fn may_read(caller: &Caller, ctx: &KafkaContext, topic: &str) -> bool {
    ctx.net
        .broker
        .authorize(caller, Operation::Consume, Resource::Topic(topic))
        .is_ok()
}

/// The answer to FindCoordinator (v0–v3): this node, for every group.
pub(super) fn find_coordinator(
    correlation_id: i32,
    version: i16,
    request: FindCoordinatorRequest,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = FindCoordinatorResponse::default();
    if request.key_type != 0 {
        // Transactions have no coordinator here.
        answer.error_code = ResponseError::CoordinatorNotAvailable.code();
        answer.error_message = Some(text("eddy has no transactions"));
        answer.node_id = BrokerId(-1);
        answer.host = text("");
        answer.port = -1;
    } else {
        answer.node_id = BrokerId(NODE_ID);
        answer.host = text(&ctx.advertised_host);
        answer.port = i32::from(ctx.advertised_port);
    }
    frame(correlation_id, version, &answer)
}

/// The answer to JoinGroup (v0–v5), once the group's rebalance completed.
pub(super) async fn join_group(
    correlation_id: i32,
    version: i16,
    request: JoinGroupRequest,
    client_id: &str,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = JoinGroupResponse::default();
    answer.protocol_name = Some(text(""));
    answer.generation_id = -1;
    answer.member_id = request.member_id.clone();
    let group = request.group_id.0.to_string();
    if let Err(code) = may_use_group(caller, ctx, &group) {
        answer.error_code = code;
        return frame(correlation_id, version, &answer);
    }
    let join = JoinIn {
        group,
        member_id: request.member_id.to_string(),
        client_id: client_id.to_string(),
        session_timeout_ms: u32::try_from(request.session_timeout_ms).unwrap_or(0),
        rebalance_timeout_ms: u32::try_from(request.rebalance_timeout_ms).unwrap_or(0),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
    };
    match ctx.net.broker.join_group(join).await {
        Ok(joined) => {
            answer.generation_id = joined.generation;
            answer.protocol_name = Some(text(&joined.protocol));
            answer.leader = text(&joined.leader);
            answer.member_id = text(&joined.member_id);
            answer.members = joined
                .members
                .into_iter()
                .map(|(id, metadata)| {
                    let mut member = JoinGroupResponseMember::default();
                    member.member_id = text(&id);
                    member.metadata = Bytes::from(metadata);
                    member
                })
                .collect();
        }
        Err(e) => answer.error_code = group_code(&e),
    }
    frame(correlation_id, version, &answer)
}

/// The partitions in a consumer-protocol assignment (empty if unreadable:
/// describe then shows no owner, nothing else depends on it).
fn assigned_partitions(assignment: &[u8]) -> BTreeSet<Tp> {
    let mut buf = Bytes::copy_from_slice(assignment);
    if buf.len() < 2 {
        return BTreeSet::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]).clamp(0, 3);
    let _ = bytes::Buf::get_i16(&mut buf);
    let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut buf, version) else {
        return BTreeSet::new();
    };
    decoded
        .assigned_partitions
        .iter()
        .flat_map(|tp| {
            let topic = tp.topic.0.to_string();
            tp.partitions
                .iter()
                .filter_map(move |p| u32::try_from(*p).ok().map(|p| (topic.clone(), p)))
        })
        .collect()
}

/// The answer to SyncGroup (v0–v3): always with an assignment (empty on
/// errors).
pub(super) async fn sync_group(
    correlation_id: i32,
    version: i16,
    request: SyncGroupRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = SyncGroupResponse::default();
    answer.assignment = Bytes::new();
    let group = request.group_id.0.to_string();
    if let Err(code) = may_use_group(caller, ctx, &group) {
        answer.error_code = code;
        return frame(correlation_id, version, &answer);
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| AssignmentIn {
            member_id: a.member_id.to_string(),
            partitions: assigned_partitions(&a.assignment),
            assignment: a.assignment.to_vec(),
        })
        .collect();
    let synced = ctx
        .net
        .broker
        .sync_group(
            &group,
            &request.member_id,
            request.generation_id,
            assignments,
        )
        .await;
    match synced {
        Ok(assignment) => answer.assignment = Bytes::from(assignment),
        Err(e) => answer.error_code = group_code(&e),
    }
    frame(correlation_id, version, &answer)
}

/// The answer to Heartbeat (v0–v3).
pub(super) fn heartbeat(
    correlation_id: i32,
    version: i16,
    request: HeartbeatRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = HeartbeatResponse::default();
    let group = request.group_id.0.to_string();
    answer.error_code = match may_use_group(caller, ctx, &group) {
        Err(code) => code,
        Ok(()) => ctx
            .net
            .broker
            .heartbeat_group(&group, &request.member_id, request.generation_id)
            .map_or_else(|e| group_code(&e), |()| 0),
    };
    frame(correlation_id, version, &answer)
}

/// The answer to LeaveGroup (v0–v3; v3 names several members).
pub(super) fn leave_group(
    correlation_id: i32,
    version: i16,
    request: LeaveGroupRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = LeaveGroupResponse::default();
    let group = request.group_id.0.to_string();
    if let Err(code) = may_use_group(caller, ctx, &group) {
        answer.error_code = code;
        return frame(correlation_id, version, &answer);
    }
    let ids: Vec<String> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![request.member_id.to_string()]
    };
    let results = ctx.net.broker.leave_group(&group, &ids);
    if version >= 3 {
        answer.members = ids
            .iter()
            .zip(&results)
            .map(|(id, result)| {
                let mut member = MemberResponse::default();
                member.member_id = text(id);
                member.error_code = result.as_ref().map_or_else(group_code, |()| 0);
                member
            })
            .collect();
    } else if let Some(Err(e)) = results.first() {
        answer.error_code = group_code(e);
    }
    frame(correlation_id, version, &answer)
}

/// The answer to OffsetCommit (v2–v8): the partitions the caller may read
/// and that exist are committed together, answered once fsynced.
pub(super) async fn offset_commit(
    correlation_id: i32,
    version: i16,
    request: OffsetCommitRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let group = request.group_id.0.to_string();
    let group_refusal = may_use_group(caller, ctx, &group).err();
    // (topic, partition, offset, refusal before the commit)
    let mut rows: Vec<(String, i32, i64, Option<i16>)> = Vec::new();
    for t in &request.topics {
        let topic = t.name.0.to_string();
        let readable = may_read(caller, ctx, &topic);
        for p in &t.partitions {
            let refusal = group_refusal
                .or((!readable).then_some(ResponseError::TopicAuthorizationFailed.code()))
                .or((p.committed_offset < 0 || p.partition_index < 0)
                    .then_some(ResponseError::InvalidCommitOffsetSize.code()));
            rows.push((
                topic.clone(),
                p.partition_index,
                p.committed_offset,
                refusal,
            ));
        }
    }
    let offsets: Vec<(&str, u32, u64)> = rows
        .iter()
        .filter(|r| r.3.is_none())
        .filter_map(|(t, p, o, _)| {
            Some((t.as_str(), u32::try_from(*p).ok()?, u64::try_from(*o).ok()?))
        })
        .collect();
    let outcome = if offsets.is_empty() {
        0
    } else {
        ctx.net
            .broker
            .commit_group(
                &group,
                &request.member_id,
                request.generation_id_or_member_epoch,
                &offsets,
            )
            .await
            .map_or_else(|e| commit_code(&e), |()| 0)
    };
    let mut answer = OffsetCommitResponse::default();
    for (topic, partition, _, refusal) in rows {
        let mut out = OffsetCommitResponsePartition::default();
        out.partition_index = partition;
        out.error_code = refusal.unwrap_or(outcome);
        match answer.topics.last_mut() {
            Some(last) if *last.name.0 == *topic => last.partitions.push(out),
            _ => {
                let mut t = OffsetCommitResponseTopic::default();
                t.name = topic_name(&topic);
                t.partitions.push(out);
                answer.topics.push(t);
            }
        }
    }
    frame(correlation_id, version, &answer)
}

/// A commit's error: unknown partitions are Kafka's per-partition code.
fn commit_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Group {
            code: crate::wire::ErrorCode::UnknownPartition,
            ..
        } => ResponseError::UnknownTopicOrPartition.code(),
        e => group_code(e),
    }
}

/// The answer to OffsetFetch (v1–v7): the group's committed offsets of the
/// named partitions (−1 where none), or of every topic the caller may read.
pub(super) async fn offset_fetch(
    correlation_id: i32,
    version: i16,
    request: OffsetFetchRequest,
    caller: &Caller,
    ctx: &KafkaContext,
) -> Out {
    let mut answer = OffsetFetchResponse::default();
    let group = request.group_id.0.to_string();
    let committed = match may_use_group(caller, ctx, &group) {
        Err(code) => Err(code),
        Ok(()) => ctx
            .net
            .broker
            .group_offsets(&group)
            .await
            .map_err(|e| group_code(&e)),
    };
    let committed = match committed {
        Ok(committed) => committed,
        Err(code) => {
            answer.error_code = code;
            if version < 2 {
                // v1 has no top-level error: put it on each partition.
                for t in request.topics.iter().flatten() {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = t.name.clone();
                    for p in &t.partition_indexes {
                        topic.partitions.push(partition(*p, -1, code));
                    }
                    answer.topics.push(topic);
                }
            }
            return frame(correlation_id, version, &answer);
        }
    };
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect(),
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for c in &committed {
                let p = i32::try_from(c.partition).unwrap_or(i32::MAX);
                match all.last_mut() {
                    Some(last) if last.0 == c.topic => last.1.push(p),
                    _ => all.push((c.topic.clone(), vec![p])),
                }
            }
            all.retain(|(t, _)| may_read(caller, ctx, t));
            all
        }
    };
    for (name, partitions) in wanted {
        let readable = may_read(caller, ctx, &name);
        let mut topic = OffsetFetchResponseTopic::default();
        topic.name = topic_name(&name);
        for p in partitions {
            let offset = committed
                .iter()
                .find(|c| c.topic == name && i64::from(c.partition) == i64::from(p))
                .map_or(-1, |c| i64::try_from(c.offset).unwrap_or(i64::MAX));
            topic.partitions.push(if readable {
                partition(p, offset, 0)
            } else {
                partition(p, -1, ResponseError::TopicAuthorizationFailed.code())
            });
        }
        answer.topics.push(topic);
    }
    frame(correlation_id, version, &answer)
}

fn partition(index: i32, offset: i64, code: i16) -> OffsetFetchResponsePartition {
    let mut out = OffsetFetchResponsePartition::default();
    out.partition_index = index;
    out.committed_offset = offset;
    out.committed_leader_epoch = -1;
    out.metadata = Some(text(""));
    out.error_code = code;
    out
}
