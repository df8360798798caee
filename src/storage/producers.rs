//! Idempotent producer state: stable producer ids and sequence dedupe.
//!
//! Three sled trees:
//!
//! - `producer_ids`: producer name (a device id) → producer id (big-endian
//!   i64), so a device keeps its id across reboots and server restarts.
//! - `producer_state`: producer id → [`ProducerState`] (postcard): the
//!   current epoch, the next expected sequence and where the last
//!   [`PRODUCER_WINDOW_BATCHES_MAX`] batches landed.
//! - `producer_checkpoints`: (topic id, partition) → offset below which every
//!   stamped batch of that partition is reflected in `producer_state`.
//!
//! Crash consistency without sled transactions (they take sled's global
//! write lock, which waits for every group-commit flush and stalled the
//! device path): a stamped batch keeps its producer id, epoch and sequence
//! in its stored header. Under the partition's append lock eddy inserts the
//! batch, then the producer's new state, and every
//! [`PRODUCER_CHECKPOINT_EVERY_APPENDS`] appends the partition checkpoint
//! (the very first stamped append to a partition writes a checkpoint
//! *before* its batch). sled recovers a prefix of its writes, so after a
//! crash the states are correct up to the checkpoint, and
//! [`Producers::recover`] replays the stamped batches after it (at most
//! that many per partition, plus what one flush round covers: sled is synced
//! with a batch only when a checkpoint was written, [`Checkpointed`]). A
//! resend is then answered with its original offsets and never appended
//! twice; nothing acknowledged is lost. The other way round, a state that
//! sled kept for a batch a power cut took is rolled back first
//! ([`Producers::forget_lost`]).
//!
//! Kept general on purpose: a producer is any stable name with a sequence
//! (a device; later a mirror source replaying its positions). This module
//! does not know about connections or how a batch was routed.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::partition::PartitionLog;
use super::{StorageError, Topic};
use crate::tls::ANONYMOUS_IDENTITY;
use crate::wire::batch::{Batch, ProducerStamp};
use crate::wire::producer::{
    epoch_after, sequence_after, sequence_order, ProducerInit, SequenceOrder,
};
use serde::{Deserialize, Serialize};

pub use crate::wire::producer::PRODUCER_WINDOW_BATCHES_MAX;

/// Stamped appends to a partition between two writes of its checkpoint:
/// bounds what recovery replays per partition, while keeping a hot key
/// out of every append.
pub const PRODUCER_CHECKPOINT_EVERY_APPENDS: u32 = 64;

/// Most producers whose state is cached in memory; beyond it the cache is
/// emptied of producers nobody is using (they are re-read from sled).
pub const PRODUCER_CACHE_MAX: usize = 100_000;

/// Where a batch (or its part for one partition) landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedPart {
    pub partition: u32,
    pub base_offset: u64,
    pub record_count: u32,
}

/// A batch eddy appended for a producer, remembered to answer resends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedBatch {
    /// Incarnation of the topic ([`super::TopicMeta::id`]).
    pub topic_id: u64,
    pub base_sequence: i32,
    pub record_count: u32,
    pub parts: Vec<LandedPart>,
}

/// What eddy knows about one producer id (stored, postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub name: String,
    pub epoch: i16,
    /// Base sequence the next new batch must carry; `None` until the
    /// producer's first batch (which may start anywhere).
    pub next_sequence: Option<i32>,
    /// The most recent batches, oldest first.
    pub recent: VecDeque<LandedBatch>,
}

/// The outcome of an idempotent append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentAppend {
    /// Appended now.
    Appended(Vec<LandedPart>),
    /// Appended before: the original offsets; nothing was written.
    Duplicate(Vec<LandedPart>),
}

/// Whether an idempotent append wrote its partition's checkpoint.
///
/// Only then must the flush round that makes the batch durable sync sled
/// too. The producer's new state need not be durable with its batch: the
/// batch carries its stamp, and after a crash every stamped batch past the
/// partition's last durable checkpoint is replayed into the states
/// ([`Producers::recover`]). A checkpoint is written before a partition's
/// first stamped batch (since start) and then every
/// [`PRODUCER_CHECKPOINT_EVERY_APPENDS`] appends, which bounds that replay.
/// Saves sled's flush and `fdatasync` in most rounds of a device fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checkpointed {
    Yes,
    No,
}

