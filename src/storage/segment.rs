//! One segment file of a partition log: batches appended back to back,
//! exactly as they are framed on the wire ([`crate::wire::batch`]: base
//! offset, length, CRC32C, …), plus its sparse index.
//!
//! A segment is named after the base offset of its first batch
//! (`{base:020}.log`); an empty segment's name is the offset its first batch
//! will get, so the newest segment always tells where the log ends, even
//! when it holds nothing. Files are only ever appended to (never
//! pre-allocated or zero-filled: rewriting a pre-filled file cost a whole
//! page-cache folio per fdatasync on the target kernel); compaction writes a
//! cleaned copy and renames it over the old file.
//!
//! The index (`{base:020}.index`) lists every
//! [`INDEX_INTERVAL_BYTES`]th position with its batch's base offset and the
//! newest record time of the batches from there to the next entry (the
//! time index for `offset_for_timestamp`), and the segment's totals. It is a
//! cache: written without fsync when a segment closes, checked (CRC32C,
//! length of the segment it describes) when loaded, and rebuilt by a scan
//! whenever it is missing or stale. The newest segment is always scanned
//! at open, batch by batch, and cut at the first batch that fails its
//! checks (a torn tail).
//!
//! This file knows nothing about partitions, watermarks or sled.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::wire::batch::{Batch, BatchError, BatchHeader, BATCH_HEADER_BYTES};

/// Default `segment.bytes`: a segment is closed once it holds this much.
/// 16 MiB bounds what retention and the disk budget leave on disk beyond
/// their limits (they delete whole segments), what a restart scans (the
/// newest segment of each partition) and what compaction rewrites at once,
/// while keeping a 10 GB backlog to ~640 files.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 << 20;
/// Default `segment.ms`: a segment is closed once its first batch is this
/// old (a quiet topic still gets its old data removed by retention).
pub const SEGMENT_MS_DEFAULT: u64 = 86_400_000;
/// Bytes between two sparse index entries: a read scans at most this much
/// before it finds its batch. 10 GB of segments cost ~15 MB of index
/// entries in memory at 16 KiB.
pub const INDEX_INTERVAL_BYTES: u64 = 16 << 10;
/// Bytes read at once while scanning a segment.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Bytes of the length prefix of a batch (base offset and length).
const FRAME_PREFIX_BYTES: usize = 12;
/// First bytes of an index file (format version 1).
const INDEX_MAGIC: &[u8; 8] = b"eddyidx1";
const INDEX_ENTRY_BYTES: usize = 24;
const INDEX_HEADER_BYTES: usize = 8 + 8 * 6;

/// A sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// Base offset of the batch at `pos`.
    pub base: u64,
    /// File position of that batch.
    pub pos: u64,
    /// Newest record time of the batches from here to the next entry.
    pub max_timestamp_ms: i64,
}

/// What a segment holds (in memory; persisted in its index file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentState {
    /// Bytes of whole batches (the file's length once recovered).
    pub len: u64,
    /// Offset after the last batch (the base when empty).
    pub end: u64,
    pub batches: u64,
    pub records: u64,
    /// Base offset of the last batch (not in the index file: the tail is
    /// always re-read).
    pub last_base: Option<u64>,
    /// Newest record time in the segment (`i64::MIN` when empty).
    pub max_timestamp_ms: i64,
    /// When the first batch was appended (wall ms; its newest record time
    /// after a restart): `segment.ms` counts from here.
    pub first_append_ms: u64,
    pub entries: Vec<IndexEntry>,
}

impl SegmentState {
    fn empty(base: u64) -> SegmentState {
        SegmentState {
            len: 0,
            end: base,
            batches: 0,
            records: 0,
            last_base: None,
            max_timestamp_ms: i64::MIN,
            first_append_ms: 0,
            entries: Vec::new(),
        }
    }

