//! Durable storage: topics, partition logs of batches, group commit.
//!
//! The only module that imports sled. One sled `Db` per data directory,
//! opened once with explicit settings ([`StorageOptions`]). Trees:
//!
//! - `topics`: topic name → [`TopicMeta`] (postcard).
//! - (the batches themselves are not in sled: each partition's log is a
//!   directory of append-only segment files, `segments/{topic_id}.{partition}/`
//!   next to sled's `log/` ([`segment`], [`partition`]); a data directory
//!   from before keeps them in sled trees `log.{topic_id}.{partition}`,
//!   moved to segment files once at the first start ([`migrate`]).)
//! - `floors`: topic id and partition (BE) → log start (BE), written before
//!   batches are removed from the front, so offsets survive an emptied log.
//! - `groups.offsets`: committed offsets of consumer groups ([`groups`]).
//!
//! Background work on the logs (retention, compaction, the disk budget)
//! lives in [`maintenance`] and the files it names; topic settings in
//! [`topic_config`].
//! - `producer_ids`, `producer_state`: idempotent producers ([`producers`]).
//! - `mirror.cursors`: the mirror's cursor per (link, topic, partition), and
//!   appends at given offsets for a hub that receives a mirror ([`mirror`]).
//! - `mirror.producers`: the Kafka producer id of each mirror link.
//!
//! Durability: the [`flusher`] thread fdatasyncs every segment file written
//! since its last round, and, when metadata changed, flushes sled and
//! fdatasyncs sled's log file (sled 0.34's `flush()` alone only issues
//! `sync_file_range`, and sled calls `fsync` only from a background
//! thread), and only then advances the partitions' `durable` watermarks.
//! One flush covers every append that completed before it began (group
//! commit). Consumers only ever see durable offsets, so an offset a consumer
//! has read is never reassigned after a crash.
//!
//! This module does not know about connections, the wire protocol's requests
//! or partitioning by key: it stores batches into the partition it is told.

pub mod budget;
mod compaction;
pub mod disk_space;
mod flusher;
pub mod groups;
pub mod maintenance;
mod migrate;
pub mod mirror;
mod partition;
pub mod producers;
mod retention;
mod segment;
pub mod topic_config;
mod topic_delete;

pub use flusher::{FlushStats, FSYNC_BUCKETS_US, GROUP_COMMIT_GATHER_WAIT_US};
pub use groups::CommittedOffset;
pub use maintenance::{Maintenance, MaintenanceReport, MaintenanceThread};
pub use mirror::{MirrorAppend, MirrorCursor, MirrorFilter, ProducerChain};
pub use partition::{PartitionLog, PartitionStats, ReadOutcome, Watermarks};
pub use topic_config::{OnFull, TopicConfig};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::wire::batch::{BatchError, ProducerStamp};
use crate::wire::producer::ProducerInit;
use flusher::Flusher;
use producers::{IdempotentAppend, Producers};

/// Default sled page cache, in bytes. Small on purpose: a Raspberry Pi has
/// 1 GB of RAM, and the log is read mostly at its tail.
pub const CACHE_BYTES_DEFAULT: u64 = 16 << 20;

/// sled segment size, in bytes. sled writes any log item larger than a
/// quarter segment to a separate blob file (one file each, which sled never
/// fsyncs), and it writes a whole tree leaf (up to ~20 entries) as one item
/// when it rewrites the leaf. 1 MiB segments keep leaves of
/// [`STORED_BATCH_BYTES_TARGET`] entries (≤ ~80 KiB) well inside the log.
/// Fixed when the data directory is created.
pub const SLED_SEGMENT_BYTES: usize = 1 << 20;

/// How long [`Storage::open`] waits for sled's file lock before it reports
/// the directory as held by another eddy, in ms. sled 0.34 releases the
/// lock lazily, from its own threads, after the last handle is dropped
/// (spacejam/sled#1234, #1289): a store reopened in the same process right
/// after closing (the restart tests) can find it still held for a moment.
pub const SLED_LOCK_WAIT_MS: u64 = 2_000;
/// Pause between two tries to take sled's file lock, in ms.
pub const SLED_LOCK_RETRY_MS: u64 = 10;

