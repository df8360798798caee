//! Model tests of retention, compaction and the disk budget, with an
//! injected clock (`Storage::maintain(now_ms)`), never sleeps.

use std::sync::Arc;

use event_listener::Listener;

use super::*;
use crate::wire::batch::{Batch, BatchBuilder, Batches, Headers};

/// A record as the models keep it: offset, key, value, timestamp.
#[derive(Clone, PartialEq, Eq)]
struct Rec {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: i64,
}

/// Short: offset, key, value length and first byte, timestamp (a failed
/// comparison of logs stays readable).
impl std::fmt::Debug for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.as_deref().map(String::from_utf8_lossy);
        write!(
            f,
            "@{} {key:?}={}B/{:?} t{}",
            self.offset,
            self.value.len(),
            self.value.first(),
            self.ts
        )
    }
}

fn seed() -> u64 {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (rerun with EDDY_TEST_SEED={seed})");
    seed
}

/// `segment.bytes` for tests that must see many closed segments: a few
/// batches each, so retention, compaction and the time lookup cross
/// segment boundaries and delete, swap and skip whole segments.
const SMALL_SEGMENT_BYTES: &str = "1500";

fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A fresh store with one topic "t" of one partition with `configs`;
/// returns the directory (keep it alive), the store and the partition.
fn one_partition(configs: &[(&str, &str)]) -> (tempfile::TempDir, Storage, Arc<PartitionLog>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage.create_topic("t", 1, cfg(configs), 0).unwrap();
    let log = topic.partition(0).unwrap().clone();
    (dir, storage, log)
}

/// A record to append: key, value, timestamp.
type NewRecord<'a> = (Option<&'a [u8]>, &'a [u8], i64);

/// Appends one stored batch of `(key, value, ts)` records and waits until
/// it is durable; returns its offsets.
fn append(storage: &Storage, log: &Arc<PartitionLog>, records: &[NewRecord<'_>]) -> (u64, u64) {
    let mut b = BatchBuilder::with_capacity(1 << 16, records[0].2).unwrap();
    for (k, v, ts) in records {
        b.push(*ts, *k, v, Headers::EMPTY).unwrap();
    }
    let (first, end) = storage.append(log, &mut [b.finish_vec()]).unwrap();
    while log.durable_end() < end {
        let listener = storage.durable_event().listen();
        if log.durable_end() >= end {
            break;
        }
        listener.wait();
    }
    (first, end)
}

fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let mut offset = log.watermarks().log_start;
    let mut got = Vec::new();
    loop {
        let mut out = Vec::new();
        let outcome = log.read(offset, 1 << 16, &mut out).unwrap();
        if outcome.bytes == 0 {
            return got;
        }
        for batch in Batches::new(&out) {
            let batch: Batch<'_> = batch.unwrap();
            batch.validate().unwrap();
            for r in batch.records() {
                let r = r.unwrap();
                let at = batch.base_offset() + u64::from(r.offset_delta);
                if at >= offset {
                    got.push(Rec {
                        offset: at,
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.to_vec(),
                        ts: batch.timestamp_of(&r),
                    });
                }
            }
        }
        offset = outcome.next_offset;
    }
}

/// Runs maintenance at `now` until two steps in a row report no more work
/// (the step that ends a compaction pass reports none, and the next may
/// start another one for what was appended meanwhile).
fn maintain_all(storage: &Storage, state: &mut Maintenance, now: u64) -> MaintenanceReport {
    let mut total = MaintenanceReport::default();
    let mut idle = 0;
    for _ in 0..100_000 {
        let r = storage.maintain(state, now).unwrap();
        total.retention_removed_records += r.retention_removed_records;
        total.compaction_removed_records += r.compaction_removed_records;
        idle = if r.more { 0 } else { idle + 1 };
        if idle == 2 {
            return total;
        }
    }
    panic!("maintenance did not settle");
}

/// A stored batch in the retention model.
#[derive(Debug, Clone)]
struct ModelBatch {
    records: Vec<Rec>,
    bytes: u64,
    max_ts: i64,
}

/// Kafka's retention, phase by phase, to a fixed point: time-based from the
/// front, then size-based from the front.
fn model_retention(
    batches: &mut Vec<ModelBatch>,
    now: i64,
    age_ms: Option<i64>,
    size: Option<u64>,
) {
    loop {
        let before = batches.len();
        if let Some(age) = age_ms {
            while batches.first().is_some_and(|b| now - b.max_ts > age) {
                batches.remove(0);
            }
        }
        if let Some(limit) = size {
            let mut total: u64 = batches.iter().map(|b| b.bytes).sum();
            while batches.first().is_some_and(|b| total - b.bytes >= limit) {
                total -= batches.remove(0).bytes;
            }
        }
        if batches.len() == before {
            return;
        }
    }
}

#[test]
fn retention_by_age_and_size_matches_the_model() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let age_ms = 10_000i64;
    let size = 6_000u64;
    let (_dir, storage, log) = one_partition(&[
        ("retention.ms", "10000"),
        ("retention.bytes", "6000"),
        ("segment.bytes", SMALL_SEGMENT_BYTES),
    ]);
    let mut model: Vec<ModelBatch> = Vec::new();
    let mut state = Maintenance::default();
    let mut now = 1_000_000i64;
    let mut next_offset = 0;
    for round in 0..60 {
        for _ in 0..rng.usize(0..4) {
            let n = rng.usize(1..6);
            let ts = now - rng.i64(0..15_000);
            let values: Vec<Vec<u8>> = (0..n)
                .map(|_| vec![rng.u8(..); rng.usize(10..400)])
                .collect();
            let records: Vec<NewRecord<'_>> =
                values.iter().map(|v| (None, v.as_slice(), ts)).collect();
            let (first, end) = append(&storage, &log, &records);
            assert_eq!(first, next_offset);
            next_offset = end;
            let mut out = Vec::new();
            log.read(first, 1, &mut out).unwrap();
            let recs = values
                .iter()
                .enumerate()
                .map(|(i, v)| Rec {
                    offset: first + i as u64,
                    key: None,
                    value: v.clone(),
                    ts,
                })
                .collect();
            model.push(ModelBatch {
                records: recs,
                bytes: out.len() as u64,
                max_ts: ts,
            });
        }
        now += rng.i64(0..3_000);
        maintain_all(&storage, &mut state, u64::try_from(now).unwrap());
        model_retention(&mut model, now, Some(age_ms), Some(size));
        let expected: Vec<Rec> = model.iter().flat_map(|b| b.records.clone()).collect();
        let marks = log.watermarks();
        assert_eq!(read_all(&log), expected, "round {round}");
        assert_eq!(
            marks.log_start,
            expected.first().map_or(next_offset, |r| r.offset),
            "round {round}: log start"
        );
        assert_eq!(marks.log_end, next_offset, "offsets never change");
        assert_eq!(
            log.stored_bytes(),
            model.iter().map(|b| b.bytes).sum::<u64>()
        );
        // A fetch below the log start says so and names the earliest offset.
        if marks.log_start > 0 {
            match log.read(marks.log_start - 1, 100, &mut Vec::new()) {
                Err(StorageError::OffsetOutOfRange { log_start, .. }) => {
                    assert_eq!(log_start, marks.log_start)
                }
                other => panic!("expected OffsetOutOfRange, got {other:?}"),
            }
        }
    }
}

