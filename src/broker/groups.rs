//! The consumer group coordinator (server-side assignment, as Kafka's
//! KIP-848 "next generation" consumer groups).
//!
//! Members send heartbeats with their subscription (topic names or a
//! pattern) and the partitions they currently own. The coordinator keeps,
//! per group, a **group epoch** (bumped when members, subscriptions or the
//! subscribed topics' partitions change) and a **target assignment** for
//! that epoch, computed by a sticky, balanced assignor ([`assign`]). Each
//! member is reconciled towards its target on its own heartbeats:
//!
//! 1. partitions it owns that are no longer in its target are **revoked**:
//!    they disappear from its assignment, and stay "revoking" until a
//!    heartbeat no longer lists them as owned (the member committed and
//!    stopped), or the member leaves, or its session or rebalance timeout
//!    expires;
//! 2. only then does it move to the new epoch and receive the target
//!    partitions that no other member owns or is still revoking.
//!
//! So a partition moves to a new owner only after its old owner released it
//! or its session expired, and at every moment each partition is owned by at
//! most one member. Commits are accepted only from a current member, with its
//! current epoch, for partitions it owns or is revoking; anything else is
//! fenced (`UnknownMemberId`, `StaleMemberEpoch`).
//!
//! Membership lives in memory: after a restart members rejoin (their old
//! ids are unknown, so stale members stay fenced). Committed offsets are
//! durable in storage. Time comes from an injectable clock; sessions are
//! expired whenever a group is touched. This file decides membership and
//! assignment; it does not touch sled (storage does) or sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use regex_lite::Regex;

use super::Failure;
use crate::storage::Storage;
use crate::wire::{ErrorCode, GroupState};

pub mod classic;

/// Session timeout when the member does not ask for one, in ms (Kafka's
/// `group.consumer.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS_DEFAULT: u32 = 45_000;
/// Shortest session timeout a member may ask for, in ms.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 500;
/// Longest session timeout a member may ask for, in ms.
pub const SESSION_TIMEOUT_MS_MAX: u32 = 1_800_000;
/// Time a member has to release revoked partitions when it does not ask
/// for another, in ms (Kafka's `max.poll.interval.ms`).
pub const REBALANCE_TIMEOUT_MS_DEFAULT: u32 = 300_000;
/// Longest rebalance timeout a member may ask for, in ms.
pub const REBALANCE_TIMEOUT_MS_MAX: u32 = 1_800_000;
/// Heartbeat interval of a stable group, in ms (never more than a third of
/// the member's session timeout).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u32 = 3_000;
/// Heartbeat interval while the group is reconciling, in ms: members learn
/// quickly that partitions were released for them.
pub const HEARTBEAT_INTERVAL_RECONCILING_MS: u32 = 100;
/// Most members in one group.
pub const GROUP_MEMBERS_MAX: usize = 1_000;
/// Most groups with members at once.
pub const GROUPS_MAX: usize = 10_000;
/// Most topic names in one subscription, and bytes of a pattern.
pub const SUBSCRIPTION_TOPICS_MAX: usize = 1_000;
/// Longest subscription pattern, in bytes.
pub const PATTERN_BYTES_MAX: usize = 1_000;

/// Milliseconds since the epoch; injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A topic partition.
pub type Tp = (String, u32);

/// A heartbeat, decoded into owned values.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatIn {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub topics: Vec<String>,
    pub pattern: Option<String>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub owned: BTreeSet<Tp>,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOut {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    pub assignment: BTreeSet<Tp>,
}

/// A member as describe shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub assigned: BTreeSet<Tp>,
    pub revoking: BTreeSet<Tp>,
}

/// A group's membership at one moment.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: GroupState,
    pub group_epoch: i32,
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    epoch: i32,
    topics: BTreeSet<String>,
    pattern: Option<(String, Regex)>,
    assigned: BTreeSet<Tp>,
    revoking: BTreeSet<Tp>,
    last_seen_ms: u64,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    /// When the current revocation began.
    revoke_since_ms: Option<u64>,
}

impl Member {
    fn subscribes(&self, topic: &str) -> bool {
        self.topics.contains(topic)
            || self
                .pattern
                .as_ref()
                .is_some_and(|(_, re)| re.is_match(topic))
    }

    fn owns(&self, tp: &Tp) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }
}

