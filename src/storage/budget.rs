//! The disk budget: a global limit on the bytes of stored batches.
//!
//! When an append would take the total over the budget, the topic's
//! `on_full` decides:
//!
//! - `reject`: the append fails with [`StorageError::BudgetFull`] (the wire's
//!   `DiskFull`); nothing is dropped, nothing is written.
//! - `drop_oldest`: the oldest batches of `drop_oldest` topics are dropped,
//!   lowest `priority` first and, within a priority, oldest first (by their
//!   newest record's timestamp), never from a topic with a higher priority
//!   than the writer's (telemetry cannot shed alarms). Only durable batches
//!   are dropped, and none the mirror still needs (`keep_from`) unless the
//!   topic says `on_full.unmirrored=drop`. If that does not make room, the
//!   append fails like `reject`.
//!
//! Every drop is counted per partition and logged. At most
//! [`BUDGET_DROPS_PER_APPEND_MAX`] batches are dropped for one append.
//! The check before an append is not atomic with it: concurrent appends
//! may overshoot the budget by what they carry together.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::partition::PartitionLog;
use super::topic_config::{OnFull, TopicConfig};
use super::{StorageError, Topic};

/// Most batches dropped to make room for one append.
pub const BUDGET_DROPS_PER_APPEND_MAX: usize = 4096;

/// What a drop run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

/// Drops batches until `used() + incoming <= budget`, on behalf of a writer
/// with `writer` settings (`None`: the maintenance loop, which may drop from
/// every `drop_oldest` topic). Fails when it cannot make enough room.
pub(super) fn make_room(
    topics: &[Arc<Topic>],
    writer: Option<(&str, &TopicConfig)>,
    incoming: u64,
    budget: u64,
    used: impl Fn() -> u64,
) -> Result<Dropped, StorageError> {
    let full = |topic: &str, reason: &str| StorageError::BudgetFull {
        topic: topic.to_string(),
        budget,
        used: used(),
        reason: reason.to_string(),
    };
    let writer_priority = match writer {
        Some((topic, config)) if config.on_full == OnFull::Reject => {
            return Err(full(topic, "the topic has on_full=reject"));
        }
        Some((_, config)) => config.priority,
        None => u8::MAX,
    };
    let mut candidates: Vec<(u8, &Arc<PartitionLog>, Arc<TopicConfig>)> = Vec::new();
    for topic in topics {
        for log in topic.partitions() {
            let config = log.config();
            if config.on_full == OnFull::DropOldest && config.priority <= writer_priority {
                candidates.push((config.priority, log, config));
            }
        }
    }
    candidates.sort_by_key(|(priority, _, _)| *priority);
    let mut dropped = Dropped::default();
    let mut drops = 0usize;
    let mut start = 0;
    while start < candidates.len() && used() + incoming > budget {
        let priority = candidates[start].0;
        let level_end = candidates[start..]
            .iter()
            .position(|c| c.0 != priority)
            .map_or(candidates.len(), |n| start + n);
        // Oldest first across the partitions of this priority.
        let mut heap = BinaryHeap::new();
        for (i, (_, log, _)) in candidates[start..level_end].iter().enumerate() {
            if let Some(first) = log.first_batch()? {
                heap.push(Reverse((first.max_timestamp_ms, start + i)));
            }
        }
        while used() + incoming > budget && drops < BUDGET_DROPS_PER_APPEND_MAX {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            let (_, log, config) = &candidates[i];
            let trimmed = log.trim_front(1, log.removable_end(config), |_| true)?;
            drops += 1;
            if trimmed.batches == 0 {
                continue; // the rest of this partition is not droppable
            }
            log.counters
                .dropped_records
                .fetch_add(trimmed.records, Ordering::Relaxed);
            log.counters
                .dropped_bytes
                .fetch_add(trimmed.bytes, Ordering::Relaxed);
            dropped.batches += trimmed.batches;
            dropped.records += trimmed.records;
            dropped.bytes += trimmed.bytes;
            if let Some(first) = log.first_batch()? {
                heap.push(Reverse((first.max_timestamp_ms, i)));
            }
        }
        start = level_end;
    }
    if dropped.batches > 0 {
        log::warn!(
            "disk budget of {budget} bytes reached: dropped {} batches ({} records, {} bytes) of on_full=drop_oldest topics",
            dropped.batches,
            dropped.records,
            dropped.bytes
        );
    }
    if used() + incoming > budget {
        let topic = writer.map_or("(maintenance)", |(t, _)| t);
        return Err(full(
            topic,
            "no droppable data is left in drop_oldest topics of the same or a lower priority",
        ));
    }
    Ok(dropped)
}
