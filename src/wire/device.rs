//! Frames a device sends, encoded into the caller's buffers (no allocation).
//!
//! The firmware client (`firmware-examples/eddy-device`) and the fleet
//! simulator (`eddy bench devices`) both encode through these functions, so
//! what the simulator measures is byte for byte what a device sends:
//! `Hello`, `InitProducer`, and a `Produce` of one reading stamped with the
//! device's producer id, epoch and sequence.
//!
//! Pure and `no_std`; it neither reads nor writes sockets.

use super::batch::{BatchBuilder, BatchError, Headers, ProducerStamp, BATCH_HEADER_BYTES};
use super::{
    encode_request_into, Acks, FrameError, Hello, InitProducer, Produce, Request, RequestFrame,
    PROTOCOL_VERSION,
};

/// Why a device frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The reading does not fit into the batch buffer.
    Batch(BatchError),
    /// The frame does not fit into the frame buffer.
    Frame(FrameError),
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::Batch(e) => write!(f, "reading does not fit: {e}"),
            EncodeError::Frame(e) => write!(f, "frame does not fit: {e}"),
        }
    }
}

/// One reading: the record a device produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading<'a> {
    /// Usually the device id, so one device's readings stay in order in one
    /// partition (Kafka's murmur2 of the key).
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Milliseconds since the epoch, or [`super::batch::NO_TIMESTAMP`] for a
    /// device without a clock (eddy stamps the arrival time).
    pub timestamp_ms: i64,
}

/// Where a reading goes and how it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceTarget<'a> {
    pub topic: &'a str,
    /// `None`: eddy picks the partition from the key.
    pub partition: Option<u32>,
    pub acks: Acks,
    pub timeout_ms: u32,
}

/// Encodes the `Hello` frame into `frame_buf`; returns its length.
pub fn encode_hello(
    frame_buf: &mut [u8],
    correlation_id: u32,
    client_id: &str,
) -> Result<usize, EncodeError> {
    encode_request_into(
        &RequestFrame {
            correlation_id,
            request: Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_id,
            }),
        },
        frame_buf,
    )
    .map_err(EncodeError::Frame)
}

/// Encodes the `InitProducer` frame into `frame_buf`; returns its length.
pub fn encode_init_producer(
    frame_buf: &mut [u8],
    correlation_id: u32,
    name: &str,
) -> Result<usize, EncodeError> {
    encode_request_into(
        &RequestFrame {
            correlation_id,
            request: Request::InitProducer(InitProducer { name }),
        },
        frame_buf,
    )
    .map_err(EncodeError::Frame)
}

/// Encodes a `Produce` of one reading, stamped with `stamp` (its base
/// sequence is the reading's sequence), into `frame_buf`, using `batch_buf`
/// to build the batch. Returns the frame's length.
pub fn encode_reading(
    frame_buf: &mut [u8],
    batch_buf: &mut [u8],
    correlation_id: u32,
    target: &ProduceTarget<'_>,
    stamp: ProducerStamp,
    reading: &Reading<'_>,
) -> Result<usize, EncodeError> {
    let mut builder =
        BatchBuilder::new(&mut *batch_buf, reading.timestamp_ms).map_err(EncodeError::Batch)?;
    builder.set_producer(stamp);
    builder
        .push(
            reading.timestamp_ms,
            reading.key,
            reading.value,
            Headers::EMPTY,
        )
        .map_err(EncodeError::Batch)?;
    let (batch_buf, batch_len) = builder.finish();
    encode_request_into(
        &RequestFrame {
            correlation_id,
            request: Request::Produce(Produce {
                topic: target.topic,
                partition: target.partition,
                acks: target.acks,
                timeout_ms: target.timeout_ms,
                batch: &batch_buf[..batch_len],
            }),
        },
        frame_buf,
    )
    .map_err(EncodeError::Frame)
}

/// Bytes a batch buffer needs for one reading of this size (upper bound).
pub const fn batch_bytes_for(key_bytes: usize, value_bytes: usize) -> usize {
    BATCH_HEADER_BYTES + super::batch::RECORD_OVERHEAD_BYTES_MAX + key_bytes + value_bytes
}

/// Bytes a frame buffer needs for one reading (upper bound): the batch,
/// the topic and the produce fields.
pub const fn frame_bytes_for(topic_bytes: usize, key_bytes: usize, value_bytes: usize) -> usize {
    // prefix 4, correlation id ≤ 5, variant 1, topic length ≤ 5 + topic,
    // partition ≤ 6, acks 1, timeout ≤ 5, batch length ≤ 5 + batch.
    4 + 5 + 1 + 5 + topic_bytes + 6 + 1 + 5 + 5 + batch_bytes_for(key_bytes, value_bytes)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::wire::batch::{Batch, NO_TIMESTAMP};
    use crate::wire::decode_request;

    #[test]
    fn a_reading_round_trips_with_its_stamp() {
        let target = ProduceTarget {
            topic: "telemetry",
            partition: None,
            acks: Acks::Durable,
            timeout_ms: 5_000,
        };
        let reading = Reading {
            key: Some(b"truck-17"),
            value: b"{\"t\":21.5}",
            timestamp_ms: NO_TIMESTAMP,
        };
        let mut frame = [0u8; frame_bytes_for(9, 8, 10)];
        let mut batch = [0u8; batch_bytes_for(8, 10)];
        let stamp = ProducerStamp {
            producer_id: 4,
            producer_epoch: 2,
            base_sequence: 99,
        };
        let len = encode_reading(&mut frame, &mut batch, 7, &target, stamp, &reading).unwrap();
        let decoded = decode_request(&frame[4..len]).unwrap();
        assert_eq!(decoded.correlation_id, 7);
        let Request::Produce(p) = decoded.request else {
            panic!("not a produce")
        };
        assert_eq!(p.topic, "telemetry");
        let b = Batch::parse(p.batch).unwrap();
        b.validate_produced().unwrap();
        assert_eq!(b.header.producer_id, 4);
        assert_eq!(b.header.producer_epoch, 2);
        assert_eq!(b.header.base_sequence, 99);
        let r = b.records().next().unwrap().unwrap();
        assert_eq!(r.key, Some(&b"truck-17"[..]));
        assert_eq!(r.value, reading.value);
        // One byte less than the bound may or may not fit; far less must
        // fail cleanly.
        let mut small = [0u8; 40];
        assert!(matches!(
            encode_reading(&mut small, &mut batch, 7, &target, stamp, &reading),
            Err(EncodeError::Frame(FrameError::BufferFull))
        ));
    }
}
