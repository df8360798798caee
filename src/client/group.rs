//! A consumer group member (Kafka's consumer with KIP-848 server-side
//! assignment), driven by [`GroupConsumer::poll`].
//!
//! `poll` heartbeats when due, gives up revoked partitions (the rebalance
//! listener hears `Revoked`, their positions are committed, then the next
//! heartbeat releases them), takes new ones (starting at the committed
//! offset, else at the reset policy's end), and fetches from the owned
//! partitions. Positions advance when `poll` returns records; `commit`
//! commits them. The usual loop — `poll`, process, `commit`, `poll` — is
//! at-least-once: a record is committed only after the caller processed it.
//!
//! A fenced member hears `Lost` for everything it owned and rejoins with
//! epoch 0. After `FencedMemberEpoch` (the coordinator knows it, at another
//! epoch: e.g. a heartbeat answer was lost) it rejoins with its member id,
//! as KIP-848's consumer does, so the coordinator replaces its stale entry
//! at once and the partitions it held move now, not after a session
//! timeout. After `UnknownMemberId` (its session expired, or the hub
//! restarted) it rejoins as a new member: epochs start again after a
//! restart, so reusing an old id could let a zombie with that id and a
//! coinciding epoch commit. This file does not reconnect: a lost connection
//! is an error for the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Client, ClientError, ResponseBody};
use crate::wire::batch::{batch_len, BatchHeader, Record};
use crate::wire::{ErrorCode, FetchPartition, GroupHeartbeat, Response, TopicPartitions};

/// Default fetch size of a group consumer, in bytes.
pub const GROUP_FETCH_BYTES_MAX_DEFAULT: u32 = 1_000_000;
/// Default longest long-poll of a group consumer's fetch, in ms.
pub const GROUP_FETCH_WAIT_MS_DEFAULT: u32 = 500;
/// Most heartbeats one `poll` sends back to back (join, release, rejoin).
const HEARTBEATS_PER_POLL_MAX: usize = 4;

/// A topic partition.
pub type Tp = (String, u32);

/// Where a member starts in a partition without a committed offset (and
/// after its offset fell out of range), as Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

/// Settings of a group member.
#[derive(Debug, Clone)]
pub struct GroupConsumerOptions {
    pub group: String,
    pub topics: Vec<String>,
    /// Or a regular expression whole topic names must match.
    pub pattern: Option<String>,
    pub client_id: String,
    /// 0 = the server's default.
    pub session_timeout_ms: u32,
    /// 0 = the server's default.
    pub rebalance_timeout_ms: u32,
    pub reset: OffsetReset,
    pub fetch_bytes_max: u32,
    pub fetch_wait_ms_max: u32,
}

impl GroupConsumerOptions {
    /// Subscribes `group` to `topics` with the defaults.
    pub fn new(group: &str, topics: &[&str]) -> GroupConsumerOptions {
        GroupConsumerOptions {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: None,
            client_id: format!("eddy-group-{}", std::process::id()),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            reset: OffsetReset::Latest,
            fetch_bytes_max: GROUP_FETCH_BYTES_MAX_DEFAULT,
            fetch_wait_ms_max: GROUP_FETCH_WAIT_MS_DEFAULT,
        }
    }
}

