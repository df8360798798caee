//! One partition's log: a directory of segment files ([`segment`]) holding
//! its batches, plus its watermarks.
//!
//! Offsets are dense and assigned here, under the append lock, never reused:
//! after a restart the log end is recomputed from the newest segment (named
//! after the offset it starts at, so even an empty one keeps the log end),
//! and never falls below the persisted log start (the "floor" in sled,
//! written before retention or the disk budget remove batches from the
//! front). Every batch is CRC-checked right before it is written and right
//! after it is read back. Retention and the budget move the log start batch
//! by batch (what they count) and delete a segment file once the log start
//! has passed all of it; a closed segment they remove whole costs no batch
//! reads. This file does not flush (see `flusher`) and does not decide what
//! to remove (see `retention`, `compaction`, `budget`); it offers the
//! primitives they share. Recovery, compaction's segment swap and the time
//! lookup are in `partition/files.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::segment::Segment;
use super::topic_config::TopicConfig;
use super::StorageError;
use crate::wire::batch::{set_base_offset, Batch, BatchHeader};

mod files;

pub(super) use files::CleanedBatch;

/// A topic's settings, shared by its partitions and swapped on alter.
pub(super) type ConfigCell = Arc<RwLock<Arc<TopicConfig>>>;

/// "Nothing is held back for the mirror."
const KEEP_FROM_NONE: u64 = u64::MAX;

/// One partition's log.
pub struct PartitionLog {
    /// The directory of its segment files.
    dir: PathBuf,
    /// Segments by base offset; the last one is the active segment that
    /// appends go to. Never empty. Appends hold the append lock; rolls,
    /// deletions and compaction's swaps take this lock for writing.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Segments closed since the flusher's last round: their tails may not
    /// be synced yet.
    unsynced: Mutex<Vec<Arc<Segment>>>,
    /// Shared tree of persisted log starts (`floor_key` → u64 BE).
    floors: sled::Tree,
    floor_key: Vec<u8>,
    topic: String,
    topic_id: u64,
    partition: u32,
    /// Serialises offset assignment with the write, so offsets are dense and
    /// batches land in offset order.
    append_lock: Mutex<()>,
    /// Serialises removals from the front (retention, disk budget) and
    /// compaction's swaps, so the persisted floor only moves forward.
    trim_lock: Mutex<()>,
    /// Earliest offset still stored.
    log_start: AtomicU64,
    /// Next offset to assign.
    log_end: AtomicU64,
    /// Every offset below is fsynced; consumers read up to here.
    durable_end: AtomicU64,
    /// Bytes of stored batches at or after the log start (for retention and
    /// the disk budget).
    stored_bytes: AtomicU64,
    /// Bytes appended since the log was opened, never decreasing (how much
    /// is new for compaction, whatever retention removed meanwhile).
    appended_bytes: AtomicU64,
    /// Bytes of stored batches of every partition (the disk budget's count).
    total_bytes: Arc<AtomicU64>,
    /// The mirror's hook: batches ending above this offset are not yet
    /// mirrored and are only dropped when the topic allows it.
    keep_from: AtomicU64,
    pub(super) config: ConfigCell,
    pub(super) counters: PartitionCounters,
    /// Set when appended to since the last flush began (see `flusher`).
    pub(super) dirty: AtomicBool,
    /// When `dirty` was last set (the flusher's clock, ms): `flush.ms`
    /// counts from here.
    pub(super) dirty_since_ms: AtomicU64,
    /// Unreadable batches dropped from the tail when the log was opened.
    pub(super) dropped_at_recovery: u64,
    /// Fires when `durable_end` advances, and when storage closes or fails
    /// ([`PartitionLog::durable_event`]).
    durable_event: event_listener::Event,
}

