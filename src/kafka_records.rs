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
        encode_batch(out, &records, Compression::None)?;
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
/// arrival when the producer sent none (−1). A compressed batch whose
/// records take more than `decompressed_bytes_max` is refused, without
/// ever holding more than that (a small frame of zeros can otherwise
/// decompress to gigabytes).
pub fn from_kafka(
    records: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<Converted>, RecordsError> {
    decode_sets(records, decompressed_bytes_max)?
        .iter()
        .map(|set| convert_set(&set.records))
        .collect()
}

/// Every record batch in `records`, each decompressed into at most
/// `decompressed_bytes_max` bytes (the codecs as in [`from_kafka`]).
pub fn decode_sets(
    records: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<kafka_protocol::records::RecordSet>, RecordsError> {
    let mut buf = records.clone();
    let decompress = |data: &mut Bytes, codec: Compression| {
        decompress_bounded(data, codec, decompressed_bytes_max).map_err(Into::into)
    };
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(&decompress))
            .map_err(|e| RecordsError::Decode(e.to_string()))?;
        out.push(set);
    }
    Ok(out)
}

/// zstd level of the Kafka record batches eddy writes (Kafka's default).
const ZSTD_LEVEL: i32 = 3;

/// Appends `records` to `out` as one Kafka record batch v2 compressed with
/// `compression`. zstd and LZ4 (Kafka's LZ4 is the LZ4 frame format: 64 KiB
/// independent blocks) go through eddy's own `zstd` and `lz4_flex`
/// dependencies (kafka-protocol's features would link the C libraries'
/// larger builds: Cargo.toml), gzip and Snappy through kafka-protocol's.
pub fn encode_batch(
    out: &mut BytesMut,
    records: &[Record],
    compression: Compression,
) -> Result<(), RecordsError> {
    use kafka_protocol::compression::{Compressor, Gzip, Snappy};
    use std::io::Write as _;
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    let compress = |plain: &mut BytesMut, out: &mut BytesMut, codec: Compression| {
        let copy = |tmp: &mut BytesMut| {
            tmp.extend_from_slice(plain);
            Ok(())
        };
        match codec {
            Compression::None => {
                out.extend_from_slice(plain);
                Ok(())
            }
            Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(out, copy),
            Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(out, copy),
            Compression::Lz4 => {
                let mut frame = lz4_flex::frame::FrameEncoder::new(bytes::BufMut::writer(out));
                frame.write_all(plain)?;
                frame.finish()?;
                Ok(())
            }
            Compression::Zstd => {
                out.extend_from_slice(&zstd::bulk::compress(plain, ZSTD_LEVEL)?);
                Ok(())
            }
        }
    };
    RecordBatchEncoder::encode_with_custom_compression(
        out,
        records.iter(),
        &options,
        Some(compress),
    )
    .map_err(|e| RecordsError::Encode(e.to_string()))
}

/// The snappy-java (xerial) stream header Kafka's Java clients write.
const XERIAL_SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// A batch's records section, decompressed into at most `limit` bytes.
fn decompress_bounded(
    data: &mut Bytes,
    codec: Compression,
    limit: usize,
) -> std::io::Result<Bytes> {
    use kafka_protocol::compression::{Decompressor, Snappy};
    use std::io::Read;
    let too_large = || {
        std::io::Error::other(format!(
            "the {codec:?} batch decompresses to more than {limit} bytes"
        ))
    };
    // Reads at most one byte past the limit, so nothing larger is held.
    let bounded = |reader: &mut dyn Read| -> std::io::Result<Bytes> {
        let mut out = Vec::new();
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(out))
    };
    let compressed = std::mem::take(data);
    Ok(match codec {
        Compression::None => compressed,
        Compression::Gzip => bounded(&mut flate2::read::GzDecoder::new(&compressed[..]))?,
        Compression::Lz4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(&compressed[..]))?,
        Compression::Zstd => bounded(&mut zstd::stream::read::Decoder::new(&compressed[..])?)?,
        Compression::Snappy => {
            // Snappy states each block's size up front: summed and
            // checked before kafka-protocol decompresses (raw or xerial).
            if snappy_len(&compressed).is_none_or(|len| len > limit) {
                return Err(too_large());
            }
            let mut compressed = compressed;
            <Snappy as Decompressor<Bytes>>::decompress(&mut compressed, |out| Ok(out.clone()))
                .map_err(|e| std::io::Error::other(e.to_string()))?
        }
    })
}

/// The decompressed length of Snappy data (raw, or snappy-java's framing
/// of length-prefixed raw blocks); `None` when unreadable.
fn snappy_len(data: &[u8]) -> Option<usize> {
    let Some(mut rest) = data.strip_prefix(&XERIAL_SNAPPY_HEADER[..]) else {
        return snap::raw::decompress_len(data).ok();
    };
    let mut total = 0usize;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let block = tail.get(..len)?;
        total = total.checked_add(snap::raw::decompress_len(block).ok()?)?;
        rest = &tail[len..];
    }
    Some(total)
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
        let converted = from_kafka(&kafka, 1 << 20).unwrap();
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
        let converted = from_kafka(&kafka_batch(-1, &[-1, -1]), 1 << 20).unwrap();
        let batch = Batch::parse(&converted[0].batch).unwrap();
        assert!(batch.wants_arrival_timestamps());
        assert_eq!(converted[0].producer, ProducerStamp::NONE);
    }

    #[test]
    fn every_codec_decompresses_but_never_past_the_limit() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // 2 MiB of zeros: a few KiB compressed.
            let record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 5,
                key: None,
                value: Some(Bytes::from(vec![0u8; 2 << 20])),
                headers: IndexMap::new(),
            };
            let mut out = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut out, [record].iter(), &options).unwrap();
            let kafka = out.freeze();
            assert!(kafka.len() < 200 << 10, "{compression:?}: {}", kafka.len());
            let error = from_kafka(&kafka, 1 << 20).unwrap_err().to_string();
            assert!(
                error.contains("more than 1048576 bytes"),
                "{compression:?}: {error}"
            );
            let converted = from_kafka(&kafka, 3 << 20).unwrap();
            let batch = Batch::parse(&converted[0].batch).unwrap();
            let value = batch.records().next().unwrap().unwrap().value;
            assert_eq!(value.len(), 2 << 20, "{compression:?}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(from_kafka(&Bytes::from_static(&[0u8; 70]), 1 << 20).is_err());
        assert_eq!(compression_of(&[0u8; 5]), None);
    }
}
