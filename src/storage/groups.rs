//! Committed offsets of consumer groups, durable like records.
//!
//! One tree, `groups.offsets`: key = group id, 0, topic name, 0, partition
//! (u32 big-endian) → committed offset (u64 BE) and commit time (u64 BE,
//! ms). Group ids and topic names never contain a 0 byte (the broker
//! checks), so a prefix scan over `group 0` finds exactly one group.
//!
//! A commit is written to sled and then covered by a group-commit round of
//! the flusher: [`Storage::commit_offsets`] returns the round's ticket and
//! the caller acknowledges only once [`Storage::is_committed`] says so, the
//! same rule as for produced records. Membership and assignments are not
//! stored here (they live in the broker's coordinator, in memory).

use super::{Storage, StorageError};

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: u64,
    pub commit_ms: u64,
}

fn group_prefix(group: &str) -> Vec<u8> {
    let mut key = group.as_bytes().to_vec();
    key.push(0);
    key
}

fn offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn decode(group_len: usize, key: &[u8], value: &[u8]) -> Option<CommittedOffset> {
    let rest = key.get(group_len + 1..)?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let topic = std::str::from_utf8(&rest[..zero]).ok()?.to_string();
    let partition = u32::from_be_bytes(rest.get(zero + 1..zero + 5)?.try_into().ok()?);
    let offset = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let commit_ms = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some(CommittedOffset {
        topic,
        partition,
        offset,
        commit_ms,
    })
}

impl Storage {
    /// Writes committed offsets `(topic, partition, offset)` of `group`
    /// atomically. Returns the flush ticket: they are durable once
    /// [`Storage::is_committed`] returns `true` for it.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
        now_ms: u64,
    ) -> Result<u64, StorageError> {
        self.check_metadata_write(u64::try_from(offsets.len()).unwrap_or(u64::MAX))?;
        let mut batch = sled::Batch::default();
        for &(topic, partition, offset) in offsets {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&offset.to_be_bytes());
            value[8..].copy_from_slice(&now_ms.to_be_bytes());
            batch.insert(offset_key(group, topic, partition), &value[..]);
        }
        self.offsets
            .apply_batch(batch)
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(self.flusher.commit_ticket())
    }

    /// Every committed offset of `group`, by topic and partition.
    pub fn committed_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, StorageError> {
        let mut out = Vec::new();
        for entry in self.offsets.scan_prefix(group_prefix(group)) {
            let (key, value) = entry.map_err(|e| StorageError::sled(&self.dir, e))?;
            match decode(group.len(), &key, &value) {
                Some(c) => out.push(c),
                None => log::error!("skipping an undecodable committed offset of group {group}"),
            }
        }
        Ok(out)
    }

    /// Ids of the groups that have committed offsets.
    pub fn groups_with_offsets(&self) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = Vec::new();
        for key in self.offsets.iter().keys() {
            let key = key.map_err(|e| StorageError::sled(&self.dir, e))?;
            let Some(zero) = key.iter().position(|&b| b == 0) else {
                continue;
            };
            let group = String::from_utf8_lossy(&key[..zero]).into_owned();
            if out.last() != Some(&group) {
                out.push(group);
            }
        }
        Ok(out)
    }

    /// Deletes every committed offset of `group`; returns the flush ticket.
    pub fn delete_group_offsets(&self, group: &str) -> Result<u64, StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.offsets.scan_prefix(group_prefix(group)).keys() {
            batch.remove(key.map_err(|e| StorageError::sled(&self.dir, e))?);
        }
        self.offsets
            .apply_batch(batch)
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(self.flusher.commit_ticket())
    }

    /// The keys of every group's committed offsets for `topic` (deleted
    /// with it, in one transaction: [`Storage::delete_topic`]).
    pub(super) fn topic_offset_keys(&self, topic: &str) -> Result<Vec<sled::IVec>, StorageError> {
        let mut keys = Vec::new();
        for entry in self.offsets.iter() {
            let (key, value) = entry.map_err(|e| StorageError::sled(&self.dir, e))?;
            let Some(zero) = key.iter().position(|&b| b == 0) else {
                continue;
            };
            if decode(zero, &key, &value).is_some_and(|c| c.topic == topic) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}
