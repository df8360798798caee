//! Moves a data directory written by the sled-only storage (each
//! partition's batches in a sled tree `log.{topic_id}.{partition}`, keyed
//! by big-endian base offset) to segment files, once, at the first start.
//!
//! Crash-safe by construction: a partition's segments are written into a
//! `{topic_id}.{partition}.migrating` directory, every file fdatasynced and
//! the directory fsynced, then the directory is renamed to its final name
//! and the parent fsynced; only then is the sled tree dropped (durable with
//! the sync that ends `Storage::open`). A kill at any point leaves either
//! the tree (and maybe a partial `.migrating` directory, removed and
//! redone) or the finished directory (and maybe the tree, dropped again):
//! nothing is lost and nothing is copied twice. Batches keep their bytes
//! and offsets; the floors stay in sled as they were.

use std::path::Path;

use super::segment::Segment;
use super::topic_config::TopicConfig;
use super::{partition_dir, sync_dir, tree_name, StorageError, TopicMeta};
use crate::wire::batch::Batch;

/// Migrates every partition of `meta` that still has a sled tree of
/// batches.
pub(super) fn migrate_topic(
    db: &sled::Db,
    sled_dir: &Path,
    segments_dir: &Path,
    meta: &TopicMeta,
) -> Result<(), StorageError> {
    let names = db.tree_names();
    let segment_bytes = TopicConfig::parse(&meta.configs)
        .map(|c| c.segment_bytes)
        .unwrap_or(super::segment::SEGMENT_BYTES_DEFAULT);
    for p in 0..meta.partitions {
        let name = tree_name(meta.id, p);
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let target = partition_dir(segments_dir, meta.id, p);
        let tree = db
            .open_tree(&name)
            .map_err(|e| StorageError::sled(sled_dir, e))?;
        if !target.exists() {
            let (batches, bytes) = copy_tree(&tree, &target, segments_dir, segment_bytes)?;
            log::info!(
                "migrated {}/{p} from sled to segment files: {batches} batches, {bytes} bytes (once; the old sled tree is dropped)",
                meta.name
            );
        }
        drop(tree);
        db.drop_tree(name.as_bytes())
            .map_err(|e| StorageError::sled(sled_dir, e))?;
    }
    Ok(())
}

/// Writes the batches of `tree` into segment files in `target` (through a
/// `.migrating` directory renamed at the end). Returns batches and bytes.
fn copy_tree(
    tree: &sled::Tree,
    target: &Path,
    segments_dir: &Path,
    segment_bytes: u64,
) -> Result<(u64, u64), StorageError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = segments_dir.join(format!("{name}.migrating"));
    let io = |path: &Path, e| StorageError::io(path, e);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let mut active: Option<Segment> = None;
    let (mut batches, mut bytes) = (0u64, 0u64);
    let now_ms = crate::time::now_ms();
    for entry in tree.iter() {
        let (key, value) = entry.map_err(|e| StorageError::sled(segments_dir, e))?;
        // Checked right after the read, as every read.
        let base = match Batch::parse(&value) {
            Ok(b) if key.len() == 8 && key.as_ref() == b.base_offset().to_be_bytes() => {
                b.base_offset()
            }
            _ => {
                log::error!(
                    "{}: stopped migrating at an unreadable batch (key {:?}); the rest is dropped",
                    tmp.display(),
                    key.as_ref()
                );
                break;
            }
        };
        let full = active
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.len() + value.len() as u64 > segment_bytes);
        if full {
            close(active.take().expect("an active segment"))?;
        }
        if active.is_none() {
            active = Some(Segment::create(&tmp, base).map_err(|e| io(&tmp, e))?);
        }
        let segment = active.as_ref().expect("an active segment");
        segment
            .append(&[value.to_vec()], now_ms)
            .map_err(|e| io(&segment.path, e))?;
        batches += 1;
        bytes += value.len() as u64;
    }
    if let Some(segment) = active {
        close(segment)?;
    }
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, target).map_err(|e| io(target, e))?;
    sync_dir(segments_dir)?;
    Ok((batches, bytes))
}

