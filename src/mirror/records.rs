//! Records for a Kafka upstream: eddy batches → one Kafka record batch v2,
//! and the `eddy.source` header that makes the mirror exactly once.
//!
//! Every mirrored record keeps its key, value, timestamp (CreateTime) and
//! headers, and gets one more header, [`SOURCE_HEADER`], whose value is its
//! source position `HUB_ID/TOPIC/PARTITION/OFFSET` (text, so any Kafka
//! consumer can read it; hub ids and topic names never contain `/`). On a
//! compacted topic an empty value is a tombstone in eddy and becomes a null
//! value (Kafka's tombstone). Kafka headers are a map in the codec: a record
//! with a header name given twice keeps the last value.
//!
//! The batch is encoded by `kafka-protocol` (CRC32C, varints, optional
//! Snappy, LZ4 or zstd) with the link's idempotent producer id, epoch and
//! sequence. Every stored batch of one read (up to the link's
//! `request_bytes_max`) goes into one Kafka batch, so records from many
//! small device batches are compressed together.
//! Pure: no I/O.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};

use super::chain::after_record;
use crate::config::mirror::UplinkCompression;
use crate::kafka_records::to_kafka_record;
use crate::storage::ProducerChain;
use crate::wire::batch::Batches;

/// Name of the header carrying a record's source position.
pub const SOURCE_HEADER: &str = "eddy.source";

/// Where a mirrored record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub hub: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// The header value of a source position.
pub fn format_source(hub: &str, topic: &str, partition: u32, offset: u64) -> String {
    format!("{hub}/{topic}/{partition}/{offset}")
}

/// Parses a [`SOURCE_HEADER`] value.
pub fn parse_source(value: &[u8]) -> Option<SourcePosition> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let (hub, topic) = parts.next()?.split_once('/')?;
    if hub.is_empty() || topic.is_empty() || topic.contains('/') {
        return None;
    }
    Some(SourcePosition {
        hub: hub.to_string(),
        topic: topic.to_string(),
        partition,
        offset,
    })
}

/// Who writes the batch (the link's idempotent producer) and from where.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext<'a> {
    pub hub: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub compression: UplinkCompression,
    /// Empty values become null (the topic is compacted).
    pub tombstones: bool,
}

/// One encoded Kafka record batch.
#[derive(Debug, Clone)]
pub struct KafkaBatch {
    /// The record batch (v2), ready for a Produce request.
    pub bytes: Bytes,
    pub records: u32,
}

/// Converts the eddy batches in `stored` (concatenated, as read from a
/// partition) into one Kafka record batch, leaving out records below
/// `from`. `take_sequence(n)` is called once with the number of records
/// and returns the sequence of the first (the producer's next one for the
/// partition). `None` when no record is left.
pub fn to_kafka(
    stored: Bytes,
    from: u64,
    ctx: &BatchContext<'_>,
    take_sequence: impl FnOnce(u32) -> i32,
) -> Result<Option<KafkaBatch>, String> {
    let mut records: Vec<Record> = Vec::new();
    // Every source position of this batch in one buffer, sliced per record.
    let mut positions = String::new();
    let mut spans = Vec::new();
    for batch in Batches::new(&stored) {
        let batch = batch.map_err(|e| format!("stored batch unreadable: {e}"))?;
        for record in batch.records() {
            let record = record.map_err(|e| format!("stored record unreadable: {e}"))?;
            let offset = batch.base_offset() + u64::from(record.offset_delta);
            if offset < from {
                continue;
            }
            let start = positions.len();
            positions.push_str(&format_source(ctx.hub, ctx.topic, ctx.partition, offset));
            spans.push((start, positions.len()));
            let index = i32::try_from(records.len()).map_err(|_| "too many records")?;
            let mut kafka =
                to_kafka_record(&stored, &batch, &record, i64::from(index), ctx.tombstones)
                    .map_err(|e| e.to_string())?;
            kafka.producer_id = ctx.producer_id;
            kafka.producer_epoch = ctx.producer_epoch;
            kafka.sequence = index;
            records.push(kafka);
        }
    }
    if records.is_empty() {
        return Ok(None);
    }
    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
    let base_sequence = take_sequence(count);
    let positions = Bytes::from(positions.into_bytes());
    for (record, (start, end)) in records.iter_mut().zip(spans) {
        record.sequence = record.sequence.wrapping_add(base_sequence) & i32::MAX;
        let value = positions.slice(start..end);
        record.headers.insert(
            StrBytes::from_static_str(SOURCE_HEADER),
            Some(value.clone()),
        );
    }
    let compression = match ctx.compression {
        UplinkCompression::None => Compression::None,
        UplinkCompression::Snappy => Compression::Snappy,
        UplinkCompression::Lz4 => Compression::Lz4,
        UplinkCompression::Zstd => Compression::Zstd,
    };
    let mut out = BytesMut::with_capacity(stored.len() + records.len() * 48 + 256);
    crate::kafka_records::encode_batch(&mut out, &records, compression)
        .map_err(|e| e.to_string())?;
    Ok(Some(KafkaBatch {
        bytes: out.freeze(),
        records: count,
    }))
}