#[test]
fn an_emptied_log_keeps_its_offsets_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage
            .create_topic(
                "t",
                1,
                cfg(&[
                    ("retention.ms", "1000"),
                    ("segment.bytes", SMALL_SEGMENT_BYTES),
                ]),
                0,
            )
            .unwrap();
        let log = topic.partition(0).unwrap().clone();
        for i in 0..5 {
            append(
                &storage,
                &log,
                &[(None, b"x", 100 + i), (None, b"y", 100 + i)],
            );
        }
        // Mirror hook: nothing at or above offset 6 may go.
        log.set_keep_from(Some(6));
        maintain_all(&storage, &mut Maintenance::default(), 1_000_000);
        assert_eq!(log.watermarks().log_start, 6, "stops at keep_from");
        log.set_keep_from(None);
        maintain_all(&storage, &mut Maintenance::default(), 1_000_000);
        let marks = log.watermarks();
        assert_eq!((marks.log_start, marks.log_end), (10, 10));
        assert_eq!(log.stats().retention_removed_records, 10);
        storage.close().unwrap();
    }
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let log = storage.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(log.watermarks().log_start, 10);
    assert_eq!(log.watermarks().log_end, 10, "not back to 0");
    let (first, _) = append(&storage, &log, &[(None, b"z", 1_000_000)]);
    assert_eq!(first, 10);
}

/// Newest per key below `end`, minus expired tombstones; everything at or
/// above `end` untouched.
fn model_compaction(records: &[Rec], end: u64, now: i64, tombstone_ms: i64) -> Vec<Rec> {
    records
        .iter()
        .filter(|r| {
            if r.offset >= end {
                return true;
            }
            let Some(key) = &r.key else { return true };
            let superseded = records
                .iter()
                .any(|o| o.offset > r.offset && o.offset < end && o.key.as_ref() == Some(key));
            let expired = r.value.is_empty() && now - r.ts > tombstone_ms;
            !superseded && !expired
        })
        .cloned()
        .collect()
}

#[test]
fn compaction_keeps_the_newest_record_per_key_at_its_offset() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage
        .create_topic(
            "c",
            1,
            cfg(&[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "5000"),
                ("min.cleanable.dirty.ratio", "0"),
                ("segment.bytes", SMALL_SEGMENT_BYTES),
            ]),
            0,
        )
        .unwrap();
    let log = topic.partition(0).unwrap().clone();
    let mut model: Vec<Rec> = Vec::new();
    let mut state = Maintenance::default();
    let mut now = 1_000_000i64;
    let mut removed_total = 0;
    for round in 0..12 {
        for _ in 0..rng.usize(1..8) {
            let n = rng.usize(1..30);
            let ts = now - rng.i64(0..8_000);
            let recs: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..n)
                .map(|_| {
                    let key =
                        (rng.u8(..) % 8 != 0).then(|| format!("k{}", rng.u8(0..20)).into_bytes());
                    let value = if rng.u8(..) % 6 == 0 {
                        Vec::new()
                    } else {
                        vec![rng.u8(..); rng.usize(1..50)]
                    };
                    (key, value)
                })
                .collect();
            let borrowed: Vec<NewRecord<'_>> = recs
                .iter()
                .map(|(k, v)| (k.as_deref(), v.as_slice(), ts))
                .collect();
            let (first, _) = append(&storage, &log, &borrowed);
            for (i, (k, v)) in recs.into_iter().enumerate() {
                model.push(Rec {
                    offset: first + i as u64,
                    key: k,
                    value: v,
                    ts,
                });
            }
        }
        now += rng.i64(0..4_000);
        let end_before = log.log_end();
        let last_base = log.last_base().unwrap().unwrap();
        let report = maintain_all(&storage, &mut state, u64::try_from(now).unwrap());
        let expected = model_compaction(&model, last_base, now, 5_000);
        removed_total += report.compaction_removed_records;
        assert_eq!(
            report.compaction_removed_records as usize,
            model.len() - expected.len(),
            "round {round}"
        );
        model = expected;
        assert_eq!(
            read_all(&log),
            model,
            "round {round}: newest per key at its offset"
        );
        assert_eq!(log.log_end(), end_before, "offsets never change");
        assert_eq!(log.stats().compaction_removed_records, removed_total);
    }
    // Reopened, the compacted log reads the same and continues its offsets.
    let end = log.log_end();
    drop((log, topic));
    storage.close().unwrap();
    drop(storage);
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let log = storage.topic("c").unwrap().partition(0).unwrap().clone();
    assert_eq!(read_all(&log), model);
    assert_eq!(log.log_end(), end);
}

/// How a topic of the budget model behaves when the budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Reject,
    Drop,
}

/// A topic of the budget model.
#[derive(Debug, Clone)]
struct BudgetTopic {
    name: &'static str,
    partitions: u32,
    full: Full,
    priority: u8,
    /// `on_full.unmirrored=drop`.
    drop_unmirrored: bool,
    /// The mirror forwards it (its `keep_from` moves).
    mirrored: bool,
}

impl BudgetTopic {
    fn configs(&self) -> Vec<(String, String)> {
        let on_full = match self.full {
            Full::Reject => "reject",
            Full::Drop => "drop_oldest",
        };
        let unmirrored = if self.drop_unmirrored { "drop" } else { "keep" };
        cfg(&[
            ("on_full", on_full),
            ("priority", &self.priority.to_string()),
            ("on_full.unmirrored", unmirrored),
        ])
    }
}

/// A partition of the budget model.
#[derive(Debug, Clone, Default)]
struct BudgetPartition {
    batches: std::collections::VecDeque<ModelBatch>,
    log_start: u64,
    log_end: u64,
    keep_from: Option<u64>,
    dropped_records: u64,
    dropped_bytes: u64,
    /// Every record ever acknowledged (and not deleted with its topic).
    acked: Vec<Rec>,
}

