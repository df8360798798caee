//! The maintenance loop: retention, compaction and the disk budget in the
//! background, in bounded steps.
//!
//! [`Storage::maintain`] runs one step over every partition at a given time
//! (tests pass their own clock); [`MaintenanceThread`] calls it with the
//! wall clock: again soon while a step reports more work, else every
//! `interval_ms`. While busy it pauses after each step long enough that it
//! is busy at most [`MAINTENANCE_BUSY_PERCENT_MAX`] of the time (at least
//! [`MAINTENANCE_STEP_PAUSE_MS`]): on a 2-core gateway a compaction must not
//! take a core away from the producers. While retention is behind on some
//! partition ([`RETENTION_BEHIND_PERCENT`] past a limit after a full step)
//! the cap is [`MAINTENANCE_BEHIND_BUSY_PERCENT_MAX`] instead: with the CPU
//! contended, 25 % of the wall time removes less than the producers append
//! (a soak beside a build grew the data dir from 2 to 20 GB in an hour), and
//! the disk filling up is worse for the producers than slower acks. Each
//! step is bounded
//! per partition ([`RETENTION_BATCHES_PER_STEP_MAX`],
//! [`COMPACTION_BATCHES_PER_STEP_MAX`]), and only takes short locks (a
//! partition's trim lock, sled's own), so appends and reads go on meanwhile.
//! After a step that changed something it asks the flusher for a round so
//! removals and log starts reach the disk.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::budget::Dropped;
use super::compaction::{compaction_step, CompactionState};
use super::retention::{retention_step, RETENTION_BEHIND_PERCENT};
use super::{Storage, StorageError};

/// Default time between maintenance steps when there is nothing to do, in ms.
pub const MAINTENANCE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Shortest pause between steps while there is more work, in ms.
pub const MAINTENANCE_STEP_PAUSE_MS: u64 = 2;
/// Most of the wall time the maintenance thread spends working while it has
/// a backlog, in percent (the rest it pauses).
pub const MAINTENANCE_BUSY_PERCENT_MAX: u64 = 25;
/// Most of the wall time the maintenance thread spends working while
/// retention is behind on some partition, in percent.
pub const MAINTENANCE_BEHIND_BUSY_PERCENT_MAX: u64 = 75;
/// Most batches retention removes per partition per step.
pub const RETENTION_BATCHES_PER_STEP_MAX: usize = 1024;
/// Most batches compaction reads or rewrites per partition per step.
pub const COMPACTION_BATCHES_PER_STEP_MAX: usize = 64;
/// Most bytes of keys compaction remembers per pass (per partition).
pub const COMPACTION_MAP_BYTES_MAX: usize = 32 << 20;

/// State kept between steps (compaction progress per partition).
#[derive(Debug)]
pub struct Maintenance {
    compaction: HashMap<(u64, u32), CompactionState>,
    /// Per partition per step ([`COMPACTION_BATCHES_PER_STEP_MAX`]; tests
    /// take smaller steps).
    compaction_batches_max: usize,
    /// Key map per partition per pass ([`COMPACTION_MAP_BYTES_MAX`]; tests
    /// fill it on purpose).
    compaction_map_bytes_max: usize,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            compaction: HashMap::new(),
            compaction_batches_max: COMPACTION_BATCHES_PER_STEP_MAX,
            compaction_map_bytes_max: COMPACTION_MAP_BYTES_MAX,
        }
    }
}

impl Maintenance {
    /// Maintenance with smaller compaction bounds (tests).
    #[cfg(test)]
    pub(super) fn with_compaction_bounds(batches_max: usize, map_bytes_max: usize) -> Self {
        Maintenance {
            compaction_batches_max: batches_max,
            compaction_map_bytes_max: map_bytes_max,
            ..Maintenance::default()
        }
    }
}

/// What one step did, over all partitions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub retention_removed_records: u64,
    pub compaction_removed_records: u64,
    pub budget_dropped: Dropped,
    /// Some partition has more work: step again soon.
    pub more: bool,
    /// Retention is behind on some partition (see [`RETENTION_BEHIND_PERCENT`]).
    pub retention_behind: bool,
}