#[derive(Debug, Default)]
struct Group {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<Tp>>,
    /// Partition counts of the subscribed topics at `epoch`.
    topology: BTreeMap<String, u32>,
}

impl Group {
    fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.assignment_epoch == self.epoch
            && self.members.iter().all(|(id, m)| {
                m.revoking.is_empty() && self.target.get(id).is_some_and(|t| *t == m.assigned)
            })
        {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }
}

/// The coordinator of every group of this hub.
pub struct Coordinator {
    storage: Arc<Storage>,
    clock: Clock,
    groups: Mutex<HashMap<String, Group>>,
    /// Groups of the classic protocol (client-side assignment), by id;
    /// locked after `groups` when both are.
    classic: Mutex<HashMap<String, classic::ClassicGroup>>,
    next_member: AtomicU64,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    (code, message.into())
}

/// Checks a group id: 1–249 characters of `[a-zA-Z0-9._-]` (as topics).
pub fn check_group_id(group: &str) -> Result<(), Failure> {
    if crate::wire::is_valid_topic_name(group) {
        Ok(())
    } else {
        Err(fail(
            ErrorCode::InvalidRequest,
            format!("group id {group:?} is invalid: use 1–249 characters of [a-zA-Z0-9._-]"),
        ))
    }
}

impl Coordinator {
    pub fn new(storage: Arc<Storage>, clock: Clock) -> Coordinator {
        Coordinator {
            storage,
            clock,
            groups: Mutex::new(HashMap::new()),
            classic: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
        }
    }