type Shared = Arc<Mutex<ProducerState>>;

/// The producer trees and the in-memory cache of their states.
pub(super) struct Producers {
    ids: sled::Tree,
    states: sled::Tree,
    checkpoints: sled::Tree,
    /// Per producer id: its state behind its own lock, so producers never
    /// wait for each other (only for the partitions they append to).
    cache: Mutex<HashMap<i64, Shared>>,
    /// Partitions known to have a checkpoint (topic id, partition), with
    /// the stamped appends since it was last written.
    checkpointed: Mutex<HashMap<(u64, u32), u32>>,
    /// Serialises `init` (allocating ids for new names).
    init_lock: Mutex<()>,
}

impl Producers {
    pub(super) fn open(db: &sled::Db, dir: &Path) -> Result<Producers, StorageError> {
        let open = |name| db.open_tree(name).map_err(|e| StorageError::sled(dir, e));
        Ok(Producers {
            ids: open("producer_ids")?,
            states: open("producer_state")?,
            checkpoints: open("producer_checkpoints")?,
            cache: Mutex::new(HashMap::new()),
            checkpointed: Mutex::new(HashMap::new()),
            init_lock: Mutex::new(()),
        })
    }

    /// The producer id of `owner`'s `name` (allocated on first use), with a
    /// new epoch that fences every earlier session of it. The caller makes
    /// it durable.
    pub(super) fn init(
        &self,
        db: &sled::Db,
        dir: &Path,
        owner: &str,
        name: &str,
    ) -> Result<ProducerInit, StorageError> {
        let name = &owned_name(owner, name);
        let _init = self.init_lock.lock().expect("init lock");
        let sled_err = |e| StorageError::sled(dir, e);
        let existing = self.ids.get(name.as_bytes()).map_err(sled_err)?;
        let producer_id = match existing {
            Some(id) => i64::from_be_bytes(be8(&id)),
            None => {
                let id = db.generate_id().map_err(sled_err)?;
                // Ids are non-negative (-1 means "not idempotent" on the wire).
                let id = i64::try_from(id)
                    .map_err(|_| StorageError::Failed("producer ids exhausted".to_string()))?;
                let fresh = ProducerState {
                    name: name.to_string(),
                    epoch: -1,
                    next_sequence: None,
                    recent: VecDeque::new(),
                };
                // State before the name: sled recovers a prefix of its
                // writes, so a name that survives always has its state.
                self.states
                    .insert(id.to_be_bytes(), encode(&fresh))
                    .map_err(sled_err)?;
                self.ids
                    .insert(name.as_bytes(), &id.to_be_bytes())
                    .map_err(sled_err)?;
                id
            }
        };
        let shared = self
            .get(dir, producer_id)?
            .ok_or_else(|| StorageError::BadMeta {
                topic: format!("producer {name:?}"),
                reason: format!("producer id {producer_id} has no stored state"),
            })?;
        let mut state = shared.lock().expect("producer lock");
        let mut next = state.clone();
        next.epoch = epoch_after(state.epoch);
        self.states
            .insert(producer_id.to_be_bytes(), encode(&next))
            .map_err(sled_err)?;
        *state = next;
        Ok(ProducerInit {
            producer_id,
            producer_epoch: state.epoch,
            next_sequence: state.next_sequence.unwrap_or(0),
        })
    }

