//! Hot reload of the files a running server reads: today the TLS
//! certificate and key (`tls::CertStore`); the ACL file (issue 7) plugs in
//! the same way.
//!
//! A [`Reloadable`] names its files and knows how to load them and swap the
//! new version in; when loading fails it must keep the version in use. The
//! [`Reloader`] reloads each of them
//! - on demand: [`Reloader::trigger`] (the CLI calls it on SIGHUP), and
//! - when their files change: every `check_ms` it `stat`s each file (device,
//!   inode, size, mtime, following symlinks) and reloads an item whose
//!   files differ from the last load and have not changed since the
//!   previous check, so a pair of files being rewritten is loaded once both
//!   are in place rather than half-way.
//!
//! A failed load is logged once and counted; it is retried when the files
//! change again or on the next trigger, not at every check.
//!
//! Why polling and not inotify: two `stat` calls every few seconds cost
//! nothing, need no extra crate, and see every way files get replaced
//! (in-place writes, rename over, symlink swaps as certificate tools and
//! Kubernetes secrets do, bind mounts) where an inotify watch has to follow
//! the directory and the link targets.
//!
//! This module does not parse any file itself and never restarts anything.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::Event;

use crate::shutdown::Shutdown;

/// Something that can be reloaded from files while the server runs.
pub trait Reloadable: Send + Sync {
    /// Short name for logs and metrics (`tls`, `acl`).
    fn name(&self) -> &'static str;
    /// The files it is loaded from.
    fn files(&self) -> Vec<PathBuf>;
    /// Loads the files and swaps the result in. On error nothing changes
    /// and the error says what is wrong with which file. On success,
    /// returns a short description of what is now in use.
    fn reload(&self) -> Result<String, String>;
}

/// Reload counters of one item (for metrics and tests).
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Successful reloads.
    pub ok: AtomicU64,
    /// Failed reloads (the previous version stayed in use).
    pub failed: AtomicU64,
    /// When the version in use was loaded, in ms since the Unix epoch
    /// (at start, then at every successful reload).
    pub loaded_unix_ms: AtomicU64,
}

/// What `stat` says about a file; `None` when it cannot be read.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

struct Entry {
    item: Arc<dyn Reloadable>,
    stats: ReloadStats,
    /// Stamps of the files at the last load attempt.
    loaded: Mutex<Vec<Stamp>>,
    /// Stamps seen at the previous check.
    seen: Mutex<Vec<Stamp>>,
}

/// Reloads its items on trigger and on file change.
pub struct Reloader {
    entries: Vec<Entry>,
    requested: AtomicBool,
    wake: Event,
}

impl Reloader {
    /// Watches `items`, taking their files as they are now as loaded.
    pub fn new(items: Vec<Arc<dyn Reloadable>>) -> Reloader {
        let now = crate::time::now_ms();
        let entries = items
            .into_iter()
            .map(|item| {
                let stamps: Vec<Stamp> = item.files().iter().map(|f| stamp(f)).collect();
                let stats = ReloadStats::default();
                stats.loaded_unix_ms.store(now, Ordering::Relaxed);
                Entry {
                    item,
                    stats,
                    loaded: Mutex::new(stamps.clone()),
                    seen: Mutex::new(stamps),
                }
            })
            .collect();
        Reloader {
            entries,
            requested: AtomicBool::new(false),
            wake: Event::new(),
        }
    }

