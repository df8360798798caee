//! Protocol-neutral durable read positions for front ends whose clients
//! are not consumer-group members (MQTT persistent sessions): committed
//! offsets under a group id, written and read without the coordinator's
//! membership checks.
//!
//! They are the same committed offsets as a consumer group's (one
//! namespace, visible to `eddy groups`), so a group id used here must not
//! be one that members join; the MQTT front end uses `mqtt.<client id>`.
//! This file writes and reads offsets only; it decides nothing about when.

use std::time::{Duration, Instant};

use super::ops::BrokerError;
use super::Broker;
use crate::time::now_ms;

/// Longest a commit waits for its flush round, in ms.
const POSITION_COMMIT_TIMEOUT_MS: u64 = 30_000;

impl Broker {
    /// Durably records `offsets` (`(topic, partition, next offset)`) of
    /// `group`; returns once they are fsynced.
    pub async fn commit_positions(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<(), BrokerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let storage = self.storage.clone();
        let owned = group.to_string();
        let ticket = smol::unblock(move || {
            let borrowed: Vec<(&str, u32, u64)> = offsets
                .iter()
                .map(|(t, p, o)| (t.as_str(), *p, *o))
                .collect();
            storage.commit_offsets(&owned, &borrowed, now_ms())
        })
        .await
        .map_err(BrokerError::Storage)?;
        let deadline = Instant::now() + Duration::from_millis(POSITION_COMMIT_TIMEOUT_MS);
        loop {
            let listener = self.storage.durable_event().listen();
            if self.storage.is_committed(ticket) {
                return Ok(());
            }
            self.storage.check_healthy().map_err(BrokerError::Storage)?;
            if Instant::now() >= deadline {
                return Err(BrokerError::Timeout {
                    timeout_ms: u128::from(POSITION_COMMIT_TIMEOUT_MS),
                });
            }
            smol::future::or(listener, async {
                smol::Timer::at(deadline).await;
            })
            .await;
        }
    }

    /// The positions `group` committed: `(topic, partition, next offset)`.
    pub async fn positions(&self, group: &str) -> Result<Vec<(String, u32, u64)>, BrokerError> {
        let storage = self.storage.clone();
        let owned = group.to_string();
        smol::unblock(move || storage.committed_offsets(&owned))
            .await
            .map(|all| {
                all.into_iter()
                    .map(|c| (c.topic, c.partition, c.offset))
                    .collect()
            })
            .map_err(BrokerError::Storage)
    }

    /// Forgets every position of `group` (a clean start).
    pub async fn forget_positions(&self, group: &str) -> Result<(), BrokerError> {
        let storage = self.storage.clone();
        let owned = group.to_string();
        smol::unblock(move || storage.delete_group_offsets(&owned))
            .await
            .map(|_| ())
            .map_err(BrokerError::Storage)
    }
}
