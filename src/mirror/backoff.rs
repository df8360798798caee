//! Capped exponential backoff with jitter between a link's sessions.
//!
//! The n-th consecutive failure waits a random time in `[d/2, d]` where
//! `d = min(max, min · 2ⁿ)` ("equal jitter"): a fleet of gateways whose
//! uplinks come back at the same moment does not reconnect in lockstep,
//! and no wait is ever shorter than half the nominal one. A session that
//! forwarded something resets the sequence.
//!
//! Pure: no clock, no I/O; the caller sleeps.

use std::time::Duration;

/// The backoff of one link.
#[derive(Debug)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Waits between `min_ms` and `max_ms` (both ≥ 1, `min_ms <= max_ms`).
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min_ms: min_ms.max(1),
            max_ms: max_ms.max(min_ms.max(1)),
            failures: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self
            .min_ms
            .saturating_mul(1u64 << self.failures.min(40))
            .min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        let low = nominal / 2;
        Duration::from_millis(self.rng.u64(low..=nominal))
    }

    /// After a session that made progress: start again from `min_ms`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(100, 1_000);
        let mut nominal = 100u64;
        for _ in 0..10 {
            let d = u64::try_from(b.next_delay().as_millis()).unwrap();
            assert!(
                (nominal / 2..=nominal).contains(&d),
                "{d} ms outside [{}, {nominal}]",
                nominal / 2
            );
            nominal = (nominal * 2).min(1_000);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(1_000, 1_000);
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 10, "only {} distinct waits", seen.len());
    }
}