    /// Handles one heartbeat: join, stay, or leave.
    pub fn heartbeat(&self, hb: HeartbeatIn) -> Result<HeartbeatOut, Failure> {
        check_group_id(&hb.group)?;
        let now = (self.clock)();
        let mut groups = self.groups.lock().expect("groups lock");
        if hb.member_epoch == 0 && self.classic_has_members(&hb.group) {
            return Err(fail(
                ErrorCode::InvalidRequest,
                format!(
                    "group {} has Kafka (classic protocol) members: a group name is used by one \
                     protocol at a time; use another group id or stop those consumers first",
                    hb.group
                ),
            ));
        }
        if !groups.contains_key(&hb.group) {
            if hb.member_epoch != 0 {
                return Err(unknown_member(&hb.group, &hb.member_id));
            }
            if groups.len() >= GROUPS_MAX {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    format!("this hub already coordinates {GROUPS_MAX} groups"),
                ));
            }
        }
        let group = groups.entry(hb.group.clone()).or_default();
        expire(group, now, &hb.group);
        let member_id = match hb.member_epoch {
            -1 => {
                if group.members.remove(&hb.member_id).is_some() {
                    log::info!("group {}: member {} left", hb.group, hb.member_id);
                    group.epoch += 1;
                }
                let out = HeartbeatOut {
                    member_id: hb.member_id.clone(),
                    member_epoch: -1,
                    heartbeat_interval_ms: 0,
                    assignment: BTreeSet::new(),
                };
                if group.members.is_empty() {
                    groups.remove(&hb.group);
                }
                return Ok(out);
            }
            0 => {
                let pattern = compile_pattern(hb.pattern.as_deref())?;
                check_subscription(&hb)?;
                if group.members.len() >= GROUP_MEMBERS_MAX {
                    return Err(fail(
                        ErrorCode::InvalidRequest,
                        format!("group {} already has {GROUP_MEMBERS_MAX} members", hb.group),
                    ));
                }
                let id = if hb.member_id.is_empty() {
                    let n = self.next_member.fetch_add(1, Ordering::Relaxed);
                    format!("{}-{now:x}-{n}", sanitize(&hb.client_id))
                } else {
                    hb.member_id.clone()
                };
                // Rejoining with a known id fences the old incarnation.
                group.members.remove(&id);
                group.members.insert(
                    id.clone(),
                    Member {
                        client_id: hb.client_id.clone(),
                        epoch: 0,
                        topics: hb.topics.iter().cloned().collect(),
                        pattern,
                        assigned: BTreeSet::new(),
                        revoking: BTreeSet::new(),
                        last_seen_ms: now,
                        session_timeout_ms: 0,
                        rebalance_timeout_ms: 0,
                        revoke_since_ms: None,
                    },
                );
                group.epoch += 1;
                log::info!("group {}: member {id} ({}) joined", hb.group, hb.client_id);
                id
            }
            epoch => {
                let Some(member) = group.members.get_mut(&hb.member_id) else {
                    return Err(unknown_member(&hb.group, &hb.member_id));
                };
                if epoch != member.epoch {
                    return Err(fail(
                        ErrorCode::FencedMemberEpoch,
                        format!(
                            "member {} of group {} sent epoch {epoch}, its epoch is {}: give up every partition and rejoin with epoch 0",
                            hb.member_id, hb.group, member.epoch
                        ),
                    ));
                }
                let topics: BTreeSet<String> = hb.topics.iter().cloned().collect();
                let pattern_text = member.pattern.as_ref().map(|(p, _)| p.as_str());
                if topics != member.topics || pattern_text != hb.pattern.as_deref() {
                    check_subscription(&hb)?;
                    member.pattern = compile_pattern(hb.pattern.as_deref())?;
                    member.topics = topics;
                    group.epoch += 1;
                }
                hb.member_id.clone()
            }
        };
        {
            let member = group.members.get_mut(&member_id).expect("member present");
            member.last_seen_ms = now;
            member.session_timeout_ms = u64::from(clamp_or(
                hb.session_timeout_ms,
                SESSION_TIMEOUT_MS_DEFAULT,
                SESSION_TIMEOUT_MS_MIN,
                SESSION_TIMEOUT_MS_MAX,
            ));
            member.rebalance_timeout_ms = u64::from(clamp_or(
                hb.rebalance_timeout_ms,
                REBALANCE_TIMEOUT_MS_DEFAULT,
                SESSION_TIMEOUT_MS_MIN,
                REBALANCE_TIMEOUT_MS_MAX,
            ));
            // Revoked partitions the member no longer lists are released.
            member.revoking.retain(|tp| hb.owned.contains(tp));
            if member.revoking.is_empty() {
                member.revoke_since_ms = None;
            }
        }
        self.refresh_topology(group);
        if group.assignment_epoch != group.epoch {
            group.target = assign(&group.members, &group.topology, &group.target);
            group.assignment_epoch = group.epoch;
        }
        reconcile(group, &member_id, now);
        let state = group.state();
        let member = &group.members[&member_id];
        let session_third = u32::try_from(member.session_timeout_ms / 3).unwrap_or(u32::MAX);
        let interval = if state == GroupState::Stable {
            HEARTBEAT_INTERVAL_MS_DEFAULT.min(session_third)
        } else {
            HEARTBEAT_INTERVAL_RECONCILING_MS.min(session_third)
        };
        Ok(HeartbeatOut {
            member_id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: interval.max(1),
            assignment: member.assigned.clone(),
        })
    }

    /// Checks that a commit may be written, and writes it while the group
    /// cannot change (so a member fenced meanwhile never commits). An empty
    /// `member_id` is an administrative commit: only into a group without
    /// members. Returns the storage flush ticket.
    pub fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(&str, u32, u64)],
    ) -> Result<u64, Failure> {
        check_group_id(group_id)?;
        let now = (self.clock)();
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(group) = groups.get_mut(group_id) {
            expire(group, now, group_id);
            if member_id.is_empty() {
                if !group.members.is_empty() {
                    return Err(not_empty(group_id, group.members.len()));
                }
            } else {
                let Some(member) = group.members.get(member_id) else {
                    return Err(unknown_member(group_id, member_id));
                };
                if member.epoch != member_epoch {
                    return Err(fail(
                        ErrorCode::StaleMemberEpoch,
                        format!(
                            "commit from member {member_id} of group {group_id} with epoch {member_epoch}, its epoch is {}",
                            member.epoch
                        ),
                    ));
                }
                for &(topic, partition, _) in offsets {
                    if !member.owns(&(topic.to_string(), partition)) {
                        return Err(fail(
                            ErrorCode::StaleMemberEpoch,
                            format!(
                                "member {member_id} of group {group_id} does not own {topic}/{partition} (any more); its commit is refused"
                            ),
                        ));
                    }
                }
            }
            if group.members.is_empty() {
                groups.remove(group_id);
            }
        } else if !member_id.is_empty() {
            return Err(unknown_member(group_id, member_id));
        }
        if member_id.is_empty() {
            self.check_classic_empty(group_id)?;
        }
        self.write_commit(group_id, offsets, now)
    }

    /// Writes a checked commit of offsets of existing topic partitions;
    /// the storage flush ticket.
    fn write_commit(
        &self,
        group_id: &str,
        offsets: &[(&str, u32, u64)],
        now: u64,
    ) -> Result<u64, Failure> {
        for &(topic, partition, _) in offsets {
            let known = self
                .storage
                .topic(topic)
                .is_some_and(|t| partition < t.partition_count());
            if !known {
                return Err(fail(
                    ErrorCode::UnknownPartition,
                    format!(
                        "cannot commit an offset of {topic}/{partition}: no such topic partition"
                    ),
                ));
            }
        }
        self.storage
            .commit_offsets(group_id, offsets, now)
            .map_err(super::failure)
    }

    /// Fails unless the group has no members (for resets and deletes).
    pub fn check_empty(&self, group_id: &str) -> Result<(), Failure> {
        let now = (self.clock)();
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(group) = groups.get_mut(group_id) {
            expire(group, now, group_id);
            if !group.members.is_empty() {
                return Err(not_empty(group_id, group.members.len()));
            }
            groups.remove(group_id);
        }
        drop(groups);
        self.check_classic_empty(group_id)
    }

    /// Membership of a group (`None`: no members).
    pub fn view(&self, group_id: &str) -> Option<GroupView> {
        let now = (self.clock)();
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(group_id) else {
            drop(groups);
            return self.classic_view(group_id);
        };
        expire(group, now, group_id);
        let view = GroupView {
            state: group.state(),
            group_epoch: group.epoch,
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.epoch,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                })
                .collect(),
        };
        if group.members.is_empty() {
            groups.remove(group_id);
        }
        Some(view)
    }

    /// Ids of the groups with members.
    pub fn active_groups(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .groups
            .lock()
            .expect("groups lock")
            .keys()
            .cloned()
            .collect();
        ids.extend(
            self.classic
                .lock()
                .expect("classic groups lock")
                .keys()
                .cloned(),
        );
        ids
    }

    /// Re-reads the partition counts of the subscribed topics; a change
    /// bumps the group epoch.
    fn refresh_topology(&self, group: &mut Group) {
        let mut topology = BTreeMap::new();
        let has_pattern = group.members.values().any(|m| m.pattern.is_some());
        if has_pattern {
            for topic in self.storage.topics() {
                if group
                    .members
                    .values()
                    .any(|m| m.subscribes(&topic.meta.name))
                {
                    topology.insert(topic.meta.name.clone(), topic.partition_count());
                }
            }
        } else {
            for member in group.members.values() {
                for name in &member.topics {
                    if let Some(topic) = self.storage.topic(name) {
                        topology.insert(name.clone(), topic.partition_count());
                    }
                }
            }
        }
        if topology != group.topology {
            group.topology = topology;
            group.epoch += 1;
        }
    }
}

