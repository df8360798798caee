//! Idempotent producers: the `InitProducer` exchange and sequence arithmetic.
//!
//! A device (or any producer that may resend) stamps each batch header with
//! a producer id, an epoch and the sequence number of its first record
//! (Kafka's idempotent producer). eddy keeps, per producer id, the last
//! sequence it appended and where the most recent batches landed, so a
//! resent batch is answered with its original offsets instead of being
//! appended twice.
//!
//! - A producer id belongs to a stable *name* (a device id, a mirror
//!   source): `InitProducer { name }` returns the same id for the same name
//!   across reconnects, device reboots and server restarts, the sequence to
//!   continue with, and a new epoch. The epoch fences older sessions of the
//!   same name: their batches are refused with `ProducerFenced`.
//! - Sequences count records, per producer id (across topics and
//!   partitions, so a device keeps one counter), and wrap from
//!   [`SEQUENCE_MAX`] to 0 as in Kafka.
//!
//! This module is pure and `no_std`: the firmware client uses the same
//! arithmetic as the server.

use serde::{Deserialize, Serialize};

/// Longest producer name, in bytes.
pub const PRODUCER_NAME_BYTES_MAX: usize = 255;

/// How many recent batches per producer eddy remembers the offsets of. A
/// resend of one of them is answered with its original offsets; an older
/// resend gets `DuplicateSequence` (appended long ago, offsets no longer
/// known). Kafka keeps 5 (its `max.in.flight.requests.per.connection`), and
/// so a producer should not have more batches unacknowledged than this.
pub const PRODUCER_WINDOW_BATCHES_MAX: usize = 5;

/// Largest sequence number; the one after it is 0.
pub const SEQUENCE_MAX: i32 = i32::MAX;

/// Sequence numbers are taken modulo this.
const SEQUENCE_MODULUS: i64 = SEQUENCE_MAX as i64 + 1;

/// Ask for the producer id of a stable name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducer<'a> {
    /// Stable across reboots: a device id, serial number or mirror source
    /// (1–[`PRODUCER_NAME_BYTES_MAX`] bytes).
    pub name: &'a str,
}

/// The producer id of a name, its current epoch and where to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerInit {
    pub producer_id: i64,
    /// Stamp every batch with this epoch; older epochs are fenced.
    pub producer_epoch: i16,
    /// The base sequence the next new batch must carry: one past the last
    /// record eddy appended for this producer (0 for a new one).
    pub next_sequence: i32,
}

/// The sequence after a batch of `record_count` records starting at `base`.
pub fn sequence_after(base: i32, record_count: u32) -> i32 {
    let next = (i64::from(base) + i64::from(record_count)).rem_euclid(SEQUENCE_MODULUS);
    // rem_euclid by 2^31 is always within 0..=i32::MAX.
    i32::try_from(next).unwrap_or(0)
}

/// How a batch's base sequence relates to the next expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceOrder {
    /// Exactly the next one: append.
    Next,
    /// Before the next one: a resend of something already appended.
    Behind,
    /// After the next one: batches in between are missing.
    Ahead,
}

/// Compares `base` with `expected`, modulo the sequence space: up to half
/// the space behind is a resend, anything else ahead is a gap.
pub fn sequence_order(expected: i32, base: i32) -> SequenceOrder {
    let behind = (i64::from(expected) - i64::from(base)).rem_euclid(SEQUENCE_MODULUS);
    if behind == 0 {
        SequenceOrder::Next
    } else if behind <= SEQUENCE_MODULUS / 2 {
        SequenceOrder::Behind
    } else {
        SequenceOrder::Ahead
    }
}

/// The epoch after `epoch`: epochs stay non-negative and wrap to 0.
pub fn epoch_after(epoch: i16) -> i16 {
    if (0..i16::MAX).contains(&epoch) {
        epoch + 1
    } else {
        0
    }
}

/// Whether `name` is a valid producer name.
pub fn is_valid_producer_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= PRODUCER_NAME_BYTES_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(sequence_after(0, 1), 1);
        assert_eq!(sequence_after(10, 5), 15);
        assert_eq!(sequence_after(SEQUENCE_MAX, 1), 0);
        assert_eq!(sequence_after(SEQUENCE_MAX - 1, 3), 1);
    }

    #[test]
    fn order_is_judged_modulo_the_sequence_space() {
        assert_eq!(sequence_order(5, 5), SequenceOrder::Next);
        assert_eq!(sequence_order(5, 4), SequenceOrder::Behind);
        assert_eq!(sequence_order(5, 0), SequenceOrder::Behind);
        assert_eq!(sequence_order(5, 6), SequenceOrder::Ahead);
        // Across the wrap: 0 comes right after SEQUENCE_MAX.
        assert_eq!(sequence_order(0, SEQUENCE_MAX), SequenceOrder::Behind);
        assert_eq!(sequence_order(SEQUENCE_MAX, 0), SequenceOrder::Ahead);
        assert_eq!(sequence_order(2, SEQUENCE_MAX - 3), SequenceOrder::Behind);
    }

    #[test]
    fn epochs_stay_non_negative() {
        assert_eq!(epoch_after(0), 1);
        assert_eq!(epoch_after(i16::MAX), 0);
        assert_eq!(epoch_after(-1), 0);
    }
}
