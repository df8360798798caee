//! Handlers of the consumer group and topic administration requests:
//! heartbeats, commits, committed offsets, group listing and description,
//! topic settings, storage counters and offsets by time.
//!
//! Membership decisions are the coordinator's (`groups`); this file turns
//! wire requests into its calls and storage calls, waits for commits to be
//! durable (the same group-commit rounds as records), and encodes answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::groups::{check_group_id, HeartbeatIn, Tp};
use super::{encode, encode_description, failure, Broker, Failure, Reply};
use crate::storage::CommittedOffset;
use crate::wire::{
    AlterTopicConfig, CommitOffsets, ErrorCode, FetchOffsets, GroupDescription, GroupHeartbeat,
    GroupHeartbeatReply, GroupState, GroupSummary, MemberDescription, OffsetsForTimestamp,
    PartitionLag, PartitionOffset, PartitionStats, Response, TopicOffsets, TopicPartitions,
};

/// Longest a commit waits for its fsync before answering `Timeout`, in ms.
pub const COMMIT_TIMEOUT_MS: u64 = 30_000;

fn grouped(tps: &BTreeSet<Tp>) -> Vec<TopicPartitions<'_>> {
    let mut out: Vec<TopicPartitions<'_>> = Vec::new();
    for (topic, partition) in tps {
        match out.last_mut() {
            Some(last) if last.topic == topic => last.partitions.push(*partition),
            _ => out.push(TopicPartitions {
                topic,
                partitions: vec![*partition],
            }),
        }
    }
    out
}