    /// The cached (or stored) state of `producer_id`.
    fn get(&self, dir: &Path, producer_id: i64) -> Result<Option<Shared>, StorageError> {
        let mut cache = self.cache.lock().expect("producer cache");
        if let Some(shared) = cache.get(&producer_id) {
            return Ok(Some(shared.clone()));
        }
        let Some(stored) = self
            .states
            .get(producer_id.to_be_bytes())
            .map_err(|e| StorageError::sled(dir, e))?
        else {
            return Ok(None);
        };
        let state: ProducerState =
            postcard::from_bytes(&stored).map_err(|e| StorageError::BadMeta {
                topic: format!("producer {producer_id}"),
                reason: e.to_string(),
            })?;
        if cache.len() >= PRODUCER_CACHE_MAX {
            // Only entries nobody holds right now can go.
            cache.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let shared = Arc::new(Mutex::new(state));
        cache.insert(producer_id, shared.clone());
        Ok(Some(shared))
    }

    /// Appends `batches` (all for partition `log`, holding `record_count`
    /// records) for the producer in `stamp`, unless this batch was appended
    /// before. Every batch must carry the stamp in its header (the first
    /// one the batch's base sequence, the next ones continuing it).
    /// `make_room` runs once the batch is known to be new, before it is
    /// written (the disk budget), and may refuse it. Also returns whether a
    /// partition checkpoint was written, which the next flush round must
    /// sync sled for (see [`Checkpointed`]).
    // The batch's own inputs plus the budget hook; a struct for them would
    // only move the list one call up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
        &self,
        dir: &Path,
        owner: &str,
        topic: &Topic,
        log: &Arc<PartitionLog>,
        stamp: ProducerStamp,
        record_count: u32,
        batches: &mut [Vec<u8>],
        make_room: impl FnOnce() -> Result<(), StorageError>,
    ) -> Result<(IdempotentAppend, Checkpointed), StorageError> {
        let shared = self
            .get(dir, stamp.producer_id)?
            .ok_or(StorageError::UnknownProducer {
                producer_id: stamp.producer_id,
            })?;
        let mut state = shared.lock().expect("producer lock");
        if owner_of(&state.name) != owner {
            // Exactly what an id never issued gets: nothing about the
            // producer (its name, epoch, sequence) reaches another identity.
            return Err(StorageError::UnknownProducer {
                producer_id: stamp.producer_id,
            });
        }
        if stamp.producer_epoch != state.epoch {
            return Err(StorageError::ProducerFenced {
                name: shown_name(&state.name),
                epoch: stamp.producer_epoch,
                current: state.epoch,
            });
        }
        if stamp.base_sequence < 0 {
            return Err(StorageError::OutOfOrderSequence {
                name: shown_name(&state.name),
                got: stamp.base_sequence,
                expected: state.next_sequence.unwrap_or(0),
            });
        }
        if let Some(expected) = state.next_sequence {
            match sequence_order(expected, stamp.base_sequence) {
                SequenceOrder::Next => {}
                SequenceOrder::Behind => {
                    let landed = state.recent.iter().find(|b| {
                        b.base_sequence == stamp.base_sequence
                            && b.record_count == record_count
                            && b.topic_id == topic.meta.id
                    });
                    return match landed {
                        Some(b) => Ok((
                            IdempotentAppend::Duplicate(b.parts.clone()),
                            Checkpointed::No,
                        )),
                        None => Err(StorageError::DuplicateSequence {
                            name: shown_name(&state.name),
                            got: stamp.base_sequence,
                            expected,
                        }),
                    };
                }
                SequenceOrder::Ahead => {
                    return Err(StorageError::OutOfOrderSequence {
                        name: shown_name(&state.name),
                        got: stamp.base_sequence,
                        expected,
                    })
                }
            }
        }

        // A new batch: it must fit the disk budget (before the append lock,
        // as a plain append).
        make_room()?;
        let sled_err = |e| StorageError::sled(dir, e);
        let guard = log.lock_append();
        let checkpoint = checkpoint_key(topic.meta.id, log.partition());
        let partition_key = (topic.meta.id, log.partition());
        let known = self
            .checkpointed
            .lock()
            .expect("checkpointed")
            .contains_key(&partition_key);
        let mut checkpointed = Checkpointed::No;
        if !known {
            // The first stamped batch of this partition (since start): make
            // sure replay would start at or before it *before* it exists.
            checkpointed = Checkpointed::Yes;
            if self
                .checkpoints
                .get(checkpoint)
                .map_err(sled_err)?
                .is_none()
            {
                self.checkpoints
                    .insert(checkpoint, &log.log_end().to_be_bytes())
                    .map_err(sled_err)?;
            }
            self.checkpointed
                .lock()
                .expect("checkpointed")
                .insert(partition_key, 0);
        }
        let staged = log.stage(&guard, batches)?;
        let landed = vec![LandedPart {
            partition: log.partition(),
            base_offset: staged.first,
            record_count,
        }];
        let mut next = state.clone();
        next.push(
            LandedBatch {
                topic_id: topic.meta.id,
                base_sequence: stamp.base_sequence,
                record_count,
                parts: landed.clone(),
            },
            sequence_after(stamp.base_sequence, record_count),
        );
        // Batch, then state, then (now and then) checkpoint: see the module
        // docs. Under the append lock, so every earlier stamped batch of the
        // partition has its state written before the checkpoint passes it.
        log.insert_staged(&guard, batches, dir)?;
        self.states
            .insert(stamp.producer_id.to_be_bytes(), encode(&next))
            .map_err(sled_err)?;
        let due = {
            let mut counts = self.checkpointed.lock().expect("checkpointed");
            let count = counts.entry(partition_key).or_insert(0);
            *count += 1;
            let due = *count >= PRODUCER_CHECKPOINT_EVERY_APPENDS;
            if due {
                *count = 0;
            }
            due
        };
        if due {
            self.checkpoints
                .insert(checkpoint, &staged.end.to_be_bytes())
                .map_err(sled_err)?;
            checkpointed = Checkpointed::Yes;
        }
        log.publish(&guard, &staged);
        drop(guard);
        *state = next;
        Ok((IdempotentAppend::Appended(landed), checkpointed))
    }

