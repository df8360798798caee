//! The parts of a partition log that work on its segment files as a whole:
//! recovery at open, compaction's crash-safe segment swap, the lookup by
//! time, and removal with the topic.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::super::segment::{parse_segment_name, segment_path, Segment};
use super::super::{sync_dir, StorageError};
use super::{
    floor_key, stored_base, PartitionCounters, PartitionLog, PartitionSetup, KEEP_FROM_NONE,
};
use crate::wire::batch::Batch;

/// Suffix of a cleaned copy of a segment being written by compaction;
/// one left by a crash is removed at open.
const CLEANING_SUFFIX: &str = "cleaning";

/// What compaction does with one batch.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::storage) enum CleanedBatch {
    /// Kept as it is.
    Unchanged,
    /// Every record goes.
    Removed,
    /// Rewritten without some records (same base offset and offset span).
    Replaced(Vec<u8>),
}

/// What compacting one segment did.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::storage) struct SegmentCompacted {
    /// Batches read.
    pub batches: usize,
    /// Records removed.
    pub removed_records: u64,
    /// The end of the segment: where the pass goes on.
    pub next: u64,
}

impl PartitionLog {
    /// Opens a partition log from its segment files: every segment's tail
    /// is verified (the newest one batch by batch from its start), a torn
    /// tail cut off, segments the persisted log start has passed deleted;
    /// a new partition gets its first, empty segment.
    pub(in crate::storage) fn recover(
        setup: PartitionSetup<'_>,
    ) -> Result<PartitionLog, StorageError> {
        let PartitionSetup {
            segment_dir,
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
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
            Some(_) => {
                return Err(StorageError::BadMeta {
                    topic: topic.to_string(),
                    reason: format!("log start of partition {partition} is not 8 bytes"),
                })
            }
            None => 0,
        };
        let (segments, dropped_at_recovery) = open_segments(&segment_dir, topic, partition, floor)?;
        let first = segments.first().expect("at least one segment");
        let last = segments.last().expect("at least one segment");
        let log_start = floor.max(first.base);
        let log_end = last.end().max(floor);
        let mut stored_bytes = 0u64;
        for segment in &segments {
            stored_bytes += segment.len() - position_after(segment, log_start)?;
        }
        total_bytes.fetch_add(stored_bytes, Ordering::Relaxed);
        Ok(PartitionLog {
            dir: segment_dir,
            segments: RwLock::new(segments),
            unsynced: Mutex::new(Vec::new()),
            floors,
            floor_key,
            topic: topic.to_string(),
            topic_id,
            partition,
            append_lock: Mutex::new(()),
            trim_lock: Mutex::new(()),
            log_start: AtomicU64::new(log_start),
            log_end: AtomicU64::new(log_end),
            durable_end: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(stored_bytes),
            appended_bytes: AtomicU64::new(0),
            total_bytes,
            keep_from: AtomicU64::new(KEEP_FROM_NONE),
            config,
            counters: PartitionCounters::default(),
            dirty: AtomicBool::new(false),
            dirty_since_ms: AtomicU64::new(0),
            dropped_at_recovery,
            durable_event: event_listener::Event::new(),
        })
    }

