//! Group commit: one thread that makes appends durable in rounds.
//!
//! A round takes the partitions appended to since the last round, snapshots
//! their log ends, `fdatasync`s every segment file they wrote since the
//! last round, then, only when metadata in sled changed (producer inits and
//! checkpoints, group offsets, cursors, topics, floors: [`Flusher::commit_ticket`],
//! [`Flusher::mark_meta_dirty`]), calls sled's `flush()` (which writes
//! sled's buffers and issues `sync_file_range`) and `fdatasync`s sled's log
//! file and any blob files, and only then advances each partition's
//! durable watermark to its snapshot and wakes every waiter. Segments are
//! synced before sled, so sled's state never refers to batches the disk
//! does not have. Appends that arrive during a round are
//! covered by the next one: at most one round is in progress, and every
//! waiting producer shares it.
//!
//! The next round starts as soon as the current one ends, unless that round
//! covered several appends (concurrent producers, a fleet of devices): then
//! the flusher first gathers as many new appends as it covered, waiting at
//! most [`GROUP_COMMIT_GATHER_WAIT_US`]. Busy hubs get fewer, fuller rounds
//! (measured with 5,000 devices at 1 reading/s: server CPU −40 %, p99 still
//! a few ms), and a lone synchronous producer never waits.
//!
//! A partition whose topic sets `flush.ms` (or, without it, the hub's
//! default, `storage.flush_ms`) above 0 is synced at the first round at
//! least that long after its oldest unsynced append: its durable produces
//! wait up to that long for their ack, and a fleet of devices shares one
//! fdatasync per `flush.ms` instead of one per round (what each costs the
//! flash: README, "Flash wear"). A round is never held back for a write to
//! sled that waits for a ticket, or for a partition with `flush.ms=0`.
//!
//! Writes that are not partition appends (committed group offsets, topic
//! metadata, producer state) ask for a round with [`Flusher::commit_ticket`],
//! which returns a ticket: the number of the first round that will start
//! after the write, and so cover it. They are durable once
//! [`Flusher::is_done`] says so for the ticket.
//!
//! An fsync error is not retried (after a failed fsync the kernel may have
//! dropped the dirty pages, so a retry could report success for lost data):
//! storage turns failed and every later append is refused until a restart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use event_listener::Event;

use super::partition::PartitionLog;
use super::StorageError;

/// Longest the flusher waits, after a round that covered several appends,
/// for as many new appends to gather before the next round, in µs.
pub const GROUP_COMMIT_GATHER_WAIT_US: u64 = 2_000;

/// A round must have covered at least this many appends for the flusher to
/// gather before the next one (one producer waiting alone never waits).
const GROUP_COMMIT_SIBLINGS_MIN: u64 = 2;

/// Upper bounds (µs) of the fsync latency histogram buckets; the last bucket
/// is unbounded.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_000_000,
];

/// Wraps a round's sync step: sled's `flush()`, then `fdatasync` of its
/// blob files and its log. Only tests install one
/// (`Storage::open_with_sync_hook`), to hold a round back at the step that
/// makes it durable, count rounds, or make the sync fail; without one the
/// step runs as is.
pub(super) trait SyncHook: Send + Sync {
    /// Runs instead of the sync step; `sync` is the real one.
    fn around_sync(
        &self,
        sync: &mut dyn FnMut() -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;
}

/// Counters of the flusher, for metrics and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct FlushStats {
    /// Completed group-commit rounds.
    pub rounds: u64,
    /// Sum of round durations (flush + fsync), in microseconds.
    pub sync_us_total: u64,
    /// Rounds per latency bucket ([`FSYNC_BUCKETS_US`], then one overflow).
    pub sync_us_buckets: [u64; FSYNC_BUCKETS_US.len() + 1],
}