    /// Accounts one batch (already written at `pos`).
    fn add(&mut self, h: &BatchHeader, pos: u64, bytes: u64, now_ms: u64) {
        let needs_entry = self
            .entries
            .last()
            .is_none_or(|last| pos - last.pos >= INDEX_INTERVAL_BYTES);
        if needs_entry {
            self.entries.push(IndexEntry {
                base: h.base_offset,
                pos,
                max_timestamp_ms: h.max_timestamp_ms,
            });
        } else if let Some(last) = self.entries.last_mut() {
            last.max_timestamp_ms = last.max_timestamp_ms.max(h.max_timestamp_ms);
        }
        if self.batches == 0 {
            self.first_append_ms = now_ms;
        }
        self.len = pos + bytes;
        self.end = h.end_offset();
        self.batches += 1;
        self.records += u64::from(h.record_count);
        self.last_base = Some(h.base_offset);
        self.max_timestamp_ms = self.max_timestamp_ms.max(h.max_timestamp_ms);
    }
}

/// One segment file, open for reads (and appends, while it is the newest).
#[derive(Debug)]
pub(super) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    file: File,
    state: RwLock<SegmentState>,
}

/// What a scan of a segment found past its last good batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Torn {
    /// Unreadable batches (or pieces of one) cut off.
    pub batches: u64,
    /// Bytes cut off.
    pub bytes: u64,
}

/// `{base:020}.log` in `dir`.
pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("index")
}

