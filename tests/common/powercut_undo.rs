//! The power-cut model of [`super::powercut_fs`]: what a file system must
//! keep after a power cut, and the undo log that takes back everything
//! else.
//!
//! The pass-through file system writes every change to the backing
//! directory at once and records here how to take it back:
//! - [`FileUndo`], per file (by inode): its size and the old bytes of every
//!   4 KiB page changed since its last `fsync` or `fdatasync` (copied on the
//!   first change of that page). Both syncs make the data and the size
//!   durable (fdatasync persists the size that reading the data needs).
//! - [`NameOp`], one per directory change (create, mkdir, unlink, rmdir,
//!   rename) since the last `fsync` of the directory it is durable in: a
//!   created or removed name in its parent, a rename in its destination.
//!   Removed files and directories are moved to a graveyard, not deleted,
//!   until the cut, so that a removal can be taken back.
//!
//! A cut ([`CutMode`]) takes back the directory changes newest first
//! (skipping the durable ones), then the file changes:
//! - [`CutMode::LoseAll`]: every unsynced page and size change is lost.
//! - [`CutMode::Torn`] (harsher, seeded): each unsynced page independently
//!   survives or not (the kernel had written some back), and the size is
//!   the synced one or the last one; a page that did not survive below a
//!   size that did reads as zeros. That is a write torn at page
//!   boundaries, and also the "size committed, data not" state that
//!   ext4's `data=ordered` avoids but other file systems allow.
//!
//! Not modelled: tears inside a 4 KiB page, hard links, extended
//! attributes, timestamps and permissions (they are changed at once and
//! never taken back), and the ordering a real journal adds (ext4 commits
//! every earlier metadata change with any fsync; here only the synced
//! directory's own changes become durable, which is what POSIX promises).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The unit in which unsynced data is kept or lost.
pub const PAGE_BYTES: u64 = 4096;

/// How much of what was not synced a power cut takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Every unsynced write, size change and directory change is lost.
    LoseAll,
    /// Directory changes are lost; each unsynced page survives with
    /// probability 1/2 and each file keeps its synced or its last size.
    Torn,
}

/// What one cut took back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files with unsynced changes.
    pub files: usize,
    /// Unsynced pages set back to their synced bytes.
    pub pages_lost: usize,
    /// Unsynced pages that survived (only in [`CutMode::Torn`]).
    pub pages_kept: usize,
    /// Files whose size went back to the synced one.
    pub sizes_reverted: usize,
    /// Directory changes taken back.
    pub names_reverted: usize,
    /// What they were, newest first.
    pub names: Vec<String>,
}

impl CutReport {
    pub fn add(&mut self, other: &CutReport) {
        self.files += other.files;
        self.pages_lost += other.pages_lost;
        self.pages_kept += other.pages_kept;
        self.sizes_reverted += other.sizes_reverted;
        self.names_reverted += other.names_reverted;
        self.names.extend(other.names.iter().cloned());
    }
}

/// How to take back one file's changes since its last sync.
pub struct FileUndo {
    /// A read-write handle on the backing file (valid whatever its name).
    file: File,
    /// The size at the last sync.
    synced_size: u64,
    /// Page index → the page's bytes at the last sync (shorter than a page
    /// where the file ended inside or before it).
    pages: BTreeMap<u64, Vec<u8>>,
}

impl FileUndo {
    /// Starts recording a file whose current content is its synced one.
    pub fn new(file: File) -> io::Result<FileUndo> {
        let synced_size = file.metadata()?.len();
        Ok(FileUndo {
            file,
            synced_size,
            pages: BTreeMap::new(),
        })
    }

    /// Saves the synced bytes of every page in `start..end` not saved yet;
    /// call before changing those bytes (a write, or a truncation below).
    pub fn save_range(&mut self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let size = self.file.metadata()?.len();
        for page in start / PAGE_BYTES..end.div_ceil(PAGE_BYTES) {
            if self.pages.contains_key(&page) {
                continue;
            }
            let at = page * PAGE_BYTES;
            let len = size.saturating_sub(at).min(PAGE_BYTES) as usize;
            let mut old = vec![0u8; len];
            self.file.read_exact_at(&mut old, at)?;
            self.pages.insert(page, old);
        }
        Ok(())
    }

