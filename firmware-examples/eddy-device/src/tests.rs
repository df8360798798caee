//! Unit tests of the outbox and session logic against a small in-memory
//! hub that speaks the real wire format (decoded with eddy's own types).
//! The client against the real server, over TLS and across `kill -9`, is
//! tested in the repository's `tests/device_client.rs`.

extern crate std;

use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

use super::*;
use eddy::wire::batch::{Batch, NO_TIMESTAMP};
use eddy::wire::{
    decode_request, encode_response_into, ErrorReply, HelloOk, PartitionAck, Produced, Request,
    ResponseFrame,
};

/// The transport failed (the "radio" dropped).
#[derive(Debug, PartialEq, Eq)]
struct Broken;

impl embedded_io::Error for Broken {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::ConnectionReset
    }
}

/// A hub that stores readings with the same dedupe rules as eddy: one
/// producer, a next sequence, answers to resends.
#[derive(Default)]
struct Hub {
    stored: Vec<(i32, String)>,
    next_sequence: Option<i32>,
    epoch: i16,
    /// Refuse produces to this topic with `UnknownTopic`.
    refuse_topic: Option<String>,
}

/// One connection to the hub; breaks after `frames_left` frames written.
struct Link<'h> {
    hub: &'h mut Hub,
    inbound: Vec<u8>,
    outbound: VecDeque<u8>,
    frames_left: usize,
}

impl<'h> Link<'h> {
    fn new(hub: &'h mut Hub, frames_left: usize) -> Self {
        Link {
            hub,
            inbound: Vec::new(),
            outbound: VecDeque::new(),
            frames_left,
        }
    }

    fn answer(&mut self, correlation_id: u32, response: Response<'_>) {
        let mut buf = [0u8; 512];
        let len = encode_response_into(
            &ResponseFrame {
                correlation_id,
                response,
            },
            &mut buf,
        )
        .unwrap();
        self.outbound.extend(&buf[..len]);
    }

    fn handle(&mut self, body: &[u8]) {
        let frame = decode_request(body).unwrap();
        let id = frame.correlation_id;
        match frame.request {
            Request::Hello(_) => self.answer(
                id,
                Response::Hello(HelloOk {
                    protocol_version: 1,
                    server_version: "test",
                    hub_id: "hub",
                    frame_bytes_max: 1 << 20,
                    batch_bytes_max: 1 << 19,
                    inflight_max: 64,
                }),
            ),
            Request::InitProducer(_) => {
                self.hub.epoch += 1;
                let init = ProducerInit {
                    producer_id: 1,
                    producer_epoch: self.hub.epoch,
                    next_sequence: self.hub.next_sequence.unwrap_or(0),
                };
                self.answer(id, Response::ProducerInit(init));
            }
            Request::Produce(p) => {
                if self.hub.refuse_topic.as_deref() == Some(p.topic) {
                    return self.error(id, ErrorCode::UnknownTopic);
                }
                let b = Batch::parse(p.batch).unwrap();
                assert_eq!(b.header.producer_id, 1);
                if b.header.producer_epoch != self.hub.epoch {
                    return self.error(id, ErrorCode::ProducerFenced);
                }
                let seq = b.header.base_sequence;
                let value = b.records().next().unwrap().unwrap().value;
                let value = String::from_utf8(value.to_vec()).unwrap();
                match self.hub.next_sequence {
                    Some(next) if seq < next => {
                        // A resend: answered, not stored again.
                        assert!(self
                            .hub
                            .stored
                            .iter()
                            .any(|(s, v)| *s == seq && *v == value));
                    }
                    Some(next) if seq > next => {
                        return self.error(id, ErrorCode::OutOfOrderSequence)
                    }
                    _ => {
                        self.hub.stored.push((seq, value));
                        self.hub.next_sequence = Some(seq + 1);
                    }
                }
                self.answer(
                    id,
                    Response::Produced(Produced {
                        partitions: [PartitionAck {
                            partition: 0,
                            base_offset: 0,
                            record_count: 1,
                        }]
                        .into_iter()
                        .collect(),
                    }),
                );
            }
            _ => panic!("unexpected request"),
        }
    }

    fn error(&mut self, id: u32, code: ErrorCode) {
        self.answer(
            id,
            Response::Error(ErrorReply {
                code,
                message: "refused",
            }),
        );
    }
}

impl embedded_io::ErrorType for Link<'_> {
    type Error = Broken;
}

impl Write for Link<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Broken> {
        if self.frames_left == 0 {
            return Err(Broken);
        }
        self.inbound.extend_from_slice(buf);
        while self.inbound.len() >= 4 {
            let len = u32::from_be_bytes(self.inbound[..4].try_into().unwrap()) as usize;
            if self.inbound.len() < 4 + len {
                break;
            }
            let body: Vec<u8> = self.inbound.drain(..4 + len).skip(4).collect();
            self.frames_left -= 1;
            if self.frames_left == 0 {
                // The connection dies after the frame reached the hub:
                // the hub stores it but the answer is lost.
                self.handle(&body);
                self.outbound.clear();
                return Ok(buf.len());
            }
            self.handle(&body);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Broken> {
        Ok(())
    }
}

impl Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Broken> {
        if self.outbound.is_empty() {
            return Err(Broken);
        }
        let n = buf.len().min(self.outbound.len());
        for b in buf.iter_mut().take(n) {
            *b = self.outbound.pop_front().unwrap();
        }
        Ok(n)
    }
}