/// The base offset a segment file's name gives, if it is one.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// Creates a new, empty segment file (the caller fsyncs the directory).
    pub(super) fn create(dir: &Path, base: u64) -> io::Result<Segment> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Segment {
            base,
            path,
            file,
            state: RwLock::new(SegmentState::empty(base)),
        })
    }

    /// Opens an existing segment. `verify_all`: scan every batch (the
    /// newest segment, or one without a usable index); otherwise load the
    /// index and verify the batches after its last entry. A torn tail is
    /// cut off (the file truncated and synced) and reported.
    pub(super) fn open(path: &Path, base: u64, verify_all: bool) -> io::Result<(Segment, Torn)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let file_len = file.metadata()?.len();
        let loaded = if verify_all {
            None
        } else {
            load_index(&index_path(path), base, file_len)
        };
        let (state, torn) = match loaded {
            Some(mut state) => {
                // The tail after the last entry: as good as the index says?
                let (from, mut tail) = match state.entries.pop() {
                    Some(last) => (last.pos, state_before(&state, last)),
                    None => (0, SegmentState::empty(base)),
                };
                tail.entries = state.entries.clone();
                let torn = scan(&file, from, file_len, &mut tail)?;
                if torn.bytes == 0 && tail.len == state.len && tail.end == state.end {
                    (state_with_last_entry(state, &tail), torn)
                } else {
                    let mut fresh = SegmentState::empty(base);
                    let torn = scan(&file, 0, file_len, &mut fresh)?;
                    (fresh, torn)
                }
            }
            None => {
                let mut fresh = SegmentState::empty(base);
                let torn = scan(&file, 0, file_len, &mut fresh)?;
                (fresh, torn)
            }
        };
        if torn.bytes > 0 {
            file.set_len(state.len)?;
            file.sync_all()?;
        }
        Ok((
            Segment {
                base,
                path: path.to_path_buf(),
                file,
                state: RwLock::new(state),
            },
            torn,
        ))
    }

    /// A copy of what the segment holds now.
    pub(super) fn state(&self) -> SegmentState {
        self.state.read().expect("segment lock").clone()
    }

    /// Bytes of whole batches.
    pub(super) fn len(&self) -> u64 {
        self.state.read().expect("segment lock").len
    }

    /// Offset after the last batch.
    pub(super) fn end(&self) -> u64 {
        self.state.read().expect("segment lock").end
    }

    /// Whether no batch was appended yet.
    pub(super) fn is_empty(&self) -> bool {
        self.state.read().expect("segment lock").batches == 0
    }

    /// When the first batch was appended (wall ms; 0 when empty).
    pub(super) fn first_append_ms(&self) -> u64 {
        self.state.read().expect("segment lock").first_append_ms
    }

    /// Appends checked batches (each parsed by the caller right before) in
    /// one write, at the end. Only the partition's appender calls this.
    pub(super) fn append(&self, batches: &[Vec<u8>], now_ms: u64) -> io::Result<()> {
        let pos = self.len();
        let write = |bytes: &[u8]| self.file.write_all_at(bytes, pos);
        match batches {
            [] => return Ok(()),
            [one] => write(one)?,
            many => write(&many.concat())?,
        }
        let mut state = self.state.write().expect("segment lock");
        let mut at = pos;
        for encoded in batches {
            let h = BatchHeader::read(encoded).map_err(bad_batch)?;
            state.add(&h, at, encoded.len() as u64, now_ms);
            at += encoded.len() as u64;
        }
        Ok(())
    }

    /// fdatasync of the file.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The position to start looking for `offset` at: the last index entry
    /// at or before it.
    pub(super) fn seek(&self, offset: u64) -> u64 {
        let state = self.state.read().expect("segment lock");
        let i = state.entries.partition_point(|e| e.base <= offset);
        i.checked_sub(1).map_or(0, |i| state.entries[i].pos)
    }

    /// The first position whose index span may hold a record at or after
    /// `timestamp_ms`, if any.
    pub(super) fn seek_time(&self, timestamp_ms: i64) -> Option<u64> {
        let state = self.state.read().expect("segment lock");
        state
            .entries
            .iter()
            .find(|e| e.max_timestamp_ms >= timestamp_ms)
            .map(|e| e.pos)
    }

    /// The whole batch at `pos`, if `pos` is below the end; the caller
    /// checks it (CRC and all) right after.
    pub(super) fn read_at(&self, pos: u64) -> io::Result<Option<Vec<u8>>> {
        if pos >= self.len() {
            return Ok(None);
        }
        let mut prefix = [0u8; FRAME_PREFIX_BYTES];
        self.file.read_exact_at(&mut prefix, pos)?;
        let total = frame_len(&prefix).ok_or_else(|| bad_batch(BatchError::BadLength))?;
        let mut bytes = vec![0u8; total];
        bytes[..FRAME_PREFIX_BYTES].copy_from_slice(&prefix);
        self.file.read_exact_at(
            &mut bytes[FRAME_PREFIX_BYTES..],
            pos + FRAME_PREFIX_BYTES as u64,
        )?;
        Ok(Some(bytes))
    }

    /// Writes the index file (a cache: not fsynced, checked when loaded).
    pub(super) fn write_index(&self) -> io::Result<()> {
        let state = self.state();
        std::fs::write(index_path(&self.path), encode_index(&state))
    }

    /// Removes the segment's files (the caller fsyncs the directory).
    pub(super) fn remove_files(&self) -> io::Result<()> {
        match std::fs::remove_file(index_path(&self.path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::remove_file(&self.path)
    }
}

/// The totals of `state` up to (not including) index entry `last`, for
/// re-scanning from `last` on: only what the scan re-adds is unknown.
fn state_before(state: &SegmentState, last: IndexEntry) -> SegmentState {
    SegmentState {
        len: last.pos,
        end: last.base,
        batches: 0,
        records: 0,
        last_base: None,
        max_timestamp_ms: i64::MIN,
        first_append_ms: state.first_append_ms,
        entries: Vec::new(),
    }
}

/// The loaded state, with its last entry as re-scanned (same totals).
fn state_with_last_entry(mut loaded: SegmentState, tail: &SegmentState) -> SegmentState {
    loaded.entries = tail.entries.clone();
    loaded.last_base = tail.last_base;
    loaded
}

/// The total length of the batch framed at the start of `prefix`.
fn frame_len(prefix: &[u8; FRAME_PREFIX_BYTES]) -> Option<usize> {
    let length = u32::from_be_bytes(prefix[8..12].try_into().ok()?);
    let total = usize::try_from(length)
        .ok()?
        .checked_add(FRAME_PREFIX_BYTES)?;
    (total >= BATCH_HEADER_BYTES).then_some(total)
}

fn bad_batch(e: BatchError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}"))
}

