//! The disk budget: a global limit on the bytes of stored batches.
//!
//! When an append would take the total over the budget, eddy first tries to
//! make room by dropping whole batches from the front of other partitions,
//! and refuses the append ([`StorageError::BudgetFull`], the wire's
//! `DiskFull`) only when that is not enough. The rule ([`may_shed`]):
//!
//! - Only topics with `on_full=drop_oldest` ever lose data to the budget;
//!   an `on_full=reject` topic's data is never dropped.
//! - A writer may shed `drop_oldest` topics of a **lower** priority than its
//!   own topic's. A `drop_oldest` writer may also shed its own priority
//!   (its own topic included): it accepts losing its oldest data, so it may
//!   take the same from its peers. A `reject` writer never sheds its own
//!   priority: equal priority means "not less important than me".
//! - The maintenance loop (the total is over the budget without a writer,
//!   e.g. after a restart with a smaller budget) may shed every
//!   `drop_oldest` topic.
//! - Lowest priority first; within a priority, oldest first across its
//!   partitions (by each batch's newest record's timestamp); as few batches
//!   as make room.
//! - Only durable batches are dropped, and none the mirror still needs
//!   (`keep_from`) unless the topic says `on_full.unmirrored=drop`.
//!
//! So alarms (`reject`, priority 9) are written while telemetry
//! (`drop_oldest`, priority 1) still holds droppable data, and are refused
//! only once it has none left; telemetry never sheds alarms. Batches
//! dropped on the way to a refusal stay dropped (the room goes to the next
//! writes). Every drop is counted per partition and logged (rate-bounded:
//! [`crate::log_limit`]). At most [`BUDGET_DROPS_PER_APPEND_MAX`] batches
//! are dropped for one append. The check before an append is not atomic
//! with it: concurrent appends may overshoot the budget by what they carry
//! together.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::partition::PartitionLog;
use super::topic_config::{OnFull, TopicConfig};
use super::{StorageError, Topic};
use crate::log_limit::{suppressed_note, LogLimiter};

/// Most batches dropped to make room for one append.
pub const BUDGET_DROPS_PER_APPEND_MAX: usize = 4096;
/// Partitions named in one drop log line (the rest are summed up).
const DROP_LOG_PARTITIONS_MAX: usize = 8;

/// What a drop run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

/// Whether the budget may drop data of a topic with settings `candidate` to
/// make room for a writer with settings `writer` (`None`: the maintenance
/// loop). The rule of this module, in one place.
pub(super) fn may_shed(writer: Option<&TopicConfig>, candidate: &TopicConfig) -> bool {
    if candidate.on_full != OnFull::DropOldest {
        return false;
    }
    match writer {
        None => true,
        Some(w) if w.on_full == OnFull::DropOldest => candidate.priority <= w.priority,
        Some(w) => candidate.priority < w.priority,
    }
}

/// Drops batches until `used() + incoming <= budget`, on behalf of a writer
/// with `writer` settings (`None`: the maintenance loop). Fails when it
/// cannot make enough room.
pub(super) fn make_room(
    topics: &[Arc<Topic>],
    writer: Option<(&str, &TopicConfig)>,
    incoming: u64,
    budget: u64,
    used: impl Fn() -> u64,
    log_limit: &LogLimiter,
) -> Result<Dropped, StorageError> {
    let full = |topic: &str, reason: &str| StorageError::BudgetFull {
        topic: topic.to_string(),
        budget,
        used: used(),
        reason: reason.to_string(),
    };
    let writer_config = writer.map(|(_, config)| config);
    let mut candidates: Vec<(u8, &Arc<PartitionLog>, Arc<TopicConfig>)> = Vec::new();
    for topic in topics {
        for log in topic.partitions() {
            let config = log.config();
            if may_shed(writer_config, &config) {
                candidates.push((config.priority, log, config));
            }
        }
    }
    candidates.sort_by_key(|(priority, _, _)| *priority);
    let mut dropped = Dropped::default();
    // Per partition dropped from: (topic/partition, batches, records).
    let mut from: Vec<(String, u64, u64)> = Vec::new();
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
            let name = format!("{}/{}", log.topic(), log.partition());
            match from.iter_mut().find(|(n, _, _)| *n == name) {
                Some(entry) => {
                    entry.1 += trimmed.batches;
                    entry.2 += trimmed.records;
                }
                None => from.push((name, trimmed.batches, trimmed.records)),
            }
            if let Some(first) = log.first_batch()? {
                heap.push(Reverse((first.max_timestamp_ms, i)));
            }
        }
        start = level_end;
    }
    let writer_name = writer.map_or("(maintenance)", |(t, _)| t);
    if dropped.batches > 0 {
        if let Some(left_out) = log_limit.admit() {
            let mut named: Vec<String> = from
                .iter()
                .take(DROP_LOG_PARTITIONS_MAX)
                .map(|(name, batches, records)| {
                    format!("{name}: {batches} batches, {records} records")
                })
                .collect();
            if from.len() > DROP_LOG_PARTITIONS_MAX {
                named.push(format!(
                    "{} more partitions",
                    from.len() - DROP_LOG_PARTITIONS_MAX
                ));
            }
            log::warn!(
                "disk budget of {budget} bytes reached: dropped {} batches ({} records, {} bytes) of on_full=drop_oldest topics to make room for {writer_name} ({}){}",
                dropped.batches,
                dropped.records,
                dropped.bytes,
                named.join("; "),
                suppressed_note(left_out)
            );
        }
    }
    if used() + incoming > budget {
        let reason = match writer_config {
            Some(c) if c.on_full == OnFull::Reject => format!(
                "the topic has on_full=reject (its own data is never dropped) and no on_full=drop_oldest topic \
                 of a lower priority than its {} has droppable data left",
                c.priority
            ),
            Some(c) => format!(
                "no droppable data is left in on_full=drop_oldest topics of its priority {} or lower",
                c.priority
            ),
            None => "no droppable data is left in on_full=drop_oldest topics".to_string(),
        };
        return Err(full(writer_name, &reason));
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::may_shed;
    use crate::storage::topic_config::{OnFull, TopicConfig};

    fn topic(on_full: OnFull, priority: u8) -> TopicConfig {
        TopicConfig {
            on_full,
            priority,
            ..TopicConfig::default()
        }
    }

    /// The rule, case by case: only drop_oldest topics are shed; a reject
    /// writer sheds strictly lower priorities, a drop_oldest writer its own
    /// and lower ones; maintenance every drop_oldest topic.
    #[test]
    fn who_may_shed_whom() {
        use OnFull::{DropOldest as D, Reject as R};
        let cases = [
            // (writer, candidate, may shed)
            (Some((R, 5)), (D, 4), true),
            (Some((R, 5)), (D, 5), false),
            (Some((R, 5)), (D, 6), false),
            (Some((R, 5)), (R, 0), false),
            (Some((R, 0)), (D, 0), false),
            (Some((D, 5)), (D, 4), true),
            (Some((D, 5)), (D, 5), true),
            (Some((D, 5)), (D, 6), false),
            (Some((D, 5)), (R, 0), false),
            (Some((D, 255)), (D, 255), true),
            (None, (D, 255), true),
            (None, (R, 0), false),
        ];
        for (writer, (c_full, c_priority), want) in cases {
            let w = writer.map(|(f, p)| topic(f, p));
            assert_eq!(
                may_shed(w.as_ref(), &topic(c_full, c_priority)),
                want,
                "writer {writer:?}, candidate {c_full:?}/{c_priority}"
            );
        }
    }
}