struct Bufs {
    frame: [u8; 256],
    batch: [u8; 128],
    response: [u8; 512],
}

impl Bufs {
    fn new() -> Self {
        Bufs {
            frame: [0; 256],
            batch: [0; 128],
            response: [0; 512],
        }
    }

    fn lend(&mut self) -> Buffers<'_> {
        Buffers {
            frame: &mut self.frame,
            batch: &mut self.batch,
            response: &mut self.response,
        }
    }
}

fn values(hub: &Hub) -> Vec<&str> {
    hub.stored.iter().map(|(_, v)| v.as_str()).collect()
}

#[test]
fn publishes_in_order_and_empties_the_outbox() {
    let mut hub = Hub::default();
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 8, 16> = Device::new(Config::new("dev-1", "t"), bufs.lend());
    for i in 0..7 {
        device
            .publish(std::format!("r{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    let mut link = Link::new(&mut hub, usize::MAX);
    device.connect(&mut link).unwrap();
    assert_eq!(device.flush(&mut link).unwrap(), 7);
    assert_eq!(device.pending(), 0);
    drop(link);
    assert_eq!(values(&hub), ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
    assert_eq!(device.stats().acked, 7);
}

#[test]
fn outbox_is_bounded_and_values_too() {
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 2, 4> = Device::new(Config::new("d", "t"), bufs.lend());
    assert_eq!(device.publish(b"12345", 0), Err(PublishError::TooLarge));
    device.publish(b"a", 0).unwrap();
    device.publish(b"b", 0).unwrap();
    assert_eq!(device.publish(b"c", 0), Err(PublishError::OutboxFull));
    assert!(device.drop_oldest());
    device.publish(b"c", 0).unwrap();
    assert_eq!(device.pending(), 2);
}

#[test]
fn a_broken_link_is_resent_after_reconnect_without_duplicates() {
    let mut hub = Hub::default();
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 16, 16> = Device::new(Config::new("dev-2", "t"), bufs.lend());
    for i in 0..10 {
        device
            .publish(std::format!("r{i}").as_bytes(), NO_TIMESTAMP)
            .unwrap();
    }
    // The link breaks after Hello, InitProducer and three readings reached
    // the hub (their answers are lost).
    let mut link = Link::new(&mut hub, 5);
    device.connect(&mut link).unwrap();
    assert_eq!(device.flush(&mut link), Err(Error::Io(Broken)));
    assert!(!device.is_connected());
    assert_eq!(device.pending(), 10);
    drop(link);
    assert_eq!(values(&hub).len(), 3);

    let mut link = Link::new(&mut hub, usize::MAX);
    device.connect(&mut link).unwrap();
    assert_eq!(device.flush(&mut link).unwrap(), 10);
    drop(link);
    let expected: Vec<String> = (0..10).map(|i| std::format!("r{i}")).collect();
    assert_eq!(values(&hub), expected);
    assert!(device.stats().resent >= 3);
}

#[test]
fn a_rebooted_device_continues_the_hubs_sequence() {
    let mut hub = Hub::default();
    {
        let mut bufs = Bufs::new();
        let mut device: Device<'_, '_, 4, 16> = Device::new(Config::new("dev-3", "t"), bufs.lend());
        device.publish(b"before", NO_TIMESTAMP).unwrap();
        let mut link = Link::new(&mut hub, usize::MAX);
        device.connect(&mut link).unwrap();
        device.flush(&mut link).unwrap();
    }
    // Reboot: a new Device with sequence 0 in RAM.
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 4, 16> = Device::new(Config::new("dev-3", "t"), bufs.lend());
    device.publish(b"after", NO_TIMESTAMP).unwrap();
    let mut link = Link::new(&mut hub, usize::MAX);
    let init = device.connect(&mut link).unwrap();
    assert_eq!(init.next_sequence, 1);
    device.flush(&mut link).unwrap();
    drop(link);
    assert_eq!(hub.stored, [(0, "before".into()), (1, "after".into())]);
}

#[test]
fn a_refused_reading_is_dropped_and_the_sequence_stays_dense() {
    let mut hub = Hub {
        refuse_topic: Some("nope".into()),
        ..Hub::default()
    };
    let mut bufs = Bufs::new();
    let mut device: Device<'_, '_, 4, 16> = Device::new(Config::new("dev-4", "nope"), bufs.lend());
    device.publish(b"x", NO_TIMESTAMP).unwrap();
    let mut link = Link::new(&mut hub, usize::MAX);
    device.connect(&mut link).unwrap();
    assert_eq!(device.flush(&mut link).unwrap(), 0);
    assert_eq!(device.pending(), 0);
    assert_eq!(device.stats().rejected, 1);
    assert_eq!(device.stats().last_error, Some(ErrorCode::UnknownTopic));
    drop(link);
    // The next reading (to a topic the hub accepts) reuses the sequence.
    hub.refuse_topic = None;
    device.publish(b"y", NO_TIMESTAMP).unwrap();
    let mut link = Link::new(&mut hub, usize::MAX);
    device.connect(&mut link).unwrap();
    device.flush(&mut link).unwrap();
    drop(link);
    assert_eq!(hub.stored, [(0, "y".into())]);
}
