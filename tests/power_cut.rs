//! A power cut, not only `kill -9`: eddy's crash loop (the one of
//! `tests/crash_loop.rs`, shared in `tests/common/crash_cycle.rs`) with its
//! data directory on the power-cut FUSE file system
//! (`tests/common/powercut_fs.rs`), which after every kill takes back each
//! write, size change and directory change that was not fsynced. So a
//! write that eddy acknowledges before it is durable is lost here, where
//! `kill -9` (the page cache survives) never loses it.
//!
//! Also the harness's own tests, that it bites: a write not synced is
//! lost and a synced one kept (fsync and fdatasync, which must reach the
//! FS as such), names revert unless their directory was synced, and a
//! torn cut keeps some unsynced pages and loses others.
//!
//! Mounting needs root and `/dev/fuse`, so these tests are ignored in a
//! plain `cargo test`; `.ci/run` (as root) runs them with `--ignored`. They
//! fail, never skip, when the mount is refused. `EDDY_POWER_CYCLES` sets the
//! loop's cycles (default 50, as in CI); `benches/power_cut.sh` runs 200.
//! The seed is printed and `EDDY_TEST_SEED` replays a run.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use common::crash_cycle::{self, Crash};
use common::powercut_fs::{CutMode, CutReport, Disk, Mounted, Stats};
use common::powercut_undo::PAGE_BYTES;

/// Cycles when `EDDY_POWER_CYCLES` is not set.
const CYCLES_DEFAULT: u64 = 50;

fn sync_dir(path: &std::path::Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
#[ignore = "mounts FUSE: needs root and /dev/fuse (.ci/run runs it)"]
fn unsynced_writes_are_lost_synced_ones_kept() {
    let disk = Disk::new();
    let fs = disk.mount();
    let path = disk.mountpoint().join("f");
    let mut f = File::create(&path).unwrap();
    sync_dir(&disk.mountpoint());
    f.write_all(&[b'a'; 10_000]).unwrap();
    f.sync_data().unwrap();
    assert_eq!(
        Stats::get(&fs.stats().fdatasyncs),
        1,
        "fdatasync arrives as datasync"
    );
    f.write_all_at(&[b'b'; 100], 5_000).unwrap();
    f.write_all(&[b'c'; 3_000]).unwrap();
    let g = disk.mountpoint().join("g");
    std::fs::write(&g, b"synced with fsync").unwrap();
    File::open(&g).unwrap().sync_all().unwrap();
    sync_dir(&disk.mountpoint());
    assert_eq!(Stats::get(&fs.stats().fsyncs), 1, "fsync arrives as fsync");
    assert_eq!(Stats::get(&fs.stats().dir_fsyncs), 2);
    // Before the cut everything is there, through the mount and on the
    // backing "disk" (direct_io: the kernel cached none of it).
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 13_000);
    let backing = std::fs::read(disk.backing().join("f")).unwrap();
    assert_eq!(backing.len(), 13_000);
    assert_eq!(&backing[5_000..5_100], &[b'b'; 100]);
    drop(f);

    let report = fs.power_cut(CutMode::LoseAll, &mut fastrand::Rng::with_seed(1));
    assert_eq!(report.files, 1, "{report:?}");
    assert_eq!(report.sizes_reverted, 1, "{report:?}");
    let kept = std::fs::read(disk.backing().join("f")).unwrap();
    assert_eq!(kept, vec![b'a'; 10_000], "exactly what fdatasync covered");
    assert_eq!(
        std::fs::read(disk.backing().join("g")).unwrap(),
        b"synced with fsync"
    );
    // The next boot sees the same.
    let _fs = disk.mount();
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'a'; 10_000]);
}