/// Target size of one stored batch (one sled entry), in bytes. Larger
/// produced batches are split into batches of about this size; smaller ones
/// are stored as they came. Why this small: sled's cache accounting only
/// evicts after 64 accesses per cache shard (256 shards), so what stays
/// resident while a consumer streams through cold data grows with the size
/// of sled's leaves (≈ 16 entries each). Measured reading 1.2 GB back with a
/// 16 MiB cache: 4 KiB entries peak at ~70 MB RSS, 16 KiB entries at
/// ~200 MB, while write throughput is about the same. A record larger than
/// this is stored alone (and may become a blob; blobs are fsynced too).
pub const STORED_BATCH_BYTES_TARGET: usize = 4 << 10;

/// Default hub-wide `flush.ms`: 0, every durable produce is fsynced by the
/// next group-commit round (lowest ack latency; rounds already gather
/// concurrent appends).
pub const FLUSH_MS_DEFAULT: u64 = 0;

/// Largest `flush.ms` (hub default or topic), in ms: acks wait at most this.
pub const FLUSH_MS_MAX: u64 = 10_000;

/// What one metadata write (one sled key) is counted as against the
/// free-space reserve, in bytes: sled logs the key and value and rewrites
/// the tree leaf that holds them (up to ~20 entries), so a few KiB each.
/// Measured filling a small file system with fresh producer names: ~3.4 KiB
/// per `InitProducer`.
pub const METADATA_WRITE_BYTES_ESTIMATE: u64 = 4 << 10;

/// Settings of the storage layer.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// sled page cache capacity, in bytes.
    pub cache_bytes: u64,
    /// Most bytes of stored batches over all topics (see [`budget`]);
    /// `None` = no budget (only the disk's own size limits).
    pub disk_budget_bytes: Option<u64>,
    /// Appends are refused (`DiskFull`) while the data directory's file
    /// system has less than this free ([`disk_space`]); 0: no reserve.
    pub disk_free_min_bytes: u64,
    /// `flush.ms` of topics that do not set it: a durable append waits for
    /// the first group commit at least this long after the oldest unsynced
    /// append of its partition (0: the next round, as soon as possible).
    pub flush_ms: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cache_bytes: CACHE_BYTES_DEFAULT,
            disk_budget_bytes: None,
            disk_free_min_bytes: disk_space::DISK_FREE_MIN_BYTES_DEFAULT,
            flush_ms: FLUSH_MS_DEFAULT,
        }
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no topic named {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("offset {offset} is out of range for {topic}/{partition} (stored: {log_start}..{high_watermark})")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("corrupt batch in {topic}/{partition} at offset {offset}: {error}")]
    Corrupt {
        topic: String,
        partition: u32,
        offset: u64,
        error: BatchError,
    },
    #[error("disk full while writing to {path}: free space or raise the disk budget, then retry")]
    DiskFull { path: PathBuf },
    #[error("only {free} bytes are free on the file system of {path}, below the reserve of {min} bytes \
             (storage.disk_free_min_mb): free space there (eddy resumes by itself), or lower the reserve")]
    DiskReserve { path: PathBuf, free: u64, min: u64 },
    #[error("storage failed earlier and is read-only until eddy restarts: {0}")]
    Failed(String),
    #[error("storage is closed (eddy is shutting down)")]
    Closed,
    #[error("sled error in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid metadata for topic {topic:?}: {reason}")]
    BadMeta { topic: String, reason: String },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("disk budget of {budget} bytes is used up ({used} bytes stored) and {topic} cannot be written: {reason}; \
             consume and delete data, lower retention, raise --disk-budget-mb, or set on_full=drop_oldest on less important topics")]
    BudgetFull {
        topic: String,
        budget: u64,
        used: u64,
        reason: String,
    },
    #[error("{0}")]
    MirrorConflict(String),
    #[error("producer id {producer_id} was not issued to this identity by this hub: call InitProducer first")]
    UnknownProducer { producer_id: i64 },
    #[error("producer {name:?} epoch {epoch} is fenced by a newer session (epoch {current}): call InitProducer again")]
    ProducerFenced {
        name: String,
        epoch: i16,
        current: i16,
    },
    #[error("producer {name:?} sent base sequence {got} but the next expected is {expected}: batches in between are missing; resend them first")]
    OutOfOrderSequence {
        name: String,
        got: i32,
        expected: i32,
    },
    #[error("producer {name:?} resent sequence {got}, appended before but older than the batches eddy remembers (next expected {expected}); treat it as acknowledged")]
    DuplicateSequence {
        name: String,
        got: i32,
        expected: i32,
    },
}