    /// Compacts the first closed segment ending after `from`: every batch
    /// ending at or before `end` goes through `clean` (which returns the
    /// records it removed too); batches below the log start go, the rest
    /// stays as it is. The cleaned copy is written next to the segment,
    /// fsynced, renamed over it and the directory fsynced, so a crash
    /// leaves either the old or the new file, with the same offsets.
    /// `None` when no closed segment is left before `end`.
    pub(in crate::storage) fn compact_segment(
        &self,
        from: u64,
        end: u64,
        mut clean: impl FnMut(&Batch<'_>) -> Result<(CleanedBatch, u64), StorageError>,
    ) -> Result<Option<SegmentCompacted>, StorageError> {
        let _trim = self.trim_lock.lock().expect("trim lock");
        let segment = {
            let segments = self.segments.read().expect("segments lock");
            let closed = &segments[..segments.len() - 1];
            match closed.iter().find(|s| s.end() > from) {
                Some(s) if s.base < end => s.clone(),
                _ => return Ok(None),
            }
        };
        let log_start = self.log_start.load(Ordering::Acquire);
        let mut done = SegmentCompacted {
            next: segment.end(),
            ..SegmentCompacted::default()
        };
        let mut out: Vec<u8> = Vec::with_capacity(usize::try_from(segment.len()).unwrap_or(0));
        let mut changed = false;
        let mut removed_bytes = 0u64;
        let mut pos = 0u64;
        while let Some(value) = segment
            .read_at(pos)
            .map_err(|e| StorageError::io(&segment.path, e))?
        {
            pos += value.len() as u64;
            let batch =
                Batch::parse(&value).map_err(|error| self.corrupt(stored_base(&value), error))?;
            done.batches += 1;
            if batch.end_offset() <= log_start {
                changed = true; // already removed from the log: not counted
                continue;
            }
            let (cleaned, removed) = if batch.end_offset() <= end {
                clean(&batch)?
            } else {
                (CleanedBatch::Unchanged, 0)
            };
            done.removed_records += removed;
            match cleaned {
                CleanedBatch::Unchanged => out.extend_from_slice(&value),
                CleanedBatch::Removed => {
                    changed = true;
                    removed_bytes += value.len() as u64;
                }
                CleanedBatch::Replaced(new) => {
                    // Check right before the write, as every write.
                    let parsed = Batch::parse(&new)
                        .map_err(|error| self.corrupt(batch.base_offset(), error))?;
                    assert_eq!(
                        parsed.base_offset(),
                        batch.base_offset(),
                        "a rewrite keeps the base offset"
                    );
                    assert!(new.len() <= value.len(), "a cleaned batch never grows");
                    changed = true;
                    removed_bytes += (value.len() - new.len()) as u64;
                    out.extend_from_slice(&new);
                }
            }
        }
        if changed {
            self.swap_segment(&segment, &out)?;
            self.sub_bytes(removed_bytes);
        }
        Ok(Some(done))
    }

    /// Replaces closed segment `old` with a file holding `bytes` (removes
    /// it when `bytes` is empty).
    fn swap_segment(&self, old: &Arc<Segment>, bytes: &[u8]) -> Result<(), StorageError> {
        let io = |path: &Path, e| StorageError::io(path, e);
        let replacement = if bytes.is_empty() {
            None
        } else {
            let tmp = old.path.with_extension(CLEANING_SUFFIX);
            std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_data())
                .map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &old.path).map_err(|e| io(&old.path, e))?;
            // Read back, every batch checked, as the index is rebuilt.
            let (new, torn) =
                Segment::open(&old.path, old.base, true).map_err(|e| io(&old.path, e))?;
            assert_eq!(torn.bytes, 0, "a cleaned segment reads back whole");
            if let Err(e) = new.write_index() {
                log::warn!(
                    "{}: could not write the index of {}: {e}",
                    self.name(),
                    new.path.display()
                );
            }
            Some(Arc::new(new))
        };
        {
            let mut segments = self.segments.write().expect("segments lock");
            let at = segments
                .iter()
                .position(|s| Arc::ptr_eq(s, old))
                .expect("the segment is still there (under the trim lock)");
            match &replacement {
                Some(new) => segments[at] = new.clone(),
                None => {
                    segments.remove(at);
                }
            }
        }
        if replacement.is_none() {
            old.remove_files().map_err(|e| io(&old.path, e))?;
        }
        sync_dir(&self.dir)
    }

    /// The earliest offset whose record timestamp is ≥ `timestamp_ms`, or
    /// the high watermark when there is none (Kafka's ListOffsets by time).
    /// Segments and index spans whose newest record is older are skipped
    /// without reading them.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, StorageError> {
        let high_watermark = self.durable_end();
        let log_start = self.log_start.load(Ordering::Acquire);
        let segments = self.segments.read().expect("segments lock");
        for segment in segments.iter() {
            let state = segment.state();
            if state.end <= log_start || state.max_timestamp_ms < timestamp_ms {
                continue;
            }
            let mut pos = segment
                .seek_time(timestamp_ms)
                .unwrap_or(0)
                .max(segment.seek(log_start));
            while let Some(value) = segment
                .read_at(pos)
                .map_err(|e| StorageError::io(&segment.path, e))?
            {
                pos += value.len() as u64;
                let batch = Batch::parse(&value)
                    .map_err(|error| self.corrupt(stored_base(&value), error))?;
                if batch.base_offset() >= high_watermark {
                    return Ok(high_watermark);
                }
                if batch.end_offset() <= log_start || batch.header.max_timestamp_ms < timestamp_ms {
                    continue;
                }
                for record in batch.records() {
                    let record =
                        record.map_err(|error| self.corrupt(batch.base_offset(), error))?;
                    let offset = batch.base_offset() + u64::from(record.offset_delta);
                    if offset >= log_start && batch.timestamp_of(&record) >= timestamp_ms {
                        return Ok(offset.min(high_watermark));
                    }
                }
            }
        }
        Ok(high_watermark)
    }

    /// Deletes the partition's segment directory (topic deleted).
    pub(in crate::storage) fn remove_files(&self) -> Result<(), StorageError> {
        let _trim = self.trim_lock.lock().expect("trim lock");
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&self.dir, e)),
        }
    }
}

