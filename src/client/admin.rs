//! Client calls for topic settings, storage counters, consumer groups and
//! offsets: thin wrappers that turn wire answers into owned values.

use super::{topic_info, unexpected, Client, ClientError, TopicInfo};
use crate::wire::{
    AlterTopicConfig, CommitOffsets, ConfigEntry, CreateTopic, FetchOffsets, GroupHeartbeat,
    GroupRef, GroupState, OffsetsForTimestamp, PartitionOffset, Request, Response, TopicOffsets,
    TopicRef,
};

/// One group of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub state: GroupState,
    pub members: u32,
    pub group_epoch: i32,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub assigned: Vec<(String, u32)>,
    pub revoking: Vec<(String, u32)>,
}

/// Offset and lag of one partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub topic: String,
    pub partition: u32,
    pub owner: Option<String>,
    pub committed: Option<u64>,
    pub log_start: u64,
    pub high_watermark: u64,
}

impl GroupLag {
    /// `high_watermark − committed` (Kafka's LAG); `None` without a commit.
    pub fn lag(&self) -> Option<u64> {
        self.committed
            .map(|c| self.high_watermark.saturating_sub(c))
    }
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: String,
    pub state: GroupState,
    pub group_epoch: i32,
    pub members: Vec<MemberInfo>,
    pub partitions: Vec<GroupLag>,
}

/// Storage counters of one partition.
pub type PartitionCounters = crate::wire::PartitionStats;

fn flatten(tps: &[crate::wire::TopicPartitions<'_>]) -> Vec<(String, u32)> {
    tps.iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
        .collect()
}

impl Client {
    /// Creates a topic with settings (`name=value` pairs, see `topics`).
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<TopicInfo, ClientError> {
        let body = self
            .call(Request::CreateTopic(CreateTopic {
                name,
                partitions,
                configs: configs
                    .iter()
                    .map(|(n, v)| ConfigEntry { name: n, value: v })
                    .collect(),
            }))
            .await?;
        topic_info(&body)
    }

    /// Sets and removes topic settings; returns the topic as it is now.
    pub async fn alter_topic(
        &self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<TopicInfo, ClientError> {
        let body = self
            .call(Request::AlterTopicConfig(AlterTopicConfig {
                topic,
                set: set
                    .iter()
                    .map(|(n, v)| ConfigEntry { name: n, value: v })
                    .collect(),
                delete: delete.iter().map(String::as_str).collect(),
            }))
            .await?;
        topic_info(&body)
    }

    /// Storage counters per partition.
    pub async fn topic_stats(&self, topic: &str) -> Result<Vec<PartitionCounters>, ClientError> {
        let body = self.call(Request::TopicStats(TopicRef { topic })).await?;
        match body.decode()? {
            Response::TopicStats(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Per partition, the first offset with a timestamp ≥ `timestamp_ms`
    /// (the high watermark when none).
    pub async fn offsets_for_timestamp(
        &self,
        topic: &str,
        timestamp_ms: i64,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let body = self
            .call(Request::OffsetsForTimestamp(OffsetsForTimestamp {
                topic,
                timestamp_ms,
            }))
            .await?;
        match body.decode()? {
            Response::Offsets(o) => Ok(o),
            other => Err(unexpected(&other)),
        }
    }

    /// Every group.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let body = self.call(Request::ListGroups).await?;
        match body.decode()? {
            Response::Groups(groups) => Ok(groups
                .iter()
                .map(|g| GroupListing {
                    group: g.group.to_string(),
                    state: g.state,
                    members: g.members,
                    group_epoch: g.group_epoch,
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Members, assignment, committed offsets and lag of a group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        let body = self
            .call(Request::DescribeGroup(GroupRef { group }))
            .await?;
        match body.decode()? {
            Response::Group(g) => Ok(GroupInfo {
                group: g.group.to_string(),
                state: g.state,
                group_epoch: g.group_epoch,
                members: g
                    .members
                    .iter()
                    .map(|m| MemberInfo {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        member_epoch: m.member_epoch,
                        assigned: flatten(&m.assigned),
                        revoking: flatten(&m.revoking),
                    })
                    .collect(),
                partitions: g
                    .partitions
                    .iter()
                    .map(|p| GroupLag {
                        topic: p.topic.to_string(),
                        partition: p.partition,
                        owner: p.owner.map(str::to_string),
                        committed: p.committed,
                        log_start: p.log_start,
                        high_watermark: p.high_watermark,
                    })
                    .collect(),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes the committed offsets of a group without members.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let body = self.call(Request::DeleteGroup(GroupRef { group })).await?;
        match body.decode()? {
            Response::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Committed offsets of a group, as `(topic, partition, offset)`.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Vec<(String, u32, u64)>, ClientError> {
        let body = self
            .call(Request::FetchOffsets(FetchOffsets {
                group,
                topics: topics.to_vec(),
            }))
            .await?;
        match body.decode()? {
            Response::GroupOffsets(topics) => Ok(topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.topic.to_string(), p.partition, p.offset))
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Commits `(topic, partition, offset)`s; returns once they are durable.
    /// An empty `member_id` (epoch -1) is an administrative commit, allowed
    /// only while the group has no members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, u32, u64)],
    ) -> Result<(), ClientError> {
        let mut topics: Vec<TopicOffsets<'_>> = Vec::new();
        for (topic, partition, offset) in offsets {
            let entry = PartitionOffset {
                partition: *partition,
                offset: *offset,
            };
            match topics.iter_mut().find(|t| t.topic == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(TopicOffsets {
                    topic,
                    partitions: vec![entry],
                }),
            }
        }
        let body = self
            .call(Request::CommitOffsets(CommitOffsets {
                group,
                member_id,
                member_epoch,
                offsets: topics,
            }))
            .await?;
        match body.decode()? {
            Response::Committed => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one raw group heartbeat (the group consumer does this for you).
    pub async fn group_heartbeat(
        &self,
        heartbeat: GroupHeartbeat<'_>,
    ) -> Result<(String, i32, u32, Vec<(String, u32)>), ClientError> {
        let body = self.call(Request::GroupHeartbeat(heartbeat)).await?;
        match body.decode()? {
            Response::GroupHeartbeat(r) => Ok((
                r.member_id.to_string(),
                r.member_epoch,
                r.heartbeat_interval_ms,
                flatten(&r.assignment),
            )),
            other => Err(unexpected(&other)),
        }
    }
}