fn unknown_member(group: &str, member_id: &str) -> Failure {
    fail(
        ErrorCode::UnknownMemberId,
        format!(
            "group {group} has no member {member_id:?} (it left or its session expired): rejoin with epoch 0"
        ),
    )
}

fn not_empty(group: &str, members: usize) -> Failure {
    fail(
        ErrorCode::GroupNotEmpty,
        format!(
            "group {group} has {members} active member(s): stop its consumers (or wait for their sessions to expire) first"
        ),
    )
}

fn clamp_or(value: u32, default: u32, min: u32, max: u32) -> u32 {
    if value == 0 {
        default
    } else {
        value.clamp(min, max)
    }
}

fn sanitize(client_id: &str) -> String {
    let s: String = client_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(64)
        .collect();
    if s.is_empty() {
        "member".into()
    } else {
        s
    }
}

fn check_subscription(hb: &HeartbeatIn) -> Result<(), Failure> {
    if hb.topics.is_empty() && hb.pattern.is_none() {
        return Err(fail(
            ErrorCode::InvalidRequest,
            "a member must subscribe to topic names or a pattern",
        ));
    }
    if hb.topics.len() > SUBSCRIPTION_TOPICS_MAX {
        return Err(fail(
            ErrorCode::InvalidRequest,
            format!("a subscription names at most {SUBSCRIPTION_TOPICS_MAX} topics"),
        ));
    }
    Ok(())
}

