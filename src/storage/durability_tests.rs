//! What `durable` rests on: a group-commit round advances the durable
//! watermark only after its sync step (flush + fdatasync) returned, one
//! round covers every write that completed before it began, a failed sync
//! never advances it; a corrupt stored batch is refused on read, and a torn
//! tail is dropped (and counted) at reopen with offsets continuing densely.
//!
//! The sync step is held back with a [`SyncGate`] installed through
//! `Storage::open_with_sync_hook`; the real step still runs once a round is
//! let through. That the real step is an fdatasync of sled's files is
//! checked against the kernel by `benches/strace_durable.sh`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::flusher::SyncHook;
use super::*;
use crate::wire::batch::{Batch, BatchBuilder, Batches, Headers};

/// Bound on every wait in these tests (for an event that normally takes
/// microseconds; generous for a loaded 2-core machine).
const WAIT_MAX: Duration = Duration::from_secs(30);

/// Holds rounds at their sync step while closed; lets them through one at a
/// time (`let_one_through`) or all (`open`). Can fail the next sync.
#[derive(Default)]
struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default, Debug)]
struct GateState {
    closed: bool,
    /// Rounds that may pass while closed.
    permits: u64,
    /// Rounds waiting at the gate now.
    held: u64,
    /// Sync steps that completed (real or failed).
    synced: u64,
    /// The next round's sync fails instead of running.
    fail_next: bool,
    /// A round waited longer than [`WAIT_MAX`] (a test forgot to open).
    overstayed: bool,
}