impl StorageError {
    fn sled(path: &Path, source: sled::Error) -> StorageError {
        if let sled::Error::Io(io) = &source {
            if is_disk_full(io) {
                return StorageError::DiskFull {
                    path: path.to_path_buf(),
                };
            }
        }
        StorageError::Sled {
            path: path.to_path_buf(),
            source,
        }
    }

    fn io(path: &Path, source: std::io::Error) -> StorageError {
        if is_disk_full(&source) {
            return StorageError::DiskFull {
                path: path.to_path_buf(),
            };
        }
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC (28) and EDQUOT (122) on Linux.
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// What is stored about a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Unique per incarnation: a topic deleted and created again gets new
    /// trees, so a late write to the old one can never leak into the new one.
    pub id: u64,
    pub partitions: u32,
    pub created_ms: u64,
    /// Settings that differ from the defaults, by name, as text
    /// ([`topic_config`]); validated on create, alter and open.
    pub configs: Vec<(String, String)>,
}

/// A topic and its open partition logs.
pub struct Topic {
    pub meta: TopicMeta,
    partitions: Vec<Arc<PartitionLog>>,
    /// Parsed `meta.configs`, shared with the partitions.
    config: partition::ConfigCell,
    /// Where the next batch without a key or partition goes (the broker's
    /// per-topic round robin; in memory only, kept across alters).
    keyless_next: Arc<AtomicU32>,
}

impl Topic {
    /// The topic's settings now.
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().expect("config lock").clone()
    }

    /// The log of partition `p`, if the topic has it.
    pub fn partition(&self, p: u32) -> Option<&Arc<PartitionLog>> {
        self.partitions.get(usize::try_from(p).ok()?)
    }

    /// All partition logs, by partition number.
    pub fn partitions(&self) -> &[Arc<PartitionLog>] {
        &self.partitions
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.meta.partitions
    }

    /// The partition for the next batch whose records have no key and no
    /// explicit partition: 0, 1, …, N−1, 0, … per topic. Storage only keeps
    /// the position; routing is the broker's.
    pub fn next_keyless_partition(&self) -> u32 {
        // A topic has at least one partition (checked at creation).
        self.keyless_next.fetch_add(1, Ordering::Relaxed) % self.meta.partitions.max(1)
    }
}

/// The open data directory.
pub struct Storage {
    db: sled::Db,
    /// sled's directory (`data_dir/log`).
    dir: PathBuf,
    /// The segment directories of the partitions (`data_dir/segments`).
    segments_dir: PathBuf,
    meta: sled::Tree,
    floors: sled::Tree,
    offsets: sled::Tree,
    /// The mirror's cursors ([`mirror`]).
    cursors: sled::Tree,
    /// The Kafka producer id of each mirror link ([`mirror`]).
    mirror_producers: sled::Tree,
    /// Which topics a mirror link forwards ([`Storage::set_mirror_filter`]).
    mirror_filter: RwLock<Option<MirrorFilter>>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    producers: Producers,
    flusher: Flusher,
    /// Bytes of stored batches over all partitions.
    total_bytes: Arc<AtomicU64>,
    budget_bytes: Option<u64>,
    /// One drop run at a time.
    budget_lock: Mutex<()>,
    /// Rate bound of the budget's drop log lines (one per append that had
    /// to drop, under sustained pressure).
    budget_log: crate::log_limit::LogLimiter,
    /// The free-space reserve.
    disk: disk_space::DiskSpace,
}

impl Storage {
    /// Opens (or creates) the data directory `dir`, recovers every partition's
    /// offsets and makes everything recovered durable before returning.
    pub fn open(dir: &Path, options: &StorageOptions) -> Result<Storage, StorageError> {
        Storage::open_with(dir, options, None)
    }

