//! Idempotent producer state: stable producer ids and sequence dedupe.
//!
//! Two sled trees:
//!
//! - `producer_ids`: producer name (a device id) → producer id (big-endian
//!   i64), so a device keeps its id across reboots and server restarts.
//! - `producer_state`: producer id → [`ProducerState`] (postcard): the
//!   current epoch, the next expected sequence and where the last
//!   [`PRODUCER_WINDOW_BATCHES_MAX`] batches landed.
//!
//! An idempotent append writes its batches and the producer's new state in
//! **one sled transaction** (atomic across a crash), so after `kill -9` the
//! state always describes exactly what the logs hold: a resend is answered
//! with the original offsets and never appended twice, and nothing is lost.
//! The state is read lazily per producer and cached in memory.
//!
//! Kept general on purpose: a producer is any stable name with a sequence
//! (a device; later a mirror source replaying its positions). This module
//! does not know about connections or how a batch was routed.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::partition::{base_offset_key, PartitionLog};
use super::{StorageError, Topic};
use crate::wire::batch::ProducerStamp;
use crate::wire::producer::{
    epoch_after, sequence_after, sequence_order, ProducerInit, SequenceOrder,
};

pub use crate::wire::producer::PRODUCER_WINDOW_BATCHES_MAX;

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

type Shared = Arc<Mutex<ProducerState>>;

/// One partition's share of a produced batch: its log, the encoded batches
/// to append and how many records they hold.
pub type PartitionPart = (Arc<PartitionLog>, Vec<Vec<u8>>, u32);

/// The producer trees and the in-memory cache of their states.
pub(super) struct Producers {
    ids: sled::Tree,
    states: sled::Tree,
    /// Per producer id: its state behind its own lock, so producers never
    /// wait for each other (only for the partitions they append to).
    cache: Mutex<HashMap<i64, Shared>>,
    /// Serialises `init` (allocating ids for new names).
    init_lock: Mutex<()>,
}

impl Producers {
    pub(super) fn open(db: &sled::Db, dir: &Path) -> Result<Producers, StorageError> {
        let open = |name| db.open_tree(name).map_err(|e| StorageError::sled(dir, e));
        Ok(Producers {
            ids: open("producer_ids")?,
            states: open("producer_state")?,
            cache: Mutex::new(HashMap::new()),
            init_lock: Mutex::new(()),
        })
    }

    /// The producer id of `name` (allocated on first use), with a new epoch
    /// that fences every earlier session. The caller makes it durable.
    pub(super) fn init(
        &self,
        db: &sled::Db,
        dir: &Path,
        name: &str,
    ) -> Result<ProducerInit, StorageError> {
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
                (&self.ids, &self.states)
                    .transaction(|(ids, states)| {
                        ids.insert(name.as_bytes(), &id.to_be_bytes())?;
                        states.insert(&id.to_be_bytes(), encode(&fresh))?;
                        Ok(())
                    })
                    .map_err(|e: sled::transaction::TransactionError<()>| tx_error(dir, e, None))?;
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

    /// Appends `parts` (per partition: its log and its encoded batches) for
    /// the producer in `stamp`, unless this batch was appended before.
    /// Batches and the producer's state go in one transaction.
    pub(super) fn append(
        &self,
        dir: &Path,
        topic: &Topic,
        stamp: ProducerStamp,
        record_count: u32,
        parts: &mut [PartitionPart],
    ) -> Result<IdempotentAppend, StorageError> {
        let shared = self
            .get(dir, stamp.producer_id)?
            .ok_or(StorageError::UnknownProducer {
                producer_id: stamp.producer_id,
            })?;
        let mut state = shared.lock().expect("producer lock");
        if stamp.producer_epoch != state.epoch {
            return Err(StorageError::ProducerFenced {
                name: state.name.clone(),
                epoch: stamp.producer_epoch,
                current: state.epoch,
            });
        }
        if stamp.base_sequence < 0 {
            return Err(StorageError::OutOfOrderSequence {
                name: state.name.clone(),
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
                        Some(b) => Ok(IdempotentAppend::Duplicate(b.parts.clone())),
                        None => Err(StorageError::DuplicateSequence {
                            name: state.name.clone(),
                            got: stamp.base_sequence,
                            expected,
                        }),
                    };
                }
                SequenceOrder::Ahead => {
                    return Err(StorageError::OutOfOrderSequence {
                        name: state.name.clone(),
                        got: stamp.base_sequence,
                        expected,
                    })
                }
            }
        }

        // Partition locks in ascending partition order (callers pass them
        // sorted), so two producers can never wait for each other in a cycle.
        debug_assert!(parts
            .windows(2)
            .all(|w| w[0].0.partition() < w[1].0.partition()));
        let logs: Vec<Arc<PartitionLog>> = parts.iter().map(|(log, _, _)| log.clone()).collect();
        let guards: Vec<_> = logs.iter().map(|log| log.lock_append()).collect();
        let mut staged = Vec::with_capacity(parts.len());
        let mut landed = Vec::with_capacity(parts.len());
        for ((log, batches, count), guard) in parts.iter_mut().zip(&guards) {
            let s = log.stage(guard, batches)?;
            landed.push(LandedPart {
                partition: log.partition(),
                base_offset: s.first,
                record_count: *count,
            });
            staged.push(s);
        }
        let mut next = state.clone();
        next.next_sequence = Some(sequence_after(stamp.base_sequence, record_count));
        next.recent.push_back(LandedBatch {
            topic_id: topic.meta.id,
            base_sequence: stamp.base_sequence,
            record_count,
            parts: landed.clone(),
        });
        while next.recent.len() > PRODUCER_WINDOW_BATCHES_MAX {
            next.recent.pop_front();
        }
        let encoded_state = encode(&next);
        let state_key = stamp.producer_id.to_be_bytes();

        let mut trees: Vec<&sled::Tree> = logs.iter().map(|log| log.tree()).collect();
        trees.push(&self.states);
        let state_index = trees.len() - 1;
        trees
            .as_slice()
            .transaction(|views| {
                for (i, (_, batches, _)) in parts.iter().enumerate() {
                    for encoded in batches {
                        views[i].insert(&base_offset_key(encoded), encoded.as_slice())?;
                    }
                }
                views[state_index].insert(&state_key, encoded_state.as_slice())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                tx_error(dir, e, Some(&topic.meta.name))
            })?;
        for ((log, s), guard) in logs.iter().zip(&staged).zip(&guards) {
            log.publish(guard, s);
        }
        drop(guards);
        *state = next;
        Ok(IdempotentAppend::Appended(landed))
    }
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

fn tx_error(
    dir: &Path,
    e: sled::transaction::TransactionError<()>,
    topic: Option<&str>,
) -> StorageError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StorageError::sled(dir, e),
        sled::transaction::TransactionError::Abort(()) => StorageError::Failed(format!(
            "producer transaction aborted{}",
            topic.map(|t| format!(" on topic {t}")).unwrap_or_default()
        )),
    }
}
