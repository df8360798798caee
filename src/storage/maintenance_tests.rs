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

#[test]
fn disk_budget_rejects_or_drops_oldest_by_priority() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        disk_budget_bytes: Some(20_000),
        ..StorageOptions::default()
    };
    let storage = Storage::open(dir.path(), &options).unwrap();
    let low = storage
        .create_topic(
            "telemetry",
            1,
            cfg(&[("on_full", "drop_oldest"), ("priority", "1")]),
            0,
        )
        .unwrap();
    let high = storage
        .create_topic(
            "alarms",
            1,
            cfg(&[("on_full", "drop_oldest"), ("priority", "9")]),
            0,
        )
        .unwrap();
    let audit = storage
        .create_topic("audit", 1, cfg(&[("priority", "5")]), 0)
        .unwrap();
    let (low, high, audit) = (
        low.partition(0).unwrap().clone(),
        high.partition(0).unwrap().clone(),
        audit.partition(0).unwrap().clone(),
    );
    let value = vec![7u8; 1_000];
    let one = |ts: i64| vec![(None, value.as_slice(), ts)];
    // Fill: 6 telemetry, 6 alarms, 6 audit batches of ~1.06 KB.
    for i in 0..6 {
        append(&storage, &low, &one(i));
        append(&storage, &high, &one(100 + i));
        append(&storage, &audit, &one(200 + i));
    }
    let batch_bytes = low.stored_bytes() / 6;
    assert!(storage.used_bytes() > 18 * 1_000 && storage.used_bytes() <= 20_000);
    // reject: DiskFull, nothing written.
    let audit_end = audit.log_end();
    let mut b = BatchBuilder::with_capacity(4096, 1).unwrap();
    b.push(1, None, &value, Headers::EMPTY).unwrap();
    b.push(1, None, &value, Headers::EMPTY).unwrap();
    let err = storage.append(&audit, &mut [b.finish_vec()]).unwrap_err();
    assert!(matches!(err, StorageError::BudgetFull { .. }), "{err}");
    assert!(err.to_string().contains("on_full=reject"), "{err}");
    assert_eq!(audit.log_end(), audit_end, "nothing written");
    // drop_oldest, alarms writing: telemetry (lower priority) goes first,
    // oldest first.
    for i in 0..6 {
        append(&storage, &high, &one(300 + i));
    }
    assert_eq!(low.stats().dropped_records, 6, "all telemetry dropped");
    assert_eq!(low.watermarks().log_start, 6);
    assert_eq!(
        high.stats().dropped_records,
        0,
        "alarms kept while telemetry had data"
    );
    assert_eq!(low.stats().dropped_bytes, 6 * batch_bytes);
    // Now only alarms are droppable: their own oldest go.
    append(&storage, &high, &one(400));
    assert_eq!(high.stats().dropped_records, 1);
    assert_eq!(high.watermarks().log_start, 1);
    assert_eq!(
        read_all(&high).first().unwrap().ts,
        101,
        "the oldest alarm went"
    );
    // Telemetry may not shed alarms (higher priority): DiskFull.
    let err = storage
        .append(
            &low,
            &mut [{
                let mut b = BatchBuilder::with_capacity(4096, 1).unwrap();
                b.push(1, None, &value, Headers::EMPTY).unwrap();
                b.finish_vec()
            }],
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::BudgetFull { .. }), "{err}");
    // The mirror hook: alarms not yet mirrored are kept.
    high.set_keep_from(Some(high.watermarks().log_start));
    let err = storage
        .append(
            &high,
            &mut [{
                let mut b = BatchBuilder::with_capacity(4096, 1).unwrap();
                b.push(1, None, &value, Headers::EMPTY).unwrap();
                b.finish_vec()
            }],
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::BudgetFull { .. }), "{err}");
    assert_eq!(high.stats().dropped_records, 1, "unmirrored data kept");
    // …unless the topic says so.
    storage
        .alter_topic("alarms", &cfg(&[("on_full.unmirrored", "drop")]), &[])
        .unwrap();
    append(&storage, &high, &one(500));
    assert_eq!(high.stats().dropped_records, 2);
    assert!(storage.used_bytes() <= 20_000);
}