/// What maintenance removed from a partition since it was opened.
#[derive(Debug, Default)]
pub(super) struct PartitionCounters {
    pub retention_removed_records: AtomicU64,
    pub compaction_removed_records: AtomicU64,
    pub compaction_passes: AtomicU64,
    pub dropped_records: AtomicU64,
    pub dropped_bytes: AtomicU64,
}

/// Storage counters of a partition at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub stored_bytes: u64,
    pub retention_removed_records: u64,
    pub compaction_removed_records: u64,
    pub compaction_passes: u64,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    pub keep_from: Option<u64>,
}

/// Proof that the append lock is held.
pub(super) struct AppendGuard<'a>(#[allow(dead_code)] std::sync::MutexGuard<'a, ()>);

/// Offsets assigned to batches that are about to be written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Staged {
    pub first: u64,
    pub end: u64,
    pub bytes: u64,
}

/// The watermarks of a partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub log_start: u64,
    pub log_end: u64,
    pub durable: u64,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub log_start: u64,
    pub high_watermark: u64,
    /// Bytes appended to the output.
    pub bytes: usize,
    /// Offset after the last batch returned (the next offset to ask for).
    pub next_offset: u64,
}

/// The facts of a stored batch (or of a whole segment) that removal
/// decisions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchInfo {
    pub base: u64,
    pub end: u64,
    pub bytes: u64,
    pub records: u64,
    pub max_timestamp_ms: i64,
}

impl BatchInfo {
    fn of(value: &[u8]) -> Option<BatchInfo> {
        let h = BatchHeader::read(value).ok()?;
        Some(BatchInfo {
            base: h.base_offset,
            end: h.end_offset(),
            bytes: value.len() as u64,
            records: u64::from(h.record_count),
            max_timestamp_ms: h.max_timestamp_ms,
        })
    }
}

/// What one removal from the front took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Trimmed {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

/// Where a partition log lives and what it shares with the others.
pub(super) struct PartitionSetup<'a> {
    /// The directory of the partition's segment files.
    pub segment_dir: PathBuf,
    pub floors: sled::Tree,
    pub topic: &'a str,
    pub topic_id: u64,
    pub partition: u32,
    /// sled's directory (named in errors).
    pub dir: &'a Path,
    pub total_bytes: Arc<AtomicU64>,
    pub config: ConfigCell,
}