/// One record of an upstream partition's tail, as the resume logic needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRecord {
    /// Offset in the upstream partition.
    pub offset: i64,
    /// Its source position, when it has the header.
    pub source: Option<SourcePosition>,
    /// The idempotent producer that wrote it and the sequence of the record
    /// after it (from its batch's producer id, epoch and base sequence);
    /// `None` when it was not written idempotently.
    pub next: Option<ProducerChain>,
}

/// Most bytes one upstream record batch may decompress to when the link
/// reads the upstream's tail (its fetches ask for at most 1 MiB; a batch
/// of Kafka's default `max.message.bytes` decompresses well within this).
const TAIL_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Decodes the record batches of a Fetch answer (control batches left out).
pub fn decode_tail(records: &Bytes) -> Result<Vec<TailRecord>, String> {
    let sets = crate::kafka_records::decode_sets(records, TAIL_DECOMPRESSED_BYTES_MAX)
        .map_err(|e| format!("cannot decode the upstream's record batches: {e}"))?;
    let mut out = Vec::new();
    for set in sets {
        for record in set.records {
            if record.control {
                continue;
            }
            let source = record
                .headers
                .iter()
                .find(|(name, _)| name.as_str() == SOURCE_HEADER)
                .and_then(|(_, v)| v.as_ref())
                .and_then(|v| parse_source(v));
            // The decoder adds the offset delta to the base sequence without
            // Kafka's wrap after i32::MAX.
            let next = after_record(
                record.producer_id,
                record.producer_epoch,
                record.sequence & i32::MAX,
            );
            out.push(TailRecord {
                offset: record.offset,
                source,
                next,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::{set_base_offset, BatchBuilder, Headers};
    use kafka_protocol::records::RecordBatchDecoder;

    fn stored(base: u64, values: &[&[u8]]) -> Vec<u8> {
        let headers = Headers::encode_vec(&[("device", b"d-1"), ("schema", b"7")]);
        let mut b = BatchBuilder::with_capacity(4096, 1_000).unwrap();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            b.push(1_000 + i as i64, Some(key.as_bytes()), v, Headers(&headers))
                .unwrap();
        }
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    fn ctx(compression: UplinkCompression) -> BatchContext<'static> {
        BatchContext {
            hub: "gw-1",
            topic: "sensors",
            partition: 3,
            producer_id: 12,
            producer_epoch: 1,
            compression,
            tombstones: true,
        }
    }

    #[test]
    fn source_positions_round_trip() {
        let text = format_source("gw-1", "a.b-c", 7, u64::MAX);
        let parsed = parse_source(text.as_bytes()).unwrap();
        assert_eq!(
            parsed,
            SourcePosition {
                hub: "gw-1".into(),
                topic: "a.b-c".into(),
                partition: 7,
                offset: u64::MAX
            }
        );
        for bad in ["", "a/b/c", "a/b/1/x", "/t/1/2", "a//1/2", "a/b/c/1/2"] {
            assert_eq!(parse_source(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn batches_convert_with_everything_kept() {
        for compression in [
            UplinkCompression::None,
            UplinkCompression::Snappy,
            UplinkCompression::Lz4,
            UplinkCompression::Zstd,
        ] {
            let mut both = stored(100, &[b"a", b"", b"c"]);
            both.extend(stored(103, &[b"d"]));
            let mut asked = None;
            let batch = to_kafka(Bytes::from(both), 101, &ctx(compression), |n| {
                asked = Some(n);
                40
            })
            .unwrap()
            .unwrap();
            assert_eq!(asked, Some(3));
            assert_eq!(batch.records, 3);
            let mut buf = batch.bytes.clone();
            let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
            assert_eq!(sets.len(), 1);
            let records = &sets[0].records;
            assert_eq!(records.len(), 3);
            // Record 100 was below `from`; 101 is a tombstone.
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[0].value, None);
            assert_eq!(records[0].timestamp, 1_001);
            assert_eq!(records[0].sequence, 40);
            assert_eq!(records[2].sequence, 42);
            assert_eq!(records[2].value.as_deref(), Some(&b"d"[..]));
            assert_eq!(records[2].producer_id, 12);
            assert_eq!(
                records[1]
                    .headers
                    .iter()
                    .find(|(n, _)| n.as_str() == "device")
                    .and_then(|(_, v)| v.clone())
                    .as_deref(),
                Some(&b"d-1"[..])
            );
            let tail = decode_tail(&batch.bytes).unwrap();
            let offsets: Vec<u64> = tail
                .iter()
                .map(|r| r.source.as_ref().unwrap().offset)
                .collect();
            assert_eq!(offsets, vec![101, 102, 103]);
            assert_eq!(tail[2].source.as_ref().unwrap().partition, 3);
            // The chain continues after the batch's last record.
            assert_eq!(
                tail[2].next,
                Some(ProducerChain {
                    producer_id: 12,
                    producer_epoch: 1,
                    next_sequence: 43
                })
            );
        }
    }

    #[test]
    fn nothing_left_is_none() {
        let bytes = Bytes::from(stored(10, &[b"x"]));
        assert!(to_kafka(bytes, 11, &ctx(UplinkCompression::None), |_| 0)
            .unwrap()
            .is_none());
    }
}
