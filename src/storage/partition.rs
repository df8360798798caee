//! One partition's log: a sled tree of batches keyed by big-endian base
//! offset, plus its watermarks.
//!
//! Offsets are dense and assigned here, under the append lock, never reused:
//! after a restart the log end is recomputed from the last stored batch.
//! Every batch is CRC-checked right before it is written and right after it
//! is read back. This file does not flush: see `flusher`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::StorageError;
use crate::wire::batch::{set_base_offset, Batch};

/// One partition's log.
pub struct PartitionLog {
    tree: sled::Tree,
    topic: String,
    partition: u32,
    /// Serialises offset assignment with the insert, so offsets are dense and
    /// batches land in offset order.
    append_lock: Mutex<()>,
    /// Earliest offset still stored.
    log_start: AtomicU64,
    /// Next offset to assign.
    log_end: AtomicU64,
    /// Every offset below is fsynced; consumers read up to here.
    durable_end: AtomicU64,
    /// Bytes of stored batches (for retention and the disk budget).
    stored_bytes: AtomicU64,
    /// Set when appended to since the last flush began (see `flusher`).
    pub(super) dirty: AtomicBool,
    /// Unreadable batches dropped from the tail when the log was opened.
    pub(super) dropped_at_recovery: u64,
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

impl PartitionLog {
    /// Opens a partition log and recomputes its offsets from what is stored.
    pub(super) fn recover(
        tree: sled::Tree,
        topic: &str,
        partition: u32,
        dir: &Path,
    ) -> Result<PartitionLog, StorageError> {
        let mut stored_bytes = 0u64;
        let mut log_start = None;
        let mut log_end = 0u64;
        let mut dropped_at_recovery = 0u64;
        // Walk from the end: drop batches that fail their checks (a torn
        // tail), stop at the first good one.
        loop {
            let Some((key, value)) = tree.last().map_err(|e| StorageError::sled(dir, e))? else {
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
        if let Some((key, _)) = tree.first().map_err(|e| StorageError::sled(dir, e))? {
            log_start = Some(key_offset(&key));
        }
        for entry in tree.iter() {
            let (_, value) = entry.map_err(|e| StorageError::sled(dir, e))?;
            stored_bytes += value.len() as u64;
        }
        let log_start = log_start.unwrap_or(log_end);
        Ok(PartitionLog {
            tree,
            topic: topic.to_string(),
            partition,
            append_lock: Mutex::new(()),
            log_start: AtomicU64::new(log_start),
            log_end: AtomicU64::new(log_end),
            durable_end: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(stored_bytes),
            dirty: AtomicBool::new(false),
            dropped_at_recovery,
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

    pub(super) fn set_durable_end(&self, end: u64) {
        self.durable_end.fetch_max(end, Ordering::AcqRel);
    }

    /// Appends the batches contiguously and atomically, assigning offsets.
    /// Returns `(first offset, one past the last)`. One batch is a plain
    /// insert; several go in one sled batch (atomic across a crash, but it
    /// takes sled's global write lock).
    pub(super) fn append(
        &self,
        batches: &mut [Vec<u8>],
        dir: &Path,
    ) -> Result<(u64, u64), StorageError> {
        let _guard = self.append_lock.lock().expect("append lock");
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
        match batches {
            [] => return Ok((first, first)),
            [one] => {
                self.tree
                    .insert(first.to_be_bytes(), one.as_slice())
                    .map_err(|e| StorageError::sled(dir, e))?;
            }
            many => {
                let mut sled_batch = sled::Batch::default();
                for encoded in many.iter() {
                    sled_batch.insert(&base_offset_key(encoded), encoded.as_slice());
                }
                self.tree
                    .apply_batch(sled_batch)
                    .map_err(|e| StorageError::sled(dir, e))?;
            }
        }
        self.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
        // Publish after the insert: the flusher snapshots log_end and may
        // only count inserts that completed before its flush began.
        self.log_end.store(next, Ordering::Release);
        Ok((first, next))
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
        let mut next = match self.tree.range(..=offset.to_be_bytes()).next_back() {
            Some(entry) => Some(entry.map_err(|e| self.sled_error(e))?),
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
fn base_offset_key(encoded: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    key.copy_from_slice(&encoded[..8]);
    key
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