impl MaintenanceReport {
    /// How long to pause after a step that took `busy_ms`: the whole
    /// `interval_ms` when there is no more work, else long enough to stay
    /// within the busy cap (the higher one while retention is behind), and
    /// at least [`MAINTENANCE_STEP_PAUSE_MS`].
    pub fn pause_ms(&self, busy_ms: u64, interval_ms: u64) -> u64 {
        if !self.more {
            return interval_ms;
        }
        let busy_percent = if self.retention_behind {
            MAINTENANCE_BEHIND_BUSY_PERCENT_MAX
        } else {
            MAINTENANCE_BUSY_PERCENT_MAX
        };
        (busy_ms.saturating_mul(100 - busy_percent) / busy_percent).max(MAINTENANCE_STEP_PAUSE_MS)
    }
}

impl Storage {
    /// One bounded maintenance step at time `now_ms`.
    pub fn maintain(
        &self,
        state: &mut Maintenance,
        now_ms: u64,
    ) -> Result<MaintenanceReport, StorageError> {
        self.flusher.check_healthy()?;
        let mut report = MaintenanceReport::default();
        let topics = self.topics();
        let mut live = Vec::new();
        for topic in &topics {
            for log in topic.partitions() {
                let retention = retention_step(log, now_ms, RETENTION_BATCHES_PER_STEP_MAX)?;
                report.retention_removed_records += retention.trimmed.records;
                report.more |= retention.more;
                report.retention_behind |= retention.behind;
                let key = (log.topic_id(), log.partition());
                live.push(key);
                let (batches_max, map_bytes_max) =
                    (state.compaction_batches_max, state.compaction_map_bytes_max);
                // Compaction writes a cleaned copy of a segment before the
                // old one goes: not while the free-space reserve is short.
                let rewrite_bytes = log.config().segment_bytes;
                if self.disk.reserve(rewrite_bytes).is_err() {
                    continue;
                }
                let compaction = state.compaction.entry(key).or_default();
                let step = compaction_step(log, compaction, now_ms, batches_max, map_bytes_max)?;
                report.compaction_removed_records += step.removed_records;
                report.more |= step.more;
            }
        }
        state.compaction.retain(|key, _| live.contains(key));
        match self.make_room(None, 0) {
            Ok(dropped) => report.budget_dropped = dropped,
            Err(e) => log::warn!("{e}"),
        }
        if report != MaintenanceReport::default() {
            let _ticket = self.flusher.commit_ticket();
        }
        Ok(report)
    }
}

/// Runs [`Storage::maintain`] on a thread until stopped.
pub struct MaintenanceThread {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl MaintenanceThread {
    /// Starts the loop; `interval_ms` between idle steps.
    pub fn spawn(storage: Arc<Storage>, interval_ms: u64) -> std::io::Result<MaintenanceThread> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("eddy-maintenance".into())
            .spawn(move || {
                let mut state = Maintenance::default();
                let mut behind = false;
                loop {
                    let step_started = std::time::Instant::now();
                    let pause_ms = match storage.maintain(&mut state, crate::time::now_ms()) {
                        Ok(report) => {
                            if report.retention_behind != behind {
                                behind = report.retention_behind;
                                if behind {
                                    log::warn!(
                                        "retention is behind (a partition is over \
                                         {RETENTION_BEHIND_PERCENT}% past retention.bytes or \
                                         retention.ms): maintenance may use \
                                         {MAINTENANCE_BEHIND_BUSY_PERCENT_MAX}% of a core until \
                                         it has caught up; if this repeats, the producers \
                                         append faster than this gateway can remove, so lower \
                                         the ingest rate or give the topics a disk budget"
                                    );
                                } else {
                                    log::info!("retention has caught up");
                                }
                            }
                            let busy_ms = u64::try_from(step_started.elapsed().as_millis())
                                .unwrap_or(u64::MAX);
                            report.pause_ms(busy_ms, interval_ms)
                        }
                        Err(StorageError::Closed) => return,
                        Err(e) => {
                            log::error!("maintenance step failed: {e}");
                            interval_ms
                        }
                    };
                    let (lock, wake) = &*thread_stop;
                    let stopped = lock.lock().expect("stop lock");
                    let (stopped, _) = wake
                        .wait_timeout_while(stopped, Duration::from_millis(pause_ms), |s| !*s)
                        .expect("stop lock");
                    if *stopped {
                        return;
                    }
                }
            })?;
        Ok(MaintenanceThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop (after the step in progress) and waits for it.
    pub fn stop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().expect("stop lock") = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MaintenanceThread {
    fn drop(&mut self) {
        self.stop();
    }
}
