//! Routing a produced batch to partitions and cutting it into stored batches.
//!
//! Pure functions over [`Batch`]es: no storage, no I/O. The broker checks and
//! routes a batch in one pass ([`route`]); when the batch goes to a single
//! partition and is small enough it is stored as it came (stamped with the
//! arrival time when the device has no clock), otherwise [`rebuild`]
//! re-encodes it into per-partition batches of about the storage target size.

use std::collections::BTreeMap;

use crate::wire::batch::{
    record_len_max, Batch, BatchBuilder, BatchError, ProducerStamp, BATCH_HEADER_BYTES,
};
use crate::wire::partitioner::partition_for_key;
use crate::wire::producer::sequence_after;

/// Where each record of a batch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routes {
    /// Every record goes to this partition.
    Single(u32),
    /// Record `i` goes to partition `routes[i]`.
    PerRecord(Vec<u32>),
}

/// Checks a produced batch record by record (dense offsets, timestamps,
/// headers) and decides each record's partition: `explicit` if given, else
/// Kafka's murmur2 of the key, else `keyless` (the request's round-robin pick).
pub fn route(
    batch: &Batch<'_>,
    partitions: u32,
    explicit: Option<u32>,
    keyless: u32,
) -> Result<Routes, BatchError> {
    route_with(batch, partitions, explicit, || keyless)
}

/// [`route`], asking `next_keyless` for the keyless records' partition only
/// when the batch has a keyless record and no explicit partition, and then
/// once: every keyless record of a batch goes to that one partition (Kafka's
/// sticky partitioner), and a keyed or explicit batch does not move the
/// round robin on.
pub fn route_with(
    batch: &Batch<'_>,
    partitions: u32,
    explicit: Option<u32>,
    mut next_keyless: impl FnMut() -> u32,
) -> Result<Routes, BatchError> {
    let mut keyless: Option<u32> = None;
    let stamp = batch.wants_arrival_timestamps();
    let mut routes: Vec<u32> = Vec::new();
    let mut single: Option<u32> = None;
    for (index, record) in batch.records().enumerate() {
        let record = record?;
        if u64::from(record.offset_delta) != index as u64
            || (stamp && record.timestamp_delta_ms != 0)
        {
            return Err(BatchError::NotDense);
        }
        record.headers.validate()?;
        let partition = match (explicit, record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => *keyless.get_or_insert_with(&mut next_keyless),
        };
        match single {
            None if routes.is_empty() => single = Some(partition),
            Some(p) if p == partition => {}
            Some(p) => {
                // First record that goes elsewhere: materialise the routes so far.
                routes = vec![p; index];
                routes.push(partition);
                single = None;
            }
            None => routes.push(partition),
        }
    }
    match single {
        Some(p) => Ok(Routes::Single(p)),
        None if routes.is_empty() => Err(BatchError::Empty),
        None => Ok(Routes::PerRecord(routes)),
    }
}

/// The stored batches for one partition, and how many records they hold.
#[derive(Debug, Default)]
pub struct PartitionChunks {
    pub batches: Vec<Vec<u8>>,
    pub record_count: u32,
}

