//! What storage keeps for mirroring: the mirror's durable cursors, and
//! appends at given offsets for a hub that receives a mirror.
//!
//! - Cursors (tree `mirror.cursors`): per (link, topic, partition) the
//!   offset below which the link's upstream acknowledged everything, with
//!   the topic's incarnation id (a topic deleted and created again starts
//!   without a cursor). A cursor is written after the upstream acknowledged
//!   and is durable with the next group commit (a ticket, like producer
//!   state). It is a hint, not the truth: on every (re)connect the mirror
//!   asks the upstream where it stands. The cursor sets `keep_from` at start
//!   (before maintenance runs) and is the resume point when the upstream
//!   partition is empty.
//!   For a Kafka upstream the cursor also carries the idempotent producer
//!   chain the partition continues after it (producer id, epoch, next
//!   sequence), and tree `mirror.producers` holds each link's own producer
//!   id, under a name the mirror chooses (see `crate::mirror::kafka` for
//!   why both must outlive a session).
//! - Mirrored appends ([`Storage::append_mirrored`]): batches arrive with
//!   the base offsets they have on the source; each is stored at exactly
//!   that offset (a gap is allowed: the source may have removed data), one
//!   that ends at or below the log end is a replay and is skipped, one that
//!   overlaps it is refused. So the receiving partition's log end is always
//!   the source offset to resume from, and a replay is never stored twice.
//!
//! This module does not decide what to mirror or talk to an upstream (that
//! is `crate::mirror`).

use std::sync::Arc;

use super::partition::{PartitionLog, Staged};
use super::{Storage, StorageError, Topic};
use crate::wire::batch::Batch;

/// Name of the cursor tree.
pub(super) const CURSOR_TREE: &str = "mirror.cursors";
/// Name of the tree of the links' Kafka producer ids.
pub(super) const PRODUCER_TREE: &str = "mirror.producers";

/// A Kafka idempotent producer's position on one upstream partition: who
/// writes its next record, with which sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerChain {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub next_sequence: i32,
}

/// A link's durable cursor of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorCursor {
    /// Every offset below was acknowledged upstream.
    pub offset: u64,
    /// Kafka: the producer chain that continues at `offset`.
    pub chain: Option<ProducerChain>,
}

/// Decides whether a topic is mirrored by some link (its partitions then
/// start with everything kept for the mirror).
pub type MirrorFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a mirrored append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorAppend {
    /// The partition's log end afterwards.
    pub log_end: u64,
    /// Records stored by this append.
    pub appended_records: u64,
    /// Records that were stored already (a replay), not stored again.
    pub skipped_records: u64,
}

