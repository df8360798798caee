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

/// Longest the last free-space figure is trusted, in ms.
pub const DISK_FREE_CHECK_INTERVAL_MS: u64 = 100;

/// The reserve and the last look at the file system.
pub(super) struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
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
}

impl DiskSpace {
    /// A reserve of `min_free_bytes` on the file system of `dir` (0: off).
    pub(super) fn new(dir: &Path, min_free_bytes: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            min_free_bytes,
            state: Mutex::new(State {
                checked_at: None,
                free_bytes: 0,
                appended_since: 0,
                refusing: false,
            }),
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
            s.appended_since = 0;
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
}
