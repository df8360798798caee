//! Model tests of retention, compaction and the disk budget, with an
//! injected clock (`Storage::maintain(now_ms)`), never sleeps.

use std::sync::Arc;

use event_listener::Listener;

use super::*;
use crate::wire::batch::{Batch, BatchBuilder, Batches, Headers};

/// A record as the models keep it: offset, key, value, timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: i64,
}

fn seed() -> u64 {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (rerun with EDDY_TEST_SEED={seed})");
    seed
}

fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
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

/// Runs maintenance at `now` until it reports no more work.
fn maintain_all(storage: &Storage, state: &mut Maintenance, now: u64) -> MaintenanceReport {
    let mut total = MaintenanceReport::default();
    for _ in 0..100_000 {
        let r = storage.maintain(state, now).unwrap();
        total.retention_removed_records += r.retention_removed_records;
        total.compaction_removed_records += r.compaction_removed_records;
        if !r.more {
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
    let dir = tempfile::tempdir().unwrap();
    let age_ms = 10_000i64;
    let size = 6_000u64;
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage
        .create_topic(
            "t",
            1,
            cfg(&[("retention.ms", "10000"), ("retention.bytes", "6000")]),
            0,
        )
        .unwrap();
    let log = topic.partition(0).unwrap().clone();
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
            .create_topic("t", 1, cfg(&[("retention.ms", "1000")]), 0)
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
    let budget = 24_000u64;
    let options = StorageOptions {
        disk_budget_bytes: Some(budget),
        ..StorageOptions::default()
    };
    let topic = |name, partitions, full, priority, mirrored| BudgetTopic {
        name,
        partitions,
        full,
        priority,
        drop_unmirrored: false,
        mirrored,
    };
    let mut topics = vec![
        topic("alarms", 1, Full::Reject, 9, false),
        topic("audit", 1, Full::Reject, 5, false),
        topic("default", 1, Full::Reject, 0, false),
        topic("events", 1, Full::Drop, 7, true),
        topic("logs", 1, Full::Drop, 1, false),
        topic("metrics", 1, Full::Drop, 5, false),
        topic("telemetry", 2, Full::Drop, 1, false),
    ];
    let mut parts: Vec<Vec<BudgetPartition>> = topics
        .iter()
        .map(|t| vec![BudgetPartition::default(); t.partitions as usize])
        .collect();
    let mirrored = topics.iter().position(|t| t.mirrored).unwrap();
    let mut storage = Storage::open(dir.path(), &options).unwrap();
    for t in &topics {
        storage
            .create_topic(t.name, t.partitions, t.configs(), 0)
            .unwrap();
    }
    // Unique timestamps, out of append order: "oldest" is by time.
    let mut used_ts = std::collections::HashSet::new();
    let mut clock = 1_000_000i64;
    let (mut accepted, mut refused, mut shed_for_reject) = (0, 0, 0);
    for step in 0..500 {
        let at = format!("step {step}");
        let roll = rng.u32(0..100);
        if roll < 3 {
            // An operator deletes a reject topic (it was consumed) and
            // creates it again: its room is free.
            let ti = [0, 1, 2][rng.usize(0..3)];
            let t = &topics[ti];
            storage.delete_topic(t.name).unwrap();
            storage
                .create_topic(t.name, t.partitions, t.configs(), 0)
                .unwrap();
            parts[ti] = vec![BudgetPartition::default(); t.partitions as usize];
        } else if roll < 6 {
            let ti = mirrored;
            topics[ti].drop_unmirrored = !topics[ti].drop_unmirrored;
            storage
                .alter_topic(topics[ti].name, &topics[ti].configs(), &[])
                .unwrap();
        } else if roll < 12 {
            // The mirror moves on (never back).
            let ti = mirrored;
            let p = &mut parts[ti][0];
            let from = p.keep_from.unwrap_or(p.log_start);
            let to = rng.u64(from..=p.log_end.max(from));
            p.keep_from = Some(to);
            let log = storage
                .topic(topics[ti].name)
                .unwrap()
                .partition(0)
                .unwrap()
                .clone();
            log.set_keep_from(Some(to));
        } else {
            // Mostly drop_oldest writers; reject ones often enough to fill.
            let ti = rng.usize(0..topics.len());
            let pi = rng.usize(0..topics[ti].partitions as usize);
            let n = rng.usize(1..4);
            let ts = loop {
                let ts = clock - rng.i64(0..20_000);
                if used_ts.insert(ts) {
                    break ts;
                }
            };
            clock += 100;
            let values: Vec<Vec<u8>> = (0..n)
                .map(|_| vec![rng.u8(..); rng.usize(100..1_200)])
                .collect();
            let records: Vec<NewRecord<'_>> =
                values.iter().map(|v| (None, v.as_slice(), ts)).collect();
            let mut b = BatchBuilder::with_capacity(1 << 16, ts).unwrap();
            for (k, v, ts) in &records {
                b.push(*ts, *k, v, Headers::EMPTY).unwrap();
            }
            let incoming = b.finish_vec().len() as u64;
            let dropped_before: u64 = parts.iter().flatten().map(|p| p.dropped_records).sum();
            let fits = model_make_room(&topics, &mut parts, ti, incoming, budget);
            let dropped_now: u64 = parts.iter().flatten().map(|p| p.dropped_records).sum();
            let log = storage
                .topic(topics[ti].name)
                .unwrap()
                .partition(u32::try_from(pi).unwrap())
                .unwrap()
                .clone();
            match try_append(&storage, &log, &records) {
                Ok((first, end)) => {
                    assert!(
                        fits,
                        "{at}: {} accepted, the model refuses",
                        topics[ti].name
                    );
                    accepted += 1;
                    if topics[ti].full == Full::Reject && dropped_now > dropped_before {
                        shed_for_reject += 1;
                    }
                    let p = &mut parts[ti][pi];
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
                }
                Err(e) => {
                    assert!(matches!(e, StorageError::BudgetFull { .. }), "{at}: {e}");
                    assert!(
                        !fits,
                        "{at}: {} refused, the model accepts: {e}",
                        topics[ti].name
                    );
                    if topics[ti].full == Full::Reject {
                        assert!(e.to_string().contains("on_full=reject"), "{e}");
                    }
                    refused += 1;
                }
            }
        }
        check_budget_model(&storage, &topics, &parts, &at);
    }
    // The run went through the interesting cases.
    eprintln!("{accepted} accepted ({shed_for_reject} reject writes made room), {refused} refused");
    assert!(
        accepted > 100 && refused > 10,
        "{accepted} accepted, {refused} refused"
    );
    assert!(
        shed_for_reject > 0,
        "a reject topic never made room by shedding"
    );
    // Reopened: the same records, offsets and bytes (keep_from is the
    // mirror's to set again; the counters count since open).
    storage.close().unwrap();
    drop(storage);
    storage = Storage::open(dir.path(), &options).unwrap();
    for p in parts.iter_mut().flatten() {
        p.keep_from = None;
        p.dropped_records = 0;
        p.dropped_bytes = 0;
    }
    check_budget_model(&storage, &topics, &parts, "reopened");
}