    /// Takes the changes back as `mode` says, `rng` choosing what survives.
    fn revert(&self, mode: CutMode, rng: &mut fastrand::Rng) -> io::Result<CutReport> {
        let mut report = CutReport {
            files: 1,
            ..CutReport::default()
        };
        let last_size = self.file.metadata()?.len();
        let size = match mode {
            CutMode::LoseAll => self.synced_size,
            CutMode::Torn if rng.bool() => self.synced_size,
            CutMode::Torn => last_size,
        };
        for (page, old) in &self.pages {
            if mode == CutMode::Torn && rng.bool() {
                report.pages_kept += 1;
                continue;
            }
            // Beyond the synced end a page was never written: zeros.
            let mut bytes = old.clone();
            bytes.resize(PAGE_BYTES as usize, 0);
            self.file.write_all_at(&bytes, page * PAGE_BYTES)?;
            report.pages_lost += 1;
        }
        // Last: trims what the padded pages wrote beyond `size`.
        self.file.set_len(size)?;
        if size != last_size {
            report.sizes_reverted += 1;
        }
        assert_eq!(self.file.metadata()?.len(), size, "the size after the cut");
        Ok(report)
    }
}

/// One directory change not yet durable, with what takes it back. Paths
/// are relative to the backing root and name the state right after the
/// change, which undoing newer changes first restores.
#[derive(Debug)]
pub enum NameOp {
    /// A file or directory created at `path` in directory `dir`.
    Created { dir: u64, path: PathBuf },
    /// `path` in `dir` removed; its file or (empty) directory is at `grave`.
    Removed {
        dir: u64,
        path: PathBuf,
        grave: PathBuf,
    },
    /// `from` renamed to `to` (in directory `dir`), replacing what is now
    /// at `replaced` (in the graveyard), if anything was there.
    Renamed {
        dir: u64,
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

impl NameOp {
    /// The directory whose fsync makes this change durable.
    pub fn dir(&self) -> u64 {
        match self {
            NameOp::Created { dir, .. } | NameOp::Removed { dir, .. } => *dir,
            NameOp::Renamed { dir, .. } => *dir,
        }
    }

    /// One line saying what the change was.
    fn describe(&self) -> String {
        match self {
            NameOp::Created { path, .. } => format!("created {}", path.display()),
            NameOp::Removed { path, .. } => format!("removed {}", path.display()),
            NameOp::Renamed { from, to, .. } => {
                format!("renamed {} to {}", from.display(), to.display())
            }
        }
    }

    /// Takes the change back in the backing tree at `root`. A name that a
    /// durable change moved away since is left alone (`Ok(false)`).
    fn undo(&self, root: &Path) -> io::Result<bool> {
        match self {
            NameOp::Created { path, .. } => remove_any(&root.join(path)),
            NameOp::Removed { path, grave, .. } => put_back(grave, &root.join(path)),
            NameOp::Renamed {
                from, to, replaced, ..
            } => {
                let moved = put_back(&root.join(to), &root.join(from))?;
                if let Some(grave) = replaced {
                    put_back(grave, &root.join(to))?;
                }
                Ok(moved)
            }
        }
    }
}

/// Removes a file or a directory tree; `Ok(false)` if nothing is there.
fn remove_any(path: &Path) -> io::Result<bool> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves `from` back to `to`, replacing whatever a newer durable change
/// put there; `Ok(false)` if `from` is gone.
fn put_back(from: &Path, to: &Path) -> io::Result<bool> {
    if std::fs::symlink_metadata(from).is_err() {
        return Ok(false);
    }
    remove_any(to)?;
    std::fs::rename(from, to)?;
    Ok(true)
}

/// Everything not yet durable on one mounted file system.
#[derive(Default)]
pub struct Undo {
    /// Inode → its unsynced data changes.
    pub files: BTreeMap<u64, FileUndo>,
    /// Unsynced directory changes, oldest first.
    pub names: Vec<NameOp>,
}

impl Undo {
    /// The file `ino`'s record, started from `file` (a read-write handle)
    /// if it has none.
    pub fn file(&mut self, ino: u64, file: &File) -> io::Result<&mut FileUndo> {
        match self.files.entry(ino) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                Ok(e.insert(FileUndo::new(file.try_clone()?)?))
            }
        }
    }

    /// `fsync` or `fdatasync` of file `ino`: its data and size are durable.
    pub fn sync_file(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// `fsync` of directory `dir`: its entries are durable.
    pub fn sync_dir(&mut self, dir: u64) {
        self.names.retain(|op| op.dir() != dir);
    }

    /// The power cut: takes back what was not durable in the tree at
    /// `root`, as `mode` says, the choices drawn from `rng`.
    pub fn cut(
        &mut self,
        root: &Path,
        mode: CutMode,
        rng: &mut fastrand::Rng,
    ) -> io::Result<CutReport> {
        let mut report = CutReport::default();
        for op in std::mem::take(&mut self.names).iter().rev() {
            if op.undo(root)? {
                report.names_reverted += 1;
                report.names.push(op.describe());
            }
        }
        for file in std::mem::take(&mut self.files).values() {
            report.add(&file.revert(mode, rng)?);
        }
        Ok(report)
    }
}
