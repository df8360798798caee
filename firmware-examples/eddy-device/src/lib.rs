//! A `no_std`, no-alloc device client for eddy.
//!
//! A device publishes readings into a small bounded **outbox**; [`Device::flush`]
//! sends them (one reading per `Produce`, up to [`Config::window`] in flight)
//! and removes each once eddy acknowledged it. When the connection breaks,
//! the device reconnects (any transport), calls [`Device::connect`] and the
//! next flush resends what was not acknowledged. Resends never duplicate:
//! every reading carries the device's producer id, epoch and sequence, and
//! eddy answers a resend of something it already stored with the original
//! offsets instead of appending it again (see `eddy::wire::producer`).
//!
//! - **Shared types**: the frames are encoded by `eddy::wire::device`, the
//!   exact code the server decodes with, compiled without `std`.
//! - **No allocation**: the caller lends three byte buffers ([`Buffers`]);
//!   the outbox is a `heapless::Deque` of `N` readings of at most `V` bytes.
//! - **Transport-agnostic**: any blocking [`embedded_io::Read`] +
//!   [`embedded_io::Write`] — an embedded TLS session, a TCP socket of an IP
//!   stack, a cellular modem's transparent mode over UART, or `std`'s TLS.
//!
//! What it deliberately does not do: open connections, sleep, keep time, or
//! persist the outbox across a reboot (a device that must not lose readings
//! across a power cut keeps its own copy in flash and publishes it again).
//!
//! ```text
//! let mut device: Device<'_, '_, 16, 64> = Device::new(config, buffers);
//! device.publish(b"21.5", NO_TIMESTAMP)?;
//! device.connect(&mut transport)?;   // Hello + InitProducer
//! device.flush(&mut transport)?;     // send, wait for acks, resend after reconnects
//! ```

#![no_std]
#![forbid(unsafe_code)]

pub use eddy::wire;

use eddy::wire::batch::ProducerStamp;
use eddy::wire::device::{
    encode_hello, encode_init_producer, encode_reading, EncodeError, ProduceTarget, Reading,
};
use eddy::wire::producer::{sequence_after, sequence_order, ProducerInit, SequenceOrder};
use eddy::wire::{
    decode_frame_len, decode_response, Acks, ErrorCode, FrameError, Response, FRAME_PREFIX_BYTES,
};
use embedded_io::{Read, ReadExactError, Write};
use heapless::Deque;

pub use eddy::wire::producer::PRODUCER_WINDOW_BATCHES_MAX as WINDOW_MAX;

/// Most send rounds one [`Device::flush`] makes before it returns (each
/// round sends up to `window` readings and reads their answers).
pub const FLUSH_ROUNDS_MAX: usize = 64;

/// What the device sends and how.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Stable identity: the `Hello` client id and the idempotent producer
    /// name. Must survive reboots (a serial number, a MAC address).
    pub device_id: &'a str,
    pub topic: &'a str,
    /// Key of every reading; usually the device id, so that its readings
    /// stay in order in one partition.
    pub key: Option<&'a [u8]>,
    /// `None`: eddy picks the partition from the key.
    pub partition: Option<u32>,
    pub acks: Acks,
    /// How long eddy may take to reach `acks`, in ms.
    pub timeout_ms: u32,
    /// Readings in flight at once (1..=[`WINDOW_MAX`]).
    pub window: usize,
}

impl<'a> Config<'a> {
    /// Durable acks, keyed by the device id, a window of [`WINDOW_MAX`].
    pub fn new(device_id: &'a str, topic: &'a str) -> Config<'a> {
        Config {
            device_id,
            topic,
            key: Some(device_id.as_bytes()),
            partition: None,
            acks: Acks::Durable,
            timeout_ms: 10_000,
            window: WINDOW_MAX,
        }
    }
}

/// Buffers lent by the caller: the outgoing frame, the batch inside it, and
/// the incoming response (its size bounds the largest answer accepted).
pub struct Buffers<'b> {
    pub frame: &'b mut [u8],
    pub batch: &'b mut [u8],
    pub response: &'b mut [u8],
}

/// Counters for the device's own telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Readings acknowledged by eddy.
    pub acked: u32,
    /// Sends of a reading that had been sent before (after a reconnect,
    /// fencing or a timeout).
    pub resent: u32,
    /// Resends eddy recognised as already stored.
    pub duplicates: u32,
    /// Readings eddy refused for good (dropped from the outbox).
    pub rejected: u32,
    /// Successful [`Device::connect`] calls.
    pub connects: u32,
    /// The last error code eddy answered with.
    pub last_error: Option<ErrorCode>,
}