impl BudgetPartition {
    fn records(&self) -> Vec<Rec> {
        self.batches
            .iter()
            .flat_map(|b| b.records.clone())
            .collect()
    }
}

/// The rule as the README states it, written independently of `budget`:
/// only `drop_oldest` topics lose data; a `reject` writer sheds strictly
/// lower priorities, a `drop_oldest` writer its own and lower ones.
fn model_sheds(writer: &BudgetTopic, candidate: &BudgetTopic) -> bool {
    candidate.full == Full::Drop
        && match writer.full {
            Full::Drop => candidate.priority <= writer.priority,
            Full::Reject => candidate.priority < writer.priority,
        }
}

/// The budget model: drops for an append of `incoming` bytes to topic
/// `writer`, lowest priority first, oldest (newest timestamp of a front
/// batch) first within a priority, only batches below the mirror's
/// `keep_from` unless the topic drops unmirrored data. Returns whether the
/// append fits afterwards.
fn model_make_room(
    topics: &[BudgetTopic],
    parts: &mut [Vec<BudgetPartition>],
    writer: usize,
    incoming: u64,
    budget: u64,
) -> bool {
    let used = |parts: &[Vec<BudgetPartition>]| -> u64 {
        parts
            .iter()
            .flatten()
            .flat_map(|p| p.batches.iter())
            .map(|b| b.bytes)
            .sum()
    };
    let mut levels: Vec<u8> = topics
        .iter()
        .filter(|t| model_sheds(&topics[writer], t))
        .map(|t| t.priority)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        while used(parts) + incoming > budget {
            let mut oldest: Option<(i64, usize, usize)> = None;
            for (ti, t) in topics.iter().enumerate() {
                if !model_sheds(&topics[writer], t) || t.priority != level {
                    continue;
                }
                for (pi, p) in parts[ti].iter().enumerate() {
                    let Some(front) = p.batches.front() else {
                        continue;
                    };
                    let end = front.records.last().unwrap().offset + 1;
                    let removable_end = if t.drop_unmirrored {
                        p.log_end
                    } else {
                        p.log_end.min(p.keep_from.unwrap_or(u64::MAX))
                    };
                    if end <= removable_end && oldest.is_none_or(|(ts, _, _)| front.max_ts < ts) {
                        oldest = Some((front.max_ts, ti, pi));
                    }
                }
            }
            let Some((_, ti, pi)) = oldest else { break };
            let p = &mut parts[ti][pi];
            let gone = p.batches.pop_front().unwrap();
            p.log_start = gone.records.last().unwrap().offset + 1;
            p.dropped_records += gone.records.len() as u64;
            p.dropped_bytes += gone.bytes;
        }
    }
    used(parts) + incoming <= budget
}

fn try_append(
    storage: &Storage,
    log: &Arc<PartitionLog>,
    records: &[NewRecord<'_>],
) -> Result<(u64, u64), StorageError> {
    let mut b = BatchBuilder::with_capacity(1 << 16, records[0].2).unwrap();
    for (k, v, ts) in records {
        b.push(*ts, *k, v, Headers::EMPTY).unwrap();
    }
    let (first, end) = storage.append(log, &mut [b.finish_vec()])?;
    while log.durable_end() < end {
        let listener = storage.durable_event().listen();
        if log.durable_end() >= end {
            break;
        }
        listener.wait();
    }
    Ok((first, end))
}

/// Compares every partition of the storage with the model: watermarks,
/// bytes, drop counters, and every stored record read back; a `reject`
/// topic still holds every record it ever acknowledged.
fn check_budget_model(
    storage: &Storage,
    topics: &[BudgetTopic],
    parts: &[Vec<BudgetPartition>],
    at: &str,
) {
    let mut total = 0;
    for (t, model) in topics.iter().zip(parts) {
        let topic = storage.topic(t.name).unwrap();
        for (pi, m) in model.iter().enumerate() {
            let log = topic.partition(u32::try_from(pi).unwrap()).unwrap();
            let marks = log.watermarks();
            let name = format!("{at}: {}/{pi}", t.name);
            assert_eq!(
                (marks.log_start, marks.log_end),
                (m.log_start, m.log_end),
                "{name}: watermarks"
            );
            let bytes: u64 = m.batches.iter().map(|b| b.bytes).sum();
            assert_eq!(log.stored_bytes(), bytes, "{name}: stored bytes");
            total += bytes;
            let stats = log.stats();
            assert_eq!(
                (stats.dropped_records, stats.dropped_bytes),
                (m.dropped_records, m.dropped_bytes),
                "{name}: drops counted"
            );
            let stored = read_all(log);
            assert_eq!(stored, m.records(), "{name}: records read back");
            if t.full == Full::Reject {
                assert_eq!(stored, m.acked, "{name}: an acknowledged record was lost");
            }
        }
    }
    assert_eq!(storage.used_bytes(), total, "{at}: used bytes");
}

/// The storage and the model of one budget test.
struct BudgetRun {
    /// `None` only while reopening.
    storage: Option<Storage>,
    options: StorageOptions,
    budget: u64,
    topics: Vec<BudgetTopic>,
    parts: Vec<Vec<BudgetPartition>>,
}

impl BudgetRun {
    fn open(dir: &std::path::Path, budget: u64, topics: Vec<BudgetTopic>) -> BudgetRun {
        let options = StorageOptions {
            disk_budget_bytes: Some(budget),
            ..StorageOptions::default()
        };
        let storage = Storage::open(dir, &options).unwrap();
        for t in &topics {
            storage
                .create_topic(t.name, t.partitions, t.configs(), 0)
                .unwrap();
        }
        let parts = topics
            .iter()
            .map(|t| vec![BudgetPartition::default(); t.partitions as usize])
            .collect();
        BudgetRun {
            storage: Some(storage),
            options,
            budget,
            topics,
            parts,
        }
    }

    fn storage(&self) -> &Storage {
        self.storage.as_ref().expect("storage open")
    }

    fn index(&self, name: &str) -> usize {
        self.topics.iter().position(|t| t.name == name).unwrap()
    }

    fn log(&self, ti: usize, pi: usize) -> Arc<PartitionLog> {
        self.storage()
            .topic(self.topics[ti].name)
            .unwrap()
            .partition(u32::try_from(pi).unwrap())
            .unwrap()
            .clone()
    }

    /// Appends `values` as one batch stamped `ts` to partition `pi` of topic
    /// `ti`, in the storage and in the model; checks that both agree on the
    /// outcome and then on every partition. Returns whether it was accepted
    /// and how many records the budget dropped for it.
    fn append(
        &mut self,
        ti: usize,
        pi: usize,
        values: &[Vec<u8>],
        ts: i64,
        at: &str,
    ) -> (bool, u64) {
        let records: Vec<NewRecord<'_>> = values.iter().map(|v| (None, v.as_slice(), ts)).collect();
        let mut b = BatchBuilder::with_capacity(1 << 16, ts).unwrap();
        for (k, v, ts) in &records {
            b.push(*ts, *k, v, Headers::EMPTY).unwrap();
        }
        let incoming = b.finish_vec().len() as u64;
        let dropped = |parts: &[Vec<BudgetPartition>]| -> u64 {
            parts.iter().flatten().map(|p| p.dropped_records).sum()
        };
        let before = dropped(&self.parts);
        let fits = model_make_room(&self.topics, &mut self.parts, ti, incoming, self.budget);
        let shed = dropped(&self.parts) - before;
        let name = self.topics[ti].name;
        let accepted = match try_append(self.storage(), &self.log(ti, pi), &records) {
            Ok((first, end)) => {
                assert!(fits, "{at}: {name} accepted, the model refuses");
                let p = &mut self.parts[ti][pi];
                assert_eq!(first, p.log_end, "{at}: offsets are dense");
                let recs: Vec<Rec> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Rec {
                        offset: first + i as u64,
                        key: None,
                        value: v.clone(),
                        ts,
                    })
                    .collect();
                p.acked.extend(recs.iter().cloned());
                p.batches.push_back(ModelBatch {
                    records: recs,
                    bytes: incoming,
                    max_ts: ts,
                });
                p.log_end = end;
                true
            }
            Err(e) => {
                assert!(matches!(e, StorageError::BudgetFull { .. }), "{at}: {e}");
                assert!(!fits, "{at}: {name} refused, the model accepts: {e}");
                if self.topics[ti].full == Full::Reject {
                    assert!(e.to_string().contains("on_full=reject"), "{e}");
                }
                false
            }
        };
        self.check(at);
        (accepted, shed)
    }

    fn set_keep_from(&mut self, ti: usize, keep_from: Option<u64>) {
        self.parts[ti][0].keep_from = keep_from;
        self.log(ti, 0).set_keep_from(keep_from);
    }

    fn set_drop_unmirrored(&mut self, ti: usize, drop: bool) {
        self.topics[ti].drop_unmirrored = drop;
        let t = &self.topics[ti];
        self.storage()
            .alter_topic(t.name, &t.configs(), &[])
            .unwrap();
    }

    /// An operator deletes the topic (it was consumed) and creates it again.
    fn recreate(&mut self, ti: usize) {
        let t = &self.topics[ti];
        self.storage().delete_topic(t.name).unwrap();
        self.storage()
            .create_topic(t.name, t.partitions, t.configs(), 0)
            .unwrap();
        self.parts[ti] = vec![BudgetPartition::default(); t.partitions as usize];
    }

    fn check(&self, at: &str) {
        check_budget_model(self.storage(), &self.topics, &self.parts, at);
    }

    /// Closes and reopens the storage: the same records, offsets and bytes
    /// (keep_from is the mirror's to set again; counters count since open).
    fn reopen(&mut self, dir: &std::path::Path) {
        let old = self.storage.take().expect("storage open");
        old.close().unwrap();
        drop(old);
        self.storage = Some(Storage::open(dir, &self.options).unwrap());
        for p in self.parts.iter_mut().flatten() {
            p.keep_from = None;
            p.dropped_records = 0;
            p.dropped_bytes = 0;
        }
        self.check("reopened");
    }
}