impl SyncHook for SyncGate {
    fn around_sync(
        &self,
        sync: &mut dyn FnMut() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let deadline = Instant::now() + WAIT_MAX;
        let mut s = self.state.lock().unwrap();
        s.held += 1;
        self.changed.notify_all();
        while s.closed && s.permits == 0 {
            let now = Instant::now();
            if now >= deadline {
                // Never hang a test (or a Drop) forever.
                s.overstayed = true;
                break;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
        if s.closed && s.permits > 0 {
            s.permits -= 1;
        }
        s.held -= 1;
        let fail = std::mem::take(&mut s.fail_next);
        drop(s);
        let result = if fail {
            Err(StorageError::Io {
                path: "injected".into(),
                source: std::io::Error::other("injected fdatasync failure"),
            })
        } else {
            sync()
        };
        self.state.lock().unwrap().synced += 1;
        self.changed.notify_all();
        result
    }
}

/// Opens the gate when dropped: a failing test must not leave rounds (and
/// the final one of `Storage`'s drop) waiting at a closed gate. Declare it
/// after the storage so that it drops first.
struct OpenOnDrop(Arc<SyncGate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set(|s| s.closed = false);
    }
}

impl SyncGate {
    fn set(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits (at most [`WAIT_MAX`]) until `cond` holds for the gate.
    fn wait_for(&self, what: &str, cond: impl Fn(&GateState) -> bool) {
        let deadline = Instant::now() + WAIT_MAX;
        let mut s = self.state.lock().unwrap();
        while !cond(&s) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for: {what} ({s:?})");
            s = self.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    fn synced(&self) -> u64 {
        self.state.lock().unwrap().synced
    }
}

fn one_batch(value: &[u8]) -> Vec<Vec<u8>> {
    let mut b = BatchBuilder::with_capacity(256 + value.len(), 1_000).unwrap();
    b.push(1_000, None, value, Headers::EMPTY).unwrap();
    vec![b.finish_vec()]
}

/// Waits (bounded) until `log` is durable up to `end`.
fn wait_durable(storage: &Storage, log: &PartitionLog, end: u64) {
    let deadline = Instant::now() + WAIT_MAX;
    while log.durable_end() < end {
        let listener = storage.durable_event().listen();
        if log.durable_end() >= end {
            break;
        }
        let now = Instant::now();
        assert!(now < deadline, "{} never became durable", log.partition());
        let _ = event_listener::Listener::wait_timeout(listener, deadline - now);
    }
}

fn values_of(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let read = log.read(0, usize::MAX, &mut out).unwrap();
    assert_eq!(read.next_offset, read.high_watermark);
    let mut got = Vec::new();
    for batch in Batches::new(&out) {
        let batch: Batch<'_> = batch.unwrap();
        for r in batch.records() {
            let r = r.unwrap();
            got.push((
                batch.base_offset() + u64::from(r.offset_delta),
                r.value.to_vec(),
            ));
        }
    }
    got
}

#[test]
fn durable_waits_for_the_sync_step_and_one_round_covers_every_earlier_write() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let storage =
        Storage::open_with_sync_hook(dir.path(), &StorageOptions::default(), gate.clone()).unwrap();
    let _open_on_drop = OpenOnDrop(gate.clone());
    let topic = storage.create_topic("t", 4, Vec::new(), 0).unwrap();
    let log = |p: u32| topic.partition(p).unwrap().clone();

    gate.set(|s| s.closed = true);
    let synced_before = gate.synced();
    let (_, end_a) = storage.append(&log(0), &mut one_batch(b"a")).unwrap();
    // The round for `a` began and is held at its sync step.
    gate.wait_for("the first round at the gate", |s| s.held == 1);
    assert_eq!(log(0).durable_end(), 0, "not durable before the sync");
    let mut out = Vec::new();
    let read = log(0).read(0, 1 << 20, &mut out).unwrap();
    assert_eq!(
        (read.high_watermark, read.bytes),
        (0, 0),
        "consumers do not see it"
    );

    // Writes completed while that round syncs: partitions 1..=3 from three
    // threads at once, and a producer-state write (a ticket).
    let ends: Vec<(u32, u64)> = std::thread::scope(|scope| {
        let appends: Vec<_> = (1..=3u32)
            .map(|p| {
                let (storage, log) = (&storage, log(p));
                scope.spawn(move || (p, storage.append(&log, &mut one_batch(b"b")).unwrap().1))
            })
            .collect();
        appends.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (_, ticket) = storage.init_producer("anonymous", "device-1").unwrap();
    assert!(!storage.is_committed(ticket));

    // Let the first round finish: it covers `a` only.
    gate.set(|s| s.permits = 1);
    wait_durable(&storage, &log(0), end_a);
    assert_eq!(gate.synced(), synced_before + 1);
    // The next round began for the later writes and is held in turn.
    gate.wait_for("the second round at the gate", |s| s.held == 1);
    for &(p, end) in &ends {
        assert!(
            log(p).durable_end() < end,
            "partition {p} is durable only after its own round's sync"
        );
    }
    assert!(
        !storage.is_committed(ticket),
        "a ticket waits for its round's sync"
    );

    // One more round makes every one of them durable.
    gate.set(|s| s.permits = 1);
    for &(p, end) in &ends {
        wait_durable(&storage, &log(p), end);
    }
    assert!(storage.is_committed(ticket));
    assert_eq!(
        gate.synced(),
        synced_before + 2,
        "one round served the three appends and the ticket"
    );
    assert!(storage.flush_stats().rounds >= 2);

    gate.set(|s| s.closed = false);
    assert!(!gate.state.lock().unwrap().overstayed);
    storage.close().unwrap();
}

#[test]
fn a_failed_sync_never_advances_durable_and_fails_storage() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let storage =
        Storage::open_with_sync_hook(dir.path(), &StorageOptions::default(), gate.clone()).unwrap();
    let topic = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
    let log = topic.partition(0).unwrap();
    gate.set(|s| s.fail_next = true);
    let (_, end) = storage.append(log, &mut one_batch(b"lost")).unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    while !storage.has_failed() {
        let listener = storage.durable_event().listen();
        if storage.has_failed() {
            break;
        }
        let now = Instant::now();
        assert!(now < deadline, "the failed sync was not noticed");
        let _ = event_listener::Listener::wait_timeout(listener, deadline - now);
    }
    assert!(log.durable_end() < end, "a failed sync advances nothing");
    assert!(matches!(
        storage.append(log, &mut one_batch(b"after")),
        Err(StorageError::Failed(_))
    ));
    assert!(storage.close().is_err());
}

#[test]
fn a_corrupt_stored_batch_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let topic = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
    let log = topic.partition(0).unwrap();
    let mut end = 0;
    for value in [&b"first"[..], b"second", b"third"] {
        end = storage.append(log, &mut one_batch(value)).unwrap().1;
    }
    wait_durable(&storage, log, end);
    // Flip one byte of the middle batch's record (its value), as a bad
    // sector or a stray write would.
    let path = log.segment_paths().pop().expect("a segment");
    let mut stored = std::fs::read(&path).unwrap();
    let at = stored
        .windows(6)
        .position(|w| w == b"second")
        .expect("the value is stored as is");
    stored[at] ^= 0x20;
    std::fs::write(&path, stored).unwrap();

    let mut out = Vec::new();
    match log.read(0, 1 << 20, &mut out) {
        Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, 1),
        other => panic!("expected a corrupt batch error, got {other:?}"),
    }
    assert!(
        !out.windows(6).any(|w| w == b"Second"),
        "the corrupt bytes are never handed out"
    );
    assert!(matches!(
        log.read(1, 1 << 20, &mut Vec::new()),
        Err(StorageError::Corrupt { offset: 1, .. })
    ));
    // The batch before it still reads on its own.
    let mut out = Vec::new();
    let read = log.read(0, 1, &mut out).unwrap();
    assert_eq!(read.next_offset, 1);
}

#[test]
fn a_torn_tail_is_dropped_at_reopen_counted_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        let topic = storage.create_topic("t", 1, Vec::new(), 0).unwrap();
        let log = topic.partition(0).unwrap();
        let mut end = 0;
        for value in [&b"kept-0"[..], b"kept-1", b"torn-2", b"torn-3"] {
            end = storage.append(log, &mut one_batch(value)).unwrap().1;
        }
        wait_durable(&storage, log, end);
        // The last two batches as a crash may leave them: one cut short,
        // one with garbage where its records were.
        storage.close().unwrap();
        let path = log.segment_paths().pop().expect("a segment");
        let mut stored = std::fs::read(&path).unwrap();
        let mut starts = vec![0usize];
        while *starts.last().unwrap() < stored.len() {
            let at = *starts.last().unwrap();
            let length = u32::from_be_bytes(stored[at + 8..at + 12].try_into().unwrap());
            starts.push(at + 12 + length as usize);
        }
        assert_eq!(starts.len(), 5, "four batches: {starts:?}");
        stored[starts[3] - 1] ^= 0xff;
        stored.truncate(stored.len() - 3);
        std::fs::write(&path, stored).unwrap();
    }
    {
        let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        assert_eq!(storage.dropped_at_recovery(), 2);
        let topic = storage.topic("t").unwrap();
        let log = topic.partition(0).unwrap();
        assert_eq!(log.log_end(), 2, "the log ends after the last good batch");
        assert_eq!(log.durable_end(), 2);
        let (first, end) = storage.append(log, &mut one_batch(b"next")).unwrap();
        assert_eq!((first, end), (2, 3), "offsets continue densely");
        wait_durable(&storage, log, end);
        assert_eq!(
            values_of(log),
            vec![
                (0, b"kept-0".to_vec()),
                (1, b"kept-1".to_vec()),
                (2, b"next".to_vec())
            ]
        );
        storage.close().unwrap();
    }
    // Dropped for good: a further reopen finds nothing to drop.
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    assert_eq!(storage.dropped_at_recovery(), 0);
    assert_eq!(
        storage.topic("t").unwrap().partition(0).unwrap().log_end(),
        3
    );
}