fn compile_pattern(pattern: Option<&str>) -> Result<Option<(String, Regex)>, Failure> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    if pattern.len() > PATTERN_BYTES_MAX {
        return Err(fail(
            ErrorCode::InvalidRequest,
            format!("subscription pattern longer than {PATTERN_BYTES_MAX} bytes"),
        ));
    }
    let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        fail(
            ErrorCode::InvalidRequest,
            format!("subscription pattern {pattern:?} is not a valid regular expression: {e}"),
        )
    })?;
    Ok(Some((pattern.to_string(), re)))
}

/// Removes members whose session or rebalance timeout expired.
fn expire(group: &mut Group, now: u64, group_id: &str) {
    let before = group.members.len();
    group.members.retain(|id, m| {
        let session = now.saturating_sub(m.last_seen_ms) > m.session_timeout_ms;
        let rebalance = m
            .revoke_since_ms
            .is_some_and(|since| now.saturating_sub(since) > m.rebalance_timeout_ms);
        if session || rebalance {
            log::warn!(
                "group {group_id}: member {id} removed: {}; its partitions move to the others",
                if session {
                    "session timed out"
                } else {
                    "it did not release revoked partitions within its rebalance timeout"
                }
            );
        }
        !(session || rebalance)
    });
    if group.members.len() != before {
        group.epoch += 1;
    }
}

/// Moves one member towards its target: revoke first, then (once nothing is
/// left to revoke) take the target partitions nobody else owns.
fn reconcile(group: &mut Group, member_id: &str, now: u64) {
    let target = group.target.get(member_id).cloned().unwrap_or_default();
    let owned_elsewhere: BTreeSet<Tp> = group
        .members
        .iter()
        .filter(|(id, _)| id.as_str() != member_id)
        .flat_map(|(_, m)| m.assigned.iter().chain(m.revoking.iter()).cloned())
        .collect();
    let assignment_epoch = group.assignment_epoch;
    let member = group.members.get_mut(member_id).expect("member present");
    let revoke: Vec<Tp> = member.assigned.difference(&target).cloned().collect();
    if !revoke.is_empty() {
        for tp in revoke {
            member.assigned.remove(&tp);
            member.revoking.insert(tp);
        }
        member.revoke_since_ms.get_or_insert(now);
    }
    if member.revoking.is_empty() {
        member.epoch = assignment_epoch;
        for tp in target.difference(&member.assigned.clone()) {
            if !owned_elsewhere.contains(tp) {
                member.assigned.insert(tp.clone());
            }
        }
    }
}

