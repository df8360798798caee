//! Deleting a topic so that a crash leaves all of it or none of it.
//!
//! A topic's metadata, its partitions' floors, every group's committed
//! offsets for it, every mirror link's cursors of it and its producer
//! checkpoints are removed in one sled transaction, which sled recovers
//! whole or not at all: after a crash at any point the topic either still
//! exists with its offsets, or is gone with them, and a topic created
//! again under the same name never inherits a group's committed offsets.
//! The partition trees (the records) are dropped after the transaction; a
//! drop that a crash interrupted is finished when storage next opens
//! ([`drop_orphan_trees`]): a tree whose topic id no topic has is garbage.
//!
//! This module does not decide who may delete, nor wait for consumers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use sled::transaction::{TransactionError, Transactional};

use super::partition::floor_key;
use super::{tree_name, Storage, StorageError, Topic, TopicMeta};

impl Storage {
    /// Deletes a topic and all its data (see the module docs). Deletes may
    /// use the free-space reserve (they are how an operator frees space),
    /// but not more than the disk has: sled rewrites its catalog of trees
    /// for every partition tree it drops (only a data directory from before
    /// segment files has them).
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        self.flusher.check_healthy()?;
        let mut topics = self.topics.write().expect("topics lock");
        let topic = topics
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
        let trees: Vec<Option<u64>> = self
            .db
            .tree_names()
            .iter()
            .map(|n| tree_topic_id(n))
            .collect();
        let all = trees.iter().flatten().count() as u64;
        let own = trees
            .iter()
            .filter(|id| **id == Some(topic.meta.id))
            .count() as u64;
        self.disk.fits(delete_topic_bytes(all, own))?;
        crash_point(&self.db, "delete_topic:before_metadata");
        self.remove_topic_metadata(&topic.meta)?;
        topics.remove(name);
        crash_point(&self.db, "delete_topic:after_metadata");
        if own > 0 {
            // Only a data directory from before segment files has these.
            for p in 0..topic.meta.partitions {
                self.db
                    .drop_tree(tree_name(topic.meta.id, p))
                    .map_err(|e| StorageError::sled(&self.dir, e))?;
            }
        }
        for log in topic.partitions() {
            log.forget_bytes();
            log.remove_files()?;
        }
        super::sync_dir(&self.segments_dir)?;
        crash_point(&self.db, "delete_topic:after_trees");
        self.flusher.sync_now()?;
        Ok(())
    }

    /// Removes `meta`'s topic entry and everything keyed by it in one sled
    /// transaction.
    fn remove_topic_metadata(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        let offsets = self.topic_offset_keys(&meta.name)?;
        let cursors = self.topic_cursor_keys(&meta.name)?;
        let (checkpoints_tree, checkpoints) = self.producers.checkpoint_keys(&self.dir, meta.id)?;
        let floors: Vec<Vec<u8>> = (0..meta.partitions)
            .map(|p| floor_key(meta.id, p))
            .collect();
        let trees = (
            &self.meta,
            &self.offsets,
            &self.cursors,
            &self.floors,
            checkpoints_tree,
        );
        trees
            .transaction(|(m, o, c, f, k)| {
                m.remove(meta.name.as_bytes())?;
                for key in &offsets {
                    o.remove(key)?;
                }
                for key in &cursors {
                    c.remove(key)?;
                }
                for key in &floors {
                    f.remove(key.as_slice())?;
                }
                for key in &checkpoints {
                    k.remove(key)?;
                }
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StorageError::sled(&self.dir, e),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })
    }
}

/// Bytes sled writes to drop `partitions` trees out of `all`: it rewrites
/// its catalog of trees for each (measured on tmpfs: 2,048 of 3,072,
/// 40 MiB at the peak); counted about twice that.
fn delete_topic_bytes(all: u64, partitions: u64) -> u64 {
    super::SLED_TREE_CATALOG_BYTES
        .saturating_mul(partitions)
        .saturating_mul(all)
}

/// Drops the partition trees of topics that no longer exist (a delete that
/// a crash interrupted after its transaction); returns how many.
pub(super) fn drop_orphan_trees(
    db: &sled::Db,
    dir: &Path,
    topics: &HashMap<String, Arc<Topic>>,
) -> Result<usize, StorageError> {
    let live: HashSet<u64> = topics.values().map(|t| t.meta.id).collect();
    let mut dropped = 0;
    for name in db.tree_names() {
        let Some(id) = tree_topic_id(&name) else {
            continue;
        };
        if !live.contains(&id) {
            db.drop_tree(&name)
                .map_err(|e| StorageError::sled(dir, e))?;
            dropped += 1;
        }
    }
    if dropped > 0 {
        log::info!(
            "finished deleting a topic that a crash interrupted: dropped {dropped} partition trees"
        );
    }
    Ok(dropped)
}

/// The topic id in a partition tree's name (`log.{id}.{partition}`).
fn tree_topic_id(name: &[u8]) -> Option<u64> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix("log.")?;
    let (id, partition) = rest.split_once('.')?;
    partition.parse::<u32>().ok()?;
    id.parse().ok()
}

/// Test builds: dies here as kill -9 would when `EDDY_TEST_CRASH_AT` names
/// `point`, after handing sled's writes so far to the kernel (a crash after
/// them, which the page cache keeps).
#[cfg(test)]
fn crash_point(db: &sled::Db, point: &str) {
    if std::env::var("EDDY_TEST_CRASH_AT").is_ok_and(|p| p == point) {
        db.flush().expect("flushing before the crash");
        std::process::abort();
    }
}