#[test]
#[ignore = "mounts FUSE: needs root and /dev/fuse (.ci/run runs it)"]
fn names_revert_unless_their_directory_was_synced() {
    let disk = Disk::new();
    let mnt = disk.mountpoint();
    let fs = disk.mount();
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::write(mnt.join("dir/kept"), b"kept").unwrap();
    std::fs::write(mnt.join("dir/old"), b"old").unwrap();
    std::fs::write(mnt.join("dir/doomed"), b"doomed").unwrap();
    for f in ["dir/kept", "dir/old", "dir/doomed"] {
        File::open(mnt.join(f)).unwrap().sync_all().unwrap();
    }
    sync_dir(&mnt.join("dir"));
    sync_dir(&mnt);
    // Not synced: a new file (its data is), a rename, a removal.
    let mut new = File::create(mnt.join("dir/new")).unwrap();
    new.write_all(b"new").unwrap();
    new.sync_all().unwrap();
    std::fs::rename(mnt.join("dir/old"), mnt.join("dir/renamed")).unwrap();
    std::fs::remove_file(mnt.join("dir/doomed")).unwrap();
    // Synced: a rename into a synced directory.
    std::fs::create_dir(mnt.join("other")).unwrap();
    sync_dir(&mnt);
    std::fs::rename(mnt.join("dir/kept"), mnt.join("other/moved")).unwrap();
    sync_dir(&mnt.join("other"));
    assert_eq!(fs.unsynced().1, 3, "three directory changes not durable");
    drop(new);

    let report = fs.power_cut(CutMode::LoseAll, &mut fastrand::Rng::with_seed(2));
    assert_eq!(report.names_reverted, 3, "{report:?}");
    let listing = |d: &str| {
        let mut names: Vec<String> = std::fs::read_dir(disk.backing().join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing("dir"), ["doomed", "old"]);
    assert_eq!(listing("other"), ["moved"]);
    assert_eq!(
        std::fs::read(disk.backing().join("dir/doomed")).unwrap(),
        b"doomed"
    );
}

#[test]
#[ignore = "mounts FUSE: needs root and /dev/fuse (.ci/run runs it)"]
fn a_torn_cut_keeps_some_unsynced_pages_whole_and_loses_others() {
    const PAGES: u64 = 64;
    let seed = crash_cycle::seed();
    println!("seed {seed} (EDDY_TEST_SEED={seed} replays it)");
    let disk = Disk::new();
    let fs = disk.mount();
    let path = disk.mountpoint().join("f");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    sync_dir(&disk.mountpoint());
    let synced = vec![b's'; (PAGES * PAGE_BYTES) as usize];
    f.write_all_at(&synced, 0).unwrap();
    f.sync_data().unwrap();
    // One write across every page, not synced.
    f.write_all_at(&vec![b'u'; synced.len()], 0).unwrap();
    drop(f);
    let report = fs.power_cut(CutMode::Torn, &mut fastrand::Rng::with_seed(seed));
    assert_eq!(report.pages_kept + report.pages_lost, PAGES as usize);
    assert!(
        report.pages_kept > 0 && report.pages_lost > 0,
        "64 coin flips: some pages kept, some lost ({report:?})"
    );
    let bytes = std::fs::read(disk.backing().join("f")).unwrap();
    assert_eq!(bytes.len(), synced.len());
    let mut kept = 0;
    for page in bytes.chunks(PAGE_BYTES as usize) {
        assert!(
            page.iter().all(|&b| b == page[0]),
            "a page is kept or lost whole"
        );
        kept += usize::from(page[0] == b'u');
    }
    assert_eq!(kept, report.pages_kept);
}

#[test]
#[ignore = "mounts FUSE: needs root and /dev/fuse (.ci/run runs it)"]
fn a_power_cut_right_after_the_first_start_keeps_the_hub_id_and_its_ca() {
    let disk = Disk::new();
    let data = disk.mountpoint().join("data");
    let fs = disk.mount();
    let server = common::ChildServer::start(&data, &[]);
    let hub_id = std::fs::read_to_string(data.join("hub-id")).unwrap();
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    server.kill9();
    let report = fs.power_cut(CutMode::LoseAll, &mut fastrand::Rng::with_seed(3));
    let _fs = disk.mount();
    // Before the fixes: the data directory's own entry was never synced
    // (it vanished), hub-id was rewritten at every start and never synced
    // (empty after a cut: the hub refused to start), and the dev TLS files'
    // names were not synced (a new CA that no device trusts).
    assert_eq!(
        std::fs::read_to_string(data.join("hub-id")).unwrap(),
        hub_id,
        "{report:?}"
    );
    assert_eq!(std::fs::read(data.join("tls/ca.pem")).unwrap(), ca);
    let server = common::ChildServer::start(&data, &[]);
    assert!(server.terminate().success());
}

/// kill -9, then a power cut: the FS is unmounted, everything not durable
/// taken back, and mounted again for the next start.
struct PowerCut {
    /// Before `disk`: unmounted before the directories are removed.
    mounted: Option<Mounted>,
    disk: Disk,
    /// Every cut's losses, added up.
    total: CutReport,
    cuts: usize,
    torn_cuts: usize,
    /// fdatasyncs seen by the FS over the whole loop.
    fdatasyncs: u64,
}

impl Crash for PowerCut {
    fn data_dir(&mut self, _cycle: usize) -> PathBuf {
        if self.mounted.is_none() {
            self.mounted = Some(self.disk.mount());
        }
        self.disk.mountpoint().join("data")
    }

    fn after_kill(&mut self, cycle: usize, rng: &mut fastrand::Rng) {
        let mounted = self.mounted.take().expect("mounted for the cycle");
        self.fdatasyncs += Stats::get(&mounted.stats().fdatasyncs);
        // Half the cuts lose exactly what was not synced, half are torn.
        let mode = if rng.bool() {
            CutMode::LoseAll
        } else {
            CutMode::Torn
        };
        let report = mounted.power_cut(mode, rng);
        println!("cycle {cycle}: {mode:?} cut took back {report:?}");
        self.total.add(&CutReport {
            names: Vec::new(),
            ..report
        });
        self.cuts += 1;
        self.torn_cuts += usize::from(mode == CutMode::Torn);
    }
}

#[test]
#[ignore = "mounts FUSE: needs root and /dev/fuse (.ci/run runs it)"]
fn power_cut_during_durable_ingest_loses_nothing_acknowledged() {
    let cycles = crash_cycle::env_or("EDDY_POWER_CYCLES", CYCLES_DEFAULT) as usize;
    let seed = crash_cycle::seed();
    println!("{cycles} cycles, seed {seed} (EDDY_TEST_SEED={seed} replays it)");
    let started = Instant::now();
    let mut crash = PowerCut {
        mounted: None,
        disk: Disk::new(),
        total: CutReport::default(),
        cuts: 0,
        torn_cuts: 0,
        fdatasyncs: 0,
    };
    let outcome = crash_cycle::run(cycles, seed, &mut crash);
    drop(crash.mounted.take());
    let total = crash.total;
    assert_eq!(crash.cuts, cycles);
    // That eddy's writes and syncs went through the FS. How much a cut
    // takes back depends on where the kill lands (often nothing: eddy
    // fdatasyncs continuously), so it is reported, not asserted; that the
    // cuts bite is what the tests above prove.
    assert!(
        crash.fdatasyncs > 0,
        "eddy's fdatasyncs reached the FS as fdatasync"
    );
    let (min, median, max) = outcome.per_cycle_spread();
    let mut starts = outcome.start_ms.clone();
    starts.sort_unstable();
    println!(
        "{cycles} power cuts ({} torn): {} acknowledged records checked after the last \
         restart ({} more were fsynced without an ack); records acknowledged per cycle: min \
         {min}, median {median}, max {max}; start median {} ms, slowest {} ms; the cuts took \
         back {} unsynced pages (kept {} in torn cuts), {} sizes, {} directory changes; \
         {} fdatasyncs; {:.1} s",
        crash.torn_cuts,
        outcome.acked_verified,
        outcome.unacked_kept,
        starts[starts.len() / 2],
        outcome.start_ms_max(),
        total.pages_lost,
        total.pages_kept,
        total.sizes_reverted,
        total.names_reverted,
        crash.fdatasyncs,
        started.elapsed().as_secs_f64(),
    );
    println!(
        "power cut result: cycles={cycles} acked_verified={} lost=0 unacked_kept={} \
         min_acked_per_cycle={min} slowest_start_ms={} pages_lost={} names_reverted={} seed={seed}",
        outcome.acked_verified,
        outcome.unacked_kept,
        outcome.start_ms_max(),
        total.pages_lost,
        total.names_reverted,
    );
}
