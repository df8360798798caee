//! eddy batches ⇄ Kafka record batches v2, shared by the mirror's Kafka
//! upstream ([`crate::mirror`]) and the Kafka listener ([`crate::net::kafka`]).
//!
//! One eddy record is one Kafka record: key, value, timestamp (CreateTime)
//! and headers are kept both ways. Kafka headers are a map in the codec
//! (`kafka-protocol`): a record with a header name given twice keeps the
//! last value. A null Kafka value (a tombstone) is stored as an empty value
//! (eddy's tombstone on a compacted topic); a null header value as an empty
//! one.
//!
//! - [`to_kafka_record`]: one stored record as a codec [`Record`] (the
//!   mirror then stamps its producer and source header).
//! - [`fetched_to_kafka`]: stored batches as read from a partition → Kafka
//!   batches with the same offsets (one Kafka batch per eddy batch), for a
//!   Fetch answer.
//! - [`from_kafka`]: a produced Kafka batch → one eddy batch with the
//!   producer's id, epoch and base sequence.
//!
//! Pure: no I/O, no storage, no broker. Compression: the codec is built
//! with all four of Kafka's (gzip, Snappy, LZ4, zstd; see Cargo.toml), so a
//! produced batch is decompressed by [`from_kafka`] and stored as an eddy
//! batch; [`compression_of`] reads a batch's codec so that the listener can
//! refuse an unknown one with a clear code.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH,
};

use crate::wire::batch::{
    Batch, BatchBuilder, BatchError, Batches, Headers, ProducerStamp, NO_TIMESTAMP,
    RECORD_OVERHEAD_BYTES_MAX,
};

/// Where the attributes (compression in the low 3 bits) sit in a record
/// batch v2: base offset (8), length (4), leader epoch (4), magic (1), CRC (4).
const ATTRIBUTES_AT: usize = 21;
/// Where the magic byte sits.
const MAGIC_AT: usize = 16;

/// A conversion that failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch unreadable: {0}")]
    Batch(BatchError),
    #[error("header name is not UTF-8")]
    HeaderName,
    #[error("Kafka record batch rejected: {0}")]
    Decode(String),
    #[error("encoding a Kafka record batch failed: {0}")]
    Encode(String),
    #[error("a Kafka record batch holds {0} records; eddy batches hold at most u32::MAX")]
    TooMany(usize),
    #[error("the Kafka record batch holds no records")]
    Empty,
}

impl From<BatchError> for RecordsError {
    fn from(e: BatchError) -> Self {
        RecordsError::Batch(e)
    }
}

/// Kafka's compression codecs by their attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

/// The compression codec and magic of the first batch in `records`;
/// `None` when too short to tell.
pub fn compression_of(records: &[u8]) -> Option<(i8, Codec)> {
    let magic = i8::from_be_bytes([*records.get(MAGIC_AT)?]);
    let low = records.get(ATTRIBUTES_AT + 1)? & 0x07;
    let codec = match low {
        0 => Codec::None,
        1 => Codec::Gzip,
        2 => Codec::Snappy,
        3 => Codec::Lz4,
        4 => Codec::Zstd,
        other => Codec::Unknown(other),
    };
    Some((magic, codec))
}

/// Whether this build decodes `codec` (the `kafka-protocol` features on:
/// every codec Kafka defines).
pub fn codec_supported(codec: Codec) -> bool {
    !matches!(codec, Codec::Unknown(_))
}

