//! The free-space reserve: appends are refused with `DiskFull` while the
//! file system of the data directory has less than
//! `StorageOptions::disk_free_min_bytes` free, so that sled never runs into
//! ENOSPC itself.
//!
//! Why: sled 0.34 turns any failed write into a global error; every later
//! operation fails until the database is reopened, i.e. until eddy
//! restarts. A refusal here is a clean, per-request answer instead, and
//! writes resume by themselves as soon as space is back (the next check
//! sees it). Should sled hit ENOSPC anyway (another program filled the disk
//! faster than the checks saw, or the reserve is 0), storage fails and the
//! server stops so that its service manager restarts it (see
//! `server::watch_storage`): after the restart sled recovers its log, this
//! reserve refuses writes until there is room, and nothing acknowledged is
//! lost (acknowledged records were fsynced before the failure).
//!
//! A hub must also start on a full disk, so that an operator can see and
//! fix it: sled writes a new segment and a snapshot when it opens, and
//! cannot open with nothing free. With a reserve, eddy keeps an emergency
//! space file ([`EMERGENCY_SPACE_FILE`], [`EMERGENCY_SPACE_BYTES`]) in the
//! data directory; a start with less than the reserve free removes it
//! first (and logs so), storage opens, reads work, and writes get
//! `DiskFull` until space is freed. The file is written again once the
//! reserve and twice its size are free.
//!
//! The file system is asked (`statvfs`) at most every
//! [`DISK_FREE_CHECK_INTERVAL_MS`], and sooner when the bytes appended
//! since the last answer could have used up the margin above the reserve.
//! This module only measures and refuses; it does not delete anything.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StorageError;

/// Default free-space reserve, in bytes: sled writes in 1 MiB segments and
/// rewrites tree leaves and its metadata as it goes, so it needs some room
/// beyond the records themselves; 64 MiB is little on an SD card.
pub const DISK_FREE_MIN_BYTES_DEFAULT: u64 = 64 << 20;

/// The emergency space file in the data directory (see the module docs).
pub const EMERGENCY_SPACE_FILE: &str = "emergency-space";

/// Size of the emergency space file, in bytes: sled needs about one 1 MiB
/// segment to open on a full disk (measured); four leave room for what a
/// read-only hub still writes (a snapshot, a mirror cursor).
pub const EMERGENCY_SPACE_BYTES: u64 = 4 << 20;

/// Longest the last free-space figure is trusted, in ms.
pub const DISK_FREE_CHECK_INTERVAL_MS: u64 = 100;

/// The reserve and the last look at the file system.
pub(super) struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    /// The emergency space file (`None`: no reserve, no file).
    emergency: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    /// When the file system was last asked, and what it said.
    checked_at: Option<Instant>,
    free_bytes: u64,
    /// Bytes appended since then (they use up free space).
    appended_since: u64,
    /// Whether appends are being refused (to log the change once).
    refusing: bool,
    /// Whether the emergency space file is in place (or could not be
    /// written: not tried again while eddy runs).
    emergency_done: bool,
}

impl DiskSpace {
    /// A reserve of `min_free_bytes` on the file system of `dir` (0: off).
    pub(super) fn new(dir: &Path, min_free_bytes: u64) -> DiskSpace {
        let emergency = (min_free_bytes > 0).then(|| dir.join(EMERGENCY_SPACE_FILE));
        DiskSpace {
            dir: dir.to_path_buf(),
            min_free_bytes,
            state: Mutex::new(State {
                checked_at: None,
                free_bytes: 0,
                appended_since: 0,
                refusing: false,
                emergency_done: emergency.as_ref().is_none_or(|f| f.exists()),
            }),
            emergency,
        }
    }

    /// Before storage opens on data directory `dir`: with less than the
    /// reserve free, removes the emergency space file so that sled can
    /// open (writes are then refused until space is freed).
    pub(super) fn release_emergency_space(
        dir: &Path,
        min_free_bytes: u64,
    ) -> Result<(), StorageError> {
        let file = dir.join(EMERGENCY_SPACE_FILE);
        if min_free_bytes == 0 || !file.exists() {
            return Ok(());
        }
        let free = free_bytes(dir)?;
        if free >= min_free_bytes {
            return Ok(());
        }
        std::fs::remove_file(&file).map_err(|e| StorageError::io(&file, e))?;
        log::warn!(
            "starting on a full disk: {free} bytes free on the file system of {}, below the reserve of \
             {min_free_bytes} (storage.disk_free_min_mb); removed eddy's emergency space file ({} bytes) so that \
             storage can open. Reads work; writes get DiskFull until space is freed there (delete other files, \
             or topics with `eddy topics delete`): eddy resumes by itself",
            dir.display(),
            EMERGENCY_SPACE_BYTES
        );
        Ok(())
    }

