//! Compaction: keeps the newest record per key, as Kafka's log cleaner.
//!
//! A pass has two phases, each run in bounded steps (at most
//! `batches_max` stored batches per call) so producers never wait for it:
//!
//! 1. **Scan** the dirty part (everything written since the last pass, up
//!    to the cleanable end) and remember, per key, the offset of its newest
//!    record. The map is bounded (`map_bytes_max`); when it is full the pass
//!    stops its dirty part there, and the next pass continues from there at
//!    once (whatever the dirty ratio says: the rest is dirty).
//! 2. **Rewrite** every batch from the log start to the same end: a record
//!    is kept when no newer record with its key exists in the map. A kept
//!    tombstone (empty value) is dropped once its timestamp is older than
//!    `delete.retention.ms`. Batches keep their base offset and offset span
//!    (offsets never change; removed records leave gaps); a batch left
//!    empty is removed. The rewrite goes segment by segment: a cleaned
//!    copy of each closed segment is written, fsynced and renamed over it
//!    (`PartitionLog::compact_segment`), under the partition's trim lock,
//!    so a batch that retention removed meanwhile is never resurrected.
//!    The active segment is closed first when it holds batches the pass
//!    covers.
//!
//! The cleanable end is the lowest of: the durable watermark, the mirror's
//! `keep_from` (always, even with `on_full.unmirrored=drop`: the mirror
//! forwards what producers wrote), and the base of
//! the last stored batch (like Kafka's active segment, it is never cleaned,
//! so the log end is always recoverable from it). Records without a key are
//! always kept. A pass starts when the bytes appended since the last one
//! began (all stored bytes before the first pass since open) are at least
//! `min.cleanable.dirty.ratio` of the partition's stored bytes, or at once
//! after a pass that stopped at the key map's bound.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::partition::{CleanedBatch, PartitionLog};
use super::StorageError;
use crate::wire::batch::{Batch, BatchBuilder, BatchError, ProducerStamp};

/// Bytes a key costs in the map besides its own length (entry, offset).
const MAP_ENTRY_OVERHEAD_BYTES: usize = 48;

/// Compaction progress of one partition.
#[derive(Debug, Default)]
pub(super) struct CompactionState {
    /// Everything below was compacted by the last pass.
    clean_end: u64,
    /// The partition's appended bytes when the last pass began (`None`: no
    /// pass since the log was opened, so all of it counts as dirty). Bytes
    /// appended, not stored bytes: retention removing from the front
    /// (`compact,delete`) must not hide new writes; and from the start of
    /// the pass, so what arrived while it ran counts for the next one.
    appended_mark: Option<u64>,
    /// The last pass stopped at the key map's bound: the dirty part goes on
    /// after `clean_end`, so the next pass starts without waiting for new
    /// writes.
    unfinished: bool,
    pass: Option<Pass>,
}