/// One stored record as a Kafka record at `offset` (producer fields unset:
/// id −1, sequence = offset delta from nothing; the caller stamps them).
/// `tombstones`: an empty value becomes null.
pub fn to_kafka_record(
    stored: &Bytes,
    batch: &Batch<'_>,
    record: &crate::wire::batch::Record<'_>,
    offset: i64,
    tombstones: bool,
) -> Result<Record, RecordsError> {
    let mut headers = IndexMap::with_capacity(1);
    for pair in record.headers.iter() {
        let (name, value) = pair?;
        let name = StrBytes::from_utf8(stored.slice_ref(name.as_bytes()))
            .map_err(|_| RecordsError::HeaderName)?;
        headers.insert(name, Some(stored.slice_ref(value)));
    }
    let value = if tombstones && record.value.is_empty() {
        None
    } else {
        Some(stored.slice_ref(record.value))
    };
    Ok(Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: batch.timestamp_of(record),
        key: record.key.map(|k| stored.slice_ref(k)),
        value,
        headers,
    })
}

/// Appends to `out` one Kafka record batch per stored batch in `stored`
/// (concatenated, as a partition read returns them), with the stored
/// offsets (gaps left by compaction stay gaps). Empty values become null
/// when `tombstones`. Returns the number of records converted.
pub fn fetched_to_kafka(
    stored: &Bytes,
    tombstones: bool,
    out: &mut BytesMut,
) -> Result<u64, RecordsError> {
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut count = 0u64;
    let mut records: Vec<Record> = Vec::new();
    for batch in Batches::new(stored) {
        let batch = batch?;
        records.clear();
        let base = i64::try_from(batch.base_offset()).unwrap_or(i64::MAX);
        for record in batch.records() {
            let record = record?;
            let offset = base + i64::from(record.offset_delta);
            let mut r = to_kafka_record(stored, &batch, &record, offset, tombstones)?;
            // The codec groups records into one batch while offset −
            // sequence stays the same; this keeps the base sequence −1 (no
            // producer) for the whole batch.
            r.sequence = i32::try_from(i64::from(record.offset_delta) - 1).unwrap_or(i32::MAX);
            records.push(r);
        }
        count += records.len() as u64;
        RecordBatchEncoder::encode(out, records.iter(), &options)
            .map_err(|e| RecordsError::Encode(e.to_string()))?;
    }
    Ok(count)
}

/// A produced Kafka batch as one eddy batch.
#[derive(Debug)]
pub struct Converted {
    /// The eddy batch (base offset 0; storage assigns offsets).
    pub batch: Vec<u8>,
    /// The Kafka producer's id, epoch and base sequence (id −1: none).
    pub producer: ProducerStamp,
    pub records: u32,
}

/// Decodes every record batch in `records` (a Produce partition's data)
/// and converts each to one eddy batch. Offsets become dense (0, 1, 2, …:
/// a producer's batch has no gaps); timestamps are kept, or stamped on
/// arrival when the producer sent none (−1).
pub fn from_kafka(records: &Bytes) -> Result<Vec<Converted>, RecordsError> {
    let mut buf = records.clone();
    let sets = RecordBatchDecoder::decode_all(&mut buf)
        .map_err(|e| RecordsError::Decode(e.to_string()))?;
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        out.push(convert_set(&set.records)?);
    }
    Ok(out)
}

