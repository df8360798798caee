//! Consumer groups with client-side assignment (Kafka's "classic" group
//! protocol: join, sync, heartbeat, leave), protocol-neutral.
//!
//! A group moves through four phases:
//!
//! 1. **Empty**: no members (its committed offsets may exist).
//! 2. **Preparing**: a member joined, left or expired; every member must
//!    join again. The phase ends when every member has a join waiting, or
//!    at the rebalance deadline (the longest rebalance timeout of the
//!    members), when members that did not rejoin are removed.
//! 3. **Completing**: a new generation; every joiner was answered (the
//!    leader with every member's subscription metadata), and the leader
//!    computes the assignment and hands it over in its sync.
//! 4. **Stable**: every member has its assignment (opaque bytes, and the
//!    partitions the front end read from them, for `groups describe`).
//!
//! Joins and non-leaders' syncs wait: they get a receiver, which the
//! phase change answers ([`Coordinator::classic_join`],
//! [`Coordinator::classic_sync`]); a waiter whose deadline passes calls
//! [`Coordinator::classic_tick`], which ends an overdue phase, so no
//! background task is needed. Sessions expire whenever the group is
//! touched (heartbeats of the others), as for native groups.
//!
//! One group name, one protocol: a classic join to a group with native
//! members, or a native heartbeat to a group with classic members, is
//! refused ([`BrokerError::GroupProtocolMismatch`]); committed offsets are
//! shared (one store), so a group may move from one protocol to the other
//! once its members of the first have left.
//!
//! Lock order: native groups, then classic groups (never the reverse).

use std::collections::{BTreeMap, BTreeSet};

use smol::channel::{Receiver, Sender};

use super::{
    check_group_id, clamp_or, fail, not_empty, sanitize, unknown_member, Coordinator, GroupView,
    MemberView, Tp, GROUPS_MAX, GROUP_MEMBERS_MAX, REBALANCE_TIMEOUT_MS_DEFAULT,
    REBALANCE_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_DEFAULT, SESSION_TIMEOUT_MS_MAX,
    SESSION_TIMEOUT_MS_MIN,
};
use crate::broker::ops::BrokerError;
use crate::wire::{ErrorCode, GroupState};

/// Most protocols (assignors) one member may offer.
pub const JOIN_PROTOCOLS_MAX: usize = 16;
/// Most bytes of one member's subscription metadata or assignment.
pub const GROUP_METADATA_BYTES_MAX: usize = 1 << 20;

/// A join, decoded into owned values.
#[derive(Debug, Clone, Default)]
pub struct JoinIn {
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    pub client_id: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// What the group is for (`consumer` for Kafka consumers).
    pub protocol_type: String,
    /// Assignors the member can use, preferred first, with its metadata.
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// A completed join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: String,
    /// The assignor every member supports.
    pub protocol: String,
    pub leader: String,
    /// Every member's metadata for `protocol` (the leader's answer only).
    pub members: Vec<(String, Vec<u8>)>,
}

/// One member's assignment in the leader's sync.
#[derive(Debug, Clone)]
pub struct AssignmentIn {
    pub member_id: String,
    pub assignment: Vec<u8>,
    /// The partitions in `assignment`, as the front end read them.
    pub partitions: BTreeSet<Tp>,
}

/// A join or sync answer: now, or when the phase changes.
pub enum Pending<T> {
    Ready(T),
    /// Answered by the phase change; `deadline_ms` is when to call
    /// [`Coordinator::classic_tick`] if it has not come.
    Wait {
        answer: Receiver<Result<T, BrokerError>>,
        deadline_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    Preparing,
    Completing,
    Stable,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    protocols: Vec<(String, Vec<u8>)>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    last_seen_ms: u64,
    joining: Option<Sender<Result<Joined, BrokerError>>>,
    syncing: Option<Sender<Result<Vec<u8>, BrokerError>>>,
    assignment: Vec<u8>,
    assigned: BTreeSet<Tp>,
}

/// One classic group's state.
#[derive(Debug)]
pub(super) struct ClassicGroup {
    generation: i32,
    phase: Phase,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When the current Preparing or Completing phase is overdue.
    deadline_ms: u64,
}

impl Default for ClassicGroup {
    fn default() -> Self {
        ClassicGroup {
            generation: 0,
            phase: Phase::Empty,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            deadline_ms: 0,
        }
    }
}

fn rebalancing(group: &str) -> BrokerError {
    BrokerError::Group {
        code: ErrorCode::RebalanceInProgress,
        message: format!("group {group} is rebalancing: rejoin"),
    }
}

fn refused((code, message): super::Failure) -> BrokerError {
    BrokerError::Group { code, message }
}

fn illegal_generation(group: &str, generation: i32, current: i32) -> BrokerError {
    BrokerError::Group {
        code: ErrorCode::FencedMemberEpoch,
        message: format!("group {group} is at generation {current}, not {generation}: rejoin"),
    }
}

impl ClassicGroup {
    /// Starts a rebalance: every member must rejoin; waiting syncs learn it.
    fn prepare(&mut self, group_id: &str, now: u64) {
        for member in self.members.values_mut() {
            if let Some(sync) = member.syncing.take() {
                let _ = sync.try_send(Err(rebalancing(group_id)));
            }
        }
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return;
        }
        if self.phase != Phase::Preparing {
            let longest = self.members.values().map(|m| m.rebalance_timeout_ms).max();
            self.deadline_ms = now + longest.unwrap_or(0);
            self.phase = Phase::Preparing;
        }
    }

