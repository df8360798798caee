//! The optional bandwidth cap of a link: a token bucket in bytes.
//!
//! The bucket holds at most one second of the rate (or one request, if
//! larger), so after an idle spell a link may send a short burst, and over
//! any longer span it sends at most `rate` bytes per second. Pure: the
//! caller passes the time and sleeps for the delay it gets.

use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug)]
pub struct Throttle {
    rate_bytes_per_s: u64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// At most `rate_bytes_per_s` (> 0); requests of up to
    /// `request_bytes_max` bytes.
    pub fn new(rate_bytes_per_s: u64, request_bytes_max: u64, now: Instant) -> Throttle {
        let capacity = rate_bytes_per_s.max(request_bytes_max) as f64;
        Throttle {
            rate_bytes_per_s,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `bytes` from the bucket; returns how long to wait before
    /// sending them (zero when the bucket had them).
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let rate = self.rate_bytes_per_s as f64;
        self.tokens = (self.tokens + elapsed * rate).min(self.capacity);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_stay_at_the_rate() {
        let start = Instant::now();
        let mut t = Throttle::new(100_000, 10_000, start);
        // Send 1 MB in 10 kB requests, sleeping as told (simulated clock).
        let mut now = start;
        for _ in 0..100 {
            now += t.take(10_000, now);
        }
        let secs = now.duration_since(start).as_secs_f64();
        // The first 100 kB ride on the full bucket: 900 kB at 100 kB/s.
        assert!((8.9..=9.1).contains(&secs), "{secs} s");
    }

    #[test]
    fn an_idle_bucket_allows_one_second_of_burst() {
        let start = Instant::now();
        let mut t = Throttle::new(50_000, 10_000, start);
        let later = start + Duration::from_secs(60);
        assert_eq!(t.take(50_000, later), Duration::ZERO);
        assert!(t.take(10_000, later) > Duration::ZERO);
    }
}