/// What the rebalance listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceEvent<'a> {
    /// Now owned (positions set).
    Assigned(&'a [Tp]),
    /// To be given up: called before their offsets are committed and the
    /// coordinator is told.
    Revoked(&'a [Tp]),
    /// Taken away without a chance to commit (the member was fenced).
    Lost(&'a [Tp]),
}

type Listener = Box<dyn FnMut(RebalanceEvent<'_>) + Send>;

/// Records returned by one `poll`: a fetch response of one topic.
pub struct Polled {
    pub topic: String,
    body: ResponseBody,
    /// Per partition: the position the fetch started at.
    starts: Vec<(u32, u64)>,
    /// Records at or after the start positions.
    pub records: u64,
}

impl Polled {
    /// Calls `f(partition, offset, timestamp_ms, record)` for every record,
    /// checking each batch's CRC.
    pub fn for_each(
        &self,
        mut f: impl FnMut(u32, u64, i64, &Record<'_>),
    ) -> Result<(), ClientError> {
        let Response::Fetched(fetched) = self.body.decode()? else {
            return Err(ClientError::Protocol("fetch answer changed".into()));
        };
        for part in &fetched.partitions {
            let Some(&(_, from)) = self.starts.iter().find(|(p, _)| *p == part.partition) else {
                continue;
            };
            if part.error.is_some() {
                continue;
            }
            super::for_each_record(part.batches, from, |offset, ts, r| {
                f(part.partition, offset, ts, r)
            })
            .map_err(|e| ClientError::Protocol(format!("partition {}: {e}", part.partition)))?;
        }
        Ok(())
    }
}

/// One member of a consumer group.
pub struct GroupConsumer {
    client: Client,
    options: GroupConsumerOptions,
    member_id: String,
    epoch: i32,
    /// Owned partitions and the next offset to hand out.
    positions: BTreeMap<Tp, u64>,
    /// Last committed offsets of owned partitions.
    committed: BTreeMap<Tp, u64>,
    interval: Duration,
    next_heartbeat: Instant,
    listener: Option<Listener>,
    /// Round-robin over subscribed topics with owned partitions.
    next_topic: usize,
    /// Fetches sent (rotates the partition order).
    fetches: usize,
}

impl GroupConsumer {
    /// Joins the group on `client` (the first heartbeat).
    pub async fn join(
        client: Client,
        options: GroupConsumerOptions,
    ) -> Result<GroupConsumer, ClientError> {
        let mut consumer = GroupConsumer::new(client, options);
        consumer.heartbeat().await?;
        Ok(consumer)
    }

    /// A member that joins on its first `poll` (set the listener first).
    pub fn new(client: Client, options: GroupConsumerOptions) -> GroupConsumer {
        GroupConsumer {
            client,
            options,
            member_id: String::new(),
            epoch: 0,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            interval: Duration::from_millis(100),
            next_heartbeat: Instant::now(),
            listener: None,
            next_topic: 0,
            fetches: 0,
        }
    }

    /// Hears assignments and revocations as they happen.
    pub fn set_listener(&mut self, listener: impl FnMut(RebalanceEvent<'_>) + Send + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The member id the coordinator gave (empty before joining).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The current member epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Owned partitions and their positions.
    pub fn positions(&self) -> &BTreeMap<Tp, u64> {
        &self.positions
    }

    /// Moves the position of an owned partition (e.g. back to the first
    /// record the caller did not process). Ignored for other partitions.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) {
        if let Some(position) = self.positions.get_mut(&(topic.to_string(), partition)) {
            *position = offset;
        }
    }

    /// The connection (for admin calls on the side).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn notify(&mut self, event: RebalanceEvent<'_>) {
        if let Some(listener) = self.listener.as_mut() {
            listener(event);
        }
    }

    /// Heartbeats when due, then fetches from owned partitions (long-polling
    /// at most until the next heartbeat). `None` when nothing arrived.
    pub async fn poll(&mut self) -> Result<Option<Polled>, ClientError> {
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
        }
        let topics: Vec<String> = self
            .positions
            .keys()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if topics.is_empty() {
            smol::Timer::at(self.next_heartbeat).await;
            return Ok(None);
        }
        let topic = topics[self.next_topic % topics.len()].clone();
        self.next_topic = self.next_topic.wrapping_add(1);
        let mut wants: Vec<FetchPartition> = self
            .positions
            .iter()
            .filter(|((t, _), _)| *t == topic)
            .map(|((_, partition), &offset)| FetchPartition {
                partition: *partition,
                offset,
            })
            .collect();
        // The server fills the fetch in the order asked: start at another
        // partition each time so none starves behind a backlog.
        let rotate = self.fetches % wants.len();
        wants.rotate_left(rotate);
        self.fetches = self.fetches.wrapping_add(1);
        let until_heartbeat = self
            .next_heartbeat
            .saturating_duration_since(Instant::now())
            .as_millis();
        let wait = u32::try_from(until_heartbeat)
            .unwrap_or(u32::MAX)
            .min(self.options.fetch_wait_ms_max);
        let body = self
            .client
            .fetch(&topic, &wants, self.options.fetch_bytes_max, wait)
            .await?;
        let mut starts = Vec::with_capacity(wants.len());
        let mut records = 0u64;
        {
            let Response::Fetched(fetched) = body.decode()? else {
                return Err(ClientError::Protocol("expected a fetch answer".into()));
            };
            for part in &fetched.partitions {
                let tp = (topic.clone(), part.partition);
                let Some(&from) = self.positions.get(&tp) else {
                    continue;
                };
                match part.error {
                    None => {}
                    Some(ErrorCode::OffsetOutOfRange) => {
                        let to = match self.options.reset {
                            OffsetReset::Earliest => part.log_start,
                            OffsetReset::Latest => part.high_watermark,
                        };
                        log::warn!(
                            "{}/{}: offset {from} is out of range ({}..{}); resetting to {to}",
                            topic,
                            part.partition,
                            part.log_start,
                            part.high_watermark
                        );
                        self.positions.insert(tp, to);
                        continue;
                    }
                    Some(code) => {
                        return Err(ClientError::Server {
                            code,
                            message: format!("fetch of {topic}/{} failed", part.partition),
                        })
                    }
                }
                let (end, count) = scan_batches(part.batches, from)?;
                if let Some(end) = end {
                    if end > from {
                        self.positions.insert(tp, end);
                    }
                }
                records += count;
                starts.push((part.partition, from));
            }
        }
        if records == 0 {
            return Ok(None);
        }
        Ok(Some(Polled {
            topic,
            body,
            starts,
            records,
        }))
    }

    /// Heartbeats now (join, release, take new partitions) without fetching.
    pub async fn heartbeat_now(&mut self) -> Result<(), ClientError> {
        self.heartbeat().await
    }

    /// Offsets the next `commit` would send: owned partitions whose position
    /// moved since their last commit.
    pub fn uncommitted(&self) -> Vec<(String, u32, u64)> {
        self.positions
            .iter()
            .filter(|(tp, pos)| self.committed.get(*tp) != Some(*pos))
            .map(|((t, p), &o)| (t.clone(), *p, o))
            .collect()
    }

    /// Commits the positions of owned partitions that moved since the last
    /// commit; returns once they are durable.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets = self.uncommitted();
        self.commit_these(offsets).await
    }

    async fn commit_these(&mut self, offsets: Vec<(String, u32, u64)>) -> Result<(), ClientError> {
        if offsets.is_empty() || self.member_id.is_empty() {
            return Ok(());
        }
        self.client
            .commit_offsets(&self.options.group, &self.member_id, self.epoch, &offsets)
            .await?;
        for (t, p, o) in offsets {
            self.committed.insert((t, p), o);
        }
        Ok(())
    }

    /// Commits, gives up every partition and leaves the group.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.commit().await?;
        let owned: Vec<Tp> = self.positions.keys().cloned().collect();
        if !owned.is_empty() {
            self.notify(RebalanceEvent::Revoked(&owned));
        }
        self.positions.clear();
        if self.member_id.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = self.options.topics.iter().map(String::as_str).collect();
        self.client
            .group_heartbeat(GroupHeartbeat {
                group: &self.options.group,
                member_id: &self.member_id,
                member_epoch: -1,
                client_id: &self.options.client_id,
                topics,
                pattern: self.options.pattern.as_deref(),
                session_timeout_ms: self.options.session_timeout_ms,
                rebalance_timeout_ms: self.options.rebalance_timeout_ms,
                owned: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// Heartbeats until the member holds a settled assignment: releases
    /// revoked partitions (committing them first) and rejoins if fenced.
    async fn heartbeat(&mut self) -> Result<(), ClientError> {
        for _ in 0..HEARTBEATS_PER_POLL_MAX {
            let owned_set: BTreeSet<Tp> = self.positions.keys().cloned().collect();
            let owned = group_by_topic(&owned_set);
            let topics: Vec<&str> = self.options.topics.iter().map(String::as_str).collect();
            let reply = self
                .client
                .group_heartbeat(GroupHeartbeat {
                    group: &self.options.group,
                    member_id: &self.member_id,
                    member_epoch: self.epoch,
                    client_id: &self.options.client_id,
                    topics,
                    pattern: self.options.pattern.as_deref(),
                    session_timeout_ms: self.options.session_timeout_ms,
                    rebalance_timeout_ms: self.options.rebalance_timeout_ms,
                    owned,
                })
                .await;
            let (member_id, epoch, interval_ms, assignment) = match reply {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                    ) =>
                {
                    let lost: Vec<Tp> = self.positions.keys().cloned().collect();
                    log::warn!("group {}: {e}; rejoining", self.options.group);
                    if !lost.is_empty() {
                        self.notify(RebalanceEvent::Lost(&lost));
                    }
                    self.positions.clear();
                    self.committed.clear();
                    if e.code() == Some(ErrorCode::UnknownMemberId) {
                        self.member_id.clear();
                    }
                    self.epoch = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.member_id = member_id;
            self.epoch = epoch;
            self.interval = Duration::from_millis(u64::from(interval_ms.max(1)));
            self.next_heartbeat = Instant::now() + self.interval;
            let assignment: BTreeSet<Tp> = assignment.into_iter().collect();
            let revoked: Vec<Tp> = owned_set.difference(&assignment).cloned().collect();
            if !revoked.is_empty() {
                self.notify(RebalanceEvent::Revoked(&revoked));
                let offsets: Vec<(String, u32, u64)> = revoked
                    .iter()
                    .filter_map(|tp| {
                        let pos = *self.positions.get(tp)?;
                        (self.committed.get(tp) != Some(&pos)).then(|| (tp.0.clone(), tp.1, pos))
                    })
                    .collect();
                if let Err(e) = self.commit_these(offsets).await {
                    log::warn!(
                        "group {}: could not commit revoked partitions: {e}",
                        self.options.group
                    );
                }
                for tp in &revoked {
                    self.positions.remove(tp);
                    self.committed.remove(tp);
                }
                // Tell the coordinator at once, so the new owners can start.
                continue;
            }
            let added: Vec<Tp> = assignment.difference(&owned_set).cloned().collect();
            if !added.is_empty() {
                self.start_positions(&added).await?;
                self.notify(RebalanceEvent::Assigned(&added));
            }
            return Ok(());
        }
        Ok(())
    }

    /// Positions of newly assigned partitions: committed, else the reset end.
    async fn start_positions(&mut self, added: &[Tp]) -> Result<(), ClientError> {
        let topics: BTreeSet<&str> = added.iter().map(|(t, _)| t.as_str()).collect();
        let topic_list: Vec<&str> = topics.iter().copied().collect();
        let committed = self
            .client
            .fetch_offsets(&self.options.group, &topic_list)
            .await?;
        for topic in topics {
            let marks = self.client.watermarks(topic).await?;
            for tp in added.iter().filter(|(t, _)| t == topic) {
                let stored = committed
                    .iter()
                    .find(|(t, p, _)| *t == tp.0 && *p == tp.1)
                    .map(|c| c.2);
                let position = match stored {
                    Some(offset) => {
                        self.committed.insert(tp.clone(), offset);
                        offset
                    }
                    None => {
                        let m = marks.iter().find(|m| m.partition == tp.1);
                        match self.options.reset {
                            OffsetReset::Earliest => m.map_or(0, |m| m.log_start),
                            OffsetReset::Latest => m.map_or(0, |m| m.durable),
                        }
                    }
                };
                self.positions.insert(tp.clone(), position);
            }
        }
        Ok(())
    }
}

fn group_by_topic(tps: &BTreeSet<Tp>) -> Vec<TopicPartitions<'_>> {
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

/// The end offset of the last batch and how many records lie at or after
/// `from`, from the batch headers (the CRC is checked when records are read).
fn scan_batches(mut bytes: &[u8], from: u64) -> Result<(Option<u64>, u64), ClientError> {
    let mut end = None;
    let mut count = 0u64;
    while !bytes.is_empty() {
        let len = batch_len(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let header =
            BatchHeader::read(&bytes[..len]).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let batch_end = header.end_offset();
        if batch_end > from {
            count += if header.base_offset >= from {
                u64::from(header.record_count)
            } else {
                // Partly before `from`: at most the records after it.
                u64::from(header.record_count).min(batch_end - from)
            };
        }
        end = Some(batch_end);
        bytes = &bytes[len..];
    }
    Ok((end, count))
}
