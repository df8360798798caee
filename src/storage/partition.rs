//! One partition's log: a sled tree of batches keyed by big-endian base
//! offset, plus its watermarks.
//!
//! Offsets are dense and assigned here, under the append lock, never reused:
//! after a restart the log end is recomputed from the last stored batch, and
//! never falls below the persisted log start (the "floor", written before
//! retention or the disk budget remove batches from the front, so a log they
//! emptied keeps its offsets). Every batch is CRC-checked right before it is
//! written and right after it is read back. This file does not flush (see
//! `flusher`) and does not decide what to remove (see `retention`,
//! `compaction`, `budget`); it offers the primitives they share: remove
//! whole batches from the front, rewrite one batch in place.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::topic_config::TopicConfig;
use super::StorageError;
use crate::wire::batch::{set_base_offset, Batch, BatchHeader};

/// A topic's settings, shared by its partitions and swapped on alter.
pub(super) type ConfigCell = Arc<RwLock<Arc<TopicConfig>>>;

/// "Nothing is held back for the mirror."
const KEEP_FROM_NONE: u64 = u64::MAX;

/// One partition's log.
pub struct PartitionLog {
    tree: sled::Tree,
    /// Shared tree of persisted log starts (`floor_key` → u64 BE).
    floors: sled::Tree,
    floor_key: Vec<u8>,
    topic: String,
    topic_id: u64,
    partition: u32,
    /// Serialises offset assignment with the insert, so offsets are dense and
    /// batches land in offset order.
    append_lock: Mutex<()>,
    /// Serialises removals from the front (retention, disk budget), so the
    /// persisted floor only moves forward.
    trim_lock: Mutex<()>,
    /// Earliest offset still stored.
    log_start: AtomicU64,
    /// Next offset to assign.
    log_end: AtomicU64,
    /// Every offset below is fsynced; consumers read up to here.
    durable_end: AtomicU64,
    /// Bytes of stored batches (for retention and the disk budget).
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

/// Offsets assigned to batches that are about to be inserted.
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

/// The facts of a stored batch that removal decisions need.
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
    pub tree: sled::Tree,
    pub floors: sled::Tree,
    pub topic: &'a str,
    pub topic_id: u64,
    pub partition: u32,
    pub dir: &'a Path,
    pub total_bytes: Arc<AtomicU64>,
    pub config: ConfigCell,
}