#[cfg(not(test))]
fn crash_point(_db: &sled::Db, _point: &str) {}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::tree_topic_id;
    use crate::storage::{MirrorCursor, Storage, StorageOptions};
    use crate::wire::batch::{BatchBuilder, Headers};

    /// Where the scenario's data directory is (set by the crash test).
    const DIR_ENV: &str = "EDDY_TEST_DELETE_DIR";
    /// The group whose offsets must go with the topic.
    const GROUP: &str = "g";

    #[test]
    fn a_delete_is_counted_as_at_least_what_sled_writes_for_it() {
        let counted = super::delete_topic_bytes(3_072, 2_048);
        let measured = 40 << 20;
        assert!(counted >= measured && counted <= 3 * measured, "{counted}");
    }

    #[test]
    fn partition_tree_names_give_their_topic_id_and_nothing_else_does() {
        assert_eq!(tree_topic_id(b"log.17.3"), Some(17));
        assert_eq!(tree_topic_id(b"log.17"), None);
        assert_eq!(tree_topic_id(b"log.x.3"), None);
        assert_eq!(tree_topic_id(b"topics"), None);
        assert_eq!(tree_topic_id(b"__sled__default"), None);
    }

    /// Topic `t` (3 partitions, records, a group's offsets and a mirror
    /// cursor) beside topic `keep` (the group's offset there), all durable;
    /// then `t` is deleted. The crash test runs this in a child process that
    /// dies inside the delete; run alone it checks a delete that completes.
    #[test]
    fn delete_scenario() {
        let own = tempfile::tempdir().unwrap();
        let dir = std::env::var_os(DIR_ENV).map_or(own.path().to_path_buf(), Into::into);
        let storage = Storage::open(&dir, &StorageOptions::default()).unwrap();
        let t = storage.create_topic("t", 3, Vec::new(), 0).unwrap();
        storage.create_topic("keep", 1, Vec::new(), 0).unwrap();
        for log in t.partitions() {
            let mut b = BatchBuilder::with_capacity(1 << 10, 1).unwrap();
            b.push(1, None, b"record", Headers::EMPTY).unwrap();
            storage.append(log, &mut [b.finish_vec()]).unwrap();
        }
        let offsets = [("t", 0, 1), ("t", 1, 1), ("t", 2, 1), ("keep", 0, 7)];
        storage.commit_offsets(GROUP, &offsets, 0).unwrap();
        let cursor = MirrorCursor {
            offset: 1,
            chain: None,
        };
        storage.save_mirror_cursor("up", &t, 0, cursor).unwrap();
        storage.flusher.sync_now().unwrap();
        drop(t);
        storage.delete_topic("t").unwrap();
        check_after(&storage, true);
    }

    /// Either all of `t` is there (`gone` false) or none of it; `keep` and
    /// its offset are always there; a new `t` starts with no offsets.
    fn check_after(storage: &Storage, gone: bool) {
        let committed = storage.committed_offsets(GROUP).unwrap();
        let of_t = committed.iter().filter(|c| c.topic == "t").count();
        assert!(committed.iter().any(|c| c.topic == "keep" && c.offset == 7));
        match storage.topic("t") {
            Some(t) => {
                assert!(!gone, "the delete reached the disk, yet t is back");
                assert_eq!(of_t, 3, "t exists with all its offsets");
                assert!(storage.mirror_cursor("up", &t, 0).unwrap().is_some());
                return;
            }
            None => assert_eq!(of_t, 0, "t is gone but a group kept offsets for it"),
        }
        let stale = storage
            .db
            .tree_names()
            .into_iter()
            .filter_map(|n| tree_topic_id(&n))
            .filter(|id| !storage.topics().iter().any(|t| t.meta.id == *id))
            .count();
        assert_eq!(stale, 0, "partition trees of a deleted topic remain");
        let again = storage.create_topic("t", 3, Vec::new(), 0).unwrap();
        let committed = storage.committed_offsets(GROUP).unwrap();
        assert!(
            committed.iter().all(|c| c.topic != "t"),
            "inherited offsets"
        );
        assert!(storage.mirror_cursor("up", &again, 0).unwrap().is_none());
        assert_eq!(again.partition(0).unwrap().log_end(), 0);
    }

    /// Runs [`delete_scenario`] in a child that dies (as kill -9 would) at
    /// `point`, then opens what it left.
    fn crash_at(point: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "storage::topic_delete::tests::delete_scenario"])
            .args(["--test-threads", "1", "--quiet"])
            .env(DIR_ENV, dir.path())
            .env("EDDY_TEST_CRASH_AT", point)
            .status()
            .unwrap();
        assert!(!status.success(), "the child must die at {point}");
        dir
    }

    fn reopen(dir: &Path) -> Storage {
        Storage::open(dir, &StorageOptions::default()).unwrap()
    }

    #[test]
    fn a_crash_anywhere_in_a_delete_leaves_the_whole_topic_or_none_of_it() {
        // Before the transaction: everything is still there.
        let dir = crash_at("delete_topic:before_metadata");
        check_after(&reopen(dir.path()), false);
        // After it (written out), before the trees were dropped: gone, and
        // the trees are dropped at open.
        let dir = crash_at("delete_topic:after_metadata");
        check_after(&reopen(dir.path()), true);
        let dir = crash_at("delete_topic:after_trees");
        check_after(&reopen(dir.path()), true);
    }
}