    /// After a crash: replays the stamped batches stored after each
    /// partition's checkpoint into the producers' states (idempotent: a
    /// batch the state already reflects is skipped). Returns how many
    /// batches were replayed.
    pub(super) fn recover(
        &self,
        dir: &Path,
        topics: &HashMap<String, Arc<Topic>>,
    ) -> Result<usize, StorageError> {
        let sled_err = |e| StorageError::sled(dir, e);
        let by_id: HashMap<u64, &Arc<Topic>> = topics.values().map(|t| (t.meta.id, t)).collect();
        self.forget_lost(dir, &by_id)?;
        let mut replayed = 0;
        for entry in self.checkpoints.iter() {
            let (key, value) = entry.map_err(sled_err)?;
            let (topic_id, partition) = parse_checkpoint_key(&key);
            let Some(log) = by_id.get(&topic_id).and_then(|t| t.partition(partition)) else {
                // The topic was deleted.
                self.checkpoints.remove(&key).map_err(sled_err)?;
                continue;
            };
            let from = u64::from_be_bytes(be8(&value));
            let end = log.log_end();
            if from >= end {
                continue;
            }
            let mut next = from;
            while let Some(bytes) = log.batch_from(next)? {
                // Checked by the read; torn tails were cut at open.
                let Ok(batch) = Batch::parse(&bytes) else {
                    break;
                };
                next = batch.end_offset();
                let h = batch.header;
                if h.producer_id < 0 {
                    continue;
                }
                let Some(shared) = self.get(dir, h.producer_id)? else {
                    log::warn!(
                        "{}/{partition}: batch at {} names unknown producer {}",
                        log.topic(),
                        h.base_offset,
                        h.producer_id
                    );
                    continue;
                };
                let mut state = shared.lock().expect("producer lock");
                let applies = state
                    .next_sequence
                    .is_none_or(|n| sequence_order(n, h.base_sequence) != SequenceOrder::Behind);
                if applies {
                    let mut next = state.clone();
                    next.push(
                        LandedBatch {
                            topic_id,
                            base_sequence: h.base_sequence,
                            record_count: h.record_count,
                            parts: vec![LandedPart {
                                partition,
                                base_offset: h.base_offset,
                                record_count: h.record_count,
                            }],
                        },
                        sequence_after(h.base_sequence, h.record_count),
                    );
                    self.states
                        .insert(h.producer_id.to_be_bytes(), encode(&next))
                        .map_err(sled_err)?;
                    *state = next;
                    replayed += 1;
                }
            }
            self.checkpoints
                .insert(&key, &end.to_be_bytes())
                .map_err(sled_err)?;
        }
        if replayed > 0 {
            log::info!("replayed {replayed} idempotent batches into producer state after a crash");
        }
        Ok(replayed)
    }

