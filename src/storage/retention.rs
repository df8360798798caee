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
//! loop calls again while there is more. This file decides; `partition`
//! removes.

use std::sync::atomic::Ordering;

use super::partition::{PartitionLog, Trimmed};
use super::StorageError;

/// One retention step on one partition at time `now_ms`: removes at most
/// `batches_max` batches. Returns what it removed.
pub(super) fn retention_step(
    log: &PartitionLog,
    now_ms: u64,
    batches_max: usize,
) -> Result<Trimmed, StorageError> {
    let config = log.config();
    if !config.delete || (config.retention_ms.is_none() && config.retention_bytes.is_none()) {
        return Ok(Trimmed::default());
    }
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let age_max = config
        .retention_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let mut remaining = log.stored_bytes();
    let end_max = log.removable_end(&config);
    let trimmed = log.trim_front(batches_max, end_max, |batch| {
        let expired = age_max.is_some_and(|age| now.saturating_sub(batch.max_timestamp_ms) > age);
        let over_size = config
            .retention_bytes
            .is_some_and(|limit| remaining.saturating_sub(batch.bytes) >= limit);
        if expired || over_size {
            remaining = remaining.saturating_sub(batch.bytes);
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
    Ok(trimmed)
}
