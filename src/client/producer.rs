//! A batching producer on one [`Client`] connection (Kafka's producer model).
//!
//! [`Producer::send`] appends a record to the open batch of its partition
//! (Kafka's murmur2 of the key, as the server routes; keyless records stick
//! to one partition until its batch is sealed, then move on) and returns a
//! [`Delivery`] at once. A batch is sealed when the next record would make
//! it larger than [`ProducerOptions::batch_bytes_max`], or
//! [`ProducerOptions::linger_ms`] after its first record, or on
//! [`Producer::flush`]. Sealed batches go out in the order they were sealed,
//! at most [`ProducerOptions::inflight_batches_max`] unanswered at a time;
//! while that many are in flight, records keep accumulating into fuller
//! batches. One connection and that order keep records in send order per
//! partition (the server appends a connection's requests in arrival order).
//! Each record's [`Delivery`] resolves to its partition and offset once its
//! batch is acknowledged at [`ProducerOptions::acks`], or to the error that
//! failed its batch.
//!
//! Bounds: records waiting to be sent take at most
//! [`ProducerOptions::buffer_bytes_max`] (then `send` waits), batches in
//! flight at most `inflight_batches_max`, one batch at most
//! `batch_bytes_max` (capped at the server's `batch_bytes_max`).
//!
//! Deliberately not here: retries (a failed batch fails its records; the
//! caller decides whether to send them again), idempotence and exactly-once
//! resends (the device client and `InitProducer` do that), transactions.
//! Dropping the producer does not lose records already handed to `send`:
//! its tasks send them and resolve their deliveries, then end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use event_listener::Event;
use smol::lock::{Semaphore, SemaphoreGuardArc};

use super::{unexpected, Client, ClientError, PendingCall};
use crate::wire::batch::{record_len_max, BatchBuilder, Headers, BATCH_HEADER_BYTES};
use crate::wire::partitioner::partition_for_key;
use crate::wire::{Acks, ErrorCode, Produce, Request, Response};

/// Default largest batch, in bytes (Kafka's `batch.size` is 16 KiB; eddy
/// stores batches in ≈ 4 KiB entries either way, and larger requests cost
/// the server less per record).
pub const PRODUCER_BATCH_BYTES_MAX_DEFAULT: usize = 128 << 10;
/// Default wait for more records before a partial batch is sent, in ms.
pub const PRODUCER_LINGER_MS_DEFAULT: u64 = 1;
/// Default batches sent and not yet answered.
pub const PRODUCER_INFLIGHT_BATCHES_MAX_DEFAULT: usize = 4;
/// Default bytes of records waiting to be sent before `send` waits.
pub const PRODUCER_BUFFER_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Default time the server may take to acknowledge a batch, in ms.
pub const PRODUCER_TIMEOUT_MS_DEFAULT: u32 = 30_000;
/// A new batch's buffer starts this small and grows as records arrive.
const BATCH_INITIAL_BYTES: usize = 4 << 10;

/// How a [`Producer`] batches and acknowledges.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Acknowledgement level of every batch.
    pub acks: Acks,
    /// Largest batch in bytes (header included); capped at the server's
    /// `batch_bytes_max`. A record that does not fit alone is refused.
    pub batch_bytes_max: usize,
    /// How long a partial batch waits for more records, in ms (0: send as
    /// soon as a slot in flight is free).
    pub linger_ms: u64,
    /// Batches sent and not yet answered, at most (≥ 1).
    pub inflight_batches_max: usize,
    /// Bytes of records waiting to be sent, at most; `send` waits beyond.
    pub buffer_bytes_max: usize,
    /// Server-side ack timeout per batch, in ms.
    pub timeout_ms: u32,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            acks: Acks::Durable,
            batch_bytes_max: PRODUCER_BATCH_BYTES_MAX_DEFAULT,
            linger_ms: PRODUCER_LINGER_MS_DEFAULT,
            inflight_batches_max: PRODUCER_INFLIGHT_BATCHES_MAX_DEFAULT,
            buffer_bytes_max: PRODUCER_BUFFER_BYTES_MAX_DEFAULT,
            timeout_ms: PRODUCER_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAck {
    pub partition: u32,
    pub offset: u64,
}

/// Why a batch failed: kept cloneable, turned into a [`ClientError`] per record.
#[derive(Debug, Clone)]
enum BatchFailure {
    Server { code: ErrorCode, message: String },
    Closed(String),
    Protocol(String),
}