/// Opens the segments in `dir` (creating the directory and a first segment
/// at `floor` when there is none), cuts torn tails and deletes segments
/// below `floor` but the newest. Returns them by base offset and the count
/// of batches cut off.
fn open_segments(
    dir: &Path,
    topic: &str,
    partition: u32,
    floor: u64,
) -> Result<(Vec<Arc<Segment>>, u64), StorageError> {
    let io = |e| StorageError::io(dir, e);
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut bases = Vec::new();
    let mut changed = false;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_segment_name(&name) {
            bases.push(base);
        } else if name.ends_with(CLEANING_SUFFIX) {
            // A compaction cut short: the segment it was cleaning is intact.
            std::fs::remove_file(entry.path()).map_err(io)?;
            changed = true;
        }
    }
    bases.sort_unstable();
    let mut segments = Vec::with_capacity(bases.len().max(1));
    let mut dropped = 0;
    for (i, &base) in bases.iter().enumerate() {
        let newest = i + 1 == bases.len();
        let path = segment_path(dir, base);
        let (segment, torn) =
            Segment::open(&path, base, newest).map_err(|e| StorageError::io(&path, e))?;
        if torn.batches > 0 {
            log::error!(
                "{topic}/{partition}: cut {} unreadable batches ({} bytes) off the tail of {} (a write torn by a crash before it was acknowledged)",
                torn.batches,
                torn.bytes,
                path.display()
            );
            dropped += torn.batches;
        }
        if !newest && segment.end() <= floor {
            // Its deletion did not reach the disk before a crash.
            segment
                .remove_files()
                .map_err(|e| StorageError::io(&path, e))?;
            changed = true;
            continue;
        }
        segments.push(Arc::new(segment));
    }
    if segments.is_empty() {
        let segment = Segment::create(dir, floor).map_err(io)?;
        segments.push(Arc::new(segment));
        changed = true;
    }
    if changed || created {
        sync_dir(dir)?;
    }
    if created {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok((segments, dropped))
}

/// The position of the first batch of `segment` ending after `offset` (its
/// length when there is none).
fn position_after(segment: &Segment, offset: u64) -> Result<u64, StorageError> {
    if segment.base >= offset {
        return Ok(0);
    }
    let mut pos = segment.seek(offset);
    while let Some(value) = segment
        .read_at(pos)
        .map_err(|e| StorageError::io(&segment.path, e))?
    {
        let end = Batch::parse(&value).map(|b| b.end_offset()).map_err(|e| {
            StorageError::io(&segment.path, std::io::Error::other(format!("{e:?}")))
        })?;
        if end > offset {
            return Ok(pos);
        }
        pos += value.len() as u64;
    }
    Ok(pos)
}