fn budget_topic(
    name: &'static str,
    partitions: u32,
    full: Full,
    priority: u8,
    mirrored: bool,
) -> BudgetTopic {
    BudgetTopic {
        name,
        partitions,
        full,
        priority,
        drop_unmirrored: false,
        mirrored,
    }
}

/// The disk budget against a model: random appends to topics of every
/// kind (reject and drop_oldest, several priorities, a mirrored topic whose
/// `keep_from` moves and whose `on_full.unmirrored` flips), topics deleted
/// to free room; after every step the outcome, every partition's offsets,
/// bytes and drop counters and every stored record equal the model's, and
/// every record a reject topic acknowledged reads back, also after the
/// storage is reopened.
#[test]
fn disk_budget_sheds_lower_priorities_first_against_a_model() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let dir = tempfile::tempdir().unwrap();
    let mut run = BudgetRun::open(
        dir.path(),
        24_000,
        vec![
            budget_topic("alarms", 1, Full::Reject, 9, false),
            budget_topic("audit", 1, Full::Reject, 5, false),
            budget_topic("default", 1, Full::Reject, 0, false),
            budget_topic("events", 1, Full::Drop, 7, true),
            budget_topic("logs", 1, Full::Drop, 1, false),
            budget_topic("metrics", 1, Full::Drop, 5, false),
            budget_topic("telemetry", 2, Full::Drop, 1, false),
        ],
    );
    let mirrored = run.topics.iter().position(|t| t.mirrored).unwrap();
    let rejecting: Vec<usize> = (0..run.topics.len())
        .filter(|&ti| run.topics[ti].full == Full::Reject)
        .collect();
    // Unique timestamps, out of append order: "oldest" is by time.
    let mut used_ts = std::collections::HashSet::new();
    let mut clock = 1_000_000i64;
    let (mut accepted, mut refused, mut refused_in_a_row) = (0, 0, 0);
    for step in 0..500 {
        let at = format!("step {step}");
        let roll = rng.u32(0..100);
        if roll < 3 || refused_in_a_row >= 8 {
            // Reject topics' data stays until someone frees it.
            run.recreate(rejecting[rng.usize(0..rejecting.len())]);
            refused_in_a_row = 0;
            run.check(&at);
        } else if roll < 6 {
            let drop = !run.topics[mirrored].drop_unmirrored;
            run.set_drop_unmirrored(mirrored, drop);
            run.check(&at);
        } else if roll < 12 {
            // The mirror moves on (never back).
            let p = &run.parts[mirrored][0];
            let from = p.keep_from.unwrap_or(p.log_start);
            let to = rng.u64(from..=p.log_end.max(from));
            run.set_keep_from(mirrored, Some(to));
            run.check(&at);
        } else {
            let ti = rng.usize(0..run.topics.len());
            let pi = rng.usize(0..run.topics[ti].partitions as usize);
            let ts = loop {
                let ts = clock - rng.i64(0..20_000);
                if used_ts.insert(ts) {
                    break ts;
                }
            };
            clock += 100;
            let values: Vec<Vec<u8>> = (0..rng.usize(1..4))
                .map(|_| vec![rng.u8(..); rng.usize(100..1_200)])
                .collect();
            if run.append(ti, pi, &values, ts, &at).0 {
                accepted += 1;
                refused_in_a_row = 0;
            } else {
                refused += 1;
                refused_in_a_row += 1;
            }
        }
    }
    eprintln!("{accepted} appends accepted, {refused} refused");
    assert!(accepted > 0 && refused > 0, "the budget was reached");
    run.reopen(dir.path());
}