    /// Writes the emergency space file if it is missing and the reserve
    /// and twice its size are free (`free`: bytes free now). Returns the
    /// bytes it took.
    fn restore_emergency_space(&self, s: &mut State, free: u64) -> u64 {
        let Some(file) = self.emergency.as_ref().filter(|_| !s.emergency_done) else {
            return 0;
        };
        if free
            < self
                .min_free_bytes
                .saturating_add(2 * EMERGENCY_SPACE_BYTES)
        {
            return 0;
        }
        s.emergency_done = true;
        match allocate(file, EMERGENCY_SPACE_BYTES) {
            Ok(()) => EMERGENCY_SPACE_BYTES,
            Err(e) => {
                log::warn!(
                    "could not write the emergency space file {}: {e}; a start on a full disk may fail",
                    file.display()
                );
                0
            }
        }
    }

    /// `Ok` if `incoming` bytes may be appended without going below the
    /// reserve; counts them as appended when they may.
    pub(super) fn reserve(&self, incoming: u64) -> Result<(), StorageError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut s = self.state.lock().expect("disk space lock");
        let estimate = s.free_bytes.saturating_sub(s.appended_since);
        let stale = s
            .checked_at
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(DISK_FREE_CHECK_INTERVAL_MS));
        if stale || estimate < self.min_free_bytes.saturating_add(incoming) {
            s.free_bytes = free_bytes(&self.dir)?;
            s.checked_at = Some(Instant::now());
            let free = s.free_bytes;
            s.appended_since = self.restore_emergency_space(&mut s, free);
        }
        let free = s.free_bytes.saturating_sub(s.appended_since);
        if free < self.min_free_bytes.saturating_add(incoming) {
            if !s.refusing {
                s.refusing = true;
                log::warn!(
                    "{} bytes free on the file system of {}, below the reserve of {} (storage.disk_free_min_mb): \
                     refusing appends with DiskFull until space is freed",
                    free,
                    self.dir.display(),
                    self.min_free_bytes
                );
            }
            return Err(StorageError::DiskReserve {
                path: self.dir.clone(),
                free,
                min: self.min_free_bytes,
            });
        }
        if s.refusing {
            s.refusing = false;
            log::info!(
                "{} bytes free on the file system of {} again: appends resume",
                free,
                self.dir.display()
            );
        }
        s.appended_since = s.appended_since.saturating_add(incoming);
        Ok(())
    }
}

/// Creates `file` holding `bytes` of the file system's space: allocated
/// (`fallocate`, nothing written to the device) where the file system can,
/// else written with zeros.
fn allocate(file: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(file)?;
    match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let zeros = vec![0u8; usize::try_from(bytes).map_err(std::io::Error::other)?];
            std::io::Write::write_all(&mut &f, &zeros)
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes an unprivileged process may still write on the file system of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, StorageError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| StorageError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_zero_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let off = DiskSpace::new(dir.path(), 0);
        assert!(off.reserve(u64::MAX / 2).is_ok());
        let impossible = DiskSpace::new(dir.path(), u64::MAX / 2);
        assert!(matches!(
            impossible.reserve(1),
            Err(StorageError::DiskReserve { .. })
        ));
        let small = DiskSpace::new(dir.path(), 1);
        small.reserve(1).unwrap();
        // More than is free, counted against the last answer: refused.
        assert!(small.reserve(free.saturating_mul(2)).is_err());
        small.reserve(1).unwrap();
    }

    #[test]
    fn the_emergency_space_is_written_with_room_and_released_below_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(EMERGENCY_SPACE_FILE);
        // No reserve: no file.
        DiskSpace::new(dir.path(), 0).reserve(0).unwrap();
        assert!(!file.exists());
        // A reserve and room: written at the first look.
        DiskSpace::new(dir.path(), 1).reserve(0).unwrap();
        assert_eq!(file.metadata().unwrap().len(), EMERGENCY_SPACE_BYTES);
        // Enough free for the reserve: kept at open.
        DiskSpace::release_emergency_space(dir.path(), 1).unwrap();
        assert!(file.exists());
        // Less free than the reserve: released so that storage can open.
        DiskSpace::release_emergency_space(dir.path(), u64::MAX / 2).unwrap();
        assert!(!file.exists());
    }
}