fn cursor_key(link: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(link.len() + topic.len() + 6);
    key.extend_from_slice(link.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The topic part of a cursor key.
fn cursor_topic(key: &[u8]) -> Option<&[u8]> {
    let rest = &key[key.iter().position(|b| *b == 0)? + 1..];
    rest.get(..rest.len().checked_sub(5)?)
}

impl Storage {
    /// The durable cursor of `link` for a partition of `topic`: every
    /// offset below it was acknowledged upstream. `None` when the link
    /// never forwarded from this incarnation of the topic.
    pub fn mirror_cursor(
        &self,
        link: &str,
        topic: &Topic,
        partition: u32,
    ) -> Result<Option<MirrorCursor>, StorageError> {
        let value = self
            .cursors
            .get(cursor_key(link, &topic.meta.name, partition))
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(value.and_then(|v| {
            let (id, cursor) = decode_cursor(&v)?;
            (id == topic.meta.id).then_some(cursor)
        }))
    }

    /// Records that `link` forwarded everything below `cursor.offset` of a
    /// partition (and the producer chain that continues there). Durable
    /// once [`Storage::is_committed`] holds for the returned ticket.
    pub fn save_mirror_cursor(
        &self,
        link: &str,
        topic: &Topic,
        partition: u32,
        cursor: MirrorCursor,
    ) -> Result<u64, StorageError> {
        self.flusher.check_healthy()?;
        self.cursors
            .insert(
                cursor_key(link, &topic.meta.name, partition),
                encode_cursor(topic.meta.id, &cursor),
            )
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(self.flusher.commit_ticket())
    }

    /// The Kafka producer id and epoch a link writes with where no chain
    /// is known yet (`link`: the name the mirror keeps it under).
    pub fn mirror_producer(&self, link: &str) -> Result<Option<(i64, i16)>, StorageError> {
        let value = self
            .mirror_producers
            .get(link.as_bytes())
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(value.and_then(|v| {
            let id = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(v.get(8..10)?.try_into().ok()?);
            Some((id, epoch))
        }))
    }

    /// Records `link`'s Kafka producer. Durable once
    /// [`Storage::is_committed`] holds for the returned ticket.
    pub fn save_mirror_producer(
        &self,
        link: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<u64, StorageError> {
        self.flusher.check_healthy()?;
        let mut value = [0u8; 10];
        value[..8].copy_from_slice(&producer_id.to_be_bytes());
        value[8..].copy_from_slice(&producer_epoch.to_be_bytes());
        self.mirror_producers
            .insert(link.as_bytes(), &value[..])
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(self.flusher.commit_ticket())
    }

    /// The keys of every link's cursors of `topic` (deleted with it, in
    /// one transaction: [`Storage::delete_topic`]).
    pub(super) fn topic_cursor_keys(&self, topic: &str) -> Result<Vec<sled::IVec>, StorageError> {
        let mut keys = Vec::new();
        for key in self.cursors.iter().keys() {
            let key = key.map_err(|e| StorageError::sled(&self.dir, e))?;
            if cursor_topic(&key) == Some(topic.as_bytes()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Tells storage which topics a mirror link forwards: partitions of
    /// such topics created from now on keep everything for the mirror
    /// (`keep_from` 0) until the link reports progress.
    pub fn set_mirror_filter(&self, filter: MirrorFilter) {
        *self.mirror_filter.write().expect("mirror filter lock") = Some(filter);
    }

    /// Whether a mirror link forwards `topic` (see [`Storage::set_mirror_filter`]).
    pub fn is_mirrored(&self, topic: &str) -> bool {
        self.mirror_filter
            .read()
            .expect("mirror filter lock")
            .as_ref()
            .is_some_and(|f| f(topic))
    }

    /// Appends batches forwarded by another hub's mirror at the offsets
    /// they carry (see the module docs): replays are skipped, overlaps
    /// refused, gaps allowed. Batches must be ascending and carry no
    /// producer stamp. Durable once the partition's durable watermark
    /// reaches the returned log end.
    pub fn append_mirrored(
        &self,
        log: &Arc<PartitionLog>,
        batches: Vec<Vec<u8>>,
    ) -> Result<MirrorAppend, StorageError> {
        let incoming: u64 = batches.iter().map(|b| b.len() as u64).sum();
        self.append_with(log, incoming, || {
            let guard = log.lock_append();
            let (batches, outcome) = new_at_source_offsets(log, batches)?;
            if batches.is_empty() {
                return Ok((outcome, false));
            }
            let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
            // Under the append lock: a trim of this partition to make room
            // leaves its active segment alone (it only tries the lock).
            self.make_room(Some(log), bytes)?;
            let staged = Staged {
                first: log.log_end(),
                end: outcome.log_end,
                bytes,
            };
            log.insert_staged(&guard, &batches, &self.dir)?;
            log.publish(&guard, &staged);
            Ok((outcome, true))
        })
    }
}

/// The batches of a mirrored request that are new (a replay of what is
/// stored is skipped, an overlap refused), and what the append will do.
fn new_at_source_offsets(
    log: &PartitionLog,
    mut batches: Vec<Vec<u8>>,
) -> Result<(Vec<Vec<u8>>, MirrorAppend), StorageError> {
    let log_end = log.log_end();
    let mut end = log_end;
    let mut skipped_records = 0u64;
    let mut appended_records = 0u64;
    let mut keep = Vec::with_capacity(batches.len());
    for encoded in &batches {
        let batch = Batch::parse(encoded).map_err(|error| StorageError::Corrupt {
            topic: log.topic().to_string(),
            partition: log.partition(),
            offset: end,
            error,
        })?;
        if batch.header.producer_id >= 0 {
            return Err(StorageError::MirrorConflict(format!(
                "{}/{}: a mirrored batch at offset {} carries producer id {}; the mirror must clear producer stamps",
                log.topic(),
                log.partition(),
                batch.base_offset(),
                batch.header.producer_id
            )));
        }
        if batch.end_offset() <= end {
            skipped_records += u64::from(batch.record_count());
            keep.push(false);
            continue;
        }
        if batch.base_offset() < end {
            return Err(StorageError::MirrorConflict(format!(
                "{}/{}: mirrored batch {}..{} overlaps what is stored (log end {end}); \
                 the source's batches changed shape, or another writer used this topic",
                log.topic(),
                log.partition(),
                batch.base_offset(),
                batch.end_offset()
            )));
        }
        appended_records += u64::from(batch.record_count());
        end = batch.end_offset();
        keep.push(true);
    }
    if keep.contains(&false) {
        batches = batches
            .into_iter()
            .zip(keep)
            .filter_map(|(batch, kept)| kept.then_some(batch))
            .collect();
    }
    Ok((
        batches,
        MirrorAppend {
            log_end: end,
            appended_records,
            skipped_records,
        },
    ))
}

fn encode_cursor(topic_id: u64, cursor: &MirrorCursor) -> Vec<u8> {
    let mut value = Vec::with_capacity(30);
    value.extend_from_slice(&topic_id.to_be_bytes());
    value.extend_from_slice(&cursor.offset.to_be_bytes());
    if let Some(chain) = cursor.chain {
        value.extend_from_slice(&chain.producer_id.to_be_bytes());
        value.extend_from_slice(&chain.producer_epoch.to_be_bytes());
        value.extend_from_slice(&chain.next_sequence.to_be_bytes());
    }
    value
}

/// The topic id and cursor of a value (16 bytes, written before chains
/// existed, or 30).
fn decode_cursor(value: &[u8]) -> Option<(u64, MirrorCursor)> {
    let id = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let offset = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    let chain = match value.len() {
        16 => None,
        30 => Some(ProducerChain {
            producer_id: i64::from_be_bytes(value[16..24].try_into().ok()?),
            producer_epoch: i16::from_be_bytes(value[24..26].try_into().ok()?),
            next_sequence: i32::from_be_bytes(value[26..30].try_into().ok()?),
        }),
        _ => return None,
    };
    Some((id, MirrorCursor { offset, chain }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageOptions;
    use crate::wire::batch::{set_base_offset, BatchBuilder, Batches, Headers, ProducerStamp};

    /// One batch of `count` records at `base` (values name their offset).
    fn batch_at(base: u64, count: u64) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(4096, 1_000).unwrap();
        for i in 0..count {
            let value = format!("v{}", base + i);
            b.push(1_000, Some(b"k"), value.as_bytes(), Headers::EMPTY)
                .unwrap();
        }
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    /// The offset of every stored record (once durable), each checked
    /// against its value.
    fn stored_offsets(storage: &Storage, log: &PartitionLog) -> Vec<u64> {
        let end = log.log_end();
        while log.durable_end() < end {
            let listener = storage.durable_event().listen();
            if log.durable_end() >= end {
                break;
            }
            event_listener::Listener::wait(listener);
        }
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        let mut from = 0;
        loop {
            bytes.clear();
            let outcome = log.read(from, 1 << 20, &mut bytes).unwrap();
            if outcome.bytes == 0 {
                return out;
            }
            from = outcome.next_offset;
            for batch in Batches::new(&bytes) {
                let batch = batch.unwrap();
                for r in batch.records() {
                    let r = r.unwrap();
                    let at = batch.base_offset() + u64::from(r.offset_delta);
                    assert_eq!(r.value, format!("v{at}").as_bytes(), "record at {at}");
                    out.push(at);
                }
            }
        }
    }

    fn open() -> (tempfile::TempDir, Storage, Arc<PartitionLog>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage.create_topic("m", 1, Vec::new(), 1).unwrap();
        let log = topic.partition(0).unwrap().clone();
        (dir, storage, log)
    }

    #[test]
    fn a_full_replay_is_skipped() {
        let (_dir, storage, log) = open();
        let first = storage
            .append_mirrored(&log, vec![batch_at(0, 10), batch_at(10, 5)])
            .unwrap();
        assert_eq!(
            first,
            MirrorAppend {
                log_end: 15,
                appended_records: 15,
                skipped_records: 0
            }
        );
        // The same request again (the ack was lost): nothing is stored twice.
        let again = storage
            .append_mirrored(&log, vec![batch_at(0, 10), batch_at(10, 5)])
            .unwrap();
        assert_eq!(
            again,
            MirrorAppend {
                log_end: 15,
                appended_records: 0,
                skipped_records: 15
            }
        );
        assert_eq!(stored_offsets(&storage, &log), (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn a_request_overlapping_the_end_stores_only_what_is_new() {
        let (_dir, storage, log) = open();
        storage
            .append_mirrored(&log, vec![batch_at(0, 10)])
            .unwrap();
        // A resend that starts with what arrived and goes on past it.
        let outcome = storage
            .append_mirrored(
                &log,
                vec![batch_at(0, 10), batch_at(10, 4), batch_at(14, 6)],
            )
            .unwrap();
        assert_eq!(
            outcome,
            MirrorAppend {
                log_end: 20,
                appended_records: 10,
                skipped_records: 10
            }
        );
        assert_eq!(stored_offsets(&storage, &log), (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_straddling_the_end_is_a_conflict() {
        let (_dir, storage, log) = open();
        storage
            .append_mirrored(&log, vec![batch_at(0, 10)])
            .unwrap();
        // 5..15 neither repeats 0..10 nor follows it: the source's batches
        // changed shape or someone else wrote here.
        let err = storage
            .append_mirrored(&log, vec![batch_at(5, 10)])
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::MirrorConflict(m) if m.contains("overlaps")),
            "{err}"
        );
        // A conflict later in the request stores nothing of it.
        let err = storage
            .append_mirrored(&log, vec![batch_at(10, 5), batch_at(12, 5)])
            .unwrap_err();
        assert!(matches!(err, StorageError::MirrorConflict(_)), "{err}");
        assert_eq!(log.log_end(), 10);
        assert_eq!(stored_offsets(&storage, &log), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_with_a_producer_stamp_is_refused() {
        let (_dir, storage, log) = open();
        let mut b = BatchBuilder::with_capacity(4096, 1_000).unwrap();
        b.set_producer(ProducerStamp {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
        });
        b.push(1_000, None, b"v0", Headers::EMPTY).unwrap();
        let err = storage
            .append_mirrored(&log, vec![b.finish_vec()])
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::MirrorConflict(m) if m.contains("producer id 7")),
            "{err}"
        );
        assert_eq!(log.log_end(), 0);
    }

    #[test]
    fn a_gap_is_kept_and_a_replay_across_it_skipped() {
        let (_dir, storage, log) = open();
        storage
            .append_mirrored(&log, vec![batch_at(0, 10)])
            .unwrap();
        // The source removed 10..20 before forwarding it.
        let outcome = storage
            .append_mirrored(&log, vec![batch_at(20, 5)])
            .unwrap();
        assert_eq!(
            outcome,
            MirrorAppend {
                log_end: 25,
                appended_records: 5,
                skipped_records: 0
            }
        );
        let replay = storage
            .append_mirrored(
                &log,
                vec![batch_at(0, 10), batch_at(20, 5), batch_at(25, 1)],
            )
            .unwrap();
        assert_eq!(
            replay,
            MirrorAppend {
                log_end: 26,
                appended_records: 1,
                skipped_records: 15
            }
        );
        let expected: Vec<u64> = (0..10).chain(20..26).collect();
        assert_eq!(stored_offsets(&storage, &log), expected);
    }

    #[test]
    fn cursor_keys_name_their_topic() {
        let key = cursor_key("dc", "sensors.a", 7);
        assert_eq!(cursor_topic(&key), Some(&b"sensors.a"[..]));
        assert_eq!(cursor_topic(b"no-separator"), None);
        let plain = MirrorCursor {
            offset: 0,
            chain: None,
        };
        assert_eq!(decode_cursor(&[0; 16]), Some((0, plain)));
        assert_eq!(decode_cursor(&[0; 15]), None);
        assert_eq!(decode_cursor(&[0; 29]), None);
        let chained = MirrorCursor {
            offset: u64::MAX - 1,
            chain: Some(ProducerChain {
                producer_id: i64::MAX,
                producer_epoch: -1,
                next_sequence: i32::MAX,
            }),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(42, &chained)),
            Some((42, chained))
        );
        assert_eq!(decode_cursor(&encode_cursor(7, &plain)), Some((7, plain)));
    }

    #[test]
    fn cursors_and_link_producers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ProducerChain {
            producer_id: 9_000,
            producer_epoch: 3,
            next_sequence: 77,
        };
        {
            let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
            let topic = storage.create_topic("m", 2, Vec::new(), 1).unwrap();
            assert_eq!(storage.mirror_producer("dc").unwrap(), None);
            storage.save_mirror_producer("dc", 9_000, 3).unwrap();
            let cursor = MirrorCursor {
                offset: 120,
                chain: Some(chain),
            };
            storage.save_mirror_cursor("dc", &topic, 1, cursor).unwrap();
            storage.close().unwrap();
        }
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage.topic("m").unwrap();
        assert_eq!(storage.mirror_producer("dc").unwrap(), Some((9_000, 3)));
        assert_eq!(storage.mirror_producer("other").unwrap(), None);
        assert_eq!(
            storage.mirror_cursor("dc", &topic, 1).unwrap(),
            Some(MirrorCursor {
                offset: 120,
                chain: Some(chain)
            })
        );
        assert_eq!(storage.mirror_cursor("dc", &topic, 0).unwrap(), None);
    }
}