/// Reads batches from `from` to `file_len`, checking each (length, CRC,
/// offsets after the previous), adding them to `state`. Stops at the first
/// bad one and reports what lies after it as torn.
fn scan(file: &File, from: u64, file_len: u64, state: &mut SegmentState) -> io::Result<Torn> {
    let mut pos = from;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = from;
    while pos < file_len {
        let have = (buf_pos + buf.len() as u64).saturating_sub(pos);
        let need_prefix = have < FRAME_PREFIX_BYTES as u64;
        let total = if need_prefix {
            None
        } else {
            let at = usize::try_from(pos - buf_pos).expect("in buffer");
            let prefix: [u8; FRAME_PREFIX_BYTES] = buf[at..at + FRAME_PREFIX_BYTES]
                .try_into()
                .expect("prefix length");
            frame_len(&prefix)
        };
        match total {
            Some(total) if have >= total as u64 => {
                let at = usize::try_from(pos - buf_pos).expect("in buffer");
                let bytes = &buf[at..at + total];
                // Check right after the read, as every read.
                match Batch::parse(bytes) {
                    Ok(batch) if batch.base_offset() >= state.end || state.batches == 0 => {
                        let h = batch.header;
                        let first = state.batches == 0;
                        state.add(&h, pos, total as u64, 0);
                        if first {
                            state.first_append_ms = u64::try_from(h.max_timestamp_ms).unwrap_or(0);
                        }
                        pos += total as u64;
                    }
                    _ => return torn_from(file, pos, file_len),
                }
            }
            Some(total) if pos + total as u64 > file_len => return torn_from(file, pos, file_len),
            None if !need_prefix => return torn_from(file, pos, file_len),
            _ => {
                // Refill from `pos`: at least this batch, at most a chunk.
                let want = match total {
                    Some(t) => t.max(SCAN_CHUNK_BYTES),
                    None => SCAN_CHUNK_BYTES,
                };
                let want = want.min(usize::try_from(file_len - pos).unwrap_or(usize::MAX));
                buf.resize(want, 0);
                file.read_exact_at(&mut buf, pos)?;
                buf_pos = pos;
            }
        }
    }
    Ok(Torn::default())
}

/// Counts the frames (by their length fields) from `pos` to the end: all
/// of it is cut off.
fn torn_from(file: &File, mut pos: u64, file_len: u64) -> io::Result<Torn> {
    let bytes = file_len - pos;
    let mut batches = 0;
    while pos < file_len {
        batches += 1;
        let mut prefix = [0u8; FRAME_PREFIX_BYTES];
        if file_len - pos < FRAME_PREFIX_BYTES as u64 {
            break;
        }
        file.read_exact_at(&mut prefix, pos)?;
        match frame_len(&prefix) {
            Some(total) => pos += total as u64,
            None => break,
        }
    }
    Ok(Torn { batches, bytes })
}

fn encode_index(state: &SegmentState) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(INDEX_HEADER_BYTES + 4 + state.entries.len() * INDEX_ENTRY_BYTES);
    out.extend_from_slice(INDEX_MAGIC);
    for v in [state.len, state.end, state.batches, state.records] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&state.max_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&state.first_append_ms.to_be_bytes());
    for e in &state.entries {
        out.extend_from_slice(&e.base.to_be_bytes());
        out.extend_from_slice(&e.pos.to_be_bytes());
        out.extend_from_slice(&e.max_timestamp_ms.to_be_bytes());
    }
    let crc = crate::wire::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn load_index(path: &Path, base: u64, file_len: u64) -> Option<SegmentState> {
    let bytes = std::fs::read(path).ok()?;
    decode_index(&bytes, base, file_len)
}