    /// After a power cut: sled may have kept a producer's state for a
    /// batch whose segment bytes did not reach the disk (sled is synced
    /// after the segments in a round, and may hold states of appends that
    /// came after the segments' sync). Such a batch was never acknowledged;
    /// its resend must be appended, not answered as a duplicate. So every
    /// state forgets its most recent batches from the first one that lies
    /// at or past its partition's log end, and expects that batch's
    /// sequence again. Returns how many states changed.
    fn forget_lost(
        &self,
        dir: &Path,
        by_id: &HashMap<u64, &Arc<Topic>>,
    ) -> Result<usize, StorageError> {
        let sled_err = |e| StorageError::sled(dir, e);
        let lost = |b: &LandedBatch| {
            b.parts.iter().any(|part| {
                by_id
                    .get(&b.topic_id)
                    .and_then(|t| t.partition(part.partition))
                    .is_some_and(|log| part.base_offset >= log.log_end())
            })
        };
        let mut changed = 0;
        for entry in self.states.iter() {
            let (key, value) = entry.map_err(sled_err)?;
            let Ok(mut state) = postcard::from_bytes::<ProducerState>(&value) else {
                continue;
            };
            let Some(first) = state.recent.iter().position(lost) else {
                continue;
            };
            state.next_sequence = Some(state.recent[first].base_sequence);
            state.recent.truncate(first);
            self.states.insert(&key, encode(&state)).map_err(sled_err)?;
            changed += 1;
        }
        if changed > 0 {
            // Re-read from sled what a lookup cached before.
            self.cache.lock().expect("producer cache").clear();
            log::info!(
                "{changed} producers expect again batches a crash took before they were durable"
            );
        }
        Ok(changed)
    }

    /// The keys of a topic's partition checkpoints (deleted with it, in
    /// one transaction: [`super::Storage::delete_topic`]), and their tree.
    pub(super) fn checkpoint_keys(
        &self,
        dir: &Path,
        topic_id: u64,
    ) -> Result<(&sled::Tree, Vec<sled::IVec>), StorageError> {
        let keys = self
            .checkpoints
            .scan_prefix(topic_id.to_be_bytes())
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::sled(dir, e))?;
        Ok((&self.checkpoints, keys))
    }
}

impl ProducerState {
    /// Records a batch as appended: the next sequence and the window.
    fn push(&mut self, batch: LandedBatch, next_sequence: i32) {
        self.next_sequence = Some(next_sequence);
        self.recent.push_back(batch);
        while self.recent.len() > PRODUCER_WINDOW_BATCHES_MAX {
            self.recent.pop_front();
        }
    }
}

/// The key a producer name is stored under: names belong to the identity
/// that registered them, so another identity's `InitProducer` with the same
/// name gets its own producer and never fences this one. Without client
/// certificates every connection is [`ANONYMOUS_IDENTITY`], whose names are
/// stored bare (as before identities owned names). Identities never contain
/// a NUL (`tls::identity_of` refuses them), so the first NUL separates.
fn owned_name(owner: &str, name: &str) -> String {
    if owner == ANONYMOUS_IDENTITY {
        name.to_string()
    } else {
        format!("{owner}\0{name}")
    }
}

/// The identity a stored producer name belongs to ([`owned_name`]).
fn owner_of(stored: &str) -> &str {
    stored
        .split_once('\0')
        .map_or(ANONYMOUS_IDENTITY, |(owner, _)| owner)
}

/// The name as its owner registered it (for the owner's error messages).
fn shown_name(stored: &str) -> String {
    stored
        .split_once('\0')
        .map_or(stored, |(_, name)| name)
        .to_string()
}

fn checkpoint_key(topic_id: u64, partition: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&topic_id.to_be_bytes());
    key[8..].copy_from_slice(&partition.to_be_bytes());
    key
}

fn parse_checkpoint_key(key: &[u8]) -> (u64, u32) {
    let topic_id = u64::from_be_bytes(be8(key));
    let mut p = [0u8; 4];
    if key.len() >= 12 {
        p.copy_from_slice(&key[8..12]);
    }
    (topic_id, u32::from_be_bytes(p))
}

fn encode(state: &ProducerState) -> Vec<u8> {
    postcard::to_allocvec(state).expect("encoding producer state")
}

