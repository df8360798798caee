//! The record batch: the unit of storage, flushing, checksumming and transfer.
//!
//! Producers send one batch per produce request; eddy stores batches (one
//! storage entry each) and fetches return whole stored batches. The layout is
//! identical on the wire and on disk, so a fetch copies bytes and a consumer
//! checks the same CRC the producer computed (end to end).
//!
//! This module only encodes and decodes; it never allocates and works in
//! `no_std` firmware.
//!
//! # Layout
//!
//! A fixed header of [`BATCH_HEADER_BYTES`], all integers big-endian:
//!
//! | bytes  | field               | meaning                                                        |
//! |--------|---------------------|----------------------------------------------------------------|
//! | 0..8   | `base_offset` u64   | offset of the first record; set by eddy at append (not in CRC)  |
//! | 8..12  | `batch_length` u32  | bytes after this field                                         |
//! | 12..16 | `crc` u32           | CRC32C of bytes 16..end                                        |
//! | 16     | `magic` u8          | [`BATCH_MAGIC`]                                                |
//! | 17     | `attributes` u8     | bits 0–2 compression (only 0, none, so far); others zero        |
//! | 18..22 | `last_offset_delta` | offset delta of the last record                                |
//! | 22..30 | `first_timestamp_ms`| i64; [`NO_TIMESTAMP`] in a produce: eddy stamps arrival time    |
//! | 30..38 | `max_timestamp_ms`  | i64                                                            |
//! | 38..46 | `producer_id` i64   | idempotent producer id, or -1                                   |
//! | 46..48 | `producer_epoch` i16|                                                                |
//! | 48..52 | `base_sequence` i32 | sequence number of the first record, or -1                     |
//! | 52..56 | `record_count` u32  | number of records that follow                                  |
//!
//! followed by `record_count` postcard-encoded [`Record`]s, each with its
//! offset and timestamp as deltas from the header's. Offset deltas strictly
//! increase: produced batches are dense (`0, 1, 2, …`); compaction may leave
//! gaps, never reorder.

use serde::{Deserialize, Serialize};

use super::crc32c;

/// Bytes of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 56;
/// Format version of a batch.
pub const BATCH_MAGIC: u8 = 1;
/// A `first_timestamp_ms` that asks eddy to stamp every record with its
/// arrival time (for devices without a clock).
pub const NO_TIMESTAMP: i64 = -1;
/// Largest encoded size of a record's fixed fields (offset delta, timestamp
/// delta, key option tag and the three length varints): used to size buffers.
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 5 + 10 + 1 + 5 + 5 + 5;

const LENGTH_FIELD_END: usize = 12;
const CRC_START: usize = 12;
const CRC_END: usize = 16;

/// Why a batch was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Shorter than a header, or shorter than its `batch_length` says.
    Truncated,
    /// `batch_length` disagrees with the bytes given.
    BadLength,
    /// Unknown `magic`.
    BadMagic(u8),
    /// Compression or attribute bits this build does not understand.
    UnsupportedAttributes(u8),
    /// The CRC32C does not match the contents.
    BadCrc { stored: u32, computed: u32 },
    /// A record could not be decoded.
    BadRecord { index: u32 },
    /// The number of records differs from `record_count`, or bytes follow the
    /// last record.
    CountMismatch,
    /// Offset deltas do not strictly increase, or the last one differs from
    /// `last_offset_delta`.
    BadOffsets,
    /// A produced batch had offset gaps, or a header field a producer may not set.
    NotDense,
    /// A produced batch's `max_timestamp_ms` is not the largest timestamp of
    /// its records (a far-future value would shield it from time retention).
    MaxTimestampMismatch { header: i64, records: i64 },
    /// The record does not fit into the builder's buffer.
    Full,
    /// The batch has no records.
    Empty,
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BatchError::Truncated => f.write_str("batch is truncated"),
            BatchError::BadLength => f.write_str("batch length field does not match its size"),
            BatchError::BadMagic(m) => write!(f, "unknown batch format {m}"),
            BatchError::UnsupportedAttributes(a) => {
                write!(f, "unsupported batch attributes {a:#04x}")
            }
            BatchError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "batch CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            BatchError::BadRecord { index } => {
                write!(f, "record {index} of the batch cannot be decoded")
            }
            BatchError::CountMismatch => {
                f.write_str("batch record count does not match its records")
            }
            BatchError::BadOffsets => {
                f.write_str("batch offset deltas are not strictly increasing")
            }
            BatchError::NotDense => f.write_str(
                "produced batch must have offset deltas 0, 1, 2, … and last_offset_delta = record_count - 1",
            ),
            BatchError::MaxTimestampMismatch { header, records } => write!(
                f,
                "batch max_timestamp_ms ({header}) is not its records' largest timestamp ({records})"
            ),
            BatchError::Full => f.write_str("record does not fit into the batch buffer"),
            BatchError::Empty => f.write_str("batch has no records"),
        }
    }
}