fn decode_index(bytes: &[u8], base: u64, file_len: u64) -> Option<SegmentState> {
    let body_len = bytes.len().checked_sub(4)?;
    let (body, crc) = bytes.split_at(body_len);
    if crate::wire::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    if body.len() < INDEX_HEADER_BYTES || &body[..8] != INDEX_MAGIC {
        return None;
    }
    let u = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let i = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let entries_bytes = &body[INDEX_HEADER_BYTES..];
    if entries_bytes.len() % INDEX_ENTRY_BYTES != 0 {
        return None;
    }
    let entries: Vec<IndexEntry> = entries_bytes
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|c| IndexEntry {
            base: u64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
            pos: u64::from_be_bytes(c[8..16].try_into().expect("8 bytes")),
            max_timestamp_ms: i64::from_be_bytes(c[16..24].try_into().expect("8 bytes")),
        })
        .collect();
    let state = SegmentState {
        len: u(8),
        end: u(16),
        batches: u(24),
        records: u(32),
        last_base: None,
        max_timestamp_ms: i(40),
        first_append_ms: u(48),
        entries,
    };
    // Stale: it describes another length of the file, or another segment.
    let sane = state.len == file_len
        && state.end >= base
        && state
            .entries
            .first()
            .is_none_or(|e| e.pos == 0 && e.base >= base)
        && state
            .entries
            .windows(2)
            .all(|w| w[0].pos < w[1].pos && w[0].base < w[1].base)
        && state.entries.last().is_none_or(|e| e.pos < state.len);
    sane.then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::{set_base_offset, BatchBuilder, Headers};

    fn batch(base: u64, records: u64, value_bytes: usize) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(value_bytes * 2 + 4096, 1_000).unwrap();
        for i in 0..records {
            b.push(
                1_000 + i as i64,
                None,
                &vec![b'x'; value_bytes],
                Headers::EMPTY,
            )
            .unwrap();
        }
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    #[test]
    fn appended_batches_read_back_and_survive_a_reopen_with_and_without_index() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 10).unwrap();
        let mut next = 10;
        let mut want = Vec::new();
        for i in 0..200 {
            let b = batch(next, 1 + i % 3, 300);
            next += 1 + i % 3;
            seg.append(std::slice::from_ref(&b), 5).unwrap();
            want.push(b);
        }
        seg.write_index().unwrap();
        let state = seg.state();
        assert!(
            state.entries.len() > 2,
            "sparse entries: {}",
            state.entries.len()
        );
        assert_eq!(state.end, next);
        drop(seg);
        for verify_all in [false, true] {
            let path = segment_path(dir.path(), 10);
            let (seg, torn) = Segment::open(&path, 10, verify_all).unwrap();
            assert_eq!(torn, Torn::default());
            let mut reopened = seg.state();
            reopened.first_append_ms = state.first_append_ms;
            assert_eq!(reopened, state);
            let mut pos = 0;
            for b in &want {
                let got = seg.read_at(pos).unwrap().unwrap();
                assert_eq!(&got, b);
                pos += got.len() as u64;
            }
            assert_eq!(seg.read_at(pos).unwrap(), None);
        }
        // A stale index (another length) is not trusted.
        let path = segment_path(dir.path(), 10);
        let bytes = std::fs::read(index_path(&path)).unwrap();
        assert!(decode_index(&bytes, 10, state.len + 1).is_none());
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(decode_index(&flipped, 10, state.len).is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0).unwrap();
        seg.append(&[batch(0, 2, 10), batch(2, 2, 10)], 1).unwrap();
        let good = seg.len();
        seg.append(&[batch(4, 2, 10)], 1).unwrap();
        drop(seg);
        let path = segment_path(dir.path(), 0);
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let (seg, torn) = Segment::open(&path, 0, true).unwrap();
        assert_eq!(torn.batches, 1);
        assert_eq!(seg.len(), good);
        assert_eq!(seg.end(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn segment_names_round_trip() {
        let p = segment_path(Path::new("/x"), 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
    }
}