    /// [`Storage::open`] with a wrapper around every group-commit round's
    /// sync step (tests: hold a round back, count rounds, fail the sync).
    #[cfg(test)]
    fn open_with_sync_hook(
        dir: &Path,
        options: &StorageOptions,
        hook: Arc<dyn flusher::SyncHook>,
    ) -> Result<Storage, StorageError> {
        Storage::open_with(dir, options, Some(hook))
    }

    fn open_with(
        dir: &Path,
        options: &StorageOptions,
        sync_hook: Option<Arc<dyn flusher::SyncHook>>,
    ) -> Result<Storage, StorageError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        disk_space::DiskSpace::release_emergency_space(dir, options.disk_free_min_bytes)?;
        let sled_dir = dir.join("log");
        let config = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(options.cache_bytes)
            .segment_size(SLED_SEGMENT_BYTES)
            .mode(sled::Mode::HighThroughput)
            .use_compression(false)
            // eddy's own flusher flushes and fsyncs; sled's timer would only
            // add unsynchronised background fsyncs.
            .flush_every_ms(None);
        let lock_deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(SLED_LOCK_WAIT_MS);
        let db = loop {
            match config.open() {
                Err(e) if lock_held(&e) && std::time::Instant::now() < lock_deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(SLED_LOCK_RETRY_MS));
                }
                opened => break opened.map_err(|e| open_error(&sled_dir, e))?,
            }
        };
        let meta = db
            .open_tree("topics")
            .map_err(|e| StorageError::sled(&sled_dir, e))?;
        let floors = db
            .open_tree("floors")
            .map_err(|e| StorageError::sled(&sled_dir, e))?;
        let offsets = db
            .open_tree("groups.offsets")
            .map_err(|e| StorageError::sled(&sled_dir, e))?;
        let cursors = db
            .open_tree(mirror::CURSOR_TREE)
            .map_err(|e| StorageError::sled(&sled_dir, e))?;
        let mirror_producers = db
            .open_tree(mirror::PRODUCER_TREE)
            .map_err(|e| StorageError::sled(&sled_dir, e))?;
        let total_bytes = Arc::new(AtomicU64::new(0));
        let segments_dir = dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&segments_dir).map_err(|e| StorageError::io(&segments_dir, e))?;

        let mut topics = HashMap::new();
        for entry in meta.iter() {
            let (name, value) = entry.map_err(|e| StorageError::sled(&sled_dir, e))?;
            let name_str = String::from_utf8_lossy(&name).into_owned();
            let topic_meta: TopicMeta =
                postcard::from_bytes(&value).map_err(|e| StorageError::BadMeta {
                    topic: name_str.clone(),
                    reason: e.to_string(),
                })?;
            migrate::migrate_topic(&db, &sled_dir, &segments_dir, &topic_meta)?;
            let topic = open_topic(&sled_dir, &segments_dir, topic_meta, &floors, &total_bytes)?;
            topics.insert(name_str, Arc::new(topic));
        }

        topic_delete::drop_orphan_trees(&db, &sled_dir, &topics)?;
        drop_orphan_segment_dirs(&segments_dir, &topics)?;
        let producers = Producers::open(&db, &sled_dir)?;
        producers.recover(&sled_dir, &topics)?;
        let flusher = Flusher::start(db.clone(), sled_dir.clone(), sync_hook, options.flush_ms)?;
        let storage = Storage {
            db,
            dir: sled_dir,
            segments_dir,
            meta,
            floors,
            offsets,
            cursors,
            mirror_producers,
            mirror_filter: RwLock::new(None),
            topics: RwLock::new(topics),
            producers,
            flusher,
            total_bytes,
            budget_bytes: options.disk_budget_bytes,
            budget_lock: Mutex::new(()),
            budget_log: crate::log_limit::LogLimiter::new(),
            disk: disk_space::DiskSpace::new(dir, options.disk_free_min_bytes),
        };
        // Whatever sled recovered may be only in the page cache (the previous
        // process may have died between write and fsync): sync it now, then
        // declare it durable.
        storage.flusher.sync_now()?;
        for topic in storage.topics.read().expect("topics lock").values() {
            for p in &topic.partitions {
                p.mark_recovered_durable();
            }
        }
        sync_created_files(dir, &storage.dir, created)?;
        // One look at the file system now: a start below the reserve is
        // logged, a missing emergency space file written.
        match storage.disk.reserve(0) {
            Ok(()) | Err(StorageError::DiskReserve { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(storage)
    }

    /// The sled directory inside the data directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<(String, String)>,
        now_ms: u64,
    ) -> Result<Arc<Topic>, StorageError> {
        TopicConfig::parse(&configs).map_err(StorageError::InvalidConfig)?;
        let mut topics = self.topics.write().expect("topics lock");
        if topics.contains_key(name) {
            return Err(StorageError::TopicExists(name.to_string()));
        }
        self.check_healthy()?;
        self.disk
            .reserve(create_topic_bytes(u64::from(partitions)))?;
        let id = self
            .db
            .generate_id()
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        let meta = TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            created_ms: now_ms,
            configs,
        };
        let encoded = postcard::to_allocvec(&meta).expect("encoding topic metadata");
        let topic = open_topic(
            &self.dir,
            &self.segments_dir,
            meta,
            &self.floors,
            &self.total_bytes,
        )?;
        self.meta
            .insert(name.as_bytes(), encoded)
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        // Topic creation is rare: make it durable before anyone can append.
        self.flusher.sync_now()?;
        if self.is_mirrored(name) {
            // Nothing of a new mirrored topic is forwarded yet.
            for log in topic.partitions() {
                log.set_keep_from(Some(0));
            }
        }
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Changes a topic's settings: sets `set`, returns `delete` to their
    /// defaults. Durable before it returns; maintenance and the disk budget
    /// use the new settings from their next step.
    pub fn alter_topic(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<Arc<Topic>, StorageError> {
        let mut topics = self.topics.write().expect("topics lock");
        let old = topics
            .get(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?
            .clone();
        self.check_metadata_write(1)?;
        let configs = topic_config::altered(&old.meta.configs, set, delete)
            .map_err(StorageError::InvalidConfig)?;
        let parsed = TopicConfig::parse(&configs).map_err(StorageError::InvalidConfig)?;
        let meta = TopicMeta {
            configs,
            ..old.meta.clone()
        };
        let encoded = postcard::to_allocvec(&meta).expect("encoding topic metadata");
        self.meta
            .insert(name.as_bytes(), encoded)
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        self.flusher.sync_now()?;
        *old.config.write().expect("config lock") = Arc::new(parsed);
        let topic = Arc::new(Topic {
            meta,
            partitions: old.partitions.clone(),
            config: old.config.clone(),
            keyless_next: old.keyless_next.clone(),
        });
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// The check before a metadata write that takes space (a new topic,
    /// a producer's state, a group commit): storage is healthy and the
    /// free-space reserve has room for `keys` sled writes, each counted as
    /// [`METADATA_WRITE_BYTES_ESTIMATE`]. Not the disk budget, which counts
    /// stored batches only. Writes that let space be freed (deletes, trims,
    /// mirror cursors that release data kept for a link) check health only:
    /// they may use the reserve, which is what it is for.
    pub(super) fn check_metadata_write(&self, keys: u64) -> Result<(), StorageError> {
        self.flusher.check_healthy()?;
        self.disk
            .reserve(keys.saturating_mul(METADATA_WRITE_BYTES_ESTIMATE))
    }

    /// Bytes of stored batches over all topics (what the budget counts).
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// The disk budget in force, if any.
    pub fn budget_bytes(&self) -> Option<u64> {
        self.budget_bytes
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// Appends already-encoded batches (each a complete batch whose base
    /// offset will be overwritten) to one partition, contiguously and
    /// atomically. Returns the first and one-past-last offsets. The batches
    /// are durable once [`PartitionLog::durable_end`] reaches the end.
    pub fn append(
        &self,
        log: &Arc<PartitionLog>,
        batches: &mut [Vec<u8>],
    ) -> Result<(u64, u64), StorageError> {
        let incoming: u64 = batches.iter().map(|b| b.len() as u64).sum();
        self.append_with(log, incoming, || {
            self.make_room(Some(log), incoming)?;
            Ok((log.append(batches, &self.dir)?, true))
        })
    }

    /// The one path of every append (plain, idempotent, mirrored): checks
    /// storage's health and the free-space reserve for `incoming` bytes,
    /// runs `write` (which makes room within the disk budget once it knows
    /// what is new, takes the partition's append lock, stages, writes and
    /// publishes, and says whether it wrote anything), turns an I/O error
    /// into failed storage, and marks the partition for the next flush
    /// round (a write to sled that must be durable with the batch marks
    /// sled itself, before this).
    fn append_with<T>(
        &self,
        log: &Arc<PartitionLog>,
        incoming: u64,
        write: impl FnOnce() -> Result<(T, bool), StorageError>,
    ) -> Result<T, StorageError> {
        self.flusher.check_healthy()?;
        self.disk.reserve(incoming)?;
        let (outcome, written) = write().map_err(|e| self.write_failed(e))?;
        if written {
            self.flusher.mark_dirty(log);
        }
        Ok(outcome)
    }

    /// Makes room for `incoming` bytes within the disk budget (if there is
    /// one) on behalf of a writer to `writer` (`None`: the maintenance loop),
    /// by the rule of [`budget`]; `BudgetFull` when it cannot.
    pub(super) fn make_room(
        &self,
        writer: Option<&PartitionLog>,
        incoming: u64,
    ) -> Result<budget::Dropped, StorageError> {
        let Some(budget_bytes) = self.budget_bytes else {
            return Ok(budget::Dropped::default());
        };
        if self.used_bytes() + incoming <= budget_bytes {
            return Ok(budget::Dropped::default());
        }
        let _serial = self.budget_lock.lock().expect("budget lock");
        let config = writer.map(PartitionLog::config);
        let before = self.used_bytes();
        let made = budget::make_room(
            &self.topics(),
            writer
                .zip(config.as_deref())
                .map(|(log, c)| (log.topic(), c)),
            incoming,
            budget_bytes,
            || self.used_bytes(),
            &self.budget_log,
        );
        if self.used_bytes() < before {
            // Drops for a write that is then refused get no flush of their
            // own: ask for a round, so the new log starts reach the disk
            // soon (as maintenance does).
            let _ticket = self.flusher.commit_ticket();
        }
        made
    }

    /// sled 0.34 fails every later operation after an I/O error until it is
    /// reopened: a write that hit one (ENOSPC above all, when the disk fills
    /// faster than the free-space reserve sees) fails storage just as a
    /// failed flush does, so the hub stops for a restart
    /// (`server::watch_storage`) even if no flush round runs after it.
    fn write_failed(&self, e: StorageError) -> StorageError {
        let io = match &e {
            StorageError::Sled { source, .. } => matches!(source, sled::Error::Io(_)),
            StorageError::Io { .. } | StorageError::DiskFull { .. } => true,
            _ => false,
        };
        if io {
            self.flusher.fail(&e);
            self.wake_partition_waiters();
        }
        e
    }

    /// Wakes every partition's [`PartitionLog::durable_event`] waiters
    /// (storage closing or failed: they see it and stop waiting).
    fn wake_partition_waiters(&self) {
        for topic in self.topics.read().expect("topics lock").values() {
            for log in topic.partitions() {
                log.wake_waiters();
            }
        }
    }

    /// The producer id of the stable `name` of identity `owner`, with a new
    /// epoch (fencing older sessions of that owner's `name`) and the
    /// sequence to continue with. Durable once [`Storage::is_committed`]
    /// holds for the returned ticket.
    pub fn init_producer(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<(ProducerInit, u64), StorageError> {
        // A new name writes its state, its id and the state again.
        self.check_metadata_write(3)?;
        let init = self.producers.init(&self.db, &self.dir, owner, name)?;
        Ok((init, self.flusher.commit_ticket()))
    }

    /// Whether writes made before `ticket` was issued are fsynced.
    pub fn is_committed(&self, ticket: u64) -> bool {
        self.flusher.is_done(ticket)
    }

    /// Appends an idempotent producer's batches (all for partition `log`;
    /// each carries the producer stamp, sequences continuing). A resend of
    /// a recent batch returns its original offsets and writes nothing.
    /// A producer id issued to another identity than `owner` is
    /// [`StorageError::UnknownProducer`]. Durable like [`Storage::append`].
    pub fn append_idempotent(
        &self,
        owner: &str,
        topic: &Topic,
        log: &Arc<PartitionLog>,
        stamp: ProducerStamp,
        record_count: u32,
        batches: &mut [Vec<u8>],
    ) -> Result<IdempotentAppend, StorageError> {
        let incoming: u64 = batches.iter().map(|b| b.len() as u64).sum();
        self.append_with(log, incoming, || {
            // The budget is checked once the batch is known to be new: a
            // resend of an appended batch is answered, never refused.
            let (outcome, checkpointed) = self.producers.append(
                &self.dir,
                owner,
                topic,
                log,
                stamp,
                record_count,
                batches,
                || self.make_room(Some(log), incoming).map(|_| ()),
            )?;
            // The producer's state rides with its batch (replayed after a
            // crash); only a new checkpoint needs sled synced with it.
            if checkpointed == producers::Checkpointed::Yes {
                self.flusher.mark_meta_dirty();
            }
            let written = matches!(outcome, IdempotentAppend::Appended(_));
            Ok((outcome, written))
        })
    }

    /// `Ok` unless storage has failed (an fsync error) or is closed.
    pub fn check_healthy(&self) -> Result<(), StorageError> {
        self.flusher.check_healthy()
    }

    /// Fires whenever durable watermarks advance (after each group commit).
    pub fn durable_event(&self) -> &event_listener::Event {
        self.flusher.durable_event()
    }

    /// Flush counters and fsync latencies.
    pub fn flush_stats(&self) -> FlushStats {
        self.flusher.stats()
    }

    /// Bytes sled's files take on disk (walks the data directory: call it
    /// off the executor threads).
    pub fn disk_bytes(&self) -> Result<u64, StorageError> {
        let sled = self
            .db
            .size_on_disk()
            .map_err(|e| StorageError::sled(&self.dir, e))?;
        Ok(sled + dir_bytes(&self.segments_dir))
    }

    /// Whether a flush or fsync failed: storage is read-only until restart.
    pub fn has_failed(&self) -> bool {
        self.flusher.has_failed()
    }

    /// Unreadable batches dropped from partition tails when storage was
    /// opened (normally a write torn by a crash before it
    /// was acknowledged).
    pub fn dropped_at_recovery(&self) -> u64 {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.dropped_at_recovery)
            .sum()
    }

    /// Final flush and fsync, then stops the flusher. Further appends fail
    /// with [`StorageError::Closed`].
    pub fn close(&self) -> Result<(), StorageError> {
        let stopped = self.flusher.stop();
        self.wake_partition_waiters();
        stopped
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Err(e) = self.flusher.stop() {
            log::error!("final flush failed: {e}");
        }
    }
}

/// The directory of the partitions' segment files, in the data directory.
const SEGMENTS_DIR: &str = "segments";

/// Bytes of the files in `dir` and its subdirectories (what could be read).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The directory of one partition's segment files.
fn partition_dir(segments_dir: &Path, topic_id: u64, partition: u32) -> PathBuf {
    segments_dir.join(format!("{topic_id}.{partition}"))
}

/// Removes the segment directories of topics that no longer exist (a
/// delete, or a create, that a crash interrupted).
fn drop_orphan_segment_dirs(
    segments_dir: &Path,
    topics: &HashMap<String, Arc<Topic>>,
) -> Result<(), StorageError> {
    let live: std::collections::HashSet<u64> = topics.values().map(|t| t.meta.id).collect();
    let io = |e| StorageError::io(segments_dir, e);
    let mut dropped = 0;
    for entry in std::fs::read_dir(segments_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.split('.').next())
            .and_then(|id| id.parse::<u64>().ok());
        if id.is_some_and(|id| !live.contains(&id)) {
            std::fs::remove_dir_all(entry.path()).map_err(io)?;
            dropped += 1;
        }
    }
    if dropped > 0 {
        sync_dir(segments_dir)?;
        log::info!("removed {dropped} segment directories of topics that no longer exist");
    }
    Ok(())
}

/// Bytes a new topic of `partitions` partitions is counted as against the
/// free-space reserve: its metadata write, and per partition a directory
/// with its first (empty) segment and index files ([`PARTITION_FILES_BYTES`]).
fn create_topic_bytes(partitions: u64) -> u64 {
    PARTITION_FILES_BYTES
        .saturating_mul(partitions)
        .saturating_add(METADATA_WRITE_BYTES_ESTIMATE)
}

/// Disk space a new partition takes before its first record: a directory
/// block and the inodes of its first segment and index files (ext4: one
/// 4 KiB block; counted twice that for the inodes and the directory entry
/// in `segments/`). Checked against a measured topic in the tests.
const PARTITION_FILES_BYTES: u64 = 8 << 10;

/// Bytes per (dropped tree, tree) pair in `topic_delete::delete_topic_bytes`:
/// sled rewrites its catalog of trees for each tree it drops. Only data
/// directories from before segment files have partition trees.
const SLED_TREE_CATALOG_BYTES: u64 = 16;

fn tree_name(topic_id: u64, partition: u32) -> String {
    format!("log.{topic_id}.{partition}")
}

fn open_topic(
    dir: &Path,
    segments_dir: &Path,
    meta: TopicMeta,
    floors: &sled::Tree,
    total_bytes: &Arc<AtomicU64>,
) -> Result<Topic, StorageError> {
    let parsed = TopicConfig::parse(&meta.configs).map_err(|reason| StorageError::BadMeta {
        topic: meta.name.clone(),
        reason,
    })?;
    let config: partition::ConfigCell = Arc::new(RwLock::new(Arc::new(parsed)));
    let mut partitions = Vec::with_capacity(usize::try_from(meta.partitions).unwrap_or(0));
    for p in 0..meta.partitions {
        partitions.push(Arc::new(PartitionLog::recover(
            partition::PartitionSetup {
                segment_dir: partition_dir(segments_dir, meta.id, p),
                floors: floors.clone(),
                topic: &meta.name,
                topic_id: meta.id,
                partition: p,
                dir,
                total_bytes: total_bytes.clone(),
                config: config.clone(),
            },
        )?));
    }
    Ok(Topic {
        meta,
        partitions,
        config,
        keyless_next: Arc::new(AtomicU32::new(0)),
    })
}

/// sled reports a held file lock as an `Other` error wrapping EWOULDBLOCK.
fn lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

fn open_error(dir: &Path, e: sled::Error) -> StorageError {
    if lock_held(&e) {
        return StorageError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(
                "the data directory is locked by another running eddy; stop it or pass another --data-dir",
            ),
        };
    }
    StorageError::sled(dir, e)
}

/// fsyncs a directory so that files created in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// After open: makes the files sled creates on first start survive a power
/// cut. The flusher fdatasyncs sled's log (`log/db`) and blobs, but not
/// the directory entries: `log/db`, `log/conf` and `log/blobs/` in
/// `data_dir/log`, `log/` in `data_dir`, and `data_dir` itself in its
/// parent when this open created it. sled never fsyncs `log/conf` (its
/// segment size and version), so it is synced here too. A few fsyncs per
/// start, whether or not anything is new (a crash during a first start
/// may have left entries unsynced).
fn sync_created_files(data_dir: &Path, sled_dir: &Path, created: bool) -> Result<(), StorageError> {
    let conf = sled_dir.join("conf");
    match std::fs::File::open(&conf) {
        Ok(f) => f.sync_all().map_err(|e| StorageError::io(&conf, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&conf, e)),
    }
    let blobs = sled_dir.join("blobs");
    if blobs.is_dir() {
        sync_dir(&blobs)?;
    }
    sync_dir(sled_dir)?;
    sync_dir(data_dir)?;
    if created {
        // `create_dir_all` may have made parents too; the entry of the data
        // directory itself is what a restart needs to find. A parent that
        // cannot be opened (no read permission) only costs that guarantee
        // for this first start: warn, do not refuse to start.
        let parent = match data_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = sync_dir(parent) {
            log::warn!(
                "created {} but could not fsync its parent: {e}",
                data_dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod maintenance_tests;

#[cfg(test)]
mod durability_tests;