struct Shared {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, kept open for `fdatasync`.
    log_file: File,
    /// Partitions appended to since the last round began.
    dirty: Mutex<Vec<Arc<PartitionLog>>>,
    /// Something was appended since the last round began.
    pending: AtomicBool,
    /// sled was written since the last round began: the round syncs it.
    meta_dirty: AtomicBool,
    /// A writer waits for a ticket: the next round runs without waiting
    /// for any partition's `flush.ms`.
    ticket_waiting: AtomicBool,
    /// Stop after a final round.
    stopping: AtomicBool,
    /// The first fsync or flush error; storage is failed from then on.
    failed: Mutex<Option<String>>,
    /// Whether that error was a full disk (answered as `DiskFull`).
    failed_disk_full: AtomicBool,
    durable_event: Event,
    stats: Mutex<FlushStats>,
    /// Serialises rounds between the flusher thread and `sync_now`.
    round_lock: Mutex<()>,
    /// Rounds that have begun (counted before their flush starts) and that
    /// have completed: a write that finished before round `n` began is
    /// durable once `rounds_done >= n` (see [`Flusher::commit_ticket`]).
    rounds_begun: AtomicU64,
    rounds_done: AtomicU64,
    /// Appends (and other writes awaiting a round) so far.
    appends: AtomicU64,
    /// While the flusher gathers: the append count that wakes it (0: none).
    wake_at: AtomicU64,
    /// Tests only: wraps the sync step ([`SyncHook`]).
    sync_hook: Option<Arc<dyn SyncHook>>,
    /// `flush.ms` of topics that do not set it, in ms.
    flush_ms_default: u64,
    /// What `dirty_since_ms` counts from.
    epoch: Instant,
}

