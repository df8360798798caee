//! Which idempotent producer chain a Kafka upstream partition continues
//! when a session resumes (see [`super::kafka`] for why this makes the
//! mirror exactly once across sessions). Pure: the caller brings what the
//! upstream's tail, the cursor and storage say.
//!
//! A chain is a producer id and epoch and the sequence number of the next
//! record. The rules, in order:
//!
//! 1. A partition whose last session was told the producer is unknown
//!    (`UNKNOWN_PRODUCER_ID`) starts a fresh chain.
//! 2. The chain recorded with the cursor, when the cursor is exactly where
//!    sending resumes: it was written after the upstream's last record
//!    (each acknowledgement writes it; a fresh chain is written before its
//!    first use), so it is the newest.
//! 3. Records right after the upstream's end are no longer stored here
//!    (a topic that may drop unmirrored records): the sequence numbers the
//!    earlier session gave the records after the gap cannot be recomputed,
//!    so the partition starts a fresh chain.
//! 4. The chain of the batch holding the upstream's last record.
//! 5. A partition with nothing upstream continues the link's own producer
//!    from sequence 0 (the link's producer is durable before its first use,
//!    so a first request that lands late is a duplicate of the resend).
//! 6. A link without a producer yet starts a fresh chain (its producer id
//!    becomes the link's).

use crate::storage::{MirrorCursor, ProducerChain};
use crate::wire::producer::sequence_after;

/// What a resuming partition knows.
#[derive(Debug, Clone, Copy)]
pub struct ChainInputs {
    /// The source offset the session sends from (the upstream has
    /// everything below).
    pub send_from: u64,
    /// The partition's local log start (records below it are gone here).
    pub log_start: u64,
    /// The producer chain after the upstream's last record of this source,
    /// when that record was written by an idempotent producer.
    pub tail: Option<ProducerChain>,
    pub cursor: Option<MirrorCursor>,
    /// The link's producer id and epoch, if it has one.
    pub link_producer: Option<(i64, i16)>,
    /// The upstream said it does not know the producer last time.
    pub unknown_producer: bool,
}

/// The chain to continue, or `None`: a fresh chain (a new producer id from
/// the upstream, sequence 0), to be recorded before its first use.
pub fn choose(inputs: &ChainInputs) -> Option<ProducerChain> {
    if inputs.unknown_producer {
        return None;
    }
    let first = inputs.send_from.max(inputs.log_start);
    if let Some(MirrorCursor {
        offset,
        chain: Some(chain),
    }) = inputs.cursor
    {
        if offset == first {
            return Some(chain);
        }
    }
    if inputs.send_from < inputs.log_start {
        return None;
    }
    if let Some(tail) = inputs.tail {
        return Some(tail);
    }
    inputs
        .link_producer
        .map(|(producer_id, producer_epoch)| ProducerChain {
            producer_id,
            producer_epoch,
            next_sequence: 0,
        })
}

/// The chain after a record written with `sequence` by `producer_id` and
/// `producer_epoch`; `None` when that record has no producer (not written
/// idempotently).
pub fn after_record(producer_id: i64, producer_epoch: i16, sequence: i32) -> Option<ProducerChain> {
    (producer_id >= 0 && sequence >= 0).then(|| ProducerChain {
        producer_id,
        producer_epoch,
        next_sequence: sequence_after(sequence, 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAIL: ProducerChain = ProducerChain {
        producer_id: 5,
        producer_epoch: 0,
        next_sequence: 120,
    };

    fn inputs() -> ChainInputs {
        ChainInputs {
            send_from: 100,
            log_start: 0,
            tail: Some(TAIL),
            cursor: None,
            link_producer: Some((9, 2)),
            unknown_producer: false,
        }
    }

    #[test]
    fn the_tail_chain_continues() {
        assert_eq!(choose(&inputs()), Some(TAIL));
        // A cursor behind the upstream (acknowledgements lost) is ignored.
        let behind = ChainInputs {
            cursor: Some(MirrorCursor {
                offset: 90,
                chain: Some(ProducerChain {
                    next_sequence: 110,
                    ..TAIL
                }),
            }),
            ..inputs()
        };
        assert_eq!(choose(&behind), Some(TAIL));
    }

    #[test]
    fn the_cursor_chain_wins_where_sending_resumes() {
        let fresh = ProducerChain {
            producer_id: 77,
            producer_epoch: 0,
            next_sequence: 0,
        };
        let recorded = ChainInputs {
            cursor: Some(MirrorCursor {
                offset: 100,
                chain: Some(fresh),
            }),
            ..inputs()
        };
        assert_eq!(choose(&recorded), Some(fresh));
        // Also past records removed here (recorded after the gap).
        let past_gap = ChainInputs {
            log_start: 150,
            cursor: Some(MirrorCursor {
                offset: 150,
                chain: Some(fresh),
            }),
            ..inputs()
        };
        assert_eq!(choose(&past_gap), Some(fresh));
        // An empty upstream: where the cursor says.
        let empty = ChainInputs {
            tail: None,
            ..recorded
        };
        assert_eq!(choose(&empty), Some(fresh));
    }

    #[test]
    fn records_removed_after_the_upstreams_end_start_a_fresh_chain() {
        let gap = ChainInputs {
            log_start: 101,
            ..inputs()
        };
        assert_eq!(choose(&gap), None);
    }

    #[test]
    fn an_unknown_producer_starts_a_fresh_chain() {
        let unknown = ChainInputs {
            unknown_producer: true,
            ..inputs()
        };
        assert_eq!(choose(&unknown), None);
    }

    #[test]
    fn an_empty_partition_continues_the_links_producer() {
        let empty = ChainInputs {
            send_from: 0,
            tail: None,
            ..inputs()
        };
        assert_eq!(
            choose(&empty),
            Some(ProducerChain {
                producer_id: 9,
                producer_epoch: 2,
                next_sequence: 0
            })
        );
        let no_producer = ChainInputs {
            link_producer: None,
            ..empty
        };
        assert_eq!(choose(&no_producer), None);
    }

    #[test]
    fn the_chain_after_a_record() {
        assert_eq!(
            after_record(5, 1, i32::MAX),
            Some(ProducerChain {
                producer_id: 5,
                producer_epoch: 1,
                next_sequence: 0
            })
        );
        assert_eq!(after_record(-1, -1, -1), None);
    }
}