/// Why [`Device::publish`] refused a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The outbox holds `N` unacknowledged readings: flush first (or drop
    /// the oldest with [`Device::drop_oldest`]).
    OutboxFull,
    /// The value is longer than `V` bytes.
    TooLarge,
}

/// Why talking to eddy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The transport failed: reconnect it and call [`Device::connect`].
    Io(E),
    /// The peer closed the connection.
    Closed,
    /// A frame did not fit a buffer, or an answer was not a valid frame.
    Encode(EncodeError),
    Frame(FrameError),
    /// eddy answered something this client did not ask for.
    Unexpected,
    /// eddy refused the session (`Hello` or `InitProducer`), or is closing
    /// the connection (e.g. `ShuttingDown`).
    Server(ErrorCode),
    /// [`Device::flush`] before [`Device::connect`] (or after an error).
    NotConnected,
}

impl<E> From<ReadExactError<E>> for Error<E> {
    fn from(e: ReadExactError<E>) -> Self {
        match e {
            ReadExactError::UnexpectedEof => Error::Closed,
            ReadExactError::Other(e) => Error::Io(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent in this session yet.
    Waiting,
    /// Sent with this correlation id; no answer yet.
    InFlight(u32),
    Acked,
    Rejected,
}

struct Entry<const V: usize> {
    value: heapless::Vec<u8, V>,
    timestamp_ms: i64,
    /// Assigned when first sent; kept across resends so eddy can dedupe.
    sequence: Option<i32>,
    /// Sent at least once (a later send is a resend).
    sent_before: bool,
    state: State,
}

/// A device's connection state and outbox of up to `N` readings of up to
/// `V` bytes each.
pub struct Device<'a, 'b, const N: usize, const V: usize> {
    config: Config<'a>,
    buffers: Buffers<'b>,
    outbox: Deque<Entry<V>, N>,
    /// The producer session; `None` when not connected.
    session: Option<ProducerInit>,
    /// Sequence for the next reading that has none yet.
    next_sequence: i32,
    next_correlation: u32,
    stats: Stats,
}

impl<'a, 'b, const N: usize, const V: usize> Device<'a, 'b, N, V> {
    pub fn new(config: Config<'a>, buffers: Buffers<'b>) -> Self {
        let window = config.window.clamp(1, WINDOW_MAX);
        Device {
            config: Config { window, ..config },
            buffers,
            outbox: Deque::new(),
            session: None,
            next_sequence: 0,
            next_correlation: 1,
            stats: Stats::default(),
        }
    }

    /// Queues a reading. `timestamp_ms` is ms since the epoch, or
    /// `eddy::wire::batch::NO_TIMESTAMP` to let eddy stamp the arrival time.
    pub fn publish(&mut self, value: &[u8], timestamp_ms: i64) -> Result<(), PublishError> {
        if self.outbox.is_full() {
            return Err(PublishError::OutboxFull);
        }
        let value = heapless::Vec::from_slice(value).map_err(|_| PublishError::TooLarge)?;
        let entry = Entry {
            value,
            timestamp_ms,
            sequence: None,
            sent_before: false,
            state: State::Waiting,
        };
        self.outbox
            .push_back(entry)
            .map_err(|_| PublishError::OutboxFull)
    }

    /// Drops the oldest unacknowledged reading (to make room when the
    /// network has been gone too long). Returns whether there was one. If
    /// it had been sent it may still have been stored.
    pub fn drop_oldest(&mut self) -> bool {
        self.outbox.pop_front().is_some()
    }

    /// Readings not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// Whether a session is open.
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// The current producer session (id, epoch), when connected.
    pub fn session(&self) -> Option<ProducerInit> {
        self.session
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Forgets the session (the transport broke); everything unacknowledged
    /// is sent again after the next [`Device::connect`].
    pub fn disconnect(&mut self) {
        self.session = None;
        for entry in self.outbox.iter_mut() {
            if let State::InFlight(_) = entry.state {
                entry.state = State::Waiting;
            }
        }
    }

    /// Opens a session on a fresh transport: `Hello`, then `InitProducer`
    /// (same producer id as before, a new epoch, and where eddy's sequence
    /// stands).
    pub fn connect<T: Read + Write>(
        &mut self,
        transport: &mut T,
    ) -> Result<ProducerInit, Error<T::Error>> {
        self.disconnect();
        let id = self.correlation();
        let len =
            encode_hello(self.buffers.frame, id, self.config.device_id).map_err(Error::Encode)?;
        send(transport, &self.buffers.frame[..len])?;
        match read_response(transport, self.buffers.response, id)? {
            Answer::Hello => {}
            Answer::Error(code) => return Err(Error::Server(code)),
            _ => return Err(Error::Unexpected),
        }
        let init = self.init_producer(transport)?;
        self.stats.connects += 1;
        Ok(init)
    }

    /// Sends every unacknowledged reading (up to `window` at a time) and
    /// waits for the answers, until the outbox is empty or
    /// [`FLUSH_ROUNDS_MAX`] rounds passed. Returns how many readings were
    /// acknowledged. On `Err` the session is closed: reconnect.
    pub fn flush<T: Read + Write>(&mut self, transport: &mut T) -> Result<usize, Error<T::Error>> {
        let result = self.flush_inner(transport);
        if result.is_err() {
            self.disconnect();
        }
        result
    }

    fn flush_inner<T: Read + Write>(
        &mut self,
        transport: &mut T,
    ) -> Result<usize, Error<T::Error>> {
        let mut acked_total = 0;
        for _ in 0..FLUSH_ROUNDS_MAX {
            if self.outbox.is_empty() {
                break;
            }
            let session = self.session.ok_or(Error::NotConnected)?;
            let sent = self.send_round(transport, session)?;
            let mut reinit = false;
            let mut rejected_from: Option<i32> = None;
            for _ in 0..sent {
                let (id, answer) = read_any_response(transport, self.buffers.response)?;
                let Some(entry) = self
                    .outbox
                    .iter_mut()
                    .find(|e| e.state == State::InFlight(id))
                else {
                    return Err(Error::Unexpected);
                };
                match answer {
                    Answer::Produced => entry.state = State::Acked,
                    Answer::Error(ErrorCode::DuplicateSequence) => {
                        // Stored long ago: acknowledged.
                        self.stats.duplicates += 1;
                        entry.state = State::Acked;
                    }
                    Answer::Error(code) => {
                        self.stats.last_error = Some(code);
                        match code {
                            ErrorCode::OutOfOrderSequence
                            | ErrorCode::ProducerFenced
                            | ErrorCode::UnknownProducer => {
                                reinit = true;
                                entry.state = State::Waiting;
                            }
                            code if code.closes_connection() => return Err(Error::Server(code)),
                            // Appended but not yet at the ack level, or a
                            // transient condition: send again later.
                            ErrorCode::Timeout
                            | ErrorCode::DiskFull
                            | ErrorCode::StorageError
                            | ErrorCode::RebalanceInProgress => entry.state = State::Waiting,
                            _ => {
                                // Refused for good (unknown topic, too large,
                                // not authorized …): nothing was stored.
                                self.stats.rejected += 1;
                                entry.state = State::Rejected;
                                if let Some(seq) = entry.sequence {
                                    rejected_from =
                                        Some(rejected_from.map_or(seq, |r: i32| r.min(seq)));
                                }
                            }
                        }
                    }
                    Answer::Hello | Answer::Init(_) => return Err(Error::Unexpected),
                }
            }
            if self.outbox.iter().any(|e| e.state == State::Acked) {
                self.stats.acked += self
                    .outbox
                    .iter()
                    .filter(|e| e.state == State::Acked)
                    .count() as u32;
            }
            acked_total += self.remove_finished();
            if let Some(from) = rejected_from {
                // eddy did not advance past the refused reading: the ones
                // after it move down to keep the sequence without gaps.
                self.renumber_after(from);
            }
            if reinit {
                self.init_producer(transport)?;
            }
        }
        Ok(acked_total)
    }

    /// Sends up to `window` readings that are not in flight.
    fn send_round<T: Read + Write>(
        &mut self,
        transport: &mut T,
        session: ProducerInit,
    ) -> Result<usize, Error<T::Error>> {
        let target = ProduceTarget {
            topic: self.config.topic,
            partition: self.config.partition,
            acks: self.config.acks,
            timeout_ms: self.config.timeout_ms,
        };
        let mut sent = 0;
        for index in 0..self.outbox.len() {
            if sent == self.config.window {
                break;
            }
            let correlation_id = self.correlation();
            let next_sequence = &mut self.next_sequence;
            let Some(entry) = self.outbox.iter_mut().nth(index) else {
                break;
            };
            if entry.state != State::Waiting {
                continue;
            }
            let sequence = *entry.sequence.get_or_insert_with(|| {
                let s = *next_sequence;
                *next_sequence = sequence_after(s, 1);
                s
            });
            let stamp = ProducerStamp {
                producer_id: session.producer_id,
                producer_epoch: session.producer_epoch,
                base_sequence: sequence,
            };
            let reading = Reading {
                key: self.config.key,
                value: &entry.value,
                timestamp_ms: entry.timestamp_ms,
            };
            let len = encode_reading(
                self.buffers.frame,
                self.buffers.batch,
                correlation_id,
                &target,
                stamp,
                &reading,
            )
            .map_err(Error::Encode)?;
            if entry.sent_before {
                self.stats.resent += 1;
            }
            entry.sent_before = true;
            entry.state = State::InFlight(correlation_id);
            send(transport, &self.buffers.frame[..len])?;
            sent += 1;
        }
        Ok(sent)
    }

    /// `InitProducer`, then reconciles the outbox's sequences with eddy's.
    fn init_producer<T: Read + Write>(
        &mut self,
        transport: &mut T,
    ) -> Result<ProducerInit, Error<T::Error>> {
        let id = self.correlation();
        let len = encode_init_producer(self.buffers.frame, id, self.config.device_id)
            .map_err(Error::Encode)?;
        send(transport, &self.buffers.frame[..len])?;
        let init = match read_response(transport, self.buffers.response, id)? {
            Answer::Init(init) => init,
            Answer::Error(code) => return Err(Error::Server(code)),
            _ => return Err(Error::Unexpected),
        };
        let first_assigned = self.outbox.iter().find_map(|e| e.sequence);
        match first_assigned {
            // Nothing numbered yet: continue where eddy stands (after a
            // reboot this is how the device learns its sequence).
            None => self.next_sequence = init.next_sequence,
            // eddy is behind the oldest unacknowledged reading: it lost
            // readings acknowledged only as `received`, or forgot this
            // producer. Number the outbox from where eddy stands.
            Some(first) if sequence_order(init.next_sequence, first) == SequenceOrder::Ahead => {
                self.renumber_from(init.next_sequence);
            }
            // Otherwise the outbox continues eddy's sequence: resends of
            // what eddy already has are answered as duplicates.
            Some(_) => {}
        }
        self.session = Some(init);
        Ok(init)
    }

    /// Numbers every numbered reading afresh from `start`.
    fn renumber_from(&mut self, start: i32) {
        let mut next = start;
        for entry in self.outbox.iter_mut() {
            if entry.sequence.is_some() {
                entry.sequence = Some(next);
                next = sequence_after(next, 1);
            }
        }
        self.next_sequence = next;
    }

    /// After eddy refused the reading with sequence `from` (and so appended
    /// none after it), numbers the later readings from `from`.
    fn renumber_after(&mut self, from: i32) {
        let mut next = from;
        let mut any = false;
        for entry in self.outbox.iter_mut() {
            if let Some(seq) = entry.sequence {
                if sequence_order(from, seq) == SequenceOrder::Ahead {
                    entry.sequence = Some(next);
                    next = sequence_after(next, 1);
                    any = true;
                }
            }
        }
        if any || sequence_order(self.next_sequence, from) == SequenceOrder::Behind {
            self.next_sequence = next;
        }
    }

    /// Pops acknowledged and refused readings off the front; returns how
    /// many were acknowledged.
    fn remove_finished(&mut self) -> usize {
        let mut acked = 0;
        // Acked readings behind an unacknowledged one stay until it is done,
        // so the outbox stays in sequence order.
        while let Some(front) = self.outbox.front() {
            match front.state {
                State::Acked => acked += 1,
                State::Rejected => {}
                _ => break,
            }
            self.outbox.pop_front();
        }
        acked
    }

    fn correlation(&mut self) -> u32 {
        let id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
        id
    }
}

/// What an answer said, without borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Hello,
    Init(ProducerInit),
    Produced,
    Error(ErrorCode),
}

fn send<T: Write>(transport: &mut T, frame: &[u8]) -> Result<(), Error<T::Error>> {
    transport.write_all(frame).map_err(Error::Io)?;
    transport.flush().map_err(Error::Io)
}

/// Reads the answer to `correlation_id` (the only request in flight).
fn read_response<T: Read>(
    transport: &mut T,
    buf: &mut [u8],
    correlation_id: u32,
) -> Result<Answer, Error<T::Error>> {
    let (id, answer) = read_any_response(transport, buf)?;
    // The server answers an undecodable frame with correlation id 0.
    if id != correlation_id && !(id == 0 && matches!(answer, Answer::Error(_))) {
        return Err(Error::Unexpected);
    }
    Ok(answer)
}

fn read_any_response<T: Read>(
    transport: &mut T,
    buf: &mut [u8],
) -> Result<(u32, Answer), Error<T::Error>> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    transport.read_exact(&mut prefix)?;
    let max = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let len = decode_frame_len(prefix, max).map_err(Error::Frame)?;
    transport.read_exact(&mut buf[..len])?;
    let frame = decode_response(&buf[..len]).map_err(Error::Frame)?;
    let answer = match frame.response {
        Response::Hello(_) => Answer::Hello,
        Response::ProducerInit(init) => Answer::Init(init),
        Response::Produced(_) => Answer::Produced,
        Response::Error(e) => Answer::Error(e.code),
        _ => return Err(Error::Unexpected),
    };
    Ok((frame.correlation_id, answer))
}

#[cfg(test)]
mod tests;
