//! Model tests: a partition behaves like a `Vec<Record>`, also across close
//! and reopen.

use std::sync::Arc;

use event_listener::Listener;

use super::*;
use crate::wire::batch::{Batch, BatchBuilder, Batches, Headers};

/// A record as the model stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp_ms: i64,
}

fn random_record(rng: &mut fastrand::Rng) -> ModelRecord {
    let key = if rng.bool() {
        Some((0..rng.usize(0..16)).map(|_| rng.u8(..)).collect())
    } else {
        None
    };
    // Mostly small values, sometimes larger than a stored batch.
    let len = if rng.u8(..) < 8 {
        rng.usize(4_000..20_000)
    } else {
        rng.usize(0..300)
    };
    ModelRecord {
        key,
        value: (0..len).map(|_| rng.u8(..)).collect(),
        timestamp_ms: rng.i64(0..1 << 40),
    }
}

/// Encodes records into batches of at most `target` bytes (one record may
/// exceed it alone), as the broker does.
fn encode(records: &[ModelRecord], target: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut builder: Option<BatchBuilder<Vec<u8>>> = None;
    for r in records {
        let needed = crate::wire::batch::BATCH_HEADER_BYTES
            + crate::wire::batch::record_len_max(r.key.as_deref(), &r.value, Headers::EMPTY);
        if let Some(b) = builder.as_mut() {
            if b.push(r.timestamp_ms, r.key.as_deref(), &r.value, Headers::EMPTY)
                .is_ok()
            {
                continue;
            }
            out.push(builder.take().unwrap().finish_vec());
        }
        let mut b = BatchBuilder::with_capacity(needed.max(target), r.timestamp_ms).unwrap();
        b.push(r.timestamp_ms, r.key.as_deref(), &r.value, Headers::EMPTY)
            .unwrap();
        builder = Some(b);
    }
    if let Some(b) = builder {
        out.push(b.finish_vec());
    }
    out
}

/// Reads every record from `offset` to the high watermark.
fn read_all(log: &PartitionLog, mut offset: u64, max_bytes: usize) -> Vec<(u64, ModelRecord)> {
    let mut got = Vec::new();
    loop {
        let mut out = Vec::new();
        let outcome = log.read(offset, max_bytes, &mut out).unwrap();
        if outcome.bytes == 0 {
            assert_eq!(offset, outcome.high_watermark);
            return got;
        }
        for batch in Batches::new(&out) {
            let batch: Batch<'_> = batch.unwrap();
            batch.validate().unwrap();
            for r in batch.records() {
                let r = r.unwrap();
                let at = batch.base_offset() + u64::from(r.offset_delta);
                if at >= offset {
                    got.push((
                        at,
                        ModelRecord {
                            key: r.key.map(<[u8]>::to_vec),
                            value: r.value.to_vec(),
                            timestamp_ms: batch.timestamp_of(&r),
                        },
                    ));
                }
            }
        }
        assert!(outcome.next_offset > offset, "a read must make progress");
        offset = outcome.next_offset;
    }
}

fn wait_durable(storage: &Storage, log: &PartitionLog, end: u64) {
    while log.durable_end() < end {
        let listener = storage.durable_event().listen();
        if log.durable_end() >= end {
            break;
        }
        listener.wait();
    }
}

#[test]
fn partition_behaves_like_a_vec_across_reopen() {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (rerun with EDDY_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model: Vec<Vec<ModelRecord>> = vec![Vec::new(); 3];
    for round in 0..4 {
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = match storage.topic("t") {
            Some(t) => t,
            None => storage.create_topic("t", 3, Vec::new(), 1).unwrap(),
        };
        // Reopened state equals the model before anything new is written.
        for (p, records) in model.iter().enumerate() {
            let log = topic.partition(p as u32).unwrap();
            let marks = log.watermarks();
            assert_eq!(
                marks.log_end,
                records.len() as u64,
                "round {round} partition {p}"
            );
            assert_eq!(marks.durable, marks.log_end);
            let got: Vec<ModelRecord> = read_all(log, 0, 1 << 20)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            assert_eq!(&got, records, "round {round} partition {p} after reopen");
        }
        for _ in 0..rng.usize(5..25) {
            let p = rng.usize(0..3);
            let records: Vec<ModelRecord> = (0..rng.usize(1..60))
                .map(|_| random_record(&mut rng))
                .collect();
            let mut batches = encode(&records, STORED_BATCH_BYTES_TARGET);
            let log: &Arc<PartitionLog> = topic.partition(p as u32).unwrap();
            let (first, end) = storage.append(log, &mut batches).unwrap();
            assert_eq!(first, model[p].len() as u64, "offsets are dense");
            assert_eq!(end - first, records.len() as u64);
            model[p].extend(records);
            wait_durable(&storage, log, end);
        }
        // Reads from arbitrary offsets and with small byte limits agree.
        for (p, records) in model.iter().enumerate() {
            let log = topic.partition(p as u32).unwrap();
            for _ in 0..5 {
                let from = rng.u64(0..=records.len() as u64);
                let got = read_all(log, from, rng.usize(1..20_000));
                let expected: Vec<(u64, ModelRecord)> = records
                    .iter()
                    .cloned()
                    .enumerate()
                    .skip(from as usize)
                    .map(|(i, r)| (i as u64, r))
                    .collect();
                assert_eq!(got, expected, "partition {p} from {from}");
            }
            let end = records.len() as u64;
            assert!(matches!(
                log.read(end + 1, 1, &mut Vec::new()),
                Err(StorageError::OffsetOutOfRange { .. })
            ));
        }
        storage.close().unwrap();
    }
}

#[test]
fn metadata_and_offsets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<ModelRecord> = (0..10)
        .map(|i| ModelRecord {
            key: None,
            value: vec![i; 10],
            timestamp_ms: 5,
        })
        .collect();
    {
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage
            .create_topic("t", 1, vec![("priority".into(), "3".into())], 7)
            .unwrap();
        let log = topic.partition(0).unwrap();
        let (_, end) = storage.append(log, &mut encode(&records, 64)).unwrap();
        assert_eq!(end, 10);
        wait_durable(&storage, log, end);
        assert_eq!(read_all(log, 0, 1 << 20).len(), 10);
    }
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage.topic("t").unwrap();
    assert_eq!(topic.meta.created_ms, 7);
    assert_eq!(
        topic.meta.configs,
        vec![("priority".to_string(), "3".to_string())]
    );
    let log = topic.partition(0).unwrap();
    let (first, _) = storage.append(log, &mut encode(&records[..1], 64)).unwrap();
    assert_eq!(first, 10, "offsets continue after reopen");
}