fn close(segment: Segment) -> Result<(), StorageError> {
    segment
        .sync()
        .map_err(|e| StorageError::io(&segment.path, e))?;
    if let Err(e) = segment.write_index() {
        log::warn!(
            "could not write the index of {}: {e}",
            segment.path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, StorageOptions, SEGMENTS_DIR, SLED_SEGMENT_BYTES};
    use crate::wire::batch::{set_base_offset, BatchBuilder, Batches, Headers};

    fn batch_at(base: u64, count: u64) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(8192, 1_000).unwrap();
        for i in 0..count {
            let value = format!("v{}", base + i);
            b.push(1_000, Some(b"k"), value.as_bytes(), Headers::EMPTY)
                .unwrap();
        }
        let mut bytes = b.finish_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    /// Writes a data directory as the sled-only storage did: topic
    /// metadata, one tree of batches per partition keyed by big-endian
    /// base offset, and a floor where retention had removed the front.
    /// Returns the topic id.
    fn write_old_format(data_dir: &Path, partitions: &[(u64, u64)]) -> u64 {
        let db = sled::Config::new()
            .path(data_dir.join("log"))
            .segment_size(SLED_SEGMENT_BYTES)
            .use_compression(false)
            .open()
            .unwrap();
        let id = db.generate_id().unwrap();
        let meta = TopicMeta {
            name: "old".to_string(),
            id,
            partitions: u32::try_from(partitions.len()).unwrap(),
            created_ms: 1,
            // Small segments: the migration rolls too.
            configs: vec![("segment.bytes".to_string(), "2000".to_string())],
        };
        db.open_tree("topics")
            .unwrap()
            .insert("old", postcard::to_allocvec(&meta).unwrap())
            .unwrap();
        let floors = db.open_tree("floors").unwrap();
        for (p, &(floor, end)) in partitions.iter().enumerate() {
            let p = u32::try_from(p).unwrap();
            let tree = db.open_tree(tree_name(id, p)).unwrap();
            let mut base = floor;
            while base < end {
                let count = (end - base).min(7);
                tree.insert(base.to_be_bytes(), batch_at(base, count))
                    .unwrap();
                base += count;
            }
            if floor > 0 {
                let key = crate::storage::partition::floor_key(id, p);
                floors.insert(key, &floor.to_be_bytes()).unwrap();
            }
        }
        db.flush().unwrap();
        id
    }

    fn values(storage: &Storage, partition: u32) -> Vec<(u64, Vec<u8>)> {
        let topic = storage.topic("old").unwrap();
        let log = topic.partition(partition).unwrap();
        let mut out = Vec::new();
        let mut from = log.watermarks().log_start;
        loop {
            let mut bytes = Vec::new();
            let read = log.read(from, 1 << 16, &mut bytes).unwrap();
            if read.bytes == 0 {
                return out;
            }
            from = read.next_offset;
            for batch in Batches::new(&bytes) {
                let batch = batch.unwrap();
                for r in batch.records() {
                    let r = r.unwrap();
                    out.push((
                        batch.base_offset() + u64::from(r.offset_delta),
                        r.value.to_vec(),
                    ));
                }
            }
        }
    }

    fn expected(from: u64, end: u64) -> Vec<(u64, Vec<u8>)> {
        (from..end)
            .map(|o| (o, format!("v{o}").into_bytes()))
            .collect()
    }

    #[test]
    fn a_sled_only_data_dir_is_migrated_once_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        // Partition 0: 0..500; partition 1: retention had removed 0..40;
        // partition 2: retention had removed everything up to 90.
        let id = write_old_format(dir.path(), &[(0, 500), (40, 300), (90, 90)]);
        // A migration of partition 0 cut short by a kill: a partial
        // directory that must be redone, not trusted.
        let partial = dir
            .path()
            .join(SEGMENTS_DIR)
            .join(format!("{id}.0.migrating"));
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("00000000000000000000.log"), b"half a batch").unwrap();

        for round in 0..2 {
            let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
            assert_eq!(values(&storage, 0), expected(0, 500), "round {round}");
            assert_eq!(values(&storage, 1), expected(40, 300), "round {round}");
            assert!(values(&storage, 2).is_empty());
            let topic = storage.topic("old").unwrap();
            let p2 = topic.partition(2).unwrap();
            assert_eq!(p2.watermarks().log_start, 90);
            assert_eq!(p2.log_end(), 90, "offsets are never reused");
            assert!(
                !storage
                    .db
                    .tree_names()
                    .iter()
                    .any(|n| n.starts_with(b"log.")),
                "the old trees are gone"
            );
            assert!(!partial.exists());
            assert!(
                topic.partition(0).unwrap().segment_paths().len() > 1,
                "the topic's segment.bytes applies"
            );
            storage.close().unwrap();
        }
        // Appends continue after the migrated offsets.
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage.topic("old").unwrap();
        let log = topic.partition(2).unwrap();
        let (first, _) = storage.append(log, &mut [batch_at(0, 3)]).unwrap();
        assert_eq!(first, 90);
    }
}
