//! Progress of a running benchmark on stderr: a live line redrawn every
//! [`PROGRESS_TTY_INTERVAL_MS`] on a terminal, one line every
//! [`PROGRESS_LOG_INTERVAL_MS`] otherwise (logs, CI), nothing with
//! `--quiet`. The results stay on stdout; this never writes there.
//!
//! The benchmark counts with [`Progress::add`] (one atomic add); a thread
//! of its own prints, so the benchmark's executor is not disturbed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redraw interval of the live line on a terminal, in ms.
pub const PROGRESS_TTY_INTERVAL_MS: u64 = 1_000;
/// Interval between progress lines when stderr is not a terminal, in ms.
pub const PROGRESS_LOG_INTERVAL_MS: u64 = 10_000;

/// A running benchmark's counter and its printer thread.
pub struct Progress {
    done: Arc<AtomicU64>,
    /// Dropping it stops the printer.
    stop: Option<mpsc::Sender<()>>,
    printer: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts printing `what` (e.g. "bench produce") with counts of `unit`
    /// out of `total` if known; prints nothing when `quiet`.
    pub fn start(what: &str, unit: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        if quiet {
            return Progress {
                done,
                stop: None,
                printer: None,
            };
        }
        let live = std::io::stderr().is_terminal();
        let interval = Duration::from_millis(if live {
            PROGRESS_TTY_INTERVAL_MS
        } else {
            PROGRESS_LOG_INTERVAL_MS
        });
        let (tx, rx) = mpsc::channel::<()>();
        let (counter, what) = (done.clone(), what.to_string());
        let printer = std::thread::Builder::new()
            .name("eddy-progress".into())
            .spawn(move || {
                let started = Instant::now();
                let mut last = (started, 0u64);
                // Wakes every interval; ends when the sender is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    let now = (Instant::now(), counter.load(Ordering::Relaxed));
                    let line = line(&what, unit, total, started, last, now);
                    last = now;
                    let mut err = std::io::stderr().lock();
                    let _ = if live {
                        write!(err, "\r{line}\x1b[K")
                    } else {
                        writeln!(err, "{line}")
                    };
                }
                if live {
                    let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
                }
            })
            .ok();
        Progress {
            done,
            stop: Some(tx),
            printer,
        }
    }

    /// Counts `n` more units done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// A handle to count from other threads or tasks.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(printer) = self.printer.take() {
            let _ = printer.join();
        }
    }
}

/// "bench produce: 120000 records of 1000000 (12 %), 24000 records/s now, 5 s".
fn line(
    what: &str,
    unit: &str,
    total: Option<u64>,
    started: Instant,
    (then, before): (Instant, u64),
    (now, done): (Instant, u64),
) -> String {
    let window_s = now.duration_since(then).as_secs_f64().max(1e-3);
    let rate = done.saturating_sub(before) as f64 / window_s;
    let of = match total {
        Some(total) if total > 0 => format!(" of {total} ({} %)", done * 100 / total),
        _ => String::new(),
    };
    format!(
        "{what}: {done} {unit}{of}, {rate:.0} {unit}/s now, {} s",
        now.duration_since(started).as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_count_the_share_and_the_rate() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let l = line(
            "bench produce",
            "records",
            Some(1000),
            t0,
            (t0, 0),
            (t1, 500),
        );
        assert_eq!(
            l,
            "bench produce: 500 records of 1000 (50 %), 250 records/s now, 2 s"
        );
        let l = line("bench devices", "readings", None, t0, (t0, 0), (t1, 10));
        assert_eq!(l, "bench devices: 10 readings, 5 readings/s now, 2 s");
    }
}