/// The fixed fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub crc: u32,
    pub magic: u8,
    pub attributes: u8,
    pub last_offset_delta: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Reads the header fields without checking anything but the size.
    pub fn read(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated);
        }
        Ok(BatchHeader {
            base_offset: u64::from_be_bytes(arr(bytes, 0)),
            batch_length: u32::from_be_bytes(arr(bytes, 8)),
            crc: u32::from_be_bytes(arr(bytes, 12)),
            magic: bytes[16],
            attributes: bytes[17],
            last_offset_delta: u32::from_be_bytes(arr(bytes, 18)),
            first_timestamp_ms: i64::from_be_bytes(arr(bytes, 22)),
            max_timestamp_ms: i64::from_be_bytes(arr(bytes, 30)),
            producer_id: i64::from_be_bytes(arr(bytes, 38)),
            producer_epoch: i16::from_be_bytes(arr(bytes, 46)),
            base_sequence: i32::from_be_bytes(arr(bytes, 48)),
            record_count: u32::from_be_bytes(arr(bytes, 52)),
        })
    }

    /// Offset one past the last record.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta) + 1
    }

    fn write(&self, bytes: &mut [u8]) {
        bytes[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        bytes[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        bytes[12..16].copy_from_slice(&self.crc.to_be_bytes());
        bytes[16] = self.magic;
        bytes[17] = self.attributes;
        bytes[18..22].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        bytes[22..30].copy_from_slice(&self.first_timestamp_ms.to_be_bytes());
        bytes[30..38].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        bytes[38..46].copy_from_slice(&self.producer_id.to_be_bytes());
        bytes[46..48].copy_from_slice(&self.producer_epoch.to_be_bytes());
        bytes[48..52].copy_from_slice(&self.base_sequence.to_be_bytes());
        bytes[52..56].copy_from_slice(&self.record_count.to_be_bytes());
    }
}

fn arr<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// One record as stored: offset and timestamp relative to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<'a> {
    pub offset_delta: u32,
    pub timestamp_delta_ms: i64,
    #[serde(serialize_with = "super::raw_bytes::option_bytes")]
    pub key: Option<&'a [u8]>,
    /// Empty on a compacted topic means "delete this key" (tombstone).
    #[serde(serialize_with = "super::raw_bytes::bytes")]
    pub value: &'a [u8],
    #[serde(borrow)]
    pub headers: Headers<'a>,
}

/// A record's headers: postcard-encoded `(name, value)` pairs, decoded lazily
/// so that reading a record never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers<'a>(#[serde(borrow, serialize_with = "super::raw_bytes::bytes")] pub &'a [u8]);

impl<'a> Headers<'a> {
    /// No headers.
    pub const EMPTY: Headers<'static> = Headers(&[]);

    /// Iterates the `(name, value)` pairs; a malformed pair ends the
    /// iteration with an error.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter { rest: self.0 }
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks that every pair decodes.
    pub fn validate(&self) -> Result<(), BatchError> {
        for pair in self.iter() {
            pair.map_err(|_| BatchError::BadRecord { index: 0 })?;
        }
        Ok(())
    }

    /// Encodes `pairs` into `buf`, returning the encoded length.
    pub fn encode(pairs: &[(&str, &[u8])], buf: &mut [u8]) -> Result<usize, BatchError> {
        let mut used = 0;
        for pair in pairs {
            used += postcard::to_slice(pair, &mut buf[used..])
                .map_err(|_| BatchError::Full)?
                .len();
        }
        Ok(used)
    }

    /// Encodes `pairs` into a new vector.
    #[cfg(feature = "std")]
    pub fn encode_vec(pairs: &[(&str, &[u8])]) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::new();
        for pair in pairs {
            out = postcard::to_extend(pair, out).expect("encoding into a Vec");
        }
        out
    }
}