/// Handle to the flusher thread.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub(super) fn start(
        db: sled::Db,
        dir: PathBuf,
        sync_hook: Option<Arc<dyn SyncHook>>,
        flush_ms_default: u64,
    ) -> Result<Flusher, StorageError> {
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(|e| StorageError::io(&log_path, e))?;
        let shared = Arc::new(Shared {
            db,
            dir,
            log_file,
            dirty: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            meta_dirty: AtomicBool::new(true),
            ticket_waiting: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            failed: Mutex::new(None),
            failed_disk_full: AtomicBool::new(false),
            durable_event: Event::new(),
            stats: Mutex::new(FlushStats::default()),
            round_lock: Mutex::new(()),
            rounds_begun: AtomicU64::new(0),
            rounds_done: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            wake_at: AtomicU64::new(0),
            sync_hook,
            flush_ms_default,
            epoch: Instant::now(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("eddy-flusher".into())
            .spawn(move || run(&thread_shared))
            .map_err(|e| StorageError::io(Path::new("flusher thread"), e))?;
        Ok(Flusher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Records that `log` has new appends and wakes the flusher.
    pub(super) fn mark_dirty(&self, log: &Arc<PartitionLog>) {
        // AcqRel pairs with the flusher's swap(false): if this sees `true`,
        // the flusher has not yet taken its snapshot of this partition, or it
        // will see our log_end store (see `round`).
        if !log.dirty.swap(true, Ordering::AcqRel) {
            log.dirty_since_ms
                .store(ms_since(self.shared.epoch), Ordering::Release);
            self.shared
                .dirty
                .lock()
                .expect("dirty lock")
                .push(log.clone());
        }
        // Counted before `pending` is set, so a round that sees `pending`
        // also counts this append.
        self.count_append();
        // Only the append that turns `pending` on needs to wake the thread;
        // the flusher clears it before each round.
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            self.unpark();
        }
    }

    /// Counts an append; wakes the flusher when it completes a gathering.
    fn count_append(&self) {
        let count = self.shared.appends.fetch_add(1, Ordering::SeqCst) + 1;
        let target = self.shared.wake_at.load(Ordering::SeqCst);
        if target != 0
            && count >= target
            && self
                .shared
                .wake_at
                .compare_exchange(target, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.lock().expect("thread lock").as_ref() {
            t.thread().unpark();
        }
    }

    /// For writes outside partition logs (producer state): call after the
    /// write completed; the write is durable once [`Flusher::is_done`]
    /// returns true for the returned ticket. Wakes the flusher.
    pub(super) fn commit_ticket(&self) -> u64 {
        // Before the ticket is read: a round that begins after this sees it.
        self.mark_meta_dirty();
        self.shared.ticket_waiting.store(true, Ordering::SeqCst);
        let ticket = self.shared.rounds_begun.load(Ordering::SeqCst) + 1;
        self.count_append();
        // Always: a flusher waiting for a partition's `flush.ms` runs the
        // round now.
        self.shared.pending.store(true, Ordering::Release);
        self.unpark();
        ticket
    }

    /// The next round syncs sled too (call after writing to sled, before
    /// whatever waits for the round).
    pub(super) fn mark_meta_dirty(&self) {
        self.shared.meta_dirty.store(true, Ordering::SeqCst);
    }

    /// Whether the round of `ticket` has completed.
    pub(super) fn is_done(&self, ticket: u64) -> bool {
        self.shared.rounds_done.load(Ordering::SeqCst) >= ticket
    }

    pub(super) fn durable_event(&self) -> &Event {
        &self.shared.durable_event
    }

    pub(super) fn check_healthy(&self) -> Result<(), StorageError> {
        if let Some(reason) = self.shared.failed.lock().expect("failed lock").as_ref() {
            if self.shared.failed_disk_full.load(Ordering::Acquire) {
                // The producer's answer is DiskFull either way; the server
                // restarts (see `server::watch_storage`).
                return Err(StorageError::DiskFull {
                    path: self.shared.dir.clone(),
                });
            }
            return Err(StorageError::Failed(reason.clone()));
        }
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Runs one round now, on the calling thread (metadata changes, open).
    pub(super) fn sync_now(&self) -> Result<(), StorageError> {
        self.mark_meta_dirty();
        round(&self.shared)
    }

    /// Records a write error outside a round (an append that hit ENOSPC
    /// inside sled): storage is failed from then on, as after a failed
    /// flush. The first error is kept.
    pub(super) fn fail(&self, e: &StorageError) {
        {
            let mut failed = self.shared.failed.lock().expect("failed lock");
            if failed.is_none() {
                self.shared.failed_disk_full.store(
                    matches!(e, StorageError::DiskFull { .. }),
                    Ordering::Release,
                );
                *failed = Some(e.to_string());
            }
        }
        self.shared.durable_event.notify(usize::MAX);
    }

    /// Whether a flush or fsync failed (storage is read-only from then on).
    pub(super) fn has_failed(&self) -> bool {
        self.shared.failed.lock().expect("failed lock").is_some()
    }

    pub(super) fn stats(&self) -> FlushStats {
        self.shared.stats.lock().expect("stats lock").clone()
    }

    /// Stops the thread after a final round. Idempotent.
    pub(super) fn stop(&self) -> Result<(), StorageError> {
        self.shared.stopping.store(true, Ordering::Release);
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            thread.thread().unpark();
            let _ = thread.join();
        }
        if let Some(reason) = self.shared.failed.lock().expect("failed lock").as_ref() {
            return Err(StorageError::Failed(reason.clone()));
        }
        Ok(())
    }
}

fn run(shared: &Shared) {
    // Append count when the previous round began.
    let mut last_start = 0u64;
    loop {
        if shared.pending.load(Ordering::Acquire) && !shared.stopping.load(Ordering::Acquire) {
            if let Some(wait) = flush_due_in(shared) {
                std::thread::park_timeout(wait);
                continue;
            }
        }
        if shared.pending.swap(false, Ordering::AcqRel) {
            let start = shared.appends.load(Ordering::SeqCst);
            let covered = start.saturating_sub(last_start);
            last_start = start;
            if let Err(e) = round(shared) {
                log::error!("group commit failed, storage is now read-only: {e}");
            }
            if covered >= GROUP_COMMIT_SIBLINGS_MIN {
                gather(shared, start + covered);
            }
            continue;
        }
        if shared.stopping.load(Ordering::Acquire) {
            // Final round for anything that raced with the stop request.
            if let Err(e) = round(shared) {
                log::error!("final flush failed: {e}");
            }
            return;
        }
        std::thread::park();
    }
}

/// How long until the next round is due, `None` when it is due now:
/// rounds wait for the earliest `flush.ms` deadline of the dirty
/// partitions, unless a writer waits for a ticket or a partition syncs at
/// once (`flush.ms` 0).
fn flush_due_in(shared: &Shared) -> Option<std::time::Duration> {
    if shared.ticket_waiting.load(Ordering::SeqCst) {
        return None;
    }
    let now = ms_since(shared.epoch);
    let dirty = shared.dirty.lock().expect("dirty lock");
    let mut due = u64::MAX;
    for log in dirty.iter() {
        let flush_ms = log.config().flush_ms.unwrap_or(shared.flush_ms_default);
        if flush_ms == 0 {
            return None;
        }
        let since = log.dirty_since_ms.load(Ordering::Acquire);
        // `since` is truncated to the ms: one more keeps the wait at least
        // `flush.ms` long.
        due = due.min(since.saturating_add(flush_ms).saturating_add(1));
        if due <= now {
            return None;
        }
    }
    if due == u64::MAX {
        return None;
    }
    Some(std::time::Duration::from_millis(due - now))
}

/// Milliseconds since `epoch`.
fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Waits until `target` appends were counted (then as many arrived since the
/// last round began as that round covered), at most
/// [`GROUP_COMMIT_GATHER_WAIT_US`], or until stop.
fn gather(shared: &Shared, target: u64) {
    let deadline = Instant::now() + std::time::Duration::from_micros(GROUP_COMMIT_GATHER_WAIT_US);
    shared.wake_at.store(target, Ordering::SeqCst);
    loop {
        if shared.appends.load(Ordering::SeqCst) >= target
            || shared.stopping.load(Ordering::Acquire)
        {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::park_timeout(deadline - now);
    }
    shared.wake_at.store(0, Ordering::SeqCst);
}

/// One group-commit round.
fn round(shared: &Shared) -> Result<(), StorageError> {
    let _round = shared.round_lock.lock().expect("round lock");
    if let Some(reason) = shared.failed.lock().expect("failed lock").as_ref() {
        return Err(StorageError::Failed(reason.clone()));
    }
    // Before the round number: a ticket taken after this is for a later
    // round, and keeps that one from waiting.
    shared.ticket_waiting.store(false, Ordering::SeqCst);
    // Counted before the flush: every write completed by now is covered.
    let round_number = shared.rounds_begun.fetch_add(1, Ordering::SeqCst) + 1;
    let dirty = std::mem::take(&mut *shared.dirty.lock().expect("dirty lock"));
    let mut snapshot = Vec::with_capacity(dirty.len());
    for log in dirty {
        // Clear first, then read log_end: an append that completes after the
        // clear either is in this snapshot or marks the partition dirty again.
        log.dirty.swap(false, Ordering::AcqRel);
        let end = log.log_end();
        snapshot.push((log, end));
    }
    // After the round number: a write that marked sled dirty before its
    // ticket was read is covered.
    let meta = shared.meta_dirty.swap(false, Ordering::SeqCst);
    let started = Instant::now();
    // Durable only once this returns: segments first, then sled (whose
    // `flush()` alone is `sync_file_range`).
    let mut sync = || {
        for (log, _) in &snapshot {
            log.sync()?;
        }
        if !meta {
            return Ok(());
        }
        shared
            .db
            .flush()
            .map_err(|e| StorageError::sled(&shared.dir, e))
            .and_then(|_| sync_blobs(&shared.dir))
            .and_then(|_| {
                shared
                    .log_file
                    .sync_data()
                    .map_err(|e| StorageError::io(&shared.dir.join("db"), e))
            })
    };
    let result = match &shared.sync_hook {
        Some(hook) => hook.around_sync(&mut sync),
        None => sync(),
    };
    if let Err(e) = result {
        shared.failed_disk_full.store(
            matches!(e, StorageError::DiskFull { .. }),
            Ordering::Release,
        );
        *shared.failed.lock().expect("failed lock") = Some(e.to_string());
        shared.durable_event.notify(usize::MAX);
        for (log, _) in &snapshot {
            log.wake_waiters();
        }
        return Err(e);
    }
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    for (log, end) in snapshot {
        log.set_durable_end(end);
    }
    shared.rounds_done.fetch_max(round_number, Ordering::SeqCst);
    {
        let mut stats = shared.stats.lock().expect("stats lock");
        stats.rounds += 1;
        stats.sync_us_total += elapsed_us;
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|&b| elapsed_us <= b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        stats.sync_us_buckets[bucket] += 1;
    }
    shared.durable_event.notify(usize::MAX);
    Ok(())
}

/// sled writes values too large for its log (over a quarter segment) to
/// files in `blobs/` and never fsyncs them: do it, and the directory, before
/// the log that points at them is synced. Normally there are none.
fn sync_blobs(dir: &Path) -> Result<(), StorageError> {
    let blobs = dir.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(&blobs, e)),
    };
    let mut any = false;
    for entry in entries {
        let path = entry.map_err(|e| StorageError::io(&blobs, e))?.path();
        match File::open(&path) {
            Ok(f) => f.sync_data().map_err(|e| StorageError::io(&path, e))?,
            // sled removes blobs it no longer needs; a vanished one is fine.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io(&path, e)),
        }
        any = true;
    }
    if any {
        File::open(&blobs)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(&blobs, e))?;
    }
    Ok(())
}