/// The rule, case by case, each outcome checked against the model too:
/// a reject writer sheds lower priorities (oldest first across
/// partitions, lowest priority first) and never its own priority; it is
/// refused only when nothing droppable is left; a drop_oldest writer
/// never sheds a higher priority and may shed its own; unmirrored data is
/// kept unless the topic says `on_full.unmirrored=drop`.
#[test]
fn disk_budget_rule_case_by_case() {
    let dir = tempfile::tempdir().unwrap();
    // Room for five batches of one 1,000-byte record.
    let mut run = BudgetRun::open(
        dir.path(),
        5_500,
        vec![
            budget_topic("alarms", 1, Full::Reject, 9, false),
            budget_topic("audit", 1, Full::Reject, 5, false),
            budget_topic("events", 1, Full::Drop, 7, true),
            budget_topic("metrics", 1, Full::Drop, 5, false),
            budget_topic("telemetry", 2, Full::Drop, 1, false),
        ],
    );
    let [alarms, audit, events, metrics, telemetry] =
        ["alarms", "audit", "events", "metrics", "telemetry"].map(|n| run.index(n));
    let one = vec![vec![1u8; 1_000]];
    let dropped = |run: &BudgetRun, ti: usize, pi: usize| run.parts[ti][pi].dropped_records;
    // Metrics is older than all telemetry; telemetry partition 1 older
    // than partition 0.
    assert!(run.append(metrics, 0, &one, 1, "metrics 1").0);
    assert!(run.append(metrics, 0, &one, 2, "metrics 2").0);
    assert!(run.append(telemetry, 0, &one, 10, "telemetry 0/10").0);
    assert!(run.append(telemetry, 1, &one, 5, "telemetry 1/5").0);
    assert!(run.append(telemetry, 0, &one, 20, "telemetry 0/20").0);
    // Audit (reject, 5) writes: telemetry (1) goes, oldest first across
    // its partitions, and never metrics (5, the same priority).
    assert_eq!(run.append(audit, 0, &one, 100, "audit 1"), (true, 1));
    assert_eq!(dropped(&run, telemetry, 1), 1, "the oldest telemetry first");
    assert_eq!(run.append(audit, 0, &one, 101, "audit 2"), (true, 1));
    assert_eq!(run.append(audit, 0, &one, 102, "audit 3"), (true, 1));
    assert_eq!(dropped(&run, telemetry, 0), 2);
    assert_eq!(
        run.append(audit, 0, &one, 103, "audit 4"),
        (false, 0),
        "refused once only its own priority is left"
    );
    assert_eq!(dropped(&run, metrics, 0), 0);
    // Telemetry (drop_oldest, 1) may not shed audit or metrics: refused.
    assert_eq!(run.append(telemetry, 0, &one, 104, "telemetry"), (false, 0));
    // Alarms (reject, 9) shed metrics, oldest first, then are refused.
    assert_eq!(run.append(alarms, 0, &one, 105, "alarms 1"), (true, 1));
    assert_eq!(run.append(alarms, 0, &one, 106, "alarms 2"), (true, 1));
    assert_eq!(dropped(&run, metrics, 0), 2);
    assert_eq!(run.append(alarms, 0, &one, 107, "alarms 3"), (false, 0));
    // Free the audit topic; events (drop_oldest, 7, mirrored) fill.
    run.recreate(audit);
    run.set_keep_from(events, Some(0));
    for i in 0..3 {
        assert!(run.append(events, 0, &one, 200 + i, "events").0);
    }
    // Nothing of events is mirrored: an alarm is refused rather than
    // dropping it, and so is more of events.
    assert_eq!(run.append(alarms, 0, &one, 300, "alarms 4"), (false, 0));
    assert_eq!(run.append(events, 0, &one, 301, "events 4"), (false, 0));
    // Mirrored up to its second record: the first one may go.
    run.set_keep_from(events, Some(1));
    assert_eq!(run.append(alarms, 0, &one, 302, "alarms 5"), (true, 1));
    assert_eq!(run.append(events, 0, &one, 303, "events 5"), (false, 0));
    // on_full.unmirrored=drop: events shed their own oldest, unmirrored.
    run.set_drop_unmirrored(events, true);
    assert_eq!(run.append(events, 0, &one, 304, "events 6"), (true, 1));
    assert_eq!(dropped(&run, events, 0), 2);
    run.reopen(dir.path());
}

/// What a compacted (and retained, and budgeted) log may look like at any
/// moment, given every record ever appended (`model`, by offset): a
/// subsequence of the model from the log start on, each record unchanged at
/// its offset; nothing stored below the log start (a removed batch is never
/// resurrected); stored bytes as counted; keyless records and the newest
/// record of every key all there (a tombstone may go once expired at
/// `now`); the log end unchanged.
fn check_compaction_invariants(
    log: &PartitionLog,
    model: &[Rec],
    now: i64,
    tombstone_ms: i64,
    at: &str,
) {
    let marks = log.watermarks();
    assert_eq!(
        marks.log_end,
        model.last().map_or(0, |r| r.offset + 1),
        "{at}: log end"
    );
    if let Some(first) = log.first_batch().unwrap() {
        assert!(
            first.base >= marks.log_start,
            "{at}: batch {} stored below the log start {}",
            first.base,
            marks.log_start
        );
    }
    let stored = read_all(log);
    let mut bytes = 0u64;
    let mut offset = marks.log_start;
    while offset < marks.log_end {
        let mut out = Vec::new();
        let outcome = log.read(offset, 1 << 20, &mut out).unwrap();
        if outcome.bytes == 0 {
            break;
        }
        bytes += outcome.bytes as u64;
        offset = outcome.next_offset;
    }
    assert_eq!(log.stored_bytes(), bytes, "{at}: stored bytes as counted");
    let live: Vec<&Rec> = model
        .iter()
        .filter(|r| r.offset >= marks.log_start)
        .collect();
    let mut it = live.iter();
    for r in &stored {
        assert!(
            it.any(|m| *m == r),
            "{at}: {r:?} is not the appended record at its offset, or out of order"
        );
    }
    let present: std::collections::BTreeSet<u64> = stored.iter().map(|r| r.offset).collect();
    let mut newest: std::collections::BTreeMap<&[u8], &Rec> = Default::default();
    for r in &live {
        match &r.key {
            None => assert!(present.contains(&r.offset), "{at}: keyless {r:?} removed"),
            Some(k) => {
                newest.insert(k.as_slice(), r);
            }
        }
    }
    for r in newest.values() {
        let expired_tombstone = r.value.is_empty() && now - r.ts > tombstone_ms;
        assert!(
            present.contains(&r.offset) || expired_tombstone,
            "{at}: the newest record of its key {r:?} was removed"
        );
    }
}