    /// Removes expired members; ends an overdue phase.
    fn expire(&mut self, group_id: &str, now: u64) {
        let before = self.members.len();
        let overdue = self.phase == Phase::Preparing && now >= self.deadline_ms;
        self.members.retain(|id, m| {
            // A waiter whose connection closed is gone.
            let joining = m.joining.as_ref().is_some_and(|tx| !tx.is_closed());
            let syncing = m.syncing.as_ref().is_some_and(|tx| !tx.is_closed());
            let alive = if overdue {
                joining
            } else {
                joining || syncing || m.last_seen_ms + m.session_timeout_ms > now
            };
            if !alive {
                log::info!("group {group_id}: member {id} expired (no heartbeat or rejoin)");
            }
            alive
        });
        if self.members.len() != before {
            self.prepare(group_id, now);
        }
        if self.phase == Phase::Completing && now >= self.deadline_ms {
            // The leader never sent the assignment.
            self.prepare(group_id, now);
        }
        self.try_complete(group_id, now);
    }

    /// Ends Preparing when every member has a join waiting.
    fn try_complete(&mut self, group_id: &str, now: u64) {
        if self.phase != Phase::Preparing || self.members.values().any(|m| m.joining.is_none()) {
            return;
        }
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return;
        }
        self.generation += 1;
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        // The leader's most preferred protocol every member offers (the
        // joins checked that one exists).
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
            .unwrap_or_default();
        let metadata: Vec<(String, Vec<u8>)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m.protocols.iter().find(|(n, _)| *n == protocol);
                (id.clone(), meta.map(|(_, b)| b.clone()).unwrap_or_default())
            })
            .collect();
        let longest = self.members.values().map(|m| m.rebalance_timeout_ms).max();
        for (id, member) in self.members.iter_mut() {
            member.last_seen_ms = now;
            member.assignment.clear();
            member.assigned.clear();
            if let Some(join) = member.joining.take() {
                let _ = join.try_send(Ok(Joined {
                    member_id: id.clone(),
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    members: if *id == leader {
                        metadata.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
        log::info!(
            "group {group_id}: generation {} with {} member(s), leader {leader}, assignor {protocol}",
            self.generation,
            self.members.len()
        );
        self.protocol = protocol;
        self.leader = Some(leader);
        self.phase = Phase::Completing;
        self.deadline_ms = now + longest.unwrap_or(0);
    }

    /// Whether `protocol_type` and `protocols` fit the group's members.
    fn fits(&self, member_id: &str, j: &JoinIn) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| *id != member_id)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return true;
        }
        j.protocol_type == self.protocol_type
            && j.protocols.iter().any(|(name, _)| {
                others
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }
}

fn check_join(j: &JoinIn) -> Result<(), BrokerError> {
    check_group_id(&j.group).map_err(refused)?;
    let too_large = j
        .protocols
        .iter()
        .any(|(name, meta)| name.len() > 255 || meta.len() > GROUP_METADATA_BYTES_MAX);
    if j.protocols.is_empty() || j.protocols.len() > JOIN_PROTOCOLS_MAX || too_large {
        return Err(refused(fail(
            ErrorCode::InvalidRequest,
            format!(
                "a join offers 1–{JOIN_PROTOCOLS_MAX} assignors, each with at most \
                 {GROUP_METADATA_BYTES_MAX} bytes of metadata"
            ),
        )));
    }
    Ok(())
}

impl Coordinator {
    /// A join: the member's id is assigned (when new) and the group starts
    /// a rebalance; answered when every member rejoined.
    pub fn classic_join(&self, j: JoinIn) -> Result<Pending<Joined>, BrokerError> {
        check_join(&j)?;
        let now = (self.clock)();
        let native = self.groups.lock().expect("groups lock");
        if native.get(&j.group).is_some_and(|g| !g.members.is_empty()) {
            return Err(BrokerError::GroupProtocolMismatch {
                group: j.group.clone(),
                members: "native eddy consumers",
            });
        }
        let mut groups = self.classic.lock().expect("classic groups lock");
        if !groups.contains_key(&j.group) && groups.len() + native.len() >= GROUPS_MAX {
            return Err(refused(fail(
                ErrorCode::InvalidRequest,
                format!("this hub already coordinates {GROUPS_MAX} groups"),
            )));
        }
        drop(native);
        let group = groups.entry(j.group.clone()).or_default();
        group.expire(&j.group, now);
        let member_id = if j.member_id.is_empty() {
            if group.members.len() >= GROUP_MEMBERS_MAX {
                return Err(refused(fail(
                    ErrorCode::InvalidRequest,
                    format!("group {} has {GROUP_MEMBERS_MAX} members", j.group),
                )));
            }
            let n = self
                .next_member
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{}-{n}-{now}", sanitize(&j.client_id))
        } else if group.members.contains_key(&j.member_id) {
            j.member_id.clone()
        } else {
            return Err(refused(unknown_member(&j.group, &j.member_id)));
        };
        if !group.fits(&member_id, &j) {
            return Err(BrokerError::GroupProtocolMismatch {
                group: j.group.clone(),
                members: "members with another protocol type or no common assignor",
            });
        }
        if group.members.values().all(|m| m.joining.is_none()) || group.members.is_empty() {
            group.protocol_type = j.protocol_type.clone();
        }
        let (tx, rx) = smol::channel::bounded(1);
        let session = clamp_or(
            j.session_timeout_ms,
            SESSION_TIMEOUT_MS_DEFAULT,
            SESSION_TIMEOUT_MS_MIN,
            SESSION_TIMEOUT_MS_MAX,
        );
        let rebalance = clamp_or(
            j.rebalance_timeout_ms,
            REBALANCE_TIMEOUT_MS_DEFAULT,
            SESSION_TIMEOUT_MS_MIN,
            REBALANCE_TIMEOUT_MS_MAX,
        );
        let member = group.members.entry(member_id.clone()).or_insert(Member {
            client_id: sanitize(&j.client_id),
            protocols: Vec::new(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            last_seen_ms: now,
            joining: None,
            syncing: None,
            assignment: Vec::new(),
            assigned: BTreeSet::new(),
        });
        member.protocols = j.protocols;
        member.session_timeout_ms = u64::from(session);
        member.rebalance_timeout_ms = u64::from(rebalance);
        member.last_seen_ms = now;
        member.joining = Some(tx);
        group.prepare(&j.group, now);
        group.try_complete(&j.group, now);
        Ok(Pending::Wait {
            answer: rx,
            deadline_ms: group.deadline_ms,
        })
    }

    /// A sync: the leader's hands over the assignment; every member gets
    /// its own once the leader's came.
    pub fn classic_sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<AssignmentIn>,
    ) -> Result<Pending<Vec<u8>>, BrokerError> {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        let group = self.current(&mut groups, group_id, member_id, generation, now)?;
        if group.phase == Phase::Stable {
            return Ok(Pending::Ready(group.members[member_id].assignment.clone()));
        }
        if group.leader.as_deref() == Some(member_id) {
            let mut given: BTreeMap<String, AssignmentIn> = assignments
                .into_iter()
                .filter(|a| a.assignment.len() <= GROUP_METADATA_BYTES_MAX)
                .map(|a| (a.member_id.clone(), a))
                .collect();
            for (id, member) in group.members.iter_mut() {
                if let Some(a) = given.remove(id) {
                    member.assignment = a.assignment;
                    member.assigned = a.partitions;
                }
                if let Some(sync) = member.syncing.take() {
                    let _ = sync.try_send(Ok(member.assignment.clone()));
                }
            }
            group.phase = Phase::Stable;
            return Ok(Pending::Ready(group.members[member_id].assignment.clone()));
        }
        let (tx, rx) = smol::channel::bounded(1);
        if let Some(member) = group.members.get_mut(member_id) {
            member.syncing = Some(tx);
        }
        Ok(Pending::Wait {
            answer: rx,
            deadline_ms: group.deadline_ms,
        })
    }

    /// A heartbeat: Ok while the member's generation is current and no
    /// rebalance is preparing.
    pub fn classic_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), BrokerError> {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        self.current(&mut groups, group_id, member_id, generation, now)?;
        Ok(())
    }

    /// Members leave; the others rebalance. One result per member id.
    pub fn classic_leave(
        &self,
        group_id: &str,
        member_ids: &[String],
    ) -> Vec<Result<(), BrokerError>> {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids
                .iter()
                .map(|m| Err(refused(unknown_member(group_id, m))))
                .collect();
        };
        let results = member_ids
            .iter()
            .map(|id| match group.members.remove(id) {
                Some(_) => {
                    log::info!("group {group_id}: member {id} left");
                    Ok(())
                }
                None => Err(refused(unknown_member(group_id, id))),
            })
            .collect();
        group.prepare(group_id, now);
        group.try_complete(group_id, now);
        if group.members.is_empty() {
            groups.remove(group_id);
        }
        results
    }

    /// Ends an overdue phase of a group (a waiter's deadline passed); the
    /// group's next deadline.
    pub fn classic_tick(&self, group_id: &str) -> u64 {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        match groups.get_mut(group_id) {
            Some(group) => {
                group.expire(group_id, now);
                group.deadline_ms.max(now)
            }
            None => now,
        }
    }

    /// Checks a classic member's commit, and writes it while the group
    /// cannot change. An empty `member_id` with a negative generation is a
    /// commit from outside any generation (a consumer with `assign()`, an
    /// operator): only into a group without members. Returns the storage
    /// flush ticket.
    pub fn classic_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        offsets: &[(&str, u32, u64)],
    ) -> Result<u64, BrokerError> {
        check_group_id(group_id).map_err(refused)?;
        if member_id.is_empty() && generation < 0 {
            self.check_classic_empty(group_id).map_err(refused)?;
            return self.commit(group_id, "", 0, offsets).map_err(refused);
        }
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        let group = self.touch(&mut groups, group_id, member_id, now)?;
        if generation != group.generation {
            return Err(illegal_generation(group_id, generation, group.generation));
        }
        if group.phase == Phase::Completing {
            return Err(rebalancing(group_id));
        }
        self.write_commit(group_id, offsets, now).map_err(refused)
    }

    /// Fails when the classic group has members.
    pub(super) fn check_classic_empty(&self, group_id: &str) -> Result<(), super::Failure> {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        if let Some(group) = groups.get_mut(group_id) {
            group.expire(group_id, now);
            if !group.members.is_empty() {
                return Err(not_empty(group_id, group.members.len()));
            }
            groups.remove(group_id);
        }
        Ok(())
    }

    /// A classic group's membership as describe shows it (`None`: no
    /// members).
    pub(super) fn classic_view(&self, group_id: &str) -> Option<GroupView> {
        let now = (self.clock)();
        let mut groups = self.classic.lock().expect("classic groups lock");
        let group = groups.get_mut(group_id)?;
        group.expire(group_id, now);
        if group.members.is_empty() {
            groups.remove(group_id);
            return None;
        }
        Some(GroupView {
            state: match group.phase {
                Phase::Stable => GroupState::Stable,
                Phase::Empty => GroupState::Empty,
                Phase::Preparing | Phase::Completing => GroupState::Reconciling,
            },
            group_epoch: group.generation,
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: group.generation,
                    assigned: m.assigned.clone(),
                    revoking: BTreeSet::new(),
                })
                .collect(),
        })
    }

    /// Whether the classic group has members (for native joins).
    pub(super) fn classic_has_members(&self, group_id: &str) -> bool {
        self.classic_view(group_id).is_some()
    }

    /// [`Self::touch`], and the member's generation is the group's, which
    /// is not preparing a rebalance.
    fn current<'a>(
        &self,
        groups: &'a mut std::collections::HashMap<String, ClassicGroup>,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: u64,
    ) -> Result<&'a mut ClassicGroup, BrokerError> {
        let group = self.touch(groups, group_id, member_id, now)?;
        if group.phase == Phase::Preparing {
            return Err(rebalancing(group_id));
        }
        if generation != group.generation {
            return Err(illegal_generation(group_id, generation, group.generation));
        }
        Ok(group)
    }

    /// The group with `member_id` in it, sessions expired and the member's
    /// session renewed; `UnknownMemberId` otherwise.
    fn touch<'a>(
        &self,
        groups: &'a mut std::collections::HashMap<String, ClassicGroup>,
        group_id: &str,
        member_id: &str,
        now: u64,
    ) -> Result<&'a mut ClassicGroup, BrokerError> {
        let Some(group) = groups.get_mut(group_id) else {
            return Err(refused(unknown_member(group_id, member_id)));
        };
        group.expire(group_id, now);
        let Some(member) = group.members.get_mut(member_id) else {
            return Err(refused(unknown_member(group_id, member_id)));
        };
        member.last_seen_ms = now;
        Ok(group)
    }
}
