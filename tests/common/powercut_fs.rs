//! A power cut for tests: a FUSE pass-through file system over a backing
//! directory that, on [`Mounted::power_cut`], takes back every change that
//! was not made durable (model and undo log: [`super::powercut_undo`]).
//!
//! `kill -9` keeps the page cache, so it never loses a write that eddy
//! forgot to fsync; this does. What survives a cut:
//! - file data and size written before the file's last `fsync` or
//!   `fdatasync` (or written through an `O_SYNC`/`O_DSYNC` handle);
//! - a name created, removed or renamed before the last `fsync` of its
//!   directory (a rename: its destination directory).
//!
//! Everything else reverts: with [`CutMode::LoseAll`] to exactly the
//! synced state; with [`CutMode::Torn`] each unsynced 4 KiB page survives
//! or not and each size is the synced or the last one (seeded).
//!
//! The kernel must not absorb writes or syncs above the FS: every file is
//! opened with `FOPEN_DIRECT_IO` (no page cache, so every `write` is a
//! FUSE write and an `fsync`/`fdatasync` a FUSE fsync with its `datasync`
//! flag, counted in [`Stats`]), the writeback cache is not requested, and
//! entries and attributes are cached for 0 s. The cut unmounts first (so
//! nothing the kernel holds survives it) and a new [`Mounted`] serves the
//! next "boot". Writes go to the backing files at once; the FS itself never
//! fsyncs them (the backing directory plays the disk, and a real crash of
//! the test machine is not what is tested).
//!
//! Needs root and `/dev/fuse`. Not a general file system: no hard links,
//! symlinks, special files, xattrs, locks beyond the kernel's local ones,
//! or `fallocate` (`EOPNOTSUPP`, so callers fall back to writing).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::OFlags;

pub use super::powercut_undo::{CutMode, CutReport};
use super::powercut_undo::{NameOp, Undo};

/// How long the kernel may cache an entry or attributes: never.
const TTL: Duration = Duration::ZERO;

/// FUSE requests the kernel sent, counted.
#[derive(Debug, Default)]
pub struct Stats {
    pub writes: AtomicU64,
    pub bytes_written: AtomicU64,
    /// `fdatasync` (FUSE fsync with `datasync` set).
    pub fdatasyncs: AtomicU64,
    /// `fsync` of a file.
    pub fsyncs: AtomicU64,
    /// `fsync` of a directory.
    pub dir_fsyncs: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// A backing directory (the "disk"), a mount point and a graveyard for
/// removed files, all in one temporary directory.
pub struct Disk {
    dir: tempfile::TempDir,
}

impl Disk {
    pub fn new() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["disk", "mnt", "grave"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Disk { dir }
    }

    /// The backing directory: what is on the disk.
    pub fn backing(&self) -> PathBuf {
        self.dir.path().join("disk")
    }

    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Mounts the file system; panics (never skips) when that is refused.
    pub fn mount(&self) -> Mounted {
        let state = Arc::new(State {
            root: self.backing(),
            grave: self.dir.path().join("grave"),
            stats: Stats::default(),
            inner: Mutex::new(Inner::default()),
        });
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("eddy-powercut".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(PowerCutFs(state.clone()), self.mountpoint(), &config)
            .unwrap_or_else(|e| {
                panic!("mounting the power-cut FUSE file system failed (needs root and /dev/fuse): {e}")
            });
        Mounted {
            session: Some(session),
            mountpoint: self.mountpoint(),
            state,
        }
    }
}

/// The file system, mounted. Dropping it unmounts without a cut.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    state: Arc<State>,
}

impl Mounted {
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Files and directory changes that a cut would take back now.
    pub fn unsynced(&self) -> (usize, usize) {
        let inner = self.state.inner.lock().unwrap();
        (inner.undo.files.len(), inner.undo.names.len())
    }

    /// Unmounts (whoever wrote must be dead: `kill -9` first), then takes
    /// back everything not durable, as `mode` says, drawing from `rng`.
    pub fn power_cut(mut self, mode: CutMode, rng: &mut fastrand::Rng) -> CutReport {
        self.unmount()
            .expect("unmounting the power-cut file system (is a writer still alive?)");
        let mut inner = self.state.inner.lock().unwrap();
        inner.handles.clear();
        let report = inner.undo.cut(&self.state.root, mode, rng).unwrap();
        // What stays removed is gone for good now.
        for entry in std::fs::read_dir(&self.state.grave).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        report
    }

