//! Protocol-neutral group operations for front ends other than the native
//! protocol (the Kafka listener): classic-protocol joins and syncs (which
//! wait for the rest of the group), heartbeats, leaves, commits answered
//! once fsynced, committed offsets and the list of groups.
//!
//! Membership decisions are the coordinator's ([`super::groups`] and its
//! `classic` part); this file adds the waiting (bounded by the group's
//! deadlines and by shutdown) and the storage round trips. No protocol's
//! types; errors are [`BrokerError`].

use std::collections::BTreeSet;
use std::time::Duration;

use super::groups::classic::{AssignmentIn, JoinIn, Joined, Pending};
use super::ops::BrokerError;
use super::Broker;
use crate::storage::CommittedOffset;
use crate::wire::{ErrorCode, GroupState};

/// Most times a waiting join or sync re-arms its deadline (each time the
/// group's phase was overdue and got ended) before it answers "rebalance
/// in progress" and lets the client rejoin.
const GROUP_WAIT_ROUNDS_MAX: u32 = 4;
/// Slack after a group's deadline before a waiter ends the phase, in ms.
const GROUP_DEADLINE_SLACK_MS: u64 = 20;

fn group_error((code, message): (ErrorCode, String)) -> BrokerError {
    BrokerError::Group { code, message }
}

impl Broker {
    /// Joins a classic group; answered when the rebalance completes.
    pub async fn join_group(&self, join: JoinIn) -> Result<Joined, BrokerError> {
        let group = join.group.clone();
        let pending = self.coordinator.classic_join(join)?;
        self.await_phase(&group, pending).await
    }

    /// Syncs with a classic group: the leader hands over `assignments`;
    /// every member gets its own assignment.
    pub async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<AssignmentIn>,
    ) -> Result<Vec<u8>, BrokerError> {
        let pending = self
            .coordinator
            .classic_sync(group, member_id, generation, assignments)?;
        self.await_phase(group, pending).await
    }

    /// A classic member's heartbeat.
    pub fn heartbeat_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), BrokerError> {
        self.coordinator
            .classic_heartbeat(group, member_id, generation)
    }

    /// Classic members leave their group; one result per member.
    pub fn leave_group(&self, group: &str, member_ids: &[String]) -> Vec<Result<(), BrokerError>> {
        self.coordinator.classic_leave(group, member_ids)
    }

    /// Commits offsets for a classic member (or, with an empty member id
    /// and a negative generation, for a group without members); answered
    /// once fsynced.
    pub async fn commit_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), BrokerError> {
        let ticket = self
            .coordinator
            .classic_commit(group, member_id, generation, offsets)?;
        self.wait_round(ticket).await.map_err(group_error)
    }

    /// A group's committed offsets (sorted by topic and partition).
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, BrokerError> {
        self.committed(group).await.map_err(group_error)
    }

    /// Every group (with members or committed offsets) and its state.
    pub async fn group_states(&self) -> Result<Vec<(String, GroupState)>, BrokerError> {
        let storage = self.storage.clone();
        let mut ids: BTreeSet<String> = smol::unblock(move || storage.groups_with_offsets())
            .await
            .map_err(BrokerError::Storage)?
            .into_iter()
            .collect();
        ids.extend(self.coordinator.active_groups());
        Ok(ids
            .into_iter()
            .map(|id| {
                let state = self
                    .coordinator
                    .view(&id)
                    .map_or(GroupState::Empty, |v| v.state);
                (id, state)
            })
            .collect())
    }

    /// Waits for a join's or sync's answer: the phase change, or the
    /// group's deadline (then the overdue phase is ended here), or
    /// shutdown.
    async fn await_phase<T>(&self, group: &str, pending: Pending<T>) -> Result<T, BrokerError> {
        let (answer, mut deadline_ms) = match pending {
            Pending::Ready(value) => return Ok(value),
            Pending::Wait {
                answer,
                deadline_ms,
            } => (answer, deadline_ms),
        };
        let rebalancing = || BrokerError::Group {
            code: ErrorCode::RebalanceInProgress,
            message: format!("group {group} is rebalancing: rejoin"),
        };
        for _ in 0..GROUP_WAIT_ROUNDS_MAX {
            let wait_ms =
                deadline_ms.saturating_sub(crate::time::now_ms()) + GROUP_DEADLINE_SLACK_MS;
            let got = smol::future::or(async { Some(answer.recv().await) }, async {
                smol::future::or(smol::Timer::after(Duration::from_millis(wait_ms)), async {
                    self.shutdown.wait().await;
                    std::time::Instant::now()
                })
                .await;
                None
            })
            .await;
            match got {
                Some(Ok(result)) => return result,
                // The member was removed while waiting.
                Some(Err(_)) => return Err(rebalancing()),
                None if self.shutdown.is_triggered() => return Err(rebalancing()),
                None => deadline_ms = self.coordinator.classic_tick(group),
            }
        }
        Err(rebalancing())
    }
}