/// The sticky, balanced assignor: every partition of a subscribed topic goes
/// to one member subscribed to it; members keep their previous target where
/// balance allows; the counts of members with the same subscription differ
/// by at most one.
fn assign(
    members: &BTreeMap<String, Member>,
    topology: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut target: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return target;
    }
    let all: Vec<Tp> = topology
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let quota = all.len().div_ceil(members.len());
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    // Sticky: keep what each member had, up to the quota.
    for (id, had) in previous {
        let Some(member) = members.get(id) else {
            continue;
        };
        for tp in had {
            let mine = target.get_mut(id).expect("member target");
            if mine.len() < quota
                && topology.get(&tp.0).is_some_and(|&n| tp.1 < n)
                && member.subscribes(&tp.0)
                && taken.insert(tp.clone())
            {
                mine.insert(tp.clone());
            }
        }
    }
    // The rest to the least loaded eligible member.
    for tp in &all {
        if taken.contains(tp) {
            continue;
        }
        let best = members
            .iter()
            .filter(|(_, m)| m.subscribes(&tp.0))
            .min_by_key(|(id, _)| (target[*id].len(), (*id).clone()))
            .map(|(id, _)| id.clone());
        if let Some(id) = best {
            target
                .get_mut(&id)
                .expect("member target")
                .insert(tp.clone());
            taken.insert(tp.clone());
        }
    }
    // Balance: move from the most to the least loaded while it helps.
    for _ in 0..all.len() {
        let mut moved = false;
        let ids: Vec<String> = members.keys().cloned().collect();
        'search: for from in &ids {
            for to in &ids {
                if target[to].len() + 1 >= target[from].len() {
                    continue;
                }
                let candidate = target[from]
                    .iter()
                    .rev()
                    .find(|tp| members[to].subscribes(&tp.0))
                    .cloned();
                if let Some(tp) = candidate {
                    target.get_mut(from).expect("member target").remove(&tp);
                    target.get_mut(to).expect("member target").insert(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageOptions;
    use std::sync::atomic::AtomicU64;

    struct Fixture {
        coordinator: Coordinator,
        now: Arc<AtomicU64>,
        _dir: tempfile::TempDir,
    }

    fn fixture(partitions: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), &StorageOptions::default()).unwrap());
        storage
            .create_topic("t", partitions, Vec::new(), 0)
            .unwrap();
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
        Fixture {
            coordinator: Coordinator::new(storage, clock),
            now,
            _dir: dir,
        }
    }

    /// A simulated member that does what the protocol asks.
    struct Sim {
        id: String,
        epoch: i32,
        owned: BTreeSet<Tp>,
    }

    impl Sim {
        fn beat(&mut self, c: &Coordinator) -> Result<(), Failure> {
            let out = c.heartbeat(HeartbeatIn {
                group: "g".into(),
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                client_id: "sim".into(),
                topics: vec!["t".into()],
                session_timeout_ms: 10_000,
                owned: self.owned.clone(),
                ..HeartbeatIn::default()
            })?;
            self.id = out.member_id;
            self.epoch = out.member_epoch;
            // Revoked partitions are given up at once; new ones taken.
            self.owned = out.assignment;
            Ok(())
        }
    }

    fn join(c: &Coordinator) -> Sim {
        let mut s = Sim {
            id: String::new(),
            epoch: 0,
            owned: BTreeSet::new(),
        };
        s.beat(c).unwrap();
        s
    }

    fn assert_disjoint(sims: &[&Sim]) {
        let mut seen = BTreeSet::new();
        for s in sims {
            for tp in &s.owned {
                assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
            }
        }
    }

    #[test]
    fn partitions_move_only_after_release_and_end_balanced() {
        let f = fixture(6);
        let c = &f.coordinator;
        let mut a = join(c);
        assert_eq!(a.owned.len(), 6);
        let mut b = join(c);
        assert!(b.owned.is_empty(), "a still owns everything");
        assert_disjoint(&[&a, &b]);
        b.beat(c).unwrap();
        assert!(b.owned.is_empty(), "nothing released yet");
        a.beat(c).unwrap(); // revokes three
        assert_eq!(a.owned.len(), 3);
        assert_disjoint(&[&a, &b]);
        b.beat(c).unwrap(); // a's next heartbeat has not released them yet…
        a.beat(c).unwrap(); // …now it has
        b.beat(c).unwrap();
        assert_eq!((a.owned.len(), b.owned.len()), (3, 3));
        let mut d = join(c);
        for _ in 0..4 {
            for s in [&mut a, &mut b, &mut d] {
                s.beat(c).unwrap();
            }
        }
        assert_disjoint(&[&a, &b, &d]);
        assert_eq!(
            (a.owned.len(), b.owned.len(), d.owned.len()),
            (2, 2, 2),
            "balanced"
        );
        assert_eq!(c.view("g").unwrap().state, GroupState::Stable);
    }

    #[test]
    fn expired_members_lose_partitions_and_stale_commits_are_refused() {
        let f = fixture(4);
        let c = &f.coordinator;
        let mut a = join(c);
        let mut b = join(c);
        for _ in 0..3 {
            a.beat(c).unwrap();
            b.beat(c).unwrap();
        }
        assert_eq!((a.owned.len(), b.owned.len()), (2, 2));
        let tp = a.owned.iter().next().unwrap().clone();
        c.commit("g", &a.id, a.epoch, &[(&tp.0, tp.1, 5)]).unwrap();
        // b keeps beating; a falls silent past its session timeout.
        f.now.fetch_add(9_000, Ordering::SeqCst);
        b.beat(c).unwrap();
        assert_eq!(b.owned.len(), 2, "not before the session timeout");
        f.now.fetch_add(2_000, Ordering::SeqCst);
        b.beat(c).unwrap();
        b.beat(c).unwrap();
        assert_eq!(b.owned.len(), 4, "a's partitions moved to b");
        let err = c
            .commit("g", &a.id, a.epoch, &[(&tp.0, tp.1, 9)])
            .unwrap_err();
        assert_eq!(err.0, ErrorCode::UnknownMemberId);
        let err = a.beat(c).unwrap_err();
        assert_eq!(err.0, ErrorCode::UnknownMemberId);
        // A current member with a wrong epoch, or for a partition it does
        // not own, is refused too.
        let err = c
            .commit("g", &b.id, b.epoch - 1, &[(&tp.0, tp.1, 9)])
            .unwrap_err();
        assert_eq!(err.0, ErrorCode::StaleMemberEpoch);
        let admin = c.commit("g", "", -1, &[(&tp.0, tp.1, 9)]).unwrap_err();
        assert_eq!(admin.0, ErrorCode::GroupNotEmpty);
    }

    #[test]
    fn leaving_releases_at_once() {
        let f = fixture(2);
        let c = &f.coordinator;
        let mut a = join(c);
        let mut b = join(c);
        a.beat(c).unwrap();
        a.beat(c).unwrap();
        b.beat(c).unwrap();
        assert_eq!((a.owned.len(), b.owned.len()), (1, 1));
        a.epoch = -1;
        a.beat(c).unwrap();
        b.beat(c).unwrap();
        assert_eq!(b.owned.len(), 2);
        assert!(c.check_empty("g").is_err());
    }

    #[test]
    fn pattern_subscriptions_follow_matching_topics() {
        let f = fixture(2);
        let c = &f.coordinator;
        c.storage.create_topic("s.a", 2, Vec::new(), 0).unwrap();
        let beat = |id: &str, epoch: i32, owned: &BTreeSet<Tp>| {
            c.heartbeat(HeartbeatIn {
                group: "p".into(),
                member_id: id.into(),
                member_epoch: epoch,
                client_id: "sim".into(),
                pattern: Some(r"s\..*".into()),
                owned: owned.clone(),
                ..HeartbeatIn::default()
            })
            .unwrap()
        };
        let first = beat("", 0, &BTreeSet::new());
        let names: BTreeSet<&str> = first.assignment.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["s.a"].into(), "t does not match");
        c.storage.create_topic("s.b", 1, Vec::new(), 0).unwrap();
        let next = beat(&first.member_id, first.member_epoch, &first.assignment);
        assert_eq!(
            next.assignment.len(),
            3,
            "a new matching topic is picked up"
        );
        assert!(next.member_epoch > first.member_epoch);
        let bad = c
            .heartbeat(HeartbeatIn {
                group: "p".into(),
                client_id: "sim".into(),
                pattern: Some("(".into()),
                ..HeartbeatIn::default()
            })
            .unwrap_err();
        assert_eq!(bad.0, ErrorCode::InvalidRequest);
    }

    #[test]
    fn assignor_is_sticky_and_balanced() {
        let member = |topics: &[&str]| Member {
            client_id: String::new(),
            epoch: 0,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: None,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            last_seen_ms: 0,
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            revoke_since_ms: None,
        };
        let mut members = BTreeMap::new();
        members.insert("a".to_string(), member(&["x"]));
        members.insert("b".to_string(), member(&["x"]));
        let topology: BTreeMap<String, u32> = [("x".to_string(), 7)].into();
        let first = assign(&members, &topology, &BTreeMap::new());
        assert_eq!(first["a"].len() + first["b"].len(), 7);
        assert!(first["a"].len().abs_diff(first["b"].len()) <= 1);
        members.insert("c".to_string(), member(&["x"]));
        let second = assign(&members, &topology, &first);
        let kept = ["a", "b"]
            .iter()
            .map(|m| second[*m].intersection(&first[*m]).count())
            .sum::<usize>();
        assert_eq!(kept, 5, "only what c needs moves");
        let sizes: Vec<usize> = second.values().map(BTreeSet::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // A member not subscribed to y never gets y.
        members.insert("d".to_string(), member(&["y"]));
        let topology: BTreeMap<String, u32> = [("x".to_string(), 7), ("y".to_string(), 2)].into();
        let third = assign(&members, &topology, &second);
        assert!(third["d"].iter().all(|tp| tp.0 == "y"));
        assert_eq!(third["d"].len(), 2);
        assert!(third["a"].iter().all(|tp| tp.0 == "x"));
    }
}