    /// Unmounts; if the kernel refuses (busy), detaches the mount lazily
    /// so that none is left behind, and says so.
    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            // The kernel aborts the connection when the unmount finds
            // requests still queued: the RELEASEs of a killed writer's open
            // files (eddy keeps one per segment), sent in the background
            // after it died. Every write it made was answered before, and
            // the cut clears the handles anyway.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(()),
            result => result.inspect_err(|_| {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// State shared by the FUSE thread and the test.
struct State {
    root: PathBuf,
    grave: PathBuf,
    stats: Stats,
    inner: Mutex<Inner>,
}

/// An open file.
struct Handle {
    ino: u64,
    file: File,
    /// `O_APPEND`: every write goes to the end.
    append: bool,
    /// `O_SYNC` or `O_DSYNC`: every write is durable when it returns.
    sync: bool,
}

#[derive(Default)]
struct Inner {
    /// Inode → path relative to the root (the root is "").
    paths: HashMap<u64, PathBuf>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    next_grave: u64,
    undo: Undo,
}

impl Inner {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        if ino == INodeNo::ROOT {
            return Ok(PathBuf::new());
        }
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn handle(&self, fh: FileHandle) -> Result<&Handle, Errno> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    /// The inode number a directory change is filed under.
    fn dir_ino(parent: INodeNo) -> u64 {
        parent.0
    }

    /// Renames `rel` (relative) into the graveyard; returns where it went.
    fn bury(&mut self, state: &State, rel: &Path) -> io::Result<PathBuf> {
        self.next_grave += 1;
        let grave = state.grave.join(self.next_grave.to_string());
        std::fs::rename(state.root.join(rel), &grave)?;
        Ok(grave)
    }

    /// After a rename: every known path under `from` is now under `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        for path in self.paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = to.join(rest);
            }
        }
    }
}

/// The FUSE side: a pass-through that records undo information.
struct PowerCutFs(Arc<State>);

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn attr_of(ino: INodeNo, m: &std::fs::Metadata) -> FileAttr {
    let time = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    let kind = if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino,
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.ctime(), m.ctime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

impl PowerCutFs {
    /// Looks `rel` up in the backing tree, files its inode, returns its
    /// attributes.
    fn entry(&self, inner: &mut Inner, rel: PathBuf) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(self.0.root.join(&rel)).map_err(errno)?;
        let ino = if rel.as_os_str().is_empty() {
            INodeNo::ROOT
        } else {
            INodeNo(m.ino())
        };
        inner.paths.insert(ino.0, rel);
        Ok(attr_of(ino, &m))
    }

    /// Opens the backing file of `ino` read-write (the undo log reads old
    /// bytes through the same handle) and files it.
    fn open_handle(&self, inner: &mut Inner, ino: u64, rel: &Path, flags: i32) -> io::Result<u64> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.0.root.join(rel))?;
        let flags = OFlags::from_bits_retain(flags as u32);
        inner.next_fh += 1;
        let handle = Handle {
            ino,
            file,
            append: flags.contains(OFlags::APPEND),
            sync: flags.intersects(OFlags::SYNC | OFlags::DSYNC),
        };
        inner.handles.insert(inner.next_fh, handle);
        Ok(inner.next_fh)
    }

    fn write_at(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let mut inner = self.0.inner.lock().unwrap();
        let handle = inner.handle(fh)?;
        let (ino, sync) = (handle.ino, handle.sync);
        let file = handle.file.try_clone().map_err(errno)?;
        let offset = if handle.append {
            file.metadata().map_err(errno)?.len()
        } else {
            offset
        };
        let end = offset + data.len() as u64;
        let undo = inner.undo.file(ino, &file).map_err(errno)?;
        undo.save_range(offset, end).map_err(errno)?;
        file.write_all_at(data, offset).map_err(errno)?;
        if sync {
            inner.undo.sync_file(ino);
        }
        let stats = &self.0.stats;
        stats.writes.fetch_add(1, Ordering::SeqCst);
        stats
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data.len() as u32)
    }

    fn set_size(&self, ino: INodeNo, fh: Option<FileHandle>, size: u64) -> Result<(), Errno> {
        let mut inner = self.0.inner.lock().unwrap();
        let file = match fh.and_then(|fh| inner.handles.get(&fh.0)) {
            Some(h) => h.file.try_clone().map_err(errno)?,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.0.root.join(inner.path(ino)?))
                .map_err(errno)?,
        };
        let current = file.metadata().map_err(errno)?.len();
        let undo = inner.undo.file(ino.0, &file).map_err(errno)?;
        undo.save_range(size, current).map_err(errno)?;
        file.set_len(size).map_err(errno)
    }

    /// Creates a file or directory `name` in `parent`, files the change.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        dir: bool,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let mut inner = self.0.inner.lock().unwrap();
        let rel = inner.path(parent)?.join(name);
        let path = self.0.root.join(&rel);
        if dir {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(errno)?;
        } else {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(errno)?;
        }
        inner.undo.names.push(NameOp::Created {
            dir: Inner::dir_ino(parent),
            path: rel.clone(),
        });
        let attr = self.entry(&mut inner, rel.clone())?;
        let fh = if dir {
            0
        } else {
            self.open_handle(&mut inner, attr.ino.0, &rel, flags)
                .map_err(errno)?
        };
        Ok((attr, fh))
    }

    /// Removes `name` from `parent` (into the graveyard), files the change.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut inner = self.0.inner.lock().unwrap();
        let rel = inner.path(parent)?.join(name);
        let m = std::fs::symlink_metadata(self.0.root.join(&rel)).map_err(errno)?;
        if dir != m.is_dir() {
            return Err(if dir { Errno::ENOTDIR } else { Errno::EISDIR });
        }
        if dir
            && std::fs::read_dir(self.0.root.join(&rel))
                .map_err(errno)?
                .next()
                .is_some()
        {
            return Err(Errno::ENOTEMPTY);
        }
        let grave = inner.bury(&self.0, &rel).map_err(errno)?;
        inner.paths.remove(&m.ino());
        inner.undo.names.push(NameOp::Removed {
            dir: Inner::dir_ino(parent),
            path: rel,
            grave,
        });
        Ok(())
    }

    fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let mut inner = self.0.inner.lock().unwrap();
        let from = inner.path(parent)?.join(name);
        let to = inner.path(newparent)?.join(newname);
        std::fs::symlink_metadata(self.0.root.join(&from)).map_err(errno)?;
        let replaced = match std::fs::symlink_metadata(self.0.root.join(&to)) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            Ok(m) => {
                inner.paths.remove(&m.ino());
                Some(inner.bury(&self.0, &to).map_err(errno)?)
            }
            Err(_) => None,
        };
        std::fs::rename(self.0.root.join(&from), self.0.root.join(&to)).map_err(errno)?;
        inner.moved(&from, &to);
        inner.undo.names.push(NameOp::Renamed {
            dir: Inner::dir_ino(newparent),
            from,
            to,
            replaced,
        });
        Ok(())
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inner = self.0.inner.lock().unwrap();
        let result = inner
            .path(parent)
            .and_then(|p| self.entry(&mut inner, p.join(name)));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = self.0.inner.lock().unwrap();
        let meta = match fh.and_then(|fh| inner.handles.get(&fh.0)) {
            Some(h) => h.file.metadata().map_err(errno),
            None => inner
                .path(ino)
                .and_then(|p| std::fs::symlink_metadata(self.0.root.join(p)).map_err(errno)),
        };
        match meta {
            Ok(m) => reply.attr(&TTL, &attr_of(ino, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            if let Some(size) = size {
                self.set_size(ino, fh, size)?;
            }
            let path = self.0.root.join(self.0.inner.lock().unwrap().path(ino)?);
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(errno)?;
            }
            std::fs::symlink_metadata(&path).map_err(errno)
        })();
        match result {
            Ok(m) => reply.attr(&TTL, &attr_of(ino, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(parent, name, mode, true, 0) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_entry(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut inner = self.0.inner.lock().unwrap();
        let result = inner.path(ino).and_then(|rel| {
            self.open_handle(&mut inner, ino.0, &rel, flags.0)
                .map_err(errno)
        });
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, mode, false, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let inner = self.0.inner.lock().unwrap();
        let result = inner.handle(fh).and_then(|h| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match h.file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match result {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_at(fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync: nothing becomes durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.inner.lock().unwrap().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let counter = if datasync {
            &self.0.stats.fdatasyncs
        } else {
            &self.0.stats.fsyncs
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.0.inner.lock().unwrap().undo.sync_file(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut inner = self.0.inner.lock().unwrap();
        let listed = inner.path(ino).and_then(|rel| {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(self.0.root.join(&rel)).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                entries.push((rel.join(entry.file_name()), entry.file_name()));
            }
            entries.sort();
            Ok(entries)
        });
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (i, (rel, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let Ok(attr) = self.entry(&mut inner, rel) else {
                continue; // removed meanwhile
            };
            if reply.add(attr.ino, i as u64 + 1, attr.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.0.stats.dir_fsyncs.fetch_add(1, Ordering::SeqCst);
        self.0.inner.lock().unwrap().undo.sync_dir(ino.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.0.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}