impl Broker {
    pub(super) fn group_heartbeat(
        &self,
        correlation_id: u32,
        h: &GroupHeartbeat<'_>,
    ) -> Result<Reply, Failure> {
        let owned = h
            .owned
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
            .collect();
        let out = self.coordinator.heartbeat(HeartbeatIn {
            group: h.group.to_string(),
            member_id: h.member_id.to_string(),
            member_epoch: h.member_epoch,
            client_id: h.client_id.to_string(),
            topics: h.topics.iter().map(|t| t.to_string()).collect(),
            pattern: h.pattern.map(str::to_string),
            session_timeout_ms: h.session_timeout_ms,
            rebalance_timeout_ms: h.rebalance_timeout_ms,
            owned,
        })?;
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::GroupHeartbeat(GroupHeartbeatReply {
                member_id: &out.member_id,
                member_epoch: out.member_epoch,
                heartbeat_interval_ms: out.heartbeat_interval_ms,
                assignment: grouped(&out.assignment),
            }),
        )))
    }

    pub(super) async fn commit_offsets(
        &self,
        correlation_id: u32,
        c: &CommitOffsets<'_>,
    ) -> Result<Reply, Failure> {
        let offsets: Vec<(&str, u32, u64)> = c
            .offsets
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic, p.partition, p.offset))
            })
            .collect();
        if offsets.is_empty() {
            return Err((ErrorCode::InvalidRequest, "commit names no offset".into()));
        }
        let ticket = self
            .coordinator
            .commit(c.group, c.member_id, c.member_epoch, &offsets)?;
        self.wait_round(ticket).await?;
        Ok(Reply::Ready(encode(correlation_id, Response::Committed)))
    }

    /// Waits until the flush round `ticket` completed.
    pub(super) async fn wait_round(&self, ticket: u64) -> Result<(), Failure> {
        let deadline = Instant::now() + Duration::from_millis(COMMIT_TIMEOUT_MS);
        loop {
            let listener = self.storage.durable_event().listen();
            if self.storage.is_committed(ticket) {
                return Ok(());
            }
            self.storage.check_healthy().map_err(failure)?;
            let timed_out = smol::future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    smol::Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out && !self.storage.is_committed(ticket) {
                return Err((
                    ErrorCode::Timeout,
                    format!("written, but not fsynced within {COMMIT_TIMEOUT_MS} ms"),
                ));
            }
        }
    }

    pub(super) async fn committed(&self, group: &str) -> Result<Vec<CommittedOffset>, Failure> {
        check_group_id(group)?;
        let storage = self.storage.clone();
        let group = group.to_string();
        smol::unblock(move || storage.committed_offsets(&group))
            .await
            .map_err(failure)
    }

    /// The group's committed offsets of the topics `visible` lets through.
    pub(super) async fn fetch_offsets(
        &self,
        correlation_id: u32,
        f: &FetchOffsets<'_>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Reply, Failure> {
        let committed = self.committed(f.group).await?;
        let mut topics: Vec<TopicOffsets<'_>> = Vec::new();
        for c in &committed {
            if !f.topics.is_empty() && !f.topics.contains(&c.topic.as_str()) {
                continue;
            }
            if !visible(&c.topic) {
                continue;
            }
            let offset = PartitionOffset {
                partition: c.partition,
                offset: c.offset,
            };
            match topics.last_mut() {
                Some(last) if last.topic == c.topic => last.partitions.push(offset),
                _ => topics.push(TopicOffsets {
                    topic: &c.topic,
                    partitions: vec![offset],
                }),
            }
        }
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::GroupOffsets(topics),
        )))
    }

    /// Lists the groups `visible` lets through.
    pub(super) async fn list_groups_visible(
        &self,
        correlation_id: u32,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Reply, Failure> {
        let storage = self.storage.clone();
        let mut ids: BTreeSet<String> = smol::unblock(move || storage.groups_with_offsets())
            .await
            .map_err(failure)?
            .into_iter()
            .collect();
        ids.extend(self.coordinator.active_groups());
        ids.retain(|id| visible(id));
        let views: Vec<(String, Option<super::groups::GroupView>)> = ids
            .into_iter()
            .map(|id| {
                let view = self.coordinator.view(&id);
                (id, view)
            })
            .collect();
        let summaries = views
            .iter()
            .map(|(id, view)| GroupSummary {
                group: id,
                state: view.as_ref().map_or(GroupState::Empty, |v| v.state),
                members: view
                    .as_ref()
                    .map_or(0, |v| u32::try_from(v.members.len()).unwrap_or(u32::MAX)),
                group_epoch: view.as_ref().map_or(0, |v| v.group_epoch),
            })
            .collect();
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::Groups(summaries),
        )))
    }

    /// The group's members and, for the topics `visible` lets through, its
    /// partitions with owner, committed offset and watermarks (the others
    /// are left out, as are members' assignments of them).
    pub(super) async fn describe_group(
        &self,
        correlation_id: u32,
        group: &str,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Reply, Failure> {
        let mut committed = self.committed(group).await?;
        let mut view = self.coordinator.view(group);
        let known = view.is_some() || !committed.is_empty();
        committed.retain(|c| visible(&c.topic));
        if let Some(v) = view.as_mut() {
            for m in &mut v.members {
                m.assigned.retain(|(t, _)| visible(t));
                m.revoking.retain(|(t, _)| visible(t));
            }
        }
        if !known {
            return Err((
                ErrorCode::UnknownGroup,
                format!("no group {group:?}: it has neither members nor committed offsets"),
            ));
        }
        // Every partition the group owns or has committed, with its owner.
        let mut rows: BTreeMap<Tp, (Option<&str>, Option<u64>)> = BTreeMap::new();
        if let Some(v) = &view {
            for m in &v.members {
                for tp in m.assigned.iter().chain(m.revoking.iter()) {
                    rows.entry(tp.clone()).or_default().0 = Some(m.member_id.as_str());
                }
            }
        }
        for c in &committed {
            rows.entry((c.topic.clone(), c.partition)).or_default().1 = Some(c.offset);
        }
        let partitions = rows
            .iter()
            .map(|((topic, partition), (owner, committed))| {
                let marks = self
                    .storage
                    .topic(topic)
                    .and_then(|t| t.partition(*partition).map(|log| log.watermarks()));
                PartitionLag {
                    topic,
                    partition: *partition,
                    owner: *owner,
                    committed: *committed,
                    log_start: marks.map_or(0, |m| m.log_start),
                    high_watermark: marks.map_or(0, |m| m.durable),
                }
            })
            .collect();
        let members = view
            .as_ref()
            .map(|v| {
                v.members
                    .iter()
                    .map(|m| MemberDescription {
                        member_id: &m.member_id,
                        client_id: &m.client_id,
                        member_epoch: m.member_epoch,
                        assigned: grouped(&m.assigned),
                        revoking: grouped(&m.revoking),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::Group(GroupDescription {
                group,
                state: view.as_ref().map_or(GroupState::Empty, |v| v.state),
                group_epoch: view.as_ref().map_or(0, |v| v.group_epoch),
                members,
                partitions,
            }),
        )))
    }

    pub(super) async fn delete_group(
        &self,
        correlation_id: u32,
        group: &str,
    ) -> Result<Reply, Failure> {
        check_group_id(group)?;
        self.coordinator.check_empty(group)?;
        if self.committed(group).await?.is_empty() {
            return Err((
                ErrorCode::UnknownGroup,
                format!("no group {group:?} to delete"),
            ));
        }
        let storage = self.storage.clone();
        let id = group.to_string();
        let ticket = smol::unblock(move || storage.delete_group_offsets(&id))
            .await
            .map_err(failure)?;
        self.wait_round(ticket).await?;
        log::info!("deleted the committed offsets of group {group}");
        Ok(Reply::Ready(encode(correlation_id, Response::Deleted)))
    }

    pub(super) async fn alter_topic_config(
        &self,
        correlation_id: u32,
        a: &AlterTopicConfig<'_>,
    ) -> Result<Reply, Failure> {
        let storage = self.storage.clone();
        let name = a.topic.to_string();
        let set: Vec<(String, String)> = a
            .set
            .iter()
            .map(|e| (e.name.to_string(), e.value.to_string()))
            .collect();
        let delete: Vec<String> = a.delete.iter().map(|d| d.to_string()).collect();
        let topic = smol::unblock(move || storage.alter_topic(&name, &set, &delete))
            .await
            .map_err(failure)?;
        log::info!(
            "topic {} settings are now {:?}",
            topic.meta.name,
            topic.meta.configs
        );
        Ok(Reply::Ready(encode_description(
            correlation_id,
            &topic,
            self.mirror(),
        )))
    }

    pub(super) fn topic_stats(&self, correlation_id: u32, name: &str) -> Result<Reply, Failure> {
        let topic = self.topic(name)?;
        let stats = topic
            .partitions()
            .iter()
            .map(|log| {
                let s = log.stats();
                PartitionStats {
                    partition: log.partition(),
                    stored_bytes: s.stored_bytes,
                    retention_removed_records: s.retention_removed_records,
                    compaction_removed_records: s.compaction_removed_records,
                    compaction_passes: s.compaction_passes,
                    dropped_records: s.dropped_records,
                    dropped_bytes: s.dropped_bytes,
                    keep_from: s.keep_from,
                }
            })
            .collect();
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::TopicStats(stats),
        )))
    }

    pub(super) async fn offsets_for_timestamp(
        &self,
        correlation_id: u32,
        o: &OffsetsForTimestamp<'_>,
    ) -> Result<Reply, Failure> {
        let topic = self.topic(o.topic)?;
        let timestamp_ms = o.timestamp_ms;
        let offsets = smol::unblock(move || {
            topic
                .partitions()
                .iter()
                .map(|log| {
                    log.offset_for_timestamp(timestamp_ms)
                        .map(|offset| PartitionOffset {
                            partition: log.partition(),
                            offset,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(failure)?;
        Ok(Reply::Ready(encode(
            correlation_id,
            Response::Offsets(offsets),
        )))
    }
}
