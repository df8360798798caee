//! Retention: removes whole batches from the front of a partition by age
//! (`retention.ms`) and by size (`retention.bytes`), as Kafka does with
//! segments (eddy's unit is the stored batch of about 4 KiB):
//!
//! - a batch is expired when `now − its newest record's timestamp >
//!   retention.ms`;
//! - a batch is over size when the partition would still hold at least
//!   `retention.bytes` without it.
//!
//! Removal starts at the front and stops at the first batch that is
//! neither, so the log start only moves forward and offsets never change.
//! Only durable batches are removed, and none the mirror still needs
//! (`keep_from`) unless the topic says `on_full.unmirrored=drop` (then
//! expired or surplus batches go whether forwarded or not).
//! One call removes at most a bounded number of batches; the maintenance
//! loop calls again while there is more. A partition is *behind* when a
//! step removed its most batches and the partition is still more than
//! [`RETENTION_BEHIND_PERCENT`] past a limit (bytes stored over
//! `retention.bytes`, or the last removed batch's age over `retention.ms`):
//! the maintenance loop then stops holding itself back, since the other
//! way a gateway goes is a full disk. This file decides; `partition`
//! removes.

use std::sync::atomic::Ordering;

use super::partition::{PartitionLog, Trimmed};
use super::StorageError;

/// How far past a retention limit a partition may still be after a full
/// step before it counts as behind, in percent of the limit.
pub const RETENTION_BEHIND_PERCENT: u64 = 50;

/// What one retention step did on one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RetentionStep {
    pub trimmed: Trimmed,
    /// The step removed `batches_max` batches: there may be more, step
    /// again soon.
    pub more: bool,
    /// `more`, and the partition is still more than
    /// [`RETENTION_BEHIND_PERCENT`] past a limit.
    pub behind: bool,
}

/// `value` more than [`RETENTION_BEHIND_PERCENT`] past `limit`.
fn far_past(value: u64, limit: u64) -> bool {
    value.saturating_sub(limit) > limit / 100 * RETENTION_BEHIND_PERCENT
}

/// One retention step on one partition at time `now_ms`: removes at most
/// `batches_max` batches. Returns what it removed and whether it is behind.
pub(super) fn retention_step(
    log: &PartitionLog,
    now_ms: u64,
    batches_max: usize,
) -> Result<RetentionStep, StorageError> {
    let config = log.config();
    if !config.delete || (config.retention_ms.is_none() && config.retention_bytes.is_none()) {
        return Ok(RetentionStep::default());
    }
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let age_max = config
        .retention_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let mut remaining = log.stored_bytes();
    let mut last_age = 0i64;
    let end_max = log.removable_end(&config);
    let trimmed = log.trim_front(batches_max, end_max, |batch| {
        let age = now.saturating_sub(batch.max_timestamp_ms);
        let expired = age_max.is_some_and(|max| age > max);
        let over_size = config
            .retention_bytes
            .is_some_and(|limit| remaining.saturating_sub(batch.bytes) >= limit);
        if expired || over_size {
            remaining = remaining.saturating_sub(batch.bytes);
            last_age = age;
            true
        } else {
            false
        }
    })?;
    if trimmed.records > 0 {
        log.counters
            .retention_removed_records
            .fetch_add(trimmed.records, Ordering::Relaxed);
        log::debug!(
            "retention removed {} batches ({} records, {} bytes) from {}/{}",
            trimmed.batches,
            trimmed.records,
            trimmed.bytes,
            log.topic(),
            log.partition()
        );
    }
    let more = trimmed.batches >= batches_max as u64;
    let bytes_behind = config
        .retention_bytes
        .is_some_and(|limit| far_past(log.stored_bytes(), limit));
    let age_behind = age_max.is_some_and(|max| {
        far_past(
            u64::try_from(last_age).unwrap_or(0),
            u64::try_from(max).unwrap_or(u64::MAX),
        )
    });
    Ok(RetentionStep {
        trimmed,
        more,
        behind: more && (bytes_behind || age_behind),
    })
}