impl From<&ClientError> for BatchFailure {
    fn from(e: &ClientError) -> Self {
        match e {
            ClientError::Server { code, message } => BatchFailure::Server {
                code: *code,
                message: message.clone(),
            },
            ClientError::Closed(reason) => BatchFailure::Closed(reason.clone()),
            other => BatchFailure::Protocol(other.to_string()),
        }
    }
}

impl BatchFailure {
    fn to_error(&self) -> ClientError {
        match self {
            BatchFailure::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
            BatchFailure::Closed(reason) => ClientError::Closed(reason.clone()),
            BatchFailure::Protocol(message) => ClientError::Protocol(message.clone()),
        }
    }
}

/// The outcome of one batch, shared by the deliveries of its records.
struct BatchOutcome {
    /// The batch's base offset, or why it failed.
    result: OnceLock<Result<u64, BatchFailure>>,
    done: Event,
}

impl BatchOutcome {
    fn new() -> Arc<BatchOutcome> {
        Arc::new(BatchOutcome {
            result: OnceLock::new(),
            done: Event::new(),
        })
    }

    fn resolve(&self, result: Result<u64, BatchFailure>) {
        let _ = self.result.set(result);
        self.done.notify(usize::MAX);
    }
}

/// The acknowledgement of one record, available once its batch is answered.
pub struct Delivery {
    outcome: Arc<BatchOutcome>,
    partition: u32,
    index: u32,
}

impl Delivery {
    /// The partition the record was routed to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Waits for the record's batch to be acknowledged (or to fail).
    pub async fn wait(&self) -> Result<RecordAck, ClientError> {
        loop {
            if let Some(outcome) = self.try_get() {
                return outcome;
            }
            // Listen, then look again: a resolve in between is not missed.
            let listener = self.outcome.done.listen();
            if let Some(outcome) = self.try_get() {
                return outcome;
            }
            listener.await;
        }
    }

    /// The outcome if the batch was already answered.
    pub fn try_get(&self) -> Option<Result<RecordAck, ClientError>> {
        self.outcome.result.get().map(|result| match result {
            Ok(base) => Ok(RecordAck {
                partition: self.partition,
                offset: base + u64::from(self.index),
            }),
            Err(failure) => Err(failure.to_error()),
        })
    }
}

/// A batch being filled.
struct OpenBatch {
    builder: BatchBuilder<Vec<u8>>,
    outcome: Arc<BatchOutcome>,
    opened: Instant,
}

/// A sealed batch, waiting for a slot in flight.
struct SealedBatch {
    partition: u32,
    bytes: Vec<u8>,
    record_count: u32,
    outcome: Arc<BatchOutcome>,
    /// Numbered in sealing order from 1 (flush waits by number).
    number: u64,
}

struct State {
    open: Vec<Option<OpenBatch>>,
    sealed: VecDeque<SealedBatch>,
    /// Bytes in open and sealed batches (not yet handed to the connection).
    buffered_bytes: usize,
    /// The keyless records' current partition.
    sticky: u32,
    /// Batches sealed so far (the last batch number).
    sealed_count: u64,
    /// Set by drop: seal everything, send it, then end.
    closing: bool,
}

struct Inner {
    client: Arc<Client>,
    topic: String,
    partitions: u32,
    options: ProducerOptions,
    state: Mutex<State>,
    /// A batch was sealed, a batch was opened (its linger starts), or the
    /// producer is flushing or closing: the sender looks again.
    wake_sender: Event,
    /// Buffered bytes were handed to the connection (`send` may go on).
    space: Event,
    /// Highest batch number whose outcome is known (batches are answered in
    /// sealing order).
    answered: AtomicU64,
    answered_event: Event,
}

