//! Crash loop: `kill -9` at a random moment during durable ingest by
//! several producers, then restart, many times over one data directory
//! (the loop and its checks: `tests/common/crash_cycle.rs`; the same loop
//! with a power cut after each kill: `tests/power_cut.rs`).
//!
//! `EDDY_CRASH_CYCLES` sets the number of cycles (default 50, as in CI);
//! `benches/crash_loop.sh` runs 200 with a release build. The seed is
//! printed; `EDDY_TEST_SEED` replays a run. The last line printed is the
//! result (`crash loop result: …`).

mod common;

use std::path::PathBuf;

use common::crash_cycle::{self, Crash};

/// Cycles when `EDDY_CRASH_CYCLES` is not set.
const CYCLES_DEFAULT: u64 = 50;

/// kill -9 only: the page cache survives, so does everything written.
struct Kill9 {
    dir: tempfile::TempDir,
}

impl Crash for Kill9 {
    fn data_dir(&mut self, _cycle: usize) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn after_kill(&mut self, _cycle: usize, _rng: &mut fastrand::Rng) {}
}

#[test]
fn kill_9_during_durable_ingest_loses_nothing_acknowledged() {
    let cycles = crash_cycle::env_or("EDDY_CRASH_CYCLES", CYCLES_DEFAULT) as usize;
    let seed = crash_cycle::seed();
    println!("{cycles} cycles, seed {seed} (EDDY_TEST_SEED={seed} replays it)");
    let mut crash = Kill9 {
        dir: tempfile::tempdir().unwrap(),
    };
    let outcome = crash_cycle::run(cycles, seed, &mut crash);
    let (min, median, max) = outcome.per_cycle_spread();
    println!(
        "{cycles} kill -9 cycles: {} acknowledged records checked after the last restart \
         ({} more were fsynced but their ack was lost in the kill); \
         records acknowledged per cycle: min {min}, median {median}, max {max}; slowest start {} ms",
        outcome.acked_verified,
        outcome.unacked_kept,
        outcome.start_ms_max(),
    );
    println!(
        "crash loop result: cycles={cycles} acked_verified={} unacked_kept={} \
         cycles_with_progress={} min_acked_per_cycle={min} slowest_start_ms={} seed={seed}",
        outcome.acked_verified,
        outcome.unacked_kept,
        outcome.per_cycle.iter().filter(|&&n| n > 0).count(),
        outcome.start_ms_max(),
    );
}