/// The key of a partition's floor in the floors tree.
pub(super) fn floor_key(topic_id: u64, partition: u32) -> Vec<u8> {
    let mut key = topic_id.to_be_bytes().to_vec();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

impl PartitionLog {
    /// Opens a partition log and recomputes its offsets from what is stored.
    pub(super) fn recover(setup: PartitionSetup<'_>) -> Result<PartitionLog, StorageError> {
        let PartitionSetup {
            tree,
            floors,
            topic,
            topic_id,
            partition,
            dir,
            total_bytes,
            config,
        } = setup;
        let floor_key = floor_key(topic_id, partition);
        let floor = match floors
            .get(&floor_key)
            .map_err(|e| StorageError::sled(dir, e))?
        {
            Some(v) if v.len() == 8 => key_offset(&v),
            Some(_) => {
                return Err(StorageError::BadMeta {
                    topic: topic.to_string(),
                    reason: format!("log start of partition {partition} is not 8 bytes"),
                })
            }
            None => 0,
        };
        let mut stored_bytes = 0u64;
        let mut log_end = 0u64;
        let mut dropped_at_recovery = 0u64;
        // Walk from the end: drop batches that fail their checks (a torn
        // tail), stop at the first good one.
        loop {
            let Some((key, value)) =
                floor_entry(&tree, u64::MAX).map_err(|e| StorageError::sled(dir, e))?
            else {
                break;
            };
            match check_stored(&key, &value) {
                Ok(end) => {
                    log_end = end;
                    break;
                }
                Err(error) => {
                    log::error!(
                        "{topic}/{partition}: dropping unreadable batch at the log tail (key {:?}): {error}",
                        key.as_ref()
                    );
                    tree.remove(key).map_err(|e| StorageError::sled(dir, e))?;
                    dropped_at_recovery += 1;
                }
            }
        }
        // Batches below the floor whose removal did not reach the disk
        // before a crash: finish removing them.
        while let Some((key, value)) = tree.first().map_err(|e| StorageError::sled(dir, e))? {
            match BatchInfo::of(&value) {
                Some(info) if info.end <= floor => {
                    tree.remove(key).map_err(|e| StorageError::sled(dir, e))?;
                }
                _ => break,
            }
        }
        for entry in tree.iter() {
            let (_, value) = entry.map_err(|e| StorageError::sled(dir, e))?;
            stored_bytes += value.len() as u64;
        }
        total_bytes.fetch_add(stored_bytes, Ordering::Relaxed);
        let log_end = log_end.max(floor);
        Ok(PartitionLog {
            tree,
            floors,
            floor_key,
            topic: topic.to_string(),
            topic_id,
            partition,
            append_lock: Mutex::new(()),
            trim_lock: Mutex::new(()),
            log_start: AtomicU64::new(floor),
            log_end: AtomicU64::new(log_end),
            durable_end: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(stored_bytes),
            appended_bytes: AtomicU64::new(0),
            total_bytes,
            keep_from: AtomicU64::new(KEEP_FROM_NONE),
            config,
            counters: PartitionCounters::default(),
            dirty: AtomicBool::new(false),
            dropped_at_recovery,
            durable_event: event_listener::Event::new(),
        })
    }

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
            let batch = Batch::parse(encoded).map_err(|error| StorageError::Corrupt {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: next,
                error,
            })?;
            bytes += encoded.len() as u64;
            next = batch.end_offset();
        }
        Ok(Staged {
            first,
            end: next,
            bytes,
        })
    }

    /// Inserts staged batches: one batch is a plain insert; several go in
    /// one sled batch (atomic across a crash, but it takes sled's global
    /// write lock).
    pub(super) fn insert_staged(
        &self,
        _guard: &AppendGuard<'_>,
        batches: &[Vec<u8>],
        dir: &Path,
    ) -> Result<(), StorageError> {
        match batches {
            [] => {}
            [one] => {
                self.tree
                    .insert(base_offset_key(one), one.as_slice())
                    .map_err(|e| StorageError::sled(dir, e))?;
            }
            many => {
                let mut sled_batch = sled::Batch::default();
                for encoded in many {
                    sled_batch.insert(&base_offset_key(encoded), encoded.as_slice());
                }
                self.tree
                    .apply_batch(sled_batch)
                    .map_err(|e| StorageError::sled(dir, e))?;
            }
        }
        Ok(())
    }

    /// Makes staged batches visible once they are inserted.
    pub(super) fn publish(&self, _guard: &AppendGuard<'_>, staged: &Staged) {
        self.stored_bytes.fetch_add(staged.bytes, Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(staged.bytes, Ordering::Relaxed);
        self.total_bytes.fetch_add(staged.bytes, Ordering::Relaxed);
        // Publish after the insert: the flusher snapshots log_end and may
        // only count inserts that completed before its flush began.
        self.log_end.store(staged.end, Ordering::Release);
    }

    /// The sled tree of this log (for multi-tree transactions).
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
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
        // The batch containing `offset` starts at the greatest key ≤ offset.
        // After it, batches are looked up one by one by key (the next base
        // offset is the previous batch's end), not with a range iterator:
        // point reads keep sled's cache eviction going (see
        // `STORED_BATCH_BYTES_TARGET`), a long range scan does not.
        let mut next = match floor_entry(&self.tree, offset).map_err(|e| self.sled_error(e))? {
            Some(entry) => Some(entry),
            None => self.next_entry_from(offset)?,
        };
        while let Some((key, value)) = next {
            let base = key_offset(&key);
            if base >= high_watermark {
                break;
            }
            if outcome.bytes > 0 && outcome.bytes + value.len() > max_bytes {
                break;
            }
            let end = check_stored(&key, &value).map_err(|error| StorageError::Corrupt {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: base,
                error,
            })?;
            if end > offset {
                out.extend_from_slice(&value);
                outcome.bytes += value.len();
                outcome.next_offset = end;
            }
            if end >= high_watermark {
                break;
            }
            next = match self
                .tree
                .get(end.to_be_bytes())
                .map_err(|e| self.sled_error(e))?
            {
                Some(value) => Some((sled::IVec::from(&end.to_be_bytes()), value)),
                // A gap between batches (compaction removed one): find the next.
                None => self.next_entry_from(end)?,
            };
        }
        Ok(outcome)
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
    /// `batches_max` of them and none ending after `end_max`. Persists the
    /// new log start (floor) before removing, so a crash can never bring the
    /// log end below it. Returns what was removed.
    pub(super) fn trim_front(
        &self,
        batches_max: usize,
        end_max: u64,
        mut decide: impl FnMut(&BatchInfo) -> bool,
    ) -> Result<Trimmed, StorageError> {
        let _trim = self.trim_lock.lock().expect("trim lock");
        let mut doomed: Vec<BatchInfo> = Vec::new();
        let mut next = self.tree.first().map_err(|e| self.sled_error(e))?;
        while let Some((_, value)) = next {
            if doomed.len() >= batches_max {
                break;
            }
            let Some(info) = BatchInfo::of(&value) else {
                break;
            };
            if info.end > end_max || !decide(&info) {
                break;
            }
            doomed.push(info);
            next = self.entry_at_or_after(info.end)?;
        }
        let Some(last) = doomed.last() else {
            return Ok(Trimmed::default());
        };
        let new_start = last.end;
        self.floors
            .insert(&self.floor_key, &new_start.to_be_bytes())
            .map_err(|e| self.sled_error(e))?;
        self.log_start.fetch_max(new_start, Ordering::AcqRel);
        let mut trimmed = Trimmed::default();
        for info in &doomed {
            if let Some(old) = self
                .tree
                .remove(info.base.to_be_bytes())
                .map_err(|e| self.sled_error(e))?
            {
                trimmed.batches += 1;
                trimmed.bytes += old.len() as u64;
                trimmed.records += BatchInfo::of(&old).map_or(0, |i| i.records);
            }
        }
        self.sub_bytes(trimmed.bytes);
        Ok(trimmed)
    }

    /// The first stored batch, if any (for the disk budget's choice).
    pub(super) fn first_batch(&self) -> Result<Option<BatchInfo>, StorageError> {
        Ok(self
            .tree
            .first()
            .map_err(|e| self.sled_error(e))?
            .and_then(|(_, v)| BatchInfo::of(&v)))
    }

    /// The last stored batch's base offset (compaction leaves it alone).
    pub(super) fn last_base(&self) -> Result<Option<u64>, StorageError> {
        Ok(floor_entry(&self.tree, u64::MAX)
            .map_err(|e| self.sled_error(e))?
            .map(|(k, _)| key_offset(&k)))
    }

    /// The stored batch with base offset exactly `offset` (point lookup),
    /// else the next one after it. CRC-checked.
    pub(super) fn batch_from(&self, offset: u64) -> Result<Option<sled::IVec>, StorageError> {
        let entry = match self
            .tree
            .get(offset.to_be_bytes())
            .map_err(|e| self.sled_error(e))?
        {
            Some(value) => Some((sled::IVec::from(&offset.to_be_bytes()), value)),
            None => self.next_entry_from(offset)?,
        };
        match entry {
            Some((key, value)) => {
                check_stored(&key, &value).map_err(|error| StorageError::Corrupt {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: key_offset(&key),
                    error,
                })?;
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }

    /// Replaces the stored batch `old` (as read) with `new`, or removes it
    /// when `new` is `None`. Does nothing and returns `false` when the batch
    /// changed meanwhile (retention or the budget removed it).
    pub(super) fn rewrite(
        &self,
        old: &sled::IVec,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StorageError> {
        let base = BatchHeader::read(old)
            .map_err(|error| StorageError::Corrupt {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: 0,
                error,
            })?
            .base_offset;
        if let Some(new) = &new {
            // Check right before the write, as every write.
            let batch = Batch::parse(new).map_err(|error| StorageError::Corrupt {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: base,
                error,
            })?;
            assert_eq!(batch.base_offset(), base, "a rewrite keeps the base offset");
        }
        let new_len = new.as_ref().map_or(0, Vec::len) as u64;
        let swapped = self
            .tree
            .compare_and_swap(base.to_be_bytes(), Some(old), new)
            .map_err(|e| self.sled_error(e))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.sub_bytes((old.len() as u64).saturating_sub(new_len));
        Ok(true)
    }

    /// The earliest offset whose record timestamp is ≥ `timestamp_ms`, or
    /// the high watermark when there is none (Kafka's ListOffsets by time).
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, StorageError> {
        let high_watermark = self.durable_end();
        let mut next = self.batch_from(self.log_start.load(Ordering::Acquire))?;
        while let Some(value) = next {
            let batch = Batch::parse(&value).map_err(|error| StorageError::Corrupt {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: 0,
                error,
            })?;
            if batch.base_offset() >= high_watermark {
                break;
            }
            if batch.header.max_timestamp_ms >= timestamp_ms {
                for record in batch.records() {
                    let record = record.map_err(|error| StorageError::Corrupt {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: batch.base_offset(),
                        error,
                    })?;
                    if batch.timestamp_of(&record) >= timestamp_ms {
                        return Ok(batch.base_offset() + u64::from(record.offset_delta));
                    }
                }
            }
            next = self.batch_from(batch.end_offset())?;
        }
        Ok(high_watermark)
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

    fn entry_at_or_after(
        &self,
        offset: u64,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StorageError> {
        match self
            .tree
            .get(offset.to_be_bytes())
            .map_err(|e| self.sled_error(e))?
        {
            Some(value) => Ok(Some((sled::IVec::from(&offset.to_be_bytes()), value))),
            None => self.next_entry_from(offset),
        }
    }

    /// The first stored batch with base offset ≥ `offset`.
    fn next_entry_from(
        &self,
        offset: u64,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StorageError> {
        self.tree
            .range(offset.to_be_bytes()..)
            .next()
            .transpose()
            .map_err(|e| self.sled_error(e))
    }

    fn sled_error(&self, e: sled::Error) -> StorageError {
        StorageError::Sled {
            path: format!("{}/{}", self.topic, self.partition).into(),
            source: e,
        }
    }
}

/// The sled key of an encoded batch: its base offset, big-endian.
pub(super) fn base_offset_key(encoded: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    key.copy_from_slice(&encoded[..8]);
    key
}

/// The stored batch with the greatest base offset ≤ `hi`, found with
/// forward lookups only: first the exact key `hi` (a fetch usually starts
/// where the previous one ended, at a batch's base), then the first batch,
/// then a binary search between it and `hi`: at most 64 lookups of the
/// first key at or after a point.
///
/// sled's reverse iteration (`Tree::last`, `get_lt`, `Iter::next_back`)
/// is avoided on purpose: `Iter::next_back` holds a 1 MiB constant of 0xFF
/// bytes (the upper bound of an unbounded range), linked into the binary
/// as soon as anything calls it: a quarter of the aarch64 binary budget.
fn floor_entry(tree: &sled::Tree, hi: u64) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
    if let Some(value) = tree.get(hi.to_be_bytes())? {
        return Ok(Some((sled::IVec::from(&hi.to_be_bytes()), value)));
    }
    let first_from = |from: u64| {
        tree.range(from.to_be_bytes()..=hi.to_be_bytes())
            .next()
            .transpose()
    };
    let Some(mut best) = first_from(0)? else {
        return Ok(None);
    };
    // `best` is the greatest key found so far; any greater one lies in
    // `lo..=top`.
    let (mut lo, mut top) = match key_offset(&best.0).checked_add(1) {
        Some(next) => (next, hi),
        None => return Ok(Some(best)),
    };
    while lo <= top {
        let mid = lo + (top - lo) / 2;
        match first_from(mid)? {
            Some(entry) => {
                let key = key_offset(&entry.0);
                best = entry;
                match key.checked_add(1) {
                    Some(next) => lo = next,
                    None => break,
                }
            }
            None if mid == 0 => break,
            None => top = mid - 1,
        }
    }
    Ok(Some(best))
}

fn key_offset(key: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    be.copy_from_slice(&key[..8]);
    u64::from_be_bytes(be)
}

/// Checks a stored batch against its key; returns its end offset.
fn check_stored(key: &[u8], value: &[u8]) -> Result<u64, crate::wire::batch::BatchError> {
    use crate::wire::batch::BatchError;
    let batch = Batch::parse(value)?;
    if key.len() != 8 || key_offset(key) != batch.base_offset() {
        return Err(BatchError::BadOffsets);
    }
    Ok(batch.end_offset())
}

#[cfg(test)]
mod floor_tests {
    use super::{floor_entry, key_offset};
    use std::collections::BTreeMap;

    /// `floor_entry` against a model (`BTreeMap::range(..=hi).last()`):
    /// sparse keys with gaps of every size, the extremes of the key space,
    /// and every lookup point near and between them.
    #[test]
    fn floor_entry_finds_the_greatest_key_at_or_below() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("p").unwrap();
        let mut model = BTreeMap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut key = 3u64;
        for _ in 0..500 {
            tree.insert(key.to_be_bytes(), &key.to_le_bytes()).unwrap();
            model.insert(key, ());
            let bits = rng.u32(0..40);
            key += 1 + rng.u64(..1 << bits);
        }
        let check = |model: &BTreeMap<u64, ()>, hi: u64| {
            let got = floor_entry(&tree, hi).unwrap();
            let want = model.range(..=hi).next_back().map(|(k, _)| *k);
            assert_eq!(
                got.as_ref().map(|(k, _)| key_offset(k)),
                want,
                "floor of {hi}"
            );
            if let Some((k, v)) = got {
                assert_eq!(v.as_ref(), &key_offset(&k).to_le_bytes());
            }
        };
        check(&model, 0);
        check(&model, 2);
        check(&model, u64::MAX);
        let keys: Vec<u64> = model.keys().copied().collect();
        for k in keys {
            for hi in [k.saturating_sub(1), k, k + 1, k + rng.u64(..1 << 20)] {
                check(&model, hi);
            }
        }
        tree.insert(u64::MAX.to_be_bytes(), &u64::MAX.to_le_bytes())
            .unwrap();
        model.insert(u64::MAX, ());
        check(&model, u64::MAX);
        check(&model, u64::MAX - 1);
    }
}