/// A batching producer for one topic on one connection.
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// A producer for `topic` (which must exist: its partition count is
    /// read once, here).
    pub async fn new(
        client: Arc<Client>,
        topic: &str,
        mut options: ProducerOptions,
    ) -> Result<Producer, ClientError> {
        let partitions = client.describe_topic(topic).await?.partitions;
        if partitions == 0 {
            return Err(ClientError::Protocol(format!(
                "topic {topic} has no partitions"
            )));
        }
        let server_max =
            usize::try_from(client.server_info().batch_bytes_max).unwrap_or(usize::MAX);
        if server_max > 0 {
            options.batch_bytes_max = options.batch_bytes_max.min(server_max);
        }
        options.batch_bytes_max = options.batch_bytes_max.max(BATCH_HEADER_BYTES + 1);
        options.inflight_batches_max = options.inflight_batches_max.max(1);
        let inner = Arc::new(Inner {
            client,
            topic: topic.to_string(),
            partitions,
            options,
            state: Mutex::new(State {
                open: (0..partitions).map(|_| None).collect(),
                sealed: VecDeque::new(),
                buffered_bytes: 0,
                sticky: 0,
                sealed_count: 0,
                closing: false,
            }),
            wake_sender: Event::new(),
            space: Event::new(),
            answered: AtomicU64::new(0),
            answered_event: Event::new(),
        });
        let (tx, rx) = smol::channel::unbounded();
        smol::spawn(send_loop(inner.clone(), tx)).detach();
        smol::spawn(ack_loop(inner.clone(), rx)).detach();
        Ok(Producer { inner })
    }

    /// Partitions of the topic.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Adds a record to its partition's batch and returns its delivery.
    /// Waits only while `buffer_bytes_max` bytes are waiting to be sent.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
    ) -> Result<Delivery, ClientError> {
        let inner = &self.inner;
        let need = record_len_max(key, value, headers);
        let max = inner.options.batch_bytes_max;
        if BATCH_HEADER_BYTES + need > max {
            return Err(ClientError::RecordTooLarge {
                bytes: need,
                max: max - BATCH_HEADER_BYTES,
            });
        }
        let mut listener = None;
        loop {
            {
                let mut state = inner.state.lock().expect("producer lock");
                if state.buffered_bytes == 0
                    || state.buffered_bytes + need <= inner.options.buffer_bytes_max
                {
                    return Ok(self.append(&mut state, key, value, headers, need));
                }
            }
            // Full: listen, then look again before waiting.
            match listener.take() {
                None => listener = Some(inner.space.listen()),
                Some(l) => l.await,
            }
        }
    }

    fn append(
        &self,
        state: &mut State,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
        need: usize,
    ) -> Delivery {
        let inner = &self.inner;
        let max = inner.options.batch_bytes_max;
        let partition = match key {
            Some(key) => partition_for_key(key, inner.partitions),
            None => state.sticky,
        };
        let slot = partition as usize;
        let mut wake = false;
        if let Some(open) = &state.open[slot] {
            if open.builder.len() + need > max {
                wake |= seal(state, partition);
            }
        }
        let now_ms = crate::time::now_ms_i64();
        if state.open[slot].is_none() {
            let builder =
                BatchBuilder::with_capacity(BATCH_INITIAL_BYTES.min(max), now_ms).expect("sized");
            state.buffered_bytes += builder.len();
            state.open[slot] = Some(OpenBatch {
                builder,
                outcome: BatchOutcome::new(),
                opened: Instant::now(),
            });
            wake = true;
        }
        let open = state.open[slot].as_mut().expect("opened above");
        if open.builder.len() + need > open.builder.capacity() {
            let grown = (open.builder.capacity() * 2).max(open.builder.len() + need);
            open.builder.grow_to(grown.min(max));
        }
        let before = open.builder.len();
        open.builder
            .push(now_ms, key, value, headers)
            .expect("room checked against record_len_max");
        let index = open.builder.record_count() - 1;
        let outcome = open.outcome.clone();
        state.buffered_bytes += open.builder.len() - before;
        if wake {
            inner.wake_sender.notify(1);
        }
        Delivery {
            outcome,
            partition,
            index,
        }
    }

    /// Sends every open batch now and waits until everything sent before
    /// this call is answered (acknowledged or failed).
    pub async fn flush(&self) {
        let target = {
            let mut state = self.inner.state.lock().expect("producer lock");
            for partition in 0..self.inner.partitions {
                seal(&mut state, partition);
            }
            state.sealed_count
        };
        self.inner.wake_sender.notify(1);
        loop {
            let listener = self.inner.answered_event.listen();
            if self.inner.answered.load(Ordering::Acquire) >= target {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.inner.state.lock().expect("producer lock").closing = true;
        self.inner.wake_sender.notify(1);
    }
}

/// Seals the open batch of `partition` (if any); true if one was sealed.
fn seal(state: &mut State, partition: u32) -> bool {
    let Some(open) = state.open[partition as usize].take() else {
        return false;
    };
    let record_count = open.builder.record_count();
    let bytes = open.builder.finish_vec();
    state.sealed_count += 1;
    state.sealed.push_back(SealedBatch {
        partition,
        bytes,
        record_count,
        outcome: open.outcome,
        number: state.sealed_count,
    });
    // Kafka's sticky partitioner: keyless records move on once their
    // partition's batch is sealed.
    if state.sticky == partition {
        state.sticky = (partition + 1) % u32::try_from(state.open.len()).unwrap_or(1);
    }
    true
}

/// A batch on the wire, waiting for its answer.
struct InFlight {
    call: Result<PendingCall, ClientError>,
    batch: SealedBatch,
    _permit: SemaphoreGuardArc,
}

/// Takes a slot in flight, then the next sealed (or lingered-out) batch,
/// and queues it on the connection.
async fn send_loop(inner: Arc<Inner>, acks: smol::channel::Sender<InFlight>) {
    let slots = Arc::new(Semaphore::new(inner.options.inflight_batches_max));
    let linger = Duration::from_millis(inner.options.linger_ms);
    loop {
        // A slot first: while every slot is taken, records keep filling the
        // open batches.
        let permit = slots.acquire_arc().await;
        let batch = loop {
            let listener = inner.wake_sender.listen();
            let (next, deadline, closing) = {
                let mut state = inner.state.lock().expect("producer lock");
                let now = Instant::now();
                let mut deadline: Option<Instant> = None;
                for partition in 0..inner.partitions {
                    let due = match &state.open[partition as usize] {
                        Some(open) => open.opened + linger,
                        None => continue,
                    };
                    if due <= now || state.closing {
                        seal(&mut state, partition);
                    } else {
                        deadline = Some(deadline.map_or(due, |d: Instant| d.min(due)));
                    }
                }
                (state.sealed.pop_front(), deadline, state.closing)
            };
            match (next, deadline) {
                (Some(batch), _) => break batch,
                (None, _) if closing => return,
                (None, Some(at)) => {
                    smol::future::or(listener, async {
                        smol::Timer::at(at).await;
                    })
                    .await
                }
                (None, None) => listener.await,
            }
        };
        let call = inner
            .client
            .start(Request::Produce(Produce {
                topic: &inner.topic,
                partition: Some(batch.partition),
                acks: inner.options.acks,
                timeout_ms: inner.options.timeout_ms,
                batch: &batch.bytes,
            }))
            .await;
        {
            let mut state = inner.state.lock().expect("producer lock");
            state.buffered_bytes = state.buffered_bytes.saturating_sub(batch.bytes.len());
        }
        inner.space.notify(usize::MAX);
        let in_flight = InFlight {
            call,
            batch,
            _permit: permit,
        };
        if acks.send(in_flight).await.is_err() {
            return;
        }
    }
}

/// Resolves batches in the order they were sent.
async fn ack_loop(inner: Arc<Inner>, batches: smol::channel::Receiver<InFlight>) {
    while let Ok(InFlight {
        call,
        batch,
        _permit,
    }) = batches.recv().await
    {
        let result = match call {
            Err(e) => Err(BatchFailure::from(&e)),
            Ok(call) => match call.response().await {
                Err(e) => Err(BatchFailure::from(&e)),
                Ok(body) => produced_base(&body, &batch),
            },
        };
        drop(_permit);
        batch.outcome.resolve(result);
        inner.answered.store(batch.number, Ordering::Release);
        inner.answered_event.notify(usize::MAX);
    }
}

/// The base offset the server gave `batch`, checked against what was sent.
fn produced_base(body: &super::ResponseBody, batch: &SealedBatch) -> Result<u64, BatchFailure> {
    match body.decode() {
        Err(e) => Err(BatchFailure::from(&e)),
        Ok(Response::Produced(p)) => match p.partitions.first() {
            Some(ack)
                if p.partitions.len() == 1
                    && ack.partition == batch.partition
                    && ack.record_count == batch.record_count =>
            {
                Ok(ack.base_offset)
            }
            _ => Err(BatchFailure::Protocol(format!(
                "the server acknowledged {:?} for a batch of {} records to partition {}",
                p.partitions, batch.record_count, batch.partition
            ))),
        },
        Ok(other) => Err(BatchFailure::from(&unexpected(&other))),
    }
}