/// Iterator over a record's header pairs.
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<(&'a str, &'a [u8])>(self.rest) {
            Ok((pair, rest)) => {
                self.rest = rest;
                Some(Ok(pair))
            }
            Err(_) => {
                self.rest = &[];
                Some(Err(BatchError::BadRecord { index: 0 }))
            }
        }
    }
}

/// A batch whose header, length and CRC have been checked.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks that `bytes` is exactly one batch with a known format and a
    /// matching CRC. Records are checked by [`Batch::validate`] or while
    /// iterating.
    pub fn parse(bytes: &'a [u8]) -> Result<Batch<'a>, BatchError> {
        let header = BatchHeader::read(bytes)?;
        let declared = usize::try_from(header.batch_length).map_err(|_| BatchError::BadLength)?;
        if declared.checked_add(LENGTH_FIELD_END) != Some(bytes.len()) {
            return Err(BatchError::BadLength);
        }
        if header.magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        // No compression codec is implemented yet, and no other bit is defined.
        if header.attributes != 0 {
            return Err(BatchError::UnsupportedAttributes(header.attributes));
        }
        let computed = crc32c(&bytes[CRC_END..]);
        if computed != header.crc {
            return Err(BatchError::BadCrc {
                stored: header.crc,
                computed,
            });
        }
        if header.record_count == 0 {
            return Err(BatchError::Empty);
        }
        if header.last_offset_delta < header.record_count - 1 {
            return Err(BatchError::BadOffsets);
        }
        Ok(Batch { header, bytes })
    }

    /// The whole encoded batch.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset one past the last record.
    pub fn end_offset(&self) -> u64 {
        self.header.end_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Whether eddy should stamp the records with their arrival time.
    pub fn wants_arrival_timestamps(&self) -> bool {
        self.header.first_timestamp_ms == NO_TIMESTAMP
    }

    /// The records, decoded lazily.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: &self.bytes[BATCH_HEADER_BYTES..],
            index: 0,
            count: self.header.record_count,
            last_delta: None,
        }
    }

    /// Decodes every record and checks count, offset order and that nothing
    /// follows the last record. The last record's offset delta may be below
    /// `last_offset_delta` (compaction removed the batch's last records but
    /// keeps its offset span, as Kafka does), never above.
    pub fn validate(&self) -> Result<(), BatchError> {
        let mut last = None;
        for record in self.records() {
            let record = record?;
            record.headers.validate()?;
            last = Some(record.offset_delta);
        }
        match last {
            Some(last) if last <= self.header.last_offset_delta => Ok(()),
            _ => Err(BatchError::BadOffsets),
        }
    }

    /// [`Batch::validate`] plus the rules for a batch a producer sends, so
    /// that its header tells the truth about its records: offsets dense from
    /// 0 (`last_offset_delta` = `record_count` - 1: a larger one would move
    /// the log end past offsets that hold nothing), `max_timestamp_ms` the
    /// largest of the first timestamp and the records' (what time retention
    /// goes by), and timestamp deltas zero when eddy is to stamp arrival
    /// times (which sets both timestamps).
    pub fn validate_produced(&self) -> Result<(), BatchError> {
        self.validate()?;
        if self.header.last_offset_delta.checked_add(1) != Some(self.header.record_count) {
            return Err(BatchError::NotDense);
        }
        if self.wants_arrival_timestamps() {
            if self
                .records()
                .any(|r| matches!(r, Ok(r) if r.timestamp_delta_ms != 0))
            {
                return Err(BatchError::NotDense);
            }
            return Ok(());
        }
        let mut records_max = self.header.first_timestamp_ms;
        for record in self.records() {
            records_max = records_max.max(self.timestamp_of(&record?));
        }
        if records_max != self.header.max_timestamp_ms {
            return Err(BatchError::MaxTimestampMismatch {
                header: self.header.max_timestamp_ms,
                records: records_max,
            });
        }
        Ok(())
    }

    /// Absolute timestamp of a record of this batch.
    pub fn timestamp_of(&self, record: &Record<'_>) -> i64 {
        self.header
            .first_timestamp_ms
            .saturating_add(record.timestamp_delta_ms)
    }
}