/// Re-encodes `batch` into batches of about `chunk_bytes` per partition,
/// keeping record order within each partition. A record larger than
/// `chunk_bytes` gets a batch of its own. With an idempotent `producer`
/// (its id ≥ 0; only for batches routed to one partition) each chunk keeps
/// the producer id and epoch, and the sequence of its first record.
pub fn rebuild(
    batch: &Batch<'_>,
    routes: &Routes,
    arrival_ms: i64,
    chunk_bytes: usize,
    producer: ProducerStamp,
) -> Result<BTreeMap<u32, PartitionChunks>, BatchError> {
    struct Open {
        builder: Option<BatchBuilder<Vec<u8>>>,
        done: PartitionChunks,
    }
    let mut open: BTreeMap<u32, Open> = BTreeMap::new();
    let stamp = batch.wants_arrival_timestamps();
    for (index, record) in batch.records().enumerate() {
        let record = record?;
        let partition = match routes {
            Routes::Single(p) => *p,
            Routes::PerRecord(r) => *r.get(index).ok_or(BatchError::CountMismatch)?,
        };
        let timestamp = if stamp {
            arrival_ms
        } else {
            batch.timestamp_of(&record)
        };
        let slot = open.entry(partition).or_insert_with(|| Open {
            builder: None,
            done: PartitionChunks::default(),
        });
        if let Some(builder) = slot.builder.as_mut() {
            match builder.push(timestamp, record.key, record.value, record.headers) {
                Ok(()) => {
                    slot.done.record_count += 1;
                    continue;
                }
                Err(BatchError::Full) => {
                    let full = slot.builder.take().expect("builder present");
                    slot.done.batches.push(full.finish_vec());
                }
                Err(e) => return Err(e),
            }
        }
        let needed = BATCH_HEADER_BYTES + record_len_max(record.key, record.value, record.headers);
        let mut builder = BatchBuilder::with_capacity(needed.max(chunk_bytes), timestamp)?;
        if producer.producer_id >= 0 {
            // Records before this chunk, in the whole batch's order.
            let before = u32::try_from(index).map_err(|_| BatchError::CountMismatch)?;
            builder.set_producer(ProducerStamp {
                base_sequence: sequence_after(producer.base_sequence, before),
                ..producer
            });
        }
        builder.push(timestamp, record.key, record.value, record.headers)?;
        slot.done.record_count += 1;
        if needed > chunk_bytes {
            // Oversized: a batch of its own, closed at once.
            slot.done.batches.push(builder.finish_vec());
        } else {
            slot.builder = Some(builder);
        }
    }
    if open.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(open
        .into_iter()
        .map(|(p, mut slot)| {
            if let Some(builder) = slot.builder.take() {
                slot.done.batches.push(builder.finish_vec());
            }
            (p, slot.done)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::{stamp_arrival_time, Batches, Headers, NO_TIMESTAMP};

    fn batch_of(keys: &[Option<&str>], first_ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(1 << 16, first_ts).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let ts = if first_ts == NO_TIMESTAMP {
                NO_TIMESTAMP
            } else {
                first_ts + i as i64
            };
            b.push(
                ts,
                k.map(str::as_bytes),
                format!("v{i}").as_bytes(),
                Headers::EMPTY,
            )
            .unwrap();
        }
        b.finish_vec()
    }

    #[test]
    fn routes_by_murmur2_explicit_and_round_robin() {
        let bytes = batch_of(&[Some("a"), Some("b"), None, Some("a")], 100);
        let batch = Batch::parse(&bytes).unwrap();
        assert_eq!(route(&batch, 8, Some(5), 0).unwrap(), Routes::Single(5));
        let keyed = route(&batch, 8, None, 3).unwrap();
        let pa = partition_for_key(b"a", 8);
        let pb = partition_for_key(b"b", 8);
        let expected: Vec<u32> = vec![pa, pb, 3, pa];
        match keyed {
            Routes::PerRecord(r) => assert_eq!(r, expected),
            Routes::Single(p) => assert!(expected.iter().all(|&e| e == p)),
        }
        let keyless = batch_of(&[None, None], 100);
        assert_eq!(
            route(&Batch::parse(&keyless).unwrap(), 8, None, 6).unwrap(),
            Routes::Single(6)
        );
    }

    #[test]
    fn the_round_robin_moves_on_once_per_batch_with_keyless_records() {
        let asked = |bytes: &[u8], explicit: Option<u32>| {
            let mut asks = 0;
            let routes = route_with(&Batch::parse(bytes).unwrap(), 8, explicit, || {
                asks += 1;
                4
            })
            .unwrap();
            (routes, asks)
        };
        let keyless = batch_of(&[None, None, None], 100);
        assert_eq!(asked(&keyless, None), (Routes::Single(4), 1));
        assert_eq!(asked(&keyless, Some(2)), (Routes::Single(2), 0));
        let keyed = batch_of(&[Some("a"), Some("b")], 100);
        assert_eq!(asked(&keyed, None).1, 0, "keyed batches leave it alone");
        let mixed = batch_of(&[None, Some("a"), None], 100);
        let pa = partition_for_key(b"a", 8);
        let (routes, asks) = asked(&mixed, None);
        assert_eq!(asks, 1);
        if pa != 4 {
            assert_eq!(routes, Routes::PerRecord(vec![4, pa, 4]));
        }
    }

    #[test]
    fn rebuild_keeps_order_and_content_per_partition() {
        let keys: Vec<String> = (0..500).map(|i| format!("key-{}", i % 37)).collect();
        let key_refs: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let bytes = batch_of(&key_refs, 1_000);
        let batch = Batch::parse(&bytes).unwrap();
        let routes = route(&batch, 4, None, 0).unwrap();
        let chunks = rebuild(&batch, &routes, 0, 512, ProducerStamp::NONE).unwrap();
        let mut seen = 0;
        for (p, part) in &chunks {
            let mut last_index = None;
            let mut count = 0;
            for encoded in &part.batches {
                assert!(
                    encoded.len() <= 512 + 64,
                    "chunk of {} bytes",
                    encoded.len()
                );
                let b = Batch::parse(encoded).unwrap();
                b.validate_produced().unwrap();
                for r in b.records() {
                    let r = r.unwrap();
                    let key = core::str::from_utf8(r.key.unwrap()).unwrap();
                    assert_eq!(partition_for_key(key.as_bytes(), 4), *p);
                    let index: usize = core::str::from_utf8(r.value).unwrap()[1..].parse().unwrap();
                    assert_eq!(
                        b.timestamp_of(&r),
                        1_000 + index as i64,
                        "timestamps survive"
                    );
                    assert!(last_index.is_none_or(|l| l < index), "order kept");
                    last_index = Some(index);
                    count += 1;
                }
            }
            assert_eq!(count, part.record_count);
            seen += count;
        }
        assert_eq!(seen, 500);
        // Concatenated they parse as a fetch result would.
        let all: Vec<u8> = chunks.values().flat_map(|c| c.batches.concat()).collect();
        assert!(Batches::new(&all).all(|b| b.is_ok()));
    }

    #[test]
    fn arrival_time_is_stamped() {
        let mut bytes = batch_of(&[None, None], NO_TIMESTAMP);
        let batch = Batch::parse(&bytes).unwrap();
        let chunks = rebuild(
            &batch,
            &Routes::Single(0),
            777,
            1 << 16,
            ProducerStamp::NONE,
        )
        .unwrap();
        let b = Batch::parse(&chunks[&0].batches[0]).unwrap();
        assert!(b.records().all(|r| b.timestamp_of(&r.unwrap()) == 777));
        stamp_arrival_time(&mut bytes, 888).unwrap();
        let b = Batch::parse(&bytes).unwrap();
        assert!(b.records().all(|r| b.timestamp_of(&r.unwrap()) == 888));
        assert_eq!(b.header.max_timestamp_ms, 888);
    }

    #[test]
    fn oversized_record_gets_its_own_batch() {
        let mut b = BatchBuilder::with_capacity(1 << 20, 5).unwrap();
        b.push(5, None, &[1u8; 10], Headers::EMPTY).unwrap();
        b.push(5, None, &[2u8; 100_000], Headers::EMPTY).unwrap();
        b.push(5, None, &[3u8; 10], Headers::EMPTY).unwrap();
        let bytes = b.finish_vec();
        let batch = Batch::parse(&bytes).unwrap();
        let chunks = rebuild(&batch, &Routes::Single(0), 0, 4096, ProducerStamp::NONE).unwrap();
        let sizes: Vec<u32> = chunks[&0]
            .batches
            .iter()
            .map(|c| Batch::parse(c).unwrap().record_count())
            .collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn sparse_or_unstamped_batches_are_refused() {
        let mut b = BatchBuilder::with_capacity(512, 0).unwrap();
        b.push_at(0, 0, None, b"a", Headers::EMPTY).unwrap();
        b.push_at(2, 0, None, b"b", Headers::EMPTY).unwrap();
        let bytes = b.finish_vec();
        assert_eq!(
            route(&Batch::parse(&bytes).unwrap(), 1, None, 0),
            Err(BatchError::NotDense)
        );
    }
}