fn convert_set(records: &[Record]) -> Result<Converted, RecordsError> {
    let first = records.first().ok_or(RecordsError::Empty)?;
    let count = u32::try_from(records.len()).map_err(|_| RecordsError::TooMany(records.len()))?;
    let stamp_arrival = records.iter().any(|r| r.timestamp < 0);
    let first_timestamp = if stamp_arrival {
        NO_TIMESTAMP
    } else {
        records.iter().map(|r| r.timestamp).min().unwrap_or(0)
    };
    let mut header_bufs: Vec<Vec<u8>> = Vec::with_capacity(records.len());
    let mut capacity = 0usize;
    for r in records {
        let pairs: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_deref().unwrap_or(&[])))
            .collect();
        let encoded = if pairs.is_empty() {
            Vec::new()
        } else {
            Headers::encode_vec(&pairs)
        };
        capacity += RECORD_OVERHEAD_BYTES_MAX
            + r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
            + encoded.len();
        header_bufs.push(encoded);
    }
    let mut builder = BatchBuilder::with_capacity(
        capacity + crate::wire::batch::BATCH_HEADER_BYTES,
        first_timestamp,
    )?;
    for (r, headers) in records.iter().zip(&header_bufs) {
        let timestamp = if stamp_arrival {
            NO_TIMESTAMP
        } else {
            r.timestamp
        };
        builder.push(
            timestamp,
            r.key.as_deref(),
            r.value.as_deref().unwrap_or(&[]),
            Headers(headers),
        )?;
    }
    let producer = if first.producer_id >= 0 {
        ProducerStamp {
            producer_id: first.producer_id,
            producer_epoch: first.producer_epoch,
            // The decoder adds each record's delta to the base sequence.
            base_sequence: first.sequence,
        }
    } else {
        ProducerStamp::NONE
    };
    builder.set_producer(producer);
    Ok(Converted {
        batch: builder.finish_vec(),
        producer,
        records: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::set_base_offset;

    fn kafka_batch(producer_id: i64, timestamps: &[i64]) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, ts)| {
                let mut headers = IndexMap::new();
                headers.insert(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from(format!("v{i}"))),
                );
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                    producer_id,
                    producer_epoch: 3,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: 10 + i as i32,
                    timestamp: *ts,
                    key: (i != 1).then(|| Bytes::from(format!("k{i}"))),
                    value: (i != 2).then(|| Bytes::from(format!("value {i}"))),
                    headers,
                }
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Snappy,
            },
        )
        .unwrap();
        out.freeze()
    }

    #[test]
    fn a_produced_batch_round_trips_with_keys_headers_and_timestamps() {
        let kafka = kafka_batch(7, &[1_000, 1_005, 999]);
        assert_eq!(compression_of(&kafka), Some((2, Codec::Snappy)));
        let converted = from_kafka(&kafka).unwrap();
        assert_eq!(converted.len(), 1);
        let c = &converted[0];
        assert_eq!(c.records, 3);
        assert_eq!(c.producer.producer_id, 7);
        assert_eq!(c.producer.producer_epoch, 3);
        assert_eq!(c.producer.base_sequence, 10);
        // Stored at offset 40, then fetched back.
        let mut stored = c.batch.clone();
        set_base_offset(&mut stored, 40);
        let stored = Bytes::from(stored);
        let mut out = BytesMut::new();
        assert_eq!(fetched_to_kafka(&stored, true, &mut out).unwrap(), 3);
        let mut buf = out.freeze();
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        assert_eq!(sets.len(), 1, "one Kafka batch per stored batch");
        let r = &sets[0].records;
        assert_eq!(
            r.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![40, 41, 42]
        );
        assert_eq!(
            r.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![1_000, 1_005, 999]
        );
        assert_eq!(r[0].key.as_deref(), Some(&b"k0"[..]));
        assert_eq!(r[1].key, None);
        assert_eq!(r[1].value.as_deref(), Some(&b"value 1"[..]));
        // A null value is stored empty and comes back null (tombstone).
        assert_eq!(r[2].value, None);
        assert_eq!(
            r[2].headers
                .iter()
                .find(|(n, _)| n.as_str() == "h")
                .and_then(|(_, v)| v.as_deref()),
            Some(&b"v2"[..])
        );
        assert_eq!(r[0].producer_id, -1);
    }

    #[test]
    fn missing_timestamps_are_stamped_on_arrival() {
        let converted = from_kafka(&kafka_batch(-1, &[-1, -1])).unwrap();
        let batch = Batch::parse(&converted[0].batch).unwrap();
        assert!(batch.wants_arrival_timestamps());
        assert_eq!(converted[0].producer, ProducerStamp::NONE);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(from_kafka(&Bytes::from_static(&[0u8; 70])).is_err());
        assert_eq!(compression_of(&[0u8; 5]), None);
    }
}