/// Iterator over the records of a batch.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: u32,
    count: u32,
    last_delta: Option<u32>,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index == self.count {
            if self.rest.is_empty() {
                return None;
            }
            self.rest = &[];
            return Some(Err(BatchError::CountMismatch));
        }
        let index = self.index;
        self.index += 1;
        match postcard::take_from_bytes::<Record<'a>>(self.rest) {
            Ok((record, rest)) => {
                if self
                    .last_delta
                    .is_some_and(|last| record.offset_delta <= last)
                {
                    self.index = self.count;
                    self.rest = &[];
                    return Some(Err(BatchError::BadOffsets));
                }
                self.last_delta = Some(record.offset_delta);
                self.rest = rest;
                Some(Ok(record))
            }
            Err(_) => {
                self.index = self.count;
                self.rest = &[];
                Some(Err(BatchError::BadRecord { index }))
            }
        }
    }
}

/// Iterator over concatenated batches (a fetch result). Each item is a parsed
/// and CRC-checked batch; the first error ends the iteration.
pub struct Batches<'a> {
    rest: &'a [u8],
}

impl<'a> Batches<'a> {
    pub fn new(bytes: &'a [u8]) -> Batches<'a> {
        Batches { rest: bytes }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = batch_len(self.rest).and_then(|len| {
            let (one, rest) = self.rest.split_at(len);
            self.rest = rest;
            Batch::parse(one)
        });
        if result.is_err() {
            self.rest = &[];
        }
        Some(result)
    }
}

/// Total length of the batch at the start of `bytes`, from its length field.
pub fn batch_len(bytes: &[u8]) -> Result<usize, BatchError> {
    if bytes.len() < LENGTH_FIELD_END {
        return Err(BatchError::Truncated);
    }
    let declared =
        usize::try_from(u32::from_be_bytes(arr(bytes, 8))).map_err(|_| BatchError::BadLength)?;
    let len = declared
        .checked_add(LENGTH_FIELD_END)
        .ok_or(BatchError::BadLength)?;
    if len < BATCH_HEADER_BYTES {
        return Err(BatchError::BadLength);
    }
    if len > bytes.len() {
        return Err(BatchError::Truncated);
    }
    Ok(len)
}

/// Sets the base offset of an encoded batch. The base offset is outside the
/// CRC, so the checksum stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps a batch that asked for arrival times (`first_timestamp_ms` is
/// [`NO_TIMESTAMP`]) with `arrival_ms` and recomputes its CRC; every record's
/// timestamp delta is zero in such a batch. Other batches are left alone.
pub fn stamp_arrival_time(batch: &mut [u8], arrival_ms: i64) -> Result<(), BatchError> {
    let header = Batch::parse(batch)?.header;
    if header.first_timestamp_ms != NO_TIMESTAMP {
        return Ok(());
    }
    let stamped = BatchHeader {
        first_timestamp_ms: arrival_ms,
        max_timestamp_ms: arrival_ms,
        ..header
    };
    rewrite_header(batch, &stamped);
    Ok(())
}

/// Writes `header` over an encoded batch's header and recomputes its CRC
/// (eddy's own rewrites, and tools and tests that craft batches by hand).
/// The caller makes sure `batch` is at least a header long.
pub fn rewrite_header(batch: &mut [u8], header: &BatchHeader) {
    header.write(batch);
    let crc = crc32c(&batch[CRC_END..]);
    batch[CRC_START..CRC_END].copy_from_slice(&crc.to_be_bytes());
}

/// Removes the producer stamp of a batch (id, epoch and sequence become -1)
/// and recomputes its CRC. A mirror link forwards stored batches this way:
/// producer ids are the source hub's and mean nothing upstream. A batch
/// without a stamp is left alone.
pub fn clear_producer(batch: &mut [u8]) -> Result<(), BatchError> {
    let header = Batch::parse(batch)?.header;
    if header.producer_id < 0 && header.producer_epoch == -1 && header.base_sequence == -1 {
        return Ok(());
    }
    let cleared = BatchHeader {
        producer_id: ProducerStamp::NONE.producer_id,
        producer_epoch: ProducerStamp::NONE.producer_epoch,
        base_sequence: ProducerStamp::NONE.base_sequence,
        ..header
    };
    rewrite_header(batch, &cleared);
    Ok(())
}

/// Identity of an idempotent producer, carried in the batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// A batch from a producer without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Writes a batch into a buffer, one record at a time. The buffer is a
/// caller's `&mut [u8]` (firmware, no allocation) or an owned `Vec<u8>`
/// sized up front; it never grows.
///
/// ```
/// use eddy::wire::batch::{Batch, BatchBuilder, Headers, NO_TIMESTAMP};
/// let mut buf = [0u8; 256];
/// let mut builder = BatchBuilder::new(&mut buf[..], NO_TIMESTAMP).unwrap();
/// builder.push(NO_TIMESTAMP, Some(b"sensor-7"), b"21.5", Headers::EMPTY).unwrap();
/// let (_, len) = builder.finish();
/// let batch = Batch::parse(&buf[..len]).unwrap();
/// assert_eq!(batch.record_count(), 1);
/// ```
pub struct BatchBuilder<B> {
    buf: B,
    len: usize,
    count: u32,
    last_offset_delta: Option<u32>,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
    /// Set by [`BatchBuilder::set_last_offset_delta`].
    span_last_offset_delta: Option<u32>,
}

impl<B: AsMut<[u8]>> BatchBuilder<B> {
    /// Starts a batch in `buf`. `first_timestamp_ms` is the timestamp the
    /// record deltas are relative to; [`NO_TIMESTAMP`] asks eddy to stamp
    /// arrival times (then every record must be pushed with `NO_TIMESTAMP`).
    pub fn new(mut buf: B, first_timestamp_ms: i64) -> Result<BatchBuilder<B>, BatchError> {
        if buf.as_mut().len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Full);
        }
        Ok(BatchBuilder {
            buf,
            len: BATCH_HEADER_BYTES,
            count: 0,
            last_offset_delta: None,
            first_timestamp_ms,
            max_timestamp_ms: first_timestamp_ms,
            producer: ProducerStamp::NONE,
            span_last_offset_delta: None,
        })
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn set_producer(&mut self, producer: ProducerStamp) {
        self.producer = producer;
    }