/// A keyed batch for the compaction tests: keys from `keys`, some keyless
/// records, some tombstones.
fn keyed_batch(rng: &mut fastrand::Rng, keys: u8) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    (0..rng.usize(1..10))
        .map(|_| {
            let key = (rng.u8(..) % 8 != 0).then(|| format!("k{}", rng.u8(0..keys)).into_bytes());
            let value = if rng.u8(..) % 6 == 0 {
                Vec::new()
            } else {
                vec![rng.u8(..); rng.usize(1..120)]
            };
            (key, value)
        })
        .collect()
}

fn append_keyed(
    storage: &Storage,
    log: &Arc<PartitionLog>,
    recs: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    ts: i64,
) -> Vec<Rec> {
    let borrowed: Vec<NewRecord<'_>> = recs
        .iter()
        .map(|(k, v)| (k.as_deref(), v.as_slice(), ts))
        .collect();
    let (first, _) = append(storage, log, &borrowed);
    recs.into_iter()
        .enumerate()
        .map(|(i, (key, value))| Rec {
            offset: first + i as u64,
            key,
            value,
            ts,
        })
        .collect()
}

/// The state a settled compaction must reach: the model from the log start
/// on, compacted up to the last stored batch at `now`.
fn settled_model(log: &PartitionLog, model: &[Rec], now: i64, tombstone_ms: i64) -> Vec<Rec> {
    let log_start = log.watermarks().log_start;
    let live: Vec<Rec> = model
        .iter()
        .filter(|r| r.offset >= log_start)
        .cloned()
        .collect();
    let last_base = log.last_base().unwrap().unwrap_or(log_start);
    model_compaction(&live, last_base, now, tombstone_ms)
}

/// Compaction steps of one or two batches interleaved with appends (a pass
/// spans many of them), with retention by age and size of the same topic
/// (`cleanup.policy=compact,delete`) and with the disk budget dropping its
/// oldest batches for another topic's writes; a key map so small that most
/// passes stop at its bound. After every step the log is a valid state of
/// the model; once settled it is exactly the model's newest-per-key, at the
/// model's offsets.
#[test]
fn compaction_interleaved_with_appends_retention_and_the_budget_matches_the_model() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let dir = tempfile::tempdir().unwrap();
    let tombstone_ms = 3_000i64;
    let options = StorageOptions {
        disk_budget_bytes: Some(40_000),
        ..StorageOptions::default()
    };
    let storage = Storage::open(dir.path(), &options).unwrap();
    let drop_oldest = [("on_full", "drop_oldest"), ("priority", "1")];
    let c = storage
        .create_topic(
            "c",
            1,
            cfg(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "60000"),
                ("retention.bytes", "20000"),
                ("delete.retention.ms", "3000"),
                ("min.cleanable.dirty.ratio", "0"),
                ("segment.bytes", SMALL_SEGMENT_BYTES),
                drop_oldest[0],
                drop_oldest[1],
            ]),
            0,
        )
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let w = storage
        .create_topic("w", 1, cfg(&drop_oldest), 0)
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    // ~8 keys of 2–3 bytes fill the map: most passes stop at its bound.
    let mut state = Maintenance::with_compaction_bounds(2, 400);
    let mut model: Vec<Rec> = Vec::new();
    let mut now = 1_000_000i64;
    let mut steps_mid_pass = 0;
    for step in 0..1_500 {
        let at = format!("step {step}");
        match rng.u32(0..100) {
            0..=39 => {
                let ts = now - rng.i64(0..70_000);
                let recs = keyed_batch(&mut rng, 20);
                model.extend(append_keyed(&storage, &c, recs, ts));
            }
            40..=49 => {
                let value = vec![7u8; rng.usize(500..3_000)];
                append(&storage, &w, &[(None, &value, now)]);
            }
            50..=59 => now += rng.i64(0..2_000),
            _ => {
                let report = storage
                    .maintain(&mut state, u64::try_from(now).unwrap())
                    .unwrap();
                steps_mid_pass += usize::from(report.more);
            }
        }
        check_compaction_invariants(&c, &model, now, tombstone_ms, &at);
    }
    assert!(
        steps_mid_pass > 50,
        "passes spanned steps: {steps_mid_pass}"
    );
    let c_stats = c.stats();
    assert!(c_stats.compaction_passes > 10, "{c_stats:?}");
    assert!(c_stats.retention_removed_records > 0, "{c_stats:?}");
    assert!(
        c_stats.dropped_records > 0,
        "the budget shed c: {c_stats:?}"
    );
    assert!(c_stats.compaction_removed_records > 0, "{c_stats:?}");
    // Settle: a last batch makes everything before it cleanable.
    now += 10_000;
    model.extend(append_keyed(
        &storage,
        &c,
        vec![(None, b"end".to_vec())],
        now,
    ));
    maintain_all(&storage, &mut state, u64::try_from(now).unwrap());
    check_compaction_invariants(&c, &model, now, tombstone_ms, "settled");
    assert_eq!(
        read_all(&c),
        settled_model(&c, &model, now, tombstone_ms),
        "settled: newest per key at its offset"
    );
}