#[test]
fn flush_ms_holds_acks_back_and_shares_one_round_between_appends() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
    let flush_ms = 400u64;
    let topic = storage
        .create_topic(
            "t",
            1,
            vec![("flush.ms".to_string(), flush_ms.to_string())],
            0,
        )
        .unwrap();
    let log = topic.partition(0).unwrap();
    let rounds_before = storage.flush_stats().rounds;
    let started = Instant::now();
    let mut end = 0;
    for i in 0..10u8 {
        end = storage.append(log, &mut one_batch(&[b'v', i])).unwrap().1;
    }
    wait_durable(&storage, log, end);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(flush_ms),
        "durable after {waited:?}, before flush.ms"
    );
    let rounds = storage.flush_stats().rounds - rounds_before;
    // Every append came before the deadline of the first: one round (a
    // second only if the appends took longer than flush.ms).
    assert!((1..=2).contains(&rounds), "{rounds} rounds for 10 appends");
    assert_eq!(values_of(log).len(), 10);
    // The hub default applies to topics without their own flush.ms, and a
    // topic's flush.ms=0 syncs at once.
    storage
        .alter_topic("t", &[("flush.ms".to_string(), "0".to_string())], &[])
        .unwrap();
    let end = storage.append(log, &mut one_batch(b"now")).unwrap().1;
    wait_durable(&storage, log, end);
}