/// The base offset a stored batch's frame names (its first 8 bytes; the
/// frame is at least that long once read).
fn stored_base(frame: &[u8]) -> u64 {
    frame
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The key of a partition's floor in the floors tree.
pub(super) fn floor_key(topic_id: u64, partition: u32) -> Vec<u8> {
    let mut key = topic_id.to_be_bytes().to_vec();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

impl PartitionLog {
    /// Called once after recovery has been fsynced.
    pub(super) fn mark_recovered_durable(&self) {
        self.durable_end
            .store(self.log_end.load(Ordering::Acquire), Ordering::Release);
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Unique id of the topic incarnation.
    pub fn topic_id(&self) -> u64 {
        self.topic_id
    }

    /// The topic's settings now.
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().expect("config lock").clone()
    }

    /// The mirror's hook: every batch ending above `offset` is not yet
    /// mirrored. Compaction never rewrites it; retention and the disk budget
    /// remove it only when the topic's `on_full.unmirrored` says `drop`.
    /// `None` releases everything.
    pub fn set_keep_from(&self, offset: Option<u64>) {
        self.keep_from
            .store(offset.unwrap_or(KEEP_FROM_NONE), Ordering::Release);
    }

    /// See [`PartitionLog::set_keep_from`].
    pub fn keep_from(&self) -> Option<u64> {
        match self.keep_from.load(Ordering::Acquire) {
            KEEP_FROM_NONE => None,
            offset => Some(offset),
        }
    }

    /// Counters of what maintenance removed.
    pub fn stats(&self) -> PartitionStats {
        let c = &self.counters;
        PartitionStats {
            stored_bytes: self.stored_bytes(),
            retention_removed_records: c.retention_removed_records.load(Ordering::Relaxed),
            compaction_removed_records: c.compaction_removed_records.load(Ordering::Relaxed),
            compaction_passes: c.compaction_passes.load(Ordering::Relaxed),
            dropped_records: c.dropped_records.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            keep_from: self.keep_from(),
        }
    }

    /// Current watermarks.
    pub fn watermarks(&self) -> Watermarks {
        // Read durable first: durable ≤ log_end must hold in the result.
        let durable = self.durable_end.load(Ordering::Acquire);
        Watermarks {
            log_start: self.log_start.load(Ordering::Acquire),
            log_end: self.log_end.load(Ordering::Acquire),
            durable,
        }
    }

    /// Every offset below this one is fsynced.
    pub fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Next offset to be assigned.
    pub fn log_end(&self) -> u64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// Bytes of stored batches.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Bytes appended since the log was opened (never decreases).
    pub(super) fn appended_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn set_durable_end(&self, end: u64) {
        if self.durable_end.fetch_max(end, Ordering::AcqRel) < end {
            self.durable_event.notify(usize::MAX);
        }
    }

    /// Notified whenever this partition's durable end advances, and when
    /// storage closes or fails (so waiters never hang). Long-polls and
    /// produces waiting for this partition listen here, so a flush round
    /// wakes only the waiters of the partitions it made durable.
    pub fn durable_event(&self) -> &event_listener::Event {
        &self.durable_event
    }

    /// Wakes this partition's waiters without a change (storage closing or
    /// failed: they check its health and stop waiting).
    pub(super) fn wake_waiters(&self) {
        self.durable_event.notify(usize::MAX);
    }

    /// Appends the batches contiguously and atomically, assigning offsets.
    /// Returns `(first offset, one past the last)`.
    pub(super) fn append(
        &self,
        batches: &mut [Vec<u8>],
        dir: &Path,
    ) -> Result<(u64, u64), StorageError> {
        let guard = self.lock_append();
        let staged = self.stage(&guard, batches)?;
        self.insert_staged(&guard, batches, dir)?;
        self.publish(&guard, &staged);
        Ok((staged.first, staged.end))
    }

    /// Takes the append lock: offsets are assigned and published under it.
    pub(super) fn lock_append(&self) -> AppendGuard<'_> {
        AppendGuard(self.append_lock.lock().expect("append lock"))
    }

    /// Assigns offsets to `batches` (from the current log end) and checks
    /// each right before it is written. Nothing is stored or published.
    pub(super) fn stage(
        &self,
        _guard: &AppendGuard<'_>,
        batches: &mut [Vec<u8>],
    ) -> Result<Staged, StorageError> {
        let first = self.log_end.load(Ordering::Acquire);
        let mut next = first;
        let mut bytes = 0u64;
        for encoded in batches.iter_mut() {
            set_base_offset(encoded, next);
            // Check right before the write: header, length, CRC.
            let batch = Batch::parse(encoded).map_err(|error| self.corrupt(next, error))?;
            bytes += encoded.len() as u64;
            next = batch.end_offset();
        }
        Ok(Staged {
            first,
            end: next,
            bytes,
        })
    }

    /// Writes staged (checked) batches at the end of the active segment, in
    /// one write, first rolling to a new segment when the active one is
    /// full (`segment.bytes`) or old (`segment.ms`).
    pub(super) fn insert_staged(
        &self,
        guard: &AppendGuard<'_>,
        batches: &[Vec<u8>],
        dir: &Path,
    ) -> Result<(), StorageError> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let first_base = BatchHeader::read(first)
            .map_err(|error| self.corrupt(0, error))?
            .base_offset;
        let incoming: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let now_ms = crate::time::now_ms();
        let active = self.active();
        let config = self.config();
        let full = active.len() + incoming > config.segment_bytes;
        let old = now_ms.saturating_sub(active.first_append_ms()) >= config.segment_ms;
        let active = if !active.is_empty() && (full || old) {
            self.roll(guard, first_base)?
        } else {
            active
        };
        active
            .append(batches, now_ms)
            .map_err(|e| StorageError::io(dir, e))
    }

    /// Closes the active segment and starts a new, empty one at `base` (the
    /// next batch's offset). The new file's name is durable (directory
    /// fsync) before anything is written to it; the closed segment's tail
    /// is synced by the next flusher round.
    fn roll(&self, _guard: &AppendGuard<'_>, base: u64) -> Result<Arc<Segment>, StorageError> {
        let old = self.active();
        if let Err(e) = old.write_index() {
            // Only a cache: a restart rebuilds it.
            log::warn!(
                "{}: could not write the index of {}: {e}",
                self.name(),
                old.path.display()
            );
        }
        let new =
            Arc::new(Segment::create(&self.dir, base).map_err(|e| StorageError::io(&self.dir, e))?);
        super::sync_dir(&self.dir)?;
        self.unsynced.lock().expect("unsynced lock").push(old);
        self.segments
            .write()
            .expect("segments lock")
            .push(new.clone());
        Ok(new)
    }

    /// Closes the active segment when it holds batches below `offset`
    /// (compaction cleans closed segments only).
    pub(super) fn roll_if_below(&self, offset: u64) -> Result<(), StorageError> {
        let guard = self.lock_append();
        let active = self.active();
        if !active.is_empty() && active.base < offset {
            self.roll(&guard, self.log_end())?;
        }
        Ok(())
    }

    /// Makes staged batches visible once they are written.
    pub(super) fn publish(&self, _guard: &AppendGuard<'_>, staged: &Staged) {
        self.stored_bytes.fetch_add(staged.bytes, Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(staged.bytes, Ordering::Relaxed);
        self.total_bytes.fetch_add(staged.bytes, Ordering::Relaxed);
        // Publish after the write: the flusher snapshots log_end and may
        // only count writes that completed before its sync began.
        self.log_end.store(staged.end, Ordering::Release);
    }

    /// fdatasyncs every segment written since the last call: the ones
    /// closed meanwhile, then the active one (the flusher's round).
    pub(super) fn sync(&self) -> Result<(), StorageError> {
        // The active segment first: one that a roll closes after this is
        // then in `unsynced` below, so no segment is ever missed.
        let active = self.active();
        let closed = std::mem::take(&mut *self.unsynced.lock().expect("unsynced lock"));
        for segment in closed.iter().chain(std::iter::once(&active)) {
            segment
                .sync()
                .map_err(|e| StorageError::io(&segment.path, e))?;
        }
        Ok(())
    }

    /// The segment appends go to.
    fn active(&self) -> Arc<Segment> {
        self.segments
            .read()
            .expect("segments lock")
            .last()
            .expect("a log always has a segment")
            .clone()
    }

    /// Appends whole batches starting at (or just before) `offset` to `out`,
    /// up to `max_bytes` (the first batch is always returned whole), never
    /// past the durable watermark. Each batch is CRC-checked after reading.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StorageError> {
        let high_watermark = self.durable_end.load(Ordering::Acquire);
        let log_start = self.log_start.load(Ordering::Acquire);
        if offset < log_start || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                log_start,
                high_watermark,
            });
        }
        let mut outcome = ReadOutcome {
            log_start,
            high_watermark,
            bytes: 0,
            next_offset: offset,
        };
        if offset == high_watermark {
            return Ok(outcome);
        }
        self.walk(offset, |value, base, end| {
            if base >= high_watermark
                || (outcome.bytes > 0 && outcome.bytes + value.len() > max_bytes)
            {
                return false;
            }
            out.extend_from_slice(value);
            outcome.bytes += value.len();
            outcome.next_offset = end;
            // Full: stop before reading (and checking) the next batch.
            end < high_watermark && outcome.bytes < max_bytes
        })?;
        Ok(outcome)
    }

    /// Calls `visit(bytes, base, end)` for every stored batch ending after
    /// `offset`, in offset order, until it returns false. Each batch is
    /// checked right after it is read.
    fn walk(
        &self,
        offset: u64,
        mut visit: impl FnMut(&[u8], u64, u64) -> bool,
    ) -> Result<(), StorageError> {
        let segments = self.segments.read().expect("segments lock");
        let first = segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        for segment in &segments[first..] {
            if segment.end() <= offset {
                continue;
            }
            let mut pos = segment.seek(offset);
            while let Some(value) = segment
                .read_at(pos)
                .map_err(|e| StorageError::io(&segment.path, e))?
            {
                pos += value.len() as u64;
                let batch = Batch::parse(&value)
                    .map_err(|error| self.corrupt(stored_base(&value), error))?;
                let (base, end) = (batch.base_offset(), batch.end_offset());
                if end > offset && !visit(&value, base, end) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The last offset (exclusive) that retention and the disk budget may
    /// remove up to: durable, and not held back for the mirror unless the
    /// topic allows dropping unmirrored data (`on_full.unmirrored=drop`).
    pub(super) fn removable_end(&self, config: &TopicConfig) -> u64 {
        let durable = self.durable_end();
        if config.drop_unmirrored {
            durable
        } else {
            durable.min(self.keep_from.load(Ordering::Acquire))
        }
    }

    /// The last offset (exclusive) that compaction may rewrite up to:
    /// durable and forwarded by the mirror, whatever `on_full.unmirrored`
    /// says. That setting lets a topic lose unmirrored data when it must
    /// (full budget, expired retention); compaction is never a must, and
    /// compacting before the mirror forwarded would send upstream a
    /// rewritten history instead of what producers wrote.
    pub(super) fn rewritable_end(&self) -> u64 {
        self.durable_end()
            .min(self.keep_from.load(Ordering::Acquire))
    }

    /// Removes whole batches from the front while `decide` says yes, at most
    /// `batches_max` of them (a whole closed segment `decide` accepts at
    /// once counts as its batches but costs no reads) and none ending after
    /// `end_max`. Persists the new log start (floor) before anything is
    /// deleted, then deletes the segment files the log start has passed.
    /// Returns what was removed.
    pub(super) fn trim_front(
        &self,
        batches_max: usize,
        end_max: u64,
        mut decide: impl FnMut(&BatchInfo) -> bool,
    ) -> Result<Trimmed, StorageError> {
        let _trim = self.trim_lock.lock().expect("trim lock");
        let mut trimmed = Trimmed::default();
        let mut next = self.log_start.load(Ordering::Acquire);
        while trimmed.batches < batches_max as u64 {
            if let Some((info, batches)) = self.whole_closed_segment_at(next) {
                if info.end <= end_max && decide(&info) {
                    trimmed.batches += batches;
                    trimmed.records += info.records;
                    trimmed.bytes += info.bytes;
                    next = info.end;
                    continue;
                }
            }
            let Some(value) = self.batch_after(next)? else {
                break;
            };
            let Some(info) = BatchInfo::of(&value) else {
                break;
            };
            if info.end > end_max || !decide(&info) {
                break;
            }
            trimmed.batches += 1;
            trimmed.records += info.records;
            trimmed.bytes += info.bytes;
            next = info.end;
        }
        if trimmed.batches == 0 {
            return Ok(Trimmed::default());
        }
        self.floors
            .insert(&self.floor_key, &next.to_be_bytes())
            .map_err(|e| self.sled_error(e))?;
        self.log_start.fetch_max(next, Ordering::AcqRel);
        self.sub_bytes(trimmed.bytes);
        self.delete_segments_below(next)?;
        Ok(trimmed)
    }

    /// The first segment ending after `offset`, when it is closed, holds
    /// batches, and none of them lies below `offset`: its totals as one
    /// unit, and its number of batches.
    fn whole_closed_segment_at(&self, offset: u64) -> Option<(BatchInfo, u64)> {
        let segments = self.segments.read().expect("segments lock");
        let (last, closed) = segments.split_last()?;
        let _ = last;
        let segment = closed.iter().find(|s| s.end() > offset)?;
        let state = segment.state();
        let first_base = state.entries.first()?.base;
        (first_base >= offset).then_some((
            BatchInfo {
                base: first_base,
                end: state.end,
                bytes: state.len,
                records: state.records,
                max_timestamp_ms: state.max_timestamp_ms,
            },
            state.batches,
        ))
    }

    /// Deletes the segments that end at or below `start` (the active one
    /// too, after a roll, when the append lock is free: a writer holding it
    /// may be the one asking for room), then fsyncs the directory.
    fn delete_segments_below(&self, start: u64) -> Result<(), StorageError> {
        let active = self.active();
        if !active.is_empty() && active.end() <= start {
            if let Ok(guard) = self.append_lock.try_lock() {
                let guard = AppendGuard(guard);
                if self.active().end() <= start {
                    self.roll(&guard, self.log_end())?;
                }
            }
        }
        let doomed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().expect("segments lock");
            let keep_from = segments[..segments.len() - 1]
                .iter()
                .position(|s| s.end() > start)
                .unwrap_or(segments.len() - 1);
            segments.drain(..keep_from).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        for segment in &doomed {
            segment
                .remove_files()
                .map_err(|e| StorageError::io(&segment.path, e))?;
        }
        super::sync_dir(&self.dir)
    }

    /// The first stored batch, if any (for the disk budget's choice).
    pub(super) fn first_batch(&self) -> Result<Option<BatchInfo>, StorageError> {
        Ok(self
            .batch_from(self.log_start.load(Ordering::Acquire))?
            .and_then(|v| BatchInfo::of(&v)))
    }

    /// The last stored batch's base offset (compaction leaves it alone).
    pub(super) fn last_base(&self) -> Result<Option<u64>, StorageError> {
        let segments = self.segments.read().expect("segments lock");
        let log_start = self.log_start.load(Ordering::Acquire);
        // Batches below the log start may still be on disk: not stored.
        Ok(segments
            .iter()
            .rev()
            .find(|s| !s.is_empty())
            .filter(|s| s.end() > log_start)
            .and_then(|s| s.state().last_base))
    }

    /// The first stored batch with base offset ≥ `offset`. CRC-checked.
    pub(super) fn batch_from(&self, offset: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let mut found = None;
        self.walk(offset, |value, base, _| {
            if base >= offset {
                found = Some(value.to_vec());
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// The first stored batch ending after `offset`. CRC-checked.
    fn batch_after(&self, offset: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let mut found = None;
        self.walk(offset, |value, _, _| {
            found = Some(value.to_vec());
            false
        })?;
        Ok(found)
    }

    fn corrupt(&self, offset: u64, error: crate::wire::batch::BatchError) -> StorageError {
        StorageError::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
            error,
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    fn sub_bytes(&self, bytes: u64) {
        self.stored_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Forgets this partition's bytes in the global count (topic deleted).
    pub(super) fn forget_bytes(&self) {
        self.total_bytes.fetch_sub(
            self.stored_bytes.swap(0, Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// The paths of its segment files, oldest first (tests damage them).
    #[cfg(test)]
    pub(super) fn segment_paths(&self) -> Vec<PathBuf> {
        let segments = self.segments.read().expect("segments lock");
        segments.iter().map(|s| s.path.clone()).collect()
    }

    fn sled_error(&self, e: sled::Error) -> StorageError {
        StorageError::Sled {
            path: format!("{}/{}", self.topic, self.partition).into(),
            source: e,
        }
    }
}