/// The same topic under real concurrency: appends (whose budget drops cut
/// its front), a maintenance thread compacting in small steps with a small
/// key map, and a thread running retention steps on their own — so
/// compaction's compare-and-swap rewrites race with removals. Whatever the
/// interleaving: nothing removed comes back, bytes stay counted, and once
/// settled the log is the model's newest-per-key.
#[test]
fn compaction_racing_appends_retention_and_the_budget_settles_to_the_model() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let mut rng = fastrand::Rng::with_seed(seed());
    let dir = tempfile::tempdir().unwrap();
    let tombstone_ms = 3_000i64;
    let options = StorageOptions {
        disk_budget_bytes: Some(40_000),
        ..StorageOptions::default()
    };
    let storage = Arc::new(Storage::open(dir.path(), &options).unwrap());
    let drop_oldest = [("on_full", "drop_oldest"), ("priority", "1")];
    let c = storage
        .create_topic(
            "c",
            1,
            cfg(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "60000"),
                ("retention.bytes", "20000"),
                ("delete.retention.ms", "3000"),
                ("min.cleanable.dirty.ratio", "0"),
                ("segment.bytes", SMALL_SEGMENT_BYTES),
                drop_oldest[0],
                drop_oldest[1],
            ]),
            0,
        )
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let w = storage
        .create_topic("w", 1, cfg(&drop_oldest), 0)
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let done = Arc::new(AtomicBool::new(false));
    let maintainer = {
        let (storage, clock, done) = (storage.clone(), clock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut state = Maintenance::with_compaction_bounds(2, 400);
            let mut steps = 0u64;
            while !done.load(Ordering::Acquire) {
                let now = u64::try_from(clock.load(Ordering::Acquire)).unwrap();
                storage.maintain(&mut state, now).unwrap();
                steps += 1;
            }
            (state, steps)
        })
    };
    let retainer = {
        let (c, clock, done) = (c.clone(), clock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut removed = 0u64;
            while !done.load(Ordering::Acquire) {
                let now = u64::try_from(clock.load(Ordering::Acquire)).unwrap();
                removed += super::retention::retention_step(&c, now, 1)
                    .unwrap()
                    .trimmed
                    .records;
                std::thread::yield_now();
            }
            removed
        })
    };
    let mut model: Vec<Rec> = Vec::new();
    for _ in 0..600 {
        let now = clock.load(Ordering::Acquire);
        if rng.u8(0..5) == 0 {
            let value = vec![7u8; rng.usize(500..3_000)];
            append(&storage, &w, &[(None, &value, now)]);
        } else {
            let ts = now - rng.i64(0..70_000);
            let recs = keyed_batch(&mut rng, 20);
            model.extend(append_keyed(&storage, &c, recs, ts));
        }
        clock.fetch_add(rng.i64(0..300), Ordering::AcqRel);
    }
    done.store(true, Ordering::Release);
    let (mut state, steps) = maintainer.join().unwrap();
    let retained = retainer.join().unwrap();
    assert!(steps > 10, "the maintenance thread ran {steps} steps");
    let now = clock.load(Ordering::Acquire);
    check_compaction_invariants(&c, &model, now, tombstone_ms, "after the race");
    let stats = c.stats();
    assert!(
        stats.compaction_removed_records > 0 && stats.dropped_records + retained > 0,
        "{stats:?}, {retained} retained"
    );
    let now = now + 10_000;
    model.extend(append_keyed(
        &storage,
        &c,
        vec![(None, b"end".to_vec())],
        now,
    ));
    maintain_all(&storage, &mut state, u64::try_from(now).unwrap());
    check_compaction_invariants(&c, &model, now, tombstone_ms, "settled");
    assert_eq!(
        read_all(&c),
        settled_model(&c, &model, now, tombstone_ms),
        "settled: newest per key at its offset"
    );
    assert_eq!(
        storage.used_bytes(),
        c.stored_bytes() + w.stored_bytes(),
        "the budget's count"
    );
}

/// `on_full.unmirrored=drop` lets retention remove records the mirror has
/// not forwarded; with `keep` retention waits for the mirror. Compaction
/// never rewrites unforwarded records, whatever the setting.
#[test]
fn unmirrored_records_go_to_retention_only_when_the_topic_says_so_and_never_to_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    for (name, unmirrored) in [("keep", "keep"), ("drop", "drop")] {
        let r = storage
            .create_topic(
                &format!("r-{name}"),
                1,
                cfg(&[("retention.ms", "1000"), ("on_full.unmirrored", unmirrored)]),
                0,
            )
            .unwrap()
            .partition(0)
            .unwrap()
            .clone();
        let c = storage
            .create_topic(
                &format!("c-{name}"),
                1,
                cfg(&[
                    ("cleanup.policy", "compact"),
                    ("min.cleanable.dirty.ratio", "0"),
                    ("on_full.unmirrored", unmirrored),
                ]),
                0,
            )
            .unwrap()
            .partition(0)
            .unwrap()
            .clone();
        for i in 0..5 {
            append(
                &storage,
                &r,
                &[(None, b"x", 100 + i), (None, b"y", 100 + i)],
            );
            append(
                &storage,
                &c,
                &[(Some(b"a"), b"1", 100 + i), (Some(b"b"), b"2", 100 + i)],
            );
        }
        // The mirror has forwarded the first batch of each.
        r.set_keep_from(Some(2));
        c.set_keep_from(Some(2));
        let mut state = Maintenance::default();
        maintain_all(&storage, &mut state, 1_000_000);
        let expected_start = if unmirrored == "drop" { 10 } else { 2 };
        assert_eq!(
            r.watermarks().log_start,
            expected_start,
            "{name}: retention and the mirror"
        );
        assert_eq!(
            c.stats().compaction_removed_records,
            0,
            "{name}: nothing forwarded is superseded within the forwarded part"
        );
        assert_eq!(
            read_all(&c).len(),
            10,
            "{name}: unforwarded records not compacted"
        );
        // Forwarded: now compaction may clean everything but the last batch.
        c.set_keep_from(None);
        append(&storage, &c, &[(Some(b"a"), b"3", 200)]);
        append(&storage, &c, &[(Some(b"z"), b"9", 200)]);
        maintain_all(&storage, &mut state, 1_000_000);
        let left: Vec<(Option<Vec<u8>>, Vec<u8>)> =
            read_all(&c).into_iter().map(|r| (r.key, r.value)).collect();
        assert_eq!(
            left,
            [
                (Some(b"b".to_vec()), b"2".to_vec()),
                (Some(b"a".to_vec()), b"3".to_vec()),
                (Some(b"z".to_vec()), b"9".to_vec())
            ],
            "{name}: compacted once forwarded"
        );
    }
}

/// Kafka's ListOffsets by time: the first offset (in offset order) whose
/// record timestamp is at or after `ts`, else the high watermark.
fn model_offset_for_timestamp(records: &[Rec], high_watermark: u64, ts: i64) -> u64 {
    records
        .iter()
        .find(|r| r.ts >= ts)
        .map_or(high_watermark, |r| r.offset)
}