    /// Keeps the offset span of a batch whose last records were removed
    /// (compaction): the header's `last_offset_delta` becomes `delta`, which
    /// must not be below the last pushed record's delta.
    pub fn set_last_offset_delta(&mut self, delta: u32) -> Result<(), BatchError> {
        if self.last_offset_delta.is_some_and(|last| delta < last) {
            return Err(BatchError::BadOffsets);
        }
        self.span_last_offset_delta = Some(delta);
        Ok(())
    }

    /// Appends a record with the next dense offset delta.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
    ) -> Result<(), BatchError> {
        let delta = self.last_offset_delta.map_or(0, |d| d + 1);
        self.push_at(delta, timestamp_ms, key, value, headers)
    }

    /// Appends a record with an explicit offset delta (compaction keeps the
    /// original offsets). Deltas must strictly increase. On error nothing is
    /// appended.
    pub fn push_at(
        &mut self,
        offset_delta: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
    ) -> Result<(), BatchError> {
        if self
            .last_offset_delta
            .is_some_and(|last| offset_delta <= last)
        {
            return Err(BatchError::BadOffsets);
        }
        let timestamp_delta_ms = if self.first_timestamp_ms == NO_TIMESTAMP {
            0
        } else {
            timestamp_ms.saturating_sub(self.first_timestamp_ms)
        };
        let record = Record {
            offset_delta,
            timestamp_delta_ms,
            key,
            value,
            headers,
        };
        let used = postcard::to_slice(&record, &mut self.buf.as_mut()[self.len..])
            .map_err(|_| BatchError::Full)?
            .len();
        self.len += used;
        self.count += 1;
        self.last_offset_delta = Some(offset_delta);
        if self.first_timestamp_ms != NO_TIMESTAMP {
            self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        }
        Ok(())
    }

    /// Bytes used so far, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Writes the header and CRC and hands the buffer back with the batch's
    /// length: the batch is `buf[..len]`.
    pub fn finish(mut self) -> (B, usize) {
        let header = BatchHeader {
            base_offset: 0,
            batch_length: u32::try_from(self.len - LENGTH_FIELD_END).unwrap_or(u32::MAX),
            crc: 0,
            magic: BATCH_MAGIC,
            attributes: 0,
            last_offset_delta: self
                .span_last_offset_delta
                .or(self.last_offset_delta)
                .unwrap_or(0),
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            record_count: self.count,
        };
        let len = self.len;
        let bytes = self.buf.as_mut();
        header.write(bytes);
        let crc = crc32c(&bytes[CRC_END..len]);
        bytes[CRC_START..CRC_END].copy_from_slice(&crc.to_be_bytes());
        (self.buf, len)
    }
}

