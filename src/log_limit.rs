//! Rate bounds for log lines that outsiders can trigger (ACL denials,
//! failed TLS handshakes, refused connections): one line per event while
//! events are rare, and at most [`LOG_LINES_BURST_MAX`] lines at once plus
//! [`LOG_LINES_PER_S`] a second under a flood, so a hostile device cannot
//! fill the gateway's disk through the journal. The next line that gets
//! through says how many were left out.
//!
//! A token bucket behind a mutex: these are error paths, and the lock is
//! held for a few instructions. This module writes no log itself.

use std::sync::Mutex;
use std::time::Instant;

/// Lines that may be logged at once after a quiet period.
pub const LOG_LINES_BURST_MAX: u32 = 20;
/// Lines per second that may be logged under a sustained flood.
pub const LOG_LINES_PER_S: u32 = 1;

/// One kind of rate-bounded log line.
#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Lines that may be logged now, in thousandths (refilled continuously).
    tokens_milli: u64,
    refilled_at: Instant,
    /// Events not logged since the last logged line.
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new()
    }
}

impl LogLimiter {
    pub fn new() -> LogLimiter {
        LogLimiter {
            state: Mutex::new(Bucket {
                tokens_milli: u64::from(LOG_LINES_BURST_MAX) * 1000,
                refilled_at: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// Whether this event may be logged: `Some(n)` with the number of
    /// events left out since the last logged line, `None` to stay silent.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut b = self.state.lock().expect("log limiter lock");
        let elapsed_ms = u64::try_from(now.saturating_duration_since(b.refilled_at).as_millis())
            .unwrap_or(u64::MAX);
        let refill = elapsed_ms.saturating_mul(u64::from(LOG_LINES_PER_S));
        b.tokens_milli = b
            .tokens_milli
            .saturating_add(refill)
            .min(u64::from(LOG_LINES_BURST_MAX) * 1000);
        b.refilled_at = now;
        if b.tokens_milli >= 1000 {
            b.tokens_milli -= 1000;
            Some(std::mem::take(&mut b.suppressed))
        } else {
            b.suppressed += 1;
            None
        }
    }
}

/// " (N similar lines left out)" when N > 0, for the end of a logged line.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar lines left out: rate-bounded)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_logged_then_one_line_a_second_with_the_count_left_out() {
        let limiter = LogLimiter::new();
        let start = Instant::now();
        for _ in 0..LOG_LINES_BURST_MAX {
            assert_eq!(limiter.admit_at(start), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(limiter.admit_at(start), None);
        }
        let later = start + Duration::from_millis(1000 / u64::from(LOG_LINES_PER_S));
        assert_eq!(limiter.admit_at(later), Some(500));
        assert_eq!(limiter.admit_at(later), None);
        // A quiet hour refills the burst, never more.
        let quiet = later + Duration::from_secs(3600);
        for _ in 0..LOG_LINES_BURST_MAX {
            assert!(limiter.admit_at(quiet).is_some());
        }
        assert_eq!(limiter.admit_at(quiet), None);
    }

    #[test]
    fn the_note_is_empty_when_nothing_was_left_out() {
        assert_eq!(suppressed_note(0), "");
        assert!(suppressed_note(3).contains("3 similar lines"));
    }
}