    /// Asks for a reload of everything (SIGHUP). Returns at once; the
    /// reload runs on the reloader's task.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::Release);
        self.wake.notify(usize::MAX);
    }

    /// Counters per item name.
    pub fn stats(&self) -> impl Iterator<Item = (&'static str, &ReloadStats)> {
        self.entries.iter().map(|e| (e.item.name(), &e.stats))
    }

    /// Reloads every item now, on the calling thread. Returns how many
    /// failed.
    pub fn reload_all(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !self.reload_entry(e, "requested"))
            .count()
    }

    /// One check for changed files; reloads the items whose files changed
    /// and have since stayed the same.
    pub fn check(&self) {
        for entry in &self.entries {
            let now: Vec<Stamp> = entry.item.files().iter().map(|f| stamp(f)).collect();
            let settled = {
                let mut seen = entry.seen.lock().expect("seen lock");
                let settled = *seen == now;
                *seen = now.clone();
                settled
            };
            let changed = *entry.loaded.lock().expect("loaded lock") != now;
            if changed && settled {
                self.reload_entry(entry, "files changed");
            }
        }
    }

    /// Reloads one item; logs and counts the outcome. `true` on success.
    fn reload_entry(&self, entry: &Entry, why: &str) -> bool {
        let name = entry.item.name();
        let stamps: Vec<Stamp> = entry.item.files().iter().map(|f| stamp(f)).collect();
        let result = entry.item.reload();
        *entry.loaded.lock().expect("loaded lock") = stamps.clone();
        *entry.seen.lock().expect("seen lock") = stamps;
        match result {
            Ok(what) => {
                entry.stats.ok.fetch_add(1, Ordering::Relaxed);
                entry
                    .stats
                    .loaded_unix_ms
                    .store(crate::time::now_ms(), Ordering::Relaxed);
                log::info!("{name} reloaded ({why}): {what}");
                true
            }
            Err(e) => {
                entry.stats.failed.fetch_add(1, Ordering::Relaxed);
                log::error!("{name} reload ({why}) refused, still using the previous version: {e}");
                false
            }
        }
    }

    /// Serves triggers and, when `check_ms` > 0, checks the files every
    /// `check_ms`, until shutdown. File I/O runs on the blocking pool.
    pub async fn run(self: Arc<Self>, check_ms: u64, shutdown: Arc<Shutdown>) {
        if self.entries.is_empty() {
            return;
        }
        let interval = Duration::from_millis(check_ms);
        loop {
            let listener = self.wake.listen();
            if shutdown.is_triggered() {
                return;
            }
            if self.requested.swap(false, Ordering::AcqRel) {
                let this = self.clone();
                smol::unblock(move || this.reload_all()).await;
                continue;
            }
            let woke = smol::future::or(
                async {
                    listener.await;
                    true
                },
                async {
                    smol::future::or(
                        async {
                            if check_ms == 0 {
                                std::future::pending::<()>().await;
                            }
                            smol::Timer::after(interval).await;
                        },
                        shutdown.wait(),
                    )
                    .await;
                    false
                },
            )
            .await;
            if !woke && !shutdown.is_triggered() {
                let this = self.clone();
                smol::unblock(move || this.check()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Loads a number from a file; refuses anything else.
    struct Number {
        path: PathBuf,
        value: Mutex<u64>,
    }

    impl Reloadable for Number {
        fn name(&self) -> &'static str {
            "number"
        }
        fn files(&self) -> Vec<PathBuf> {
            vec![self.path.clone()]
        }
        fn reload(&self) -> Result<String, String> {
            let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
            let n: u64 = text
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is no number"))?;
            *self.value.lock().unwrap() = n;
            Ok(format!("value {n}"))
        }
    }

    fn write(path: &Path, text: &str) {
        // A new inode each time, as an editor or `mv` does; the mtime alone
        // may not change within the file system's timestamp resolution.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_change_is_loaded_once_settled_and_a_bad_file_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        write(&path, "1");
        let number = Arc::new(Number {
            path: path.clone(),
            value: Mutex::new(1),
        });
        let reloader = Reloader::new(vec![number.clone()]);
        let stats = |r: &Reloader| {
            let (_, s) = r.stats().next().unwrap();
            (
                s.ok.load(Ordering::Relaxed),
                s.failed.load(Ordering::Relaxed),
            )
        };

        reloader.check();
        assert_eq!(stats(&reloader), (0, 0), "nothing changed");

        write(&path, "2");
        reloader.check();
        assert_eq!(*number.value.lock().unwrap(), 1, "not settled yet");
        reloader.check();
        assert_eq!(*number.value.lock().unwrap(), 2);
        assert_eq!(stats(&reloader), (1, 0));

        write(&path, "garbage");
        reloader.check();
        reloader.check();
        assert_eq!(*number.value.lock().unwrap(), 2, "the old value stays");
        assert_eq!(stats(&reloader), (1, 1));
        reloader.check();
        assert_eq!(stats(&reloader), (1, 1), "a bad file is tried once");

        assert_eq!(reloader.reload_all(), 1, "a trigger retries");
        assert_eq!(stats(&reloader), (1, 2));

        write(&path, "3");
        reloader.check();
        reloader.check();
        assert_eq!(*number.value.lock().unwrap(), 3);
        assert_eq!(stats(&reloader), (2, 2));

        std::fs::remove_file(&path).unwrap();
        reloader.check();
        reloader.check();
        assert_eq!(
            *number.value.lock().unwrap(),
            3,
            "a missing file is refused"
        );
        assert_eq!(stats(&reloader), (2, 3));
    }

    #[test]
    fn trigger_reloads_on_the_running_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        write(&path, "5");
        let number = Arc::new(Number {
            path: path.clone(),
            value: Mutex::new(0),
        });
        let reloader = Arc::new(Reloader::new(vec![number.clone()]));
        let shutdown = Arc::new(Shutdown::new());
        let task = {
            let (r, s) = (reloader.clone(), shutdown.clone());
            std::thread::spawn(move || smol::block_on(r.run(0, s)))
        };
        reloader.trigger();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *number.value.lock().unwrap() != 5 {
            assert!(std::time::Instant::now() < deadline, "trigger not served");
            std::thread::sleep(Duration::from_millis(1));
        }
        shutdown.trigger();
        task.join().unwrap();
    }
}