#[test]
fn corrupt_batches_are_refused_before_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
    let log = topic.partition(0).unwrap();
    let mut batches = encode(
        &[ModelRecord {
            key: None,
            value: b"x".to_vec(),
            timestamp_ms: 1,
        }],
        64,
    );
    let last = batches[0].len() - 1;
    batches[0][last] ^= 0xff;
    assert!(matches!(
        storage.append(log, &mut batches),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(log.log_end(), 0, "nothing was written");
}

#[test]
fn deleted_topic_names_can_be_reused_with_fresh_logs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage.create_topic("t", 2, Vec::new(), 0).unwrap();
    let log = topic.partition(1).unwrap().clone();
    storage
        .append(
            &log,
            &mut encode(
                &[ModelRecord {
                    key: None,
                    value: b"x".to_vec(),
                    timestamp_ms: 1,
                }],
                64,
            ),
        )
        .unwrap();
    assert!(matches!(
        storage.create_topic("t", 1, Vec::new(), 0),
        Err(StorageError::TopicExists(_))
    ));
    storage.delete_topic("t").unwrap();
    assert!(storage.topic("t").is_none());
    let again = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
    assert_eq!(again.partition(0).unwrap().log_end(), 0);
    assert_ne!(again.meta.id, topic.meta.id);
    // Trees keep sled open: drop every handle before reopening.
    drop((again, log, topic, storage));
    let reopened = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    assert_eq!(reopened.topics().len(), 1);
    assert_eq!(reopened.topic("t").unwrap().partition_count(), 1);
}

/// sled lets go of its file lock from its own threads after the last
/// handle is dropped; an open right after a close waits for it
/// (`SLED_LOCK_WAIT_MS`) instead of calling the directory held by another
/// eddy. Without the wait this test failed in 2 of 4 runs of
/// `cargo test --lib storage::` beside 4 busy loops.
#[test]
fn a_store_reopened_right_after_closing_opens_every_time() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..200u64 {
        let storage = Storage::open(dir.path(), &StorageOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let topic = match storage.topic("t") {
            Some(topic) => topic,
            None => storage.create_topic("t", 1, Vec::new(), 0).unwrap(),
        };
        let log = topic.partition(0).unwrap().clone();
        let mut b = BatchBuilder::with_capacity(1 << 12, 1).unwrap();
        b.push(1, None, &round.to_be_bytes(), Headers::EMPTY)
            .unwrap();
        let (first, _) = storage.append(&log, &mut [b.finish_vec()]).unwrap();
        assert_eq!(first, round, "every earlier append survived the reopen");
        storage.close().unwrap();
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let second = Storage::open(dir.path(), &StorageOptions::default());
    let message = second.err().expect("second open must fail").to_string();
    assert!(
        message.contains("locked by another running eddy"),
        "{message}"
    );
}

/// What a new topic is counted as covers the disk blocks its partitions'
/// directories and first segment files were measured to take.
#[test]
fn a_new_topic_is_counted_as_at_least_the_blocks_its_partitions_take() {
    use std::os::unix::fs::MetadataExt as _;
    fn blocks_bytes(dir: &std::path::Path) -> u64 {
        let meta = std::fs::metadata(dir).unwrap();
        let own = meta.blocks() * 512;
        if !meta.is_dir() {
            return own;
        }
        own + std::fs::read_dir(dir)
            .unwrap()
            .map(|e| blocks_bytes(&e.unwrap().path()))
            .sum::<u64>()
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let segments = dir.path().join(SEGMENTS_DIR);
    let before = blocks_bytes(&segments);
    storage.create_topic("wide", 256, Vec::new(), 0).unwrap();
    let measured = blocks_bytes(&segments) - before;
    let counted = create_topic_bytes(256) - METADATA_WRITE_BYTES_ESTIMATE;
    assert!(measured > 0, "256 partitions took no space");
    assert!(
        counted >= measured && counted <= 4 * measured.max(256 * 4096),
        "counted {counted}, measured {measured}"
    );
}