fn be8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = bytes.len().min(8);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, StorageOptions};
    use crate::tls::ANONYMOUS_IDENTITY;
    use crate::wire::batch::{BatchBuilder, Headers, NO_TIMESTAMP};
    use event_listener::Listener;

    fn stamped(init: &ProducerInit, sequence: i32, value: &[u8]) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(1024, NO_TIMESTAMP).unwrap();
        b.set_producer(ProducerStamp {
            producer_id: init.producer_id,
            producer_epoch: init.producer_epoch,
            base_sequence: sequence,
        });
        b.push(NO_TIMESTAMP, None, value, Headers::EMPTY).unwrap();
        b.finish_vec()
    }

    fn append(storage: &Storage, init: &ProducerInit, seq: i32, value: &[u8]) -> IdempotentAppend {
        let topic = storage.topic("t").unwrap();
        let log = topic.partition(0).unwrap().clone();
        let stamp = ProducerStamp {
            producer_id: init.producer_id,
            producer_epoch: init.producer_epoch,
            base_sequence: seq,
        };
        storage
            .append_idempotent(
                ANONYMOUS_IDENTITY,
                &topic,
                &log,
                stamp,
                1,
                &mut [stamped(init, seq, value)],
            )
            .unwrap()
    }

    /// A crash that kept batches but lost the state and checkpoint writes
    /// after them (sled recovers a prefix of its writes): reopening replays
    /// the batches, so their resends are still recognised.
    #[test]
    fn batches_after_the_checkpoint_are_replayed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (init, state_before, checkpoint_before) = {
            let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
            storage.create_topic("t", 1, Vec::new(), 0).unwrap();
            let (init, _) = storage.init_producer(ANONYMOUS_IDENTITY, "dev").unwrap();
            assert!(matches!(
                append(&storage, &init, 0, b"a"),
                IdempotentAppend::Appended(_)
            ));
            let p = &storage.producers;
            let key = init.producer_id.to_be_bytes();
            let state_before = p.states.get(key).unwrap().unwrap();
            let ckpt_key = checkpoint_key(storage.topic("t").unwrap().meta.id, 0);
            let checkpoint_before = p.checkpoints.get(ckpt_key).unwrap().unwrap();
            for (seq, v) in [(1, b"b"), (2, b"c")] {
                append(&storage, &init, seq, v);
            }
            // Lose the state and checkpoint writes of the last two appends.
            p.states.insert(key, state_before.clone()).unwrap();
            p.checkpoints
                .insert(ckpt_key, checkpoint_before.clone())
                .unwrap();
            storage.close().unwrap();
            (init, state_before, checkpoint_before)
        };
        assert_eq!(u64::from_be_bytes(be8(&checkpoint_before)), 0);
        let stale: ProducerState = postcard::from_bytes(&state_before).unwrap();
        assert_eq!(stale.next_sequence, Some(1));

        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        // Resends of the replayed batches: answered, not appended.
        match append(&storage, &init, 2, b"c") {
            IdempotentAppend::Duplicate(parts) => assert_eq!(parts[0].base_offset, 2),
            other => panic!("resend appended again: {other:?}"),
        }
        match append(&storage, &init, 1, b"b") {
            IdempotentAppend::Duplicate(parts) => assert_eq!(parts[0].base_offset, 1),
            other => panic!("resend appended again: {other:?}"),
        }
        assert!(matches!(
            append(&storage, &init, 3, b"d"),
            IdempotentAppend::Appended(_)
        ));
        assert_eq!(
            storage.topic("t").unwrap().partition(0).unwrap().log_end(),
            4
        );
    }

    /// A power cut that kept sled's state of a batch but not the batch
    /// (its segment bytes were never synced, so it was never acknowledged):
    /// the resend of that batch is appended, the batch before it is still
    /// a duplicate, and no offset is used twice.
    #[test]
    fn a_state_ahead_of_the_log_forgets_the_batches_the_crash_took() {
        let dir = tempfile::tempdir().unwrap();
        let (init, segment) = {
            let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
            let topic = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
            let (init, _) = storage.init_producer(ANONYMOUS_IDENTITY, "dev").unwrap();
            for (seq, v) in [(0, b"a"), (1, b"b"), (2, b"c")] {
                assert!(matches!(
                    append(&storage, &init, seq, v),
                    IdempotentAppend::Appended(_)
                ));
            }
            storage.close().unwrap();
            let dir = crate::storage::partition_dir(&storage.segments_dir, topic.meta.id, 0);
            (init, crate::storage::segment::segment_path(&dir, 0))
        };
        // The last of three equal batches never reached the disk.
        let len = std::fs::metadata(&segment).unwrap().len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(len / 3 * 2).unwrap();
        drop(file);

        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        assert_eq!(
            storage.topic("t").unwrap().partition(0).unwrap().log_end(),
            2
        );
        match append(&storage, &init, 2, b"c") {
            IdempotentAppend::Appended(parts) => assert_eq!(parts[0].base_offset, 2),
            other => panic!("the lost batch's resend was not appended: {other:?}"),
        }
        match append(&storage, &init, 1, b"b") {
            IdempotentAppend::Duplicate(parts) => assert_eq!(parts[0].base_offset, 1),
            other => panic!("a stored batch's resend was appended again: {other:?}"),
        }
        assert_eq!(
            storage.topic("t").unwrap().partition(0).unwrap().log_end(),
            3
        );
    }

    /// Idempotent appends (devices) obey the disk budget as plain ones do:
    /// they shed lower-priority drop_oldest data first, are refused when
    /// nothing droppable is left, and a resend of an appended batch is still
    /// answered with its offsets rather than refused.
    #[test]
    fn idempotent_appends_obey_the_disk_budget() {
        let dir = tempfile::tempdir().unwrap();
        let options = StorageOptions {
            disk_budget_bytes: Some(3_000),
            ..StorageOptions::default()
        };
        let storage = Storage::open(dir.path(), &options).unwrap();
        let configs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        storage
            .create_topic("t", 1, configs(&[("priority", "5")]), 0)
            .unwrap();
        let shed = storage
            .create_topic(
                "shed",
                1,
                configs(&[("on_full", "drop_oldest"), ("priority", "1")]),
                0,
            )
            .unwrap();
        let shed_log = shed.partition(0).unwrap().clone();
        let mut plain = BatchBuilder::with_capacity(512, 1).unwrap();
        plain.push(1, None, &[b's'; 300], Headers::EMPTY).unwrap();
        let (_, end) = storage
            .append(&shed_log, &mut [plain.finish_vec()])
            .unwrap();
        // Only durable batches are ever dropped.
        while shed_log.durable_end() < end {
            let listener = storage.durable_event().listen();
            if shed_log.durable_end() < end {
                listener.wait();
            }
        }
        let (init, _) = storage.init_producer(ANONYMOUS_IDENTITY, "dev").unwrap();
        let topic = storage.topic("t").unwrap();
        let log = topic.partition(0).unwrap().clone();
        let value = [b'v'; 300];
        let mut seq = 0;
        let refusal = loop {
            let stamp = ProducerStamp {
                producer_id: init.producer_id,
                producer_epoch: init.producer_epoch,
                base_sequence: seq,
            };
            match storage.append_idempotent(
                ANONYMOUS_IDENTITY,
                &topic,
                &log,
                stamp,
                1,
                &mut [stamped(&init, seq, &value)],
            ) {
                Ok(IdempotentAppend::Appended(_)) => seq += 1,
                Ok(other) => panic!("sequence {seq}: {other:?}"),
                Err(e) => break e,
            }
            assert!(seq < 100, "the budget never refused an idempotent append");
        };
        assert!(
            matches!(refusal, StorageError::BudgetFull { .. }),
            "{refusal}"
        );
        assert!(refusal.to_string().contains("on_full=reject"), "{refusal}");
        assert_eq!(shed_log.stats().dropped_records, 1, "shed first");
        assert_eq!(
            log.log_end(),
            u64::try_from(seq).unwrap(),
            "nothing of t lost"
        );
        assert!(storage.used_bytes() <= 3_000);
        // The resend of the last appended batch is answered, not refused.
        match append(&storage, &init, seq - 1, &value) {
            IdempotentAppend::Duplicate(parts) => {
                assert_eq!(parts[0].base_offset, u64::try_from(seq - 1).unwrap())
            }
            other => panic!("resend: {other:?}"),
        }
    }
}