#[derive(Debug)]
struct Pass {
    rewriting: bool,
    /// Batches ending at or before this are in the pass.
    end: u64,
    /// Next offset to look at.
    cursor: u64,
    /// Newest offset per key in the dirty part.
    newest: HashMap<Vec<u8>, u64>,
    map_bytes: usize,
    /// The map filled before the planned end.
    map_full: bool,
    removed_records: u64,
    started: Instant,
    /// The partition's appended bytes when the pass began.
    appended_at_start: u64,
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CompactionStep {
    /// Batches read or rewritten.
    pub batches: usize,
    /// Records removed.
    pub removed_records: u64,
    /// A pass is under way: call again.
    pub more: bool,
}

/// One bounded compaction step on `log` at time `now_ms`.
pub(super) fn compaction_step(
    log: &PartitionLog,
    state: &mut CompactionState,
    now_ms: u64,
    batches_max: usize,
    map_bytes_max: usize,
) -> Result<CompactionStep, StorageError> {
    let config = log.config();
    if !config.compact {
        *state = CompactionState::default();
        return Ok(CompactionStep::default());
    }
    let log_start = log.watermarks().log_start;
    if state.pass.is_none() {
        let stored = log.stored_bytes();
        let dirty = match state.appended_mark {
            None => stored,
            Some(mark) => log.appended_bytes().saturating_sub(mark),
        };
        let cleanable_end = match log.last_base()? {
            Some(last) => last.min(log.rewritable_end()),
            None => return Ok(CompactionStep::default()),
        };
        let dirty_start = state.clean_end.max(log_start);
        let ratio_met =
            dirty > 0 && (dirty as f64) >= config.min_cleanable_dirty_ratio * stored as f64;
        if cleanable_end <= dirty_start || !(ratio_met || state.unfinished) {
            return Ok(CompactionStep::default());
        }
        state.pass = Some(Pass {
            rewriting: false,
            end: cleanable_end,
            cursor: dirty_start,
            newest: HashMap::new(),
            map_bytes: 0,
            map_full: false,
            removed_records: 0,
            started: Instant::now(),
            appended_at_start: log.appended_bytes(),
        });
    }
    let pass = state.pass.as_mut().expect("a pass is under way");
    let mut step = CompactionStep {
        more: true,
        ..CompactionStep::default()
    };
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let tombstone_age_max = i64::try_from(config.delete_retention_ms).unwrap_or(i64::MAX);
    while step.batches < batches_max {
        if pass.rewriting {
            let newest = &pass.newest;
            let cleaned = log.compact_segment(pass.cursor, pass.end, |batch| {
                cleaned_batch(log, batch, newest, now, tombstone_age_max)
            })?;
            let Some(done) = cleaned else {
                step.more = false;
                break;
            };
            step.batches += done.batches.max(1);
            pass.removed_records += done.removed_records;
            step.removed_records += done.removed_records;
            pass.cursor = done.next;
            if pass.cursor >= pass.end {
                step.more = false;
                break;
            }
            continue;
        }
        let Some(value) = log.batch_from(pass.cursor)? else {
            start_rewrite(log, pass, log_start)?;
            continue;
        };
        let batch = Batch::parse(&value).map_err(|error| corrupt(log, pass.cursor, error))?;
        step.batches += 1;
        if batch.end_offset() > pass.end {
            pass.end = pass.end.min(batch.base_offset());
            start_rewrite(log, pass, log_start)?;
            continue;
        }
        for record in batch.records() {
            let record = record.map_err(|e| corrupt(log, batch.base_offset(), e))?;
            if let Some(key) = record.key {
                let offset = batch.base_offset() + u64::from(record.offset_delta);
                if pass.newest.insert(key.to_vec(), offset).is_none() {
                    pass.map_bytes += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
                }
            }
        }
        pass.cursor = batch.end_offset();
        if pass.map_bytes >= map_bytes_max {
            // Full: this pass covers the dirty part up to here.
            pass.map_full = pass.end > batch.end_offset();
            pass.end = batch.end_offset();
            start_rewrite(log, pass, log_start)?;
        }
    }
    if !step.more {
        let pass = state.pass.take().expect("a pass is under way");
        state.clean_end = pass.end;
        state.appended_mark = Some(pass.appended_at_start);
        state.unfinished = pass.map_full;
        // Cut by the map: the next pass continues at once.
        step.more = state.unfinished;
        log.counters
            .compaction_passes
            .fetch_add(1, Ordering::Relaxed);
        log::info!(
            "compacted {}/{} up to offset {}: removed {} records ({} keys) in {} ms",
            log.topic(),
            log.partition(),
            pass.end,
            pass.removed_records,
            pass.newest.len(),
            pass.started.elapsed().as_millis()
        );
    }
    if step.removed_records > 0 {
        log.counters
            .compaction_removed_records
            .fetch_add(step.removed_records, Ordering::Relaxed);
    }
    Ok(step)
}

/// Turns the pass to rewriting, from the log start. Compaction cleans
/// closed segments only: the active one is closed first when it holds
/// batches the pass covers.
fn start_rewrite(log: &PartitionLog, pass: &mut Pass, log_start: u64) -> Result<(), StorageError> {
    pass.rewriting = true;
    pass.cursor = log_start;
    log.roll_if_below(pass.end)
}

fn corrupt(log: &PartitionLog, offset: u64, error: BatchError) -> StorageError {
    StorageError::Corrupt {
        topic: log.topic().to_string(),
        partition: log.partition(),
        offset,
        error,
    }
}

/// One batch without its superseded records and expired tombstones, and
/// how many records that removes.
fn cleaned_batch(
    log: &PartitionLog,
    batch: &Batch<'_>,
    newest: &HashMap<Vec<u8>, u64>,
    now_ms: i64,
    tombstone_age_max: i64,
) -> Result<(CleanedBatch, u64), StorageError> {
    let base = batch.base_offset();
    let keep = |offset: u64, timestamp: i64, key: Option<&[u8]>, value: &[u8]| -> bool {
        let Some(key) = key else { return true };
        if newest.get(key).is_some_and(|&n| n > offset) {
            return false;
        }
        !(value.is_empty() && now_ms.saturating_sub(timestamp) > tombstone_age_max)
    };
    let mut kept = 0u64;
    for record in batch.records() {
        let r = record.map_err(|e| corrupt(log, base, e))?;
        let offset = base + u64::from(r.offset_delta);
        if keep(offset, batch.timestamp_of(&r), r.key, r.value) {
            kept += 1;
        }
    }
    let total = u64::from(batch.record_count());
    if kept == total {
        return Ok((CleanedBatch::Unchanged, 0));
    }
    if kept == 0 {
        return Ok((CleanedBatch::Removed, total));
    }
    let mut builder =
        BatchBuilder::with_capacity(batch.as_bytes().len(), batch.header.first_timestamp_ms)
            .map_err(|e| corrupt(log, base, e))?;
    builder.set_producer(ProducerStamp {
        producer_id: batch.header.producer_id,
        producer_epoch: batch.header.producer_epoch,
        base_sequence: batch.header.base_sequence,
    });
    for record in batch.records() {
        let r = record.map_err(|e| corrupt(log, base, e))?;
        let offset = base + u64::from(r.offset_delta);
        let timestamp = batch.timestamp_of(&r);
        if keep(offset, timestamp, r.key, r.value) {
            builder
                .push_at(r.offset_delta, timestamp, r.key, r.value, r.headers)
                .map_err(|e| corrupt(log, base, e))?;
        }
    }
    builder
        .set_last_offset_delta(batch.header.last_offset_delta)
        .map_err(|e| corrupt(log, base, e))?;
    let mut bytes = builder.finish_vec();
    crate::wire::batch::set_base_offset(&mut bytes, base);
    Ok((CleanedBatch::Replaced(bytes), total - kept))
}