/// `offset_for_timestamp` against the model: an empty log, timestamps out
/// of order within and across batches, targets at, between, below and
/// above every record's timestamp and at the extremes, after retention moved
/// the log start and after compaction left gaps.
#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after_a_time() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let (_dir, storage, log) = one_partition(&[
        ("cleanup.policy", "compact,delete"),
        ("retention.bytes", "3000"),
        ("min.cleanable.dirty.ratio", "0"),
        ("segment.bytes", SMALL_SEGMENT_BYTES),
    ]);
    let check = |model: &[Rec], what: &str| {
        let hw = log.durable_end();
        let mut targets = vec![i64::MIN, -1, 0, i64::MAX];
        for r in model {
            targets.extend([r.ts - 1, r.ts, r.ts + 1]);
        }
        for ts in targets {
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                model_offset_for_timestamp(model, hw, ts),
                "{what}: timestamp {ts}"
            );
        }
    };
    check(&[], "empty");
    assert_eq!(log.offset_for_timestamp(0).unwrap(), 0);
    let mut model: Vec<Rec> = Vec::new();
    for _ in 0..40 {
        // Per-record timestamps, not sorted; a few keys so compaction has
        // something to remove.
        let recs: Vec<(Option<Vec<u8>>, Vec<u8>, i64)> = (0..rng.usize(1..8))
            .map(|_| {
                let key = rng.bool().then(|| vec![b'k', rng.u8(0..4)]);
                (
                    key,
                    vec![rng.u8(..); rng.usize(1..60)],
                    rng.i64(1_000..2_000),
                )
            })
            .collect();
        let borrowed: Vec<NewRecord<'_>> = recs
            .iter()
            .map(|(k, v, ts)| (k.as_deref(), v.as_slice(), *ts))
            .collect();
        let (first, _) = append(&storage, &log, &borrowed);
        for (i, (key, value, ts)) in recs.into_iter().enumerate() {
            model.push(Rec {
                offset: first + i as u64,
                key,
                value,
                ts,
            });
        }
    }
    check(&model, "appended");
    assert_eq!(read_all(&log), model);
    // Retention (by size) and compaction.
    maintain_all(&storage, &mut Maintenance::default(), 1_000_000);
    let stored = read_all(&log);
    let stats = log.stats();
    assert!(
        log.watermarks().log_start > 0,
        "retention moved the log start"
    );
    assert!(
        stats.compaction_removed_records > 0,
        "compaction left gaps: {stats:?}"
    );
    check(&stored, "after retention and compaction");
    // Below the log start the answer is the first stored record, never an
    // offset that is gone.
    assert_eq!(
        log.offset_for_timestamp(i64::MIN).unwrap(),
        stored[0].offset
    );
}

/// Appends `n` one-record batches of 1000 bytes, batch `i` stamped
/// `ts(i)`; returns the stored bytes of one batch.
fn append_sized(
    storage: &Storage,
    log: &Arc<PartitionLog>,
    n: i64,
    ts: impl Fn(i64) -> i64,
) -> u64 {
    let before = log.stored_bytes();
    for i in 0..n {
        append(storage, log, &[(None, &[7u8; 1000], ts(i))]);
    }
    (log.stored_bytes() - before) / u64::try_from(n).unwrap()
}

#[test]
fn retention_is_behind_only_after_a_full_step_far_past_the_byte_limit() {
    use super::retention::retention_step;
    let (_dir, storage, log) = one_partition(&[]);
    let batch = append_sized(&storage, &log, 12, |_| 1);
    let limit = 2 * batch;
    storage
        .alter_topic("t", &cfg(&[("retention.bytes", &limit.to_string())]), &[])
        .unwrap();
    let now = 10;

    // The mirror holds offset 3 on: the step cannot remove its most, so
    // working harder would not help, and it is not behind.
    log.set_keep_from(Some(3));
    let step = retention_step(&log, now, 4).unwrap();
    assert_eq!((step.trimmed.batches, step.behind), (3, false));
    log.set_keep_from(None);

    // A full step that leaves 7 batches (3.5× the limit): behind.
    let step = retention_step(&log, now, 2).unwrap();
    assert_eq!((step.trimmed.batches, step.behind), (2, true));
    assert_eq!(log.stored_bytes(), 7 * batch);

    // A full step that lands on the limit: caught up.
    let step = retention_step(&log, now, 5).unwrap();
    assert_eq!((step.trimmed.batches, step.behind), (5, false));
    assert_eq!(log.stored_bytes(), limit);

    // Nothing more to remove.
    let step = retention_step(&log, now, 5).unwrap();
    assert_eq!((step.trimmed.batches, step.behind), (0, false));
}

#[test]
fn retention_is_behind_only_while_it_removes_batches_far_past_the_age_limit() {
    use super::retention::retention_step;
    let (_dir, storage, log) = one_partition(&[("retention.ms", "1000")]);
    // Batch i is stamped i×100 ms; at now = 2000 ms all ten are expired,
    // aged 2000, 1900, …, 1100 ms.
    append_sized(&storage, &log, 10, |i| i * 100);
    let behind: Vec<(u64, bool)> = (0..5)
        .map(|_| {
            let step = retention_step(&log, 2000, 2).unwrap();
            (step.trimmed.batches, step.behind)
        })
        .collect();
    // The last removed batch in each step is aged 1900, 1700, 1500, 1300
    // and 1100 ms: only past 1500 ms (50 % past retention.ms) is behind.
    assert_eq!(
        behind,
        [(2, true), (2, true), (2, false), (2, false), (2, false)]
    );
    assert_eq!(log.stored_bytes(), 0);
}

#[test]
fn maintenance_pauses_to_its_busy_cap_and_longer_caps_while_behind() {
    let report = |more, retention_behind| MaintenanceReport {
        more,
        retention_behind,
        ..MaintenanceReport::default()
    };
    // Nothing more to do: wait the whole interval.
    assert_eq!(report(false, false).pause_ms(40, 500), 500);
    assert_eq!(report(false, true).pause_ms(40, 500), 500);
    // A backlog: 40 ms busy then 120 ms paused is 25 % busy.
    assert_eq!(report(true, false).pause_ms(40, 500), 120);
    // Behind: 40 ms busy then 13 ms paused is 75 % busy.
    assert_eq!(report(true, true).pause_ms(40, 500), 13);
    // Never less than the step pause, even after a step that took no time.
    assert_eq!(
        report(true, true).pause_ms(0, 500),
        super::maintenance::MAINTENANCE_STEP_PAUSE_MS
    );
    assert_eq!(
        report(true, false).pause_ms(0, 500),
        super::maintenance::MAINTENANCE_STEP_PAUSE_MS
    );
}