#[cfg(feature = "std")]
impl BatchBuilder<std::vec::Vec<u8>> {
    /// A builder over a new zeroed buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, first_timestamp_ms: i64) -> Result<Self, BatchError> {
        BatchBuilder::new(
            std::vec![0u8; capacity.max(BATCH_HEADER_BYTES)],
            first_timestamp_ms,
        )
    }

    /// Bytes the buffer holds (what [`BatchBuilder::push`] can fill).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Grows the buffer to `capacity` bytes (never shrinks it), so a batch
    /// can start small and grow as records arrive.
    pub fn grow_to(&mut self, capacity: usize) {
        if self.buf.len() < capacity {
            self.buf.resize(capacity, 0);
        }
    }

    /// Finishes and returns exactly the batch bytes.
    pub fn finish_vec(self) -> std::vec::Vec<u8> {
        let (mut buf, len) = self.finish();
        buf.truncate(len);
        buf
    }
}

/// An upper bound of a record's encoded size, for sizing buffers.
pub fn record_len_max(key: Option<&[u8]>, value: &[u8], headers: Headers<'_>) -> usize {
    RECORD_OVERHEAD_BYTES_MAX + key.map_or(0, <[u8]>::len) + value.len() + headers.0.len()
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn build(records: &[(Option<&[u8]>, &[u8])], first_ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(4096, first_ts).unwrap();
        for (i, (k, v)) in records.iter().enumerate() {
            let ts = if first_ts == NO_TIMESTAMP {
                NO_TIMESTAMP
            } else {
                first_ts + i as i64
            };
            b.push(ts, *k, v, Headers::EMPTY).unwrap();
        }
        b.finish_vec()
    }

    #[test]
    fn build_parse_round_trip() {
        let headers = Headers::encode_vec(&[("content-type", b"text/plain"), ("device", b"d7")]);
        let mut b = BatchBuilder::with_capacity(1024, 1_000).unwrap();
        b.push(1_000, Some(b"k1"), b"v1", Headers(&headers))
            .unwrap();
        b.push(990, None, b"", Headers::EMPTY).unwrap();
        b.push(1_005, Some(b""), b"v3", Headers::EMPTY).unwrap();
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, 42);
        let batch = Batch::parse(&bytes).unwrap();
        batch.validate_produced().unwrap();
        assert_eq!(batch.base_offset(), 42);
        assert_eq!(batch.end_offset(), 45);
        assert_eq!(batch.header.max_timestamp_ms, 1_005);
        let records: Vec<_> = batch.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(batch.timestamp_of(&records[1]), 990);
        assert_eq!(records[1].key, None);
        assert_eq!(records[2].key, Some(&b""[..]));
        let pairs: Vec<_> = records[0].headers.iter().map(Result::unwrap).collect();
        assert_eq!(
            pairs,
            vec![("content-type", &b"text/plain"[..]), ("device", &b"d7"[..])]
        );
    }

    #[test]
    fn every_corruption_is_detected() {
        let bytes = build(&[(Some(b"a"), b"hello"), (None, b"world")], 5);
        // Flip each bit after the base offset: parse or validate must fail.
        for i in 8..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let outcome = Batch::parse(&bad).and_then(|b| b.validate());
                assert!(
                    outcome.is_err(),
                    "flip of byte {i} bit {bit} went unnoticed"
                );
            }
        }
        // The base offset is not covered (eddy sets it): still valid.
        let mut moved = bytes.clone();
        set_base_offset(&mut moved, 1 << 40);
        assert!(Batch::parse(&moved).unwrap().validate().is_ok());
    }

    #[test]
    fn truncation_and_length_errors() {
        let bytes = build(&[(None, b"x")], 5);
        for cut in 0..bytes.len() {
            assert!(Batch::parse(&bytes[..cut]).is_err());
            assert!(Batches::new(&bytes[..cut]).all(|b| b.is_err()) || cut == 0);
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let batches: Vec<_> = Batches::new(&two).collect();
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(Result::is_ok));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Batch::parse(&long).unwrap_err(), BatchError::BadLength);
    }

    #[test]
    fn builder_full_leaves_batch_intact() {
        let mut buf = [0u8; BATCH_HEADER_BYTES + 20];
        let mut b = BatchBuilder::new(&mut buf[..], 0).unwrap();
        b.push(0, None, b"0123456789", Headers::EMPTY).unwrap();
        assert_eq!(
            b.push(0, None, b"0123456789", Headers::EMPTY),
            Err(BatchError::Full)
        );
        assert_eq!(b.record_count(), 1);
        let (_, len) = b.finish();
        let batch = Batch::parse(&buf[..len]).unwrap();
        batch.validate_produced().unwrap();
    }

    #[test]
    fn sparse_offsets_are_valid_but_not_produceable() {
        let mut b = BatchBuilder::with_capacity(512, 0).unwrap();
        b.push_at(0, 0, Some(b"a"), b"1", Headers::EMPTY).unwrap();
        b.push_at(5, 0, Some(b"b"), b"2", Headers::EMPTY).unwrap();
        assert_eq!(
            b.push_at(5, 0, None, b"3", Headers::EMPTY),
            Err(BatchError::BadOffsets)
        );
        let bytes = b.finish_vec();
        let batch = Batch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.end_offset(), 6);
        assert_eq!(batch.validate_produced(), Err(BatchError::NotDense));
    }

    /// Issue 16, item 8: a header that lies about its records is refused.
    #[test]
    fn produced_headers_must_match_their_records() {
        let mut b = BatchBuilder::with_capacity(512, 1_000).unwrap();
        b.push(1_000, None, b"a", Headers::EMPTY).unwrap();
        b.push(1_005, None, b"b", Headers::EMPTY).unwrap();
        let honest = b.finish_vec();
        Batch::parse(&honest).unwrap().validate_produced().unwrap();
        let lie = |change: &dyn Fn(&mut BatchHeader)| {
            let mut bytes = honest.clone();
            let mut header = BatchHeader::read(&bytes).unwrap();
            change(&mut header);
            rewrite_header(&mut bytes, &header);
            Batch::parse(&bytes).and_then(|b| b.validate_produced())
        };
        assert_eq!(
            lie(&|h| h.last_offset_delta = 1_000_000_000),
            Err(BatchError::NotDense)
        );
        assert_eq!(
            lie(&|h| h.max_timestamp_ms = i64::MAX),
            Err(BatchError::MaxTimestampMismatch {
                header: i64::MAX,
                records: 1_005
            })
        );
        assert_eq!(
            lie(&|h| h.max_timestamp_ms = 1_000),
            Err(BatchError::MaxTimestampMismatch {
                header: 1_000,
                records: 1_005
            })
        );
    }

    #[test]
    fn compacted_batches_keep_their_offset_span() {
        let mut b = BatchBuilder::with_capacity(512, 0).unwrap();
        b.push_at(2, 0, Some(b"a"), b"1", Headers::EMPTY).unwrap();
        assert_eq!(b.set_last_offset_delta(1), Err(BatchError::BadOffsets));
        b.set_last_offset_delta(9).unwrap();
        let bytes = b.finish_vec();
        let batch = Batch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.end_offset(), 10);
        assert_eq!(batch.validate_produced(), Err(BatchError::NotDense));
    }

    #[test]
    fn record_len_max_is_an_upper_bound() {
        let key = vec![1u8; 300];
        let value = vec![2u8; 70_000];
        let headers = Headers::encode_vec(&[("h", &[3u8; 200])]);
        let bound = record_len_max(Some(&key), &value, Headers(&headers));
        let mut b = BatchBuilder::with_capacity(BATCH_HEADER_BYTES + bound, i64::MAX).unwrap();
        b.push(i64::MIN, Some(&key), &value, Headers(&headers))
            .unwrap();
    }

    #[test]
    fn clear_producer_removes_the_stamp_and_keeps_the_crc_valid() {
        let mut b = BatchBuilder::with_capacity(1024, 1_000).unwrap();
        b.set_producer(ProducerStamp {
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 40,
        });
        b.push(1_000, Some(b"k"), b"v", Headers::EMPTY).unwrap();
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, 99);
        let before = bytes.clone();
        clear_producer(&mut bytes).unwrap();
        let batch = Batch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.header.producer_id, -1);
        assert_eq!(batch.header.producer_epoch, -1);
        assert_eq!(batch.header.base_sequence, -1);
        assert_eq!(batch.base_offset(), 99);
        // Everything after the header is untouched.
        assert_eq!(bytes[BATCH_HEADER_BYTES..], before[BATCH_HEADER_BYTES..]);
        // A second clear changes nothing.
        let once = bytes.clone();
        clear_producer(&mut bytes).unwrap();
        assert_eq!(bytes, once);
    }
}
