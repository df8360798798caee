//! Producer sessions whose sequences count per partition (Kafka's
//! idempotent producers), on top of eddy's producer state, which counts one
//! sequence per producer.
//!
//! A session gets a hub-unique id ([`Broker::new_producer_session`], itself
//! an eddy producer id, so never issued twice, also across restarts) and
//! epoch 0. A batch stamped `(session, epoch, sequence)` for a partition is
//! restamped ([`Broker::restamp_for_partition`]) with the eddy producer
//! named `kafka/SESSION/EPOCH/TOPIC-ID/PARTITION` of the caller's identity:
//! one eddy producer per session, epoch and partition, whose sequence is
//! the session's sequence in that partition (both start at 0). Dedupe,
//! order checks and crash recovery are then eddy's, unchanged: a resend is
//! answered with its first offsets, a gap is OUT_OF_ORDER_SEQUENCE. After a
//! hub restart the name finds the same eddy producer (with a new epoch,
//! which nothing else uses), so a resend of a batch stored before the
//! crash is still recognised.
//!
//! Names belong to the caller's identity (as every producer name), so a
//! client that invents a session id only reaches its own producers. The
//! cost: one stored producer state per session and one per partition it
//! wrote; nothing expires them yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ops::BrokerError;
use super::Broker;
use crate::storage::Topic;
use crate::wire::batch::{rewrite_header, BatchHeader};

/// Most (identity, session, epoch, topic, partition) → producer mappings
/// kept in memory; when full the map is emptied (a mapping is found again
/// by name, at the price of a new epoch for that producer).
pub const PARTITION_PRODUCERS_CACHED_MAX: usize = 100_000;

/// The key of one per-partition producer.
type SessionPartition = (Arc<str>, i64, i16, u64, u32);

/// The per-partition producers known in memory.
#[derive(Default)]
pub struct ProducerSessions {
    known: Mutex<HashMap<SessionPartition, (i64, i16)>>,
    /// Makes session names unique within this process.
    next: AtomicU64,
}

impl Broker {
    /// A new producer session for `owner`: its id and epoch (0), once the
    /// id is durable.
    pub async fn new_producer_session(&self, owner: &Arc<str>) -> Result<(i64, i16), BrokerError> {
        let n = self.producer_sessions.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("kafka/session/{}/{n}", crate::time::now_ms());
        let storage = self.storage.clone();
        let owned = owner.clone();
        let (init, ticket) = smol::unblock(move || storage.init_producer(&owned, &name))
            .await
            .map_err(BrokerError::Storage)?;
        loop {
            let listener = self.storage.durable_event().listen();
            if self.storage.is_committed(ticket) {
                break;
            }
            self.storage.check_healthy().map_err(BrokerError::Storage)?;
            listener.await;
        }
        Ok((init.producer_id, 0))
    }

    /// Restamps a stamped `batch` for `partition` of `topic` with the eddy
    /// producer of its session, epoch and partition (see the file's doc);
    /// batches without a stamp are left alone.
    pub fn restamp_for_partition(
        &self,
        owner: &Arc<str>,
        topic: &Topic,
        partition: u32,
        batch: &mut [u8],
    ) -> Result<(), BrokerError> {
        let header = BatchHeader::read(batch).map_err(BrokerError::Corrupt)?;
        if header.producer_id < 0 {
            return Ok(());
        }
        let key: SessionPartition = (
            owner.clone(),
            header.producer_id,
            header.producer_epoch,
            topic.meta.id,
            partition,
        );
        // Looked up and created under one lock: two first batches of one
        // partition must not init twice (the second init's epoch would
        // fence the first batch). An init is a few sled inserts, no fsync:
        // the batch stamped with it is durable only after it is (sled
        // keeps a prefix of its writes).
        let mut known = self
            .producer_sessions
            .known
            .lock()
            .expect("producer sessions lock");
        let (producer_id, producer_epoch) = match known.get(&key) {
            Some(found) => *found,
            None => {
                let name = format!(
                    "kafka/{}/{}/{}/{partition}",
                    header.producer_id, header.producer_epoch, topic.meta.id
                );
                let (init, _) = self
                    .storage
                    .init_producer(owner, &name)
                    .map_err(BrokerError::Storage)?;
                if known.len() >= PARTITION_PRODUCERS_CACHED_MAX {
                    known.clear();
                }
                known.insert(key, (init.producer_id, init.producer_epoch));
                (init.producer_id, init.producer_epoch)
            }
        };
        drop(known);
        let restamped = BatchHeader {
            producer_id,
            producer_epoch,
            ..header
        };
        rewrite_header(batch, &restamped);
        Ok(())
    }
}
