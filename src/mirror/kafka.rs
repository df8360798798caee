//! The `kafka://` upstream: eddy's own Kafka client over smol TCP (TLS when
//! the link has a CA), with `kafka-protocol` as the codec.
//!
//! A session bootstraps from the link's addresses: ApiVersions (each
//! connection negotiates the versions it uses), Metadata (brokers and
//! partition leaders), CreateTopics for a missing upstream topic (same
//! partition count), then, per partition, ListOffsets (earliest, latest)
//! and Fetch of the tail to find the last source offset that arrived and
//! the producer that wrote it ([`super::records`]). Produce requests
//! (acks=all, one partition each, record batch v2 with a producer id and
//! sequence numbers) go to each partition's leader, pipelined on one
//! connection per broker; Kafka answers a connection's requests in order.
//! Any error ends the session: the next one starts from the tails again,
//! so nothing is retried blindly.
//!
//! # Exactly once across sessions
//!
//! Resuming after the tail is not enough by itself. A request the session
//! gave up on (it timed out, its connection was cut) may still be appended
//! after the next session read the tail: it sat in a socket buffer, in a
//! middlebox, in the broker's request queue, or above the high watermark
//! that ListOffsets reports. The next session sends those records again,
//! and Kafka can tell the two copies apart only by producer: it drops a
//! batch whose producer id, epoch and first and last sequence repeat one of
//! the producer's last five batches on that partition (answering it as a
//! success), and refuses one whose first sequence does not follow the
//! producer's last (`OUT_OF_ORDER_SEQUENCE_NUMBER`). A new producer id per
//! session, as an ordinary client has, defeats both. So:
//!
//! - **One chain per upstream partition, across sessions and restarts**
//!   ([`super::chain`]): a partition continues the producer id and epoch of
//!   the batch holding the upstream's last record of this source (its
//!   header carries them, with the base sequence and last offset delta), at
//!   the sequence after that record. Every acknowledgement also records the
//!   chain with the durable cursor, and an empty partition uses the link's
//!   own producer id, written durably before its first use: a restarted hub
//!   continues the same chains (no InitProducerId per session).
//! - **Sequence numbers follow the records**: a batch takes the next
//!   sequences, one per record, in source order. The records after the
//!   upstream's end are never removed here (they are at or above this
//!   link's `mirrored` watermark, and `keep_from` keeps them from
//!   retention, compaction and the budget), so every session numbers them
//!   alike: record r gets the same sequence whichever session sends it.
//!
//! A late request of an earlier session therefore carries the same
//! producer and the same sequences for the same records as their resend:
//! whichever reaches the broker second either repeats the first exactly
//! (a duplicate: not appended, and when it is the resend, its answer
//! acknowledges records that are there) or starts inside or past what the
//! producer already wrote (out of order: refused). Only a batch whose first
//! sequence follows the producer's last is appended, and by the numbering
//! that batch holds exactly the next records. Batches of a session may be
//! cut differently from the earlier one's (more data became durable): then
//! the second copy is out of order, the session ends, and the next one
//! resumes after whatever landed. Nothing is appended twice, nothing is
//! skipped.
//!
//! Answers about the chain (`OUT_OF_ORDER_SEQUENCE_NUMBER`,
//! `DUPLICATE_SEQUENCE_NUMBER` from brokers that report duplicates as
//! errors, `INVALID_PRODUCER_EPOCH`, `PRODUCER_FENCED`,
//! `UNKNOWN_PRODUCER_ID`) end the session ([`MirrorError::ProducerState`])
//! and the next one resumes from the tail. A fresh chain (a producer id
//! from InitProducerId, sequence 0) is started only where the old one
//! cannot go on:
//!
//! - `UNKNOWN_PRODUCER_ID` (brokers before Kafka 2.5): the broker forgot
//!   the producer on that partition, which it does only after
//!   `transactional.id.expiration.ms` without a write from it or once its
//!   batches were removed. A request of it still on its way would meet the
//!   same answer (its sequence is not 0), so none can be appended next to
//!   the new chain's records. Newer brokers accept an unknown producer at
//!   any sequence; the chain simply goes on.
//! - The records right after the upstream's end are no longer stored here
//!   (a topic with `on_full.unmirrored=drop` shed them): the sequences the
//!   earlier session gave the records after the gap cannot be recomputed,
//!   and continuing the chain could make a late request of it pass for the
//!   resend of different records. With a fresh chain a late request cannot
//!   be mistaken for anything; it can still be appended, which brings
//!   records dropped here upstream after all and, if it also carried
//!   records past the gap, those twice. Only such a topic can see this, and
//!   only when a request of the previous session is still in flight when
//!   the next one starts; the same holds for records a topic with that
//!   setting compacts away after the earlier session read them.
//!
//! Liveness uses a connection of its own ([`KafkaPinger`]), so a ping never
//! waits behind produce requests.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};

use super::records::{decode_tail, KafkaBatch};
use super::{host_of, MirrorError, UpstreamEnd};
use crate::config::MirrorLinkConfig;
use crate::storage::ProducerChain;

/// Largest response accepted, in bytes (a tail Fetch asks for at most
/// [`TAIL_FETCH_BYTES_MAX`]).
pub const KAFKA_RESPONSE_BYTES_MAX: usize = 16 << 20;
/// Time to open a connection (TCP, TLS, ApiVersions), in ms.
pub const KAFKA_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Bytes one tail Fetch asks for per partition (the broker returns at
/// least one whole batch even when it is larger).
pub const TAIL_FETCH_BYTES_MAX: i32 = 1 << 20;
/// Fetches walking back from an upstream partition's end in search of the
/// last record this hub wrote, at most.
pub const TAIL_FETCHES_MAX: usize = 16;
/// Metadata polls while a created topic gets its leaders, at most.
pub const LEADER_WAIT_POLLS_MAX: u32 = 100;
/// Pause between those polls, in ms.
pub const LEADER_WAIT_POLL_MS: u64 = 100;
/// Server-side timeout of CreateTopics, in ms.
const CREATE_TOPICS_TIMEOUT_MS: i32 = 30_000;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION and TOPIC_ALREADY_EXISTS.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER, DUPLICATE_SEQUENCE_NUMBER,
/// INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID and PRODUCER_FENCED: a
/// Produce refused because of the producer chain.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const PRODUCER_FENCED: i16 = 90;
const PRODUCER_STATE_ERRORS: [i16; 5] = [
    OUT_OF_ORDER_SEQUENCE_NUMBER,
    DUPLICATE_SEQUENCE_NUMBER,
    INVALID_PRODUCER_EPOCH,
    UNKNOWN_PRODUCER_ID,
    PRODUCER_FENCED,
];

/// A request type and the versions eddy speaks of it.
pub trait KafkaRequest: Encodable + HeaderVersion {
    const KEY: ApiKey;
    /// Versions eddy can encode and decode (and has been checked with).
    const MIN: i16;
    const MAX: i16;
    type Response: Decodable + HeaderVersion;
}

macro_rules! kafka_request {
    ($req:ty, $resp:ty, $key:ident, $min:expr, $max:expr) => {
        impl KafkaRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            const MIN: i16 = $min;
            const MAX: i16 = $max;
            type Response = $resp;
        }
    };
}

kafka_request!(ApiVersionsRequest, ApiVersionsResponse, ApiVersions, 0, 0);
kafka_request!(MetadataRequest, MetadataResponse, Metadata, 4, 12);
kafka_request!(
    CreateTopicsRequest,
    CreateTopicsResponse,
    CreateTopics,
    2,
    7
);
kafka_request!(
    InitProducerIdRequest,
    InitProducerIdResponse,
    InitProducerId,
    0,
    4
);
kafka_request!(ProduceRequest, ProduceResponse, Produce, 3, 9);
kafka_request!(ListOffsetsRequest, ListOffsetsResponse, ListOffsets, 1, 7);
// Fetch at most v11, the last version without tagged fields: Tansu 0.6
// answers v12 with the top-level tag 0 (NodeEndpoints), which only v16+
// defines, and kafka-protocol rightly refuses that response; the tail read
// needs nothing v12+ adds (found by the hand check against Tansu: the
// resume after a reconnect failed with "Tag 0 is not valid for version 12").
kafka_request!(FetchRequest, FetchResponse, Fetch, 4, 11);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Waiters = Arc<Mutex<WaitQueue>>;

#[derive(Default)]
struct WaitQueue {
    /// Requests written, in order, with their correlation ids.
    queue: VecDeque<(i32, Sender<Bytes>)>,
    closed: Option<String>,
}

/// One connection to one broker.
pub struct KafkaConn {
    addr: String,
    writer: WriteHalf<Box<dyn Io>>,
    waiters: Waiters,
    next_id: i32,
    /// The broker's (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
    _reader: smol::Task<()>,
}

/// A written request awaiting its response.
pub struct PendingKafka<T> {
    rx: Receiver<Bytes>,
    waiters: Waiters,
    addr: String,
    version: i16,
    _response: PhantomData<fn() -> T>,
}

impl<T: Decodable + HeaderVersion> PendingKafka<T> {
    /// Waits for and decodes the response.
    pub async fn response(self) -> Result<T, MirrorError> {
        let mut body = match self.rx.recv().await {
            Ok(body) => body,
            Err(_) => {
                let reason = self.waiters.lock().expect("waiters lock").closed.clone();
                return Err(MirrorError::Closed {
                    addr: self.addr,
                    reason: reason.unwrap_or_else(|| "connection lost".into()),
                });
            }
        };
        ResponseHeader::decode(&mut body, T::header_version(self.version)).map_err(|e| {
            MirrorError::Protocol(format!("response header from {}: {e}", self.addr))
        })?;
        T::decode(&mut body, self.version)
            .map_err(|e| MirrorError::Protocol(format!("response from {}: {e}", self.addr)))
    }
}

impl KafkaConn {
    /// Connects to `addr` and negotiates API versions. When the connection
    /// is lost later, `closed` hears why (so an idle session notices).
    pub async fn connect(
        addr: &str,
        config: &MirrorLinkConfig,
        tls: Option<&Arc<rustls::ClientConfig>>,
        closed: Sender<MirrorError>,
    ) -> Result<KafkaConn, MirrorError> {
        let timeout = Duration::from_millis(KAFKA_CONNECT_TIMEOUT_MS);
        smol::future::or(KafkaConn::connect_inner(addr, config, tls, closed), async {
            smol::Timer::after(timeout).await;
            Err(MirrorError::Timeout {
                what: format!("a connection to {addr}"),
                ms: KAFKA_CONNECT_TIMEOUT_MS,
            })
        })
        .await
    }

    async fn connect_inner(
        addr: &str,
        config: &MirrorLinkConfig,
        tls: Option<&Arc<rustls::ClientConfig>>,
        closed: Sender<MirrorError>,
    ) -> Result<KafkaConn, MirrorError> {
        let tcp = async_net::TcpStream::connect(addr)
            .await
            .map_err(|source| MirrorError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(addr).to_string());
                let name = crate::tls::server_name(&host).map_err(|source| MirrorError::Tls {
                    link: config.name.clone(),
                    source: Box::new(source),
                })?;
                let stream = futures_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| MirrorError::Handshake {
                        addr: addr.to_string(),
                        source,
                    })?;
                Box::new(stream)
            }
        };
        let (reader, writer) = smol::io::split(stream);
        let waiters: Waiters = Arc::new(Mutex::new(WaitQueue::default()));
        let reader = smol::spawn(read_loop(reader, waiters.clone(), addr.to_string(), closed));
        let mut conn = KafkaConn {
            addr: addr.to_string(),
            writer,
            waiters,
            next_id: 1,
            versions: HashMap::new(),
            _reader: reader,
        };
        let answer = conn.call(&ApiVersionsRequest::default()).await?;
        if let Some(e) = error(answer.error_code) {
            return Err(MirrorError::Upstream(format!("ApiVersions at {addr}: {e}")));
        }
        for api in answer.api_keys {
            conn.versions
                .insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(conn)
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `R` both sides speak (the highest), if any.
    fn version_of<R: KafkaRequest>(&self) -> Result<i16, MirrorError> {
        if R::KEY == ApiKey::ApiVersions {
            // v0 before anything is known: every broker speaks it.
            return Ok(0);
        }
        match self.versions.get(&(R::KEY as i16)).copied() {
            Some((min, max)) if max.min(R::MAX) >= min.max(R::MIN) => Ok(max.min(R::MAX)),
            _ => Err(MirrorError::Upstream(format!(
                "broker {} does not speak {:?} versions {}..={} (eddy's range)",
                self.addr,
                R::KEY,
                R::MIN,
                R::MAX
            ))),
        }
    }

    /// Writes `request`; its response arrives through the returned handle.
    pub async fn send<R: KafkaRequest>(
        &mut self,
        request: &R,
    ) -> Result<PendingKafka<R::Response>, MirrorError> {
        let version = self.version_of::<R>()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY as i16;
        header.request_api_version = version;
        header.correlation_id = id;
        header.client_id = Some(StrBytes::from_static_str("eddy-mirror"));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| request.encode(&mut buf, version))
            .map_err(|e| MirrorError::Protocol(format!("encoding {:?}: {e}", R::KEY)))?;
        let len = i32::try_from(buf.len() - 4)
            .map_err(|_| MirrorError::Protocol("request over 2 GiB".into()))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let (tx, rx) = smol::channel::bounded(1);
        {
            let mut waiters = self.waiters.lock().expect("waiters lock");
            if let Some(reason) = &waiters.closed {
                return Err(MirrorError::Closed {
                    addr: self.addr.clone(),
                    reason: reason.clone(),
                });
            }
            waiters.queue.push_back((id, tx));
        }
        let written = async {
            self.writer.write_all(&buf).await?;
            self.writer.flush().await
        }
        .await;
        if let Err(e) = written {
            return Err(MirrorError::Closed {
                addr: self.addr.clone(),
                reason: format!("write failed: {e}"),
            });
        }
        Ok(PendingKafka {
            rx,
            waiters: self.waiters.clone(),
            addr: self.addr.clone(),
            version,
            _response: PhantomData,
        })
    }

    /// Sends `request` and waits for its response.
    pub async fn call<R: KafkaRequest>(&mut self, request: &R) -> Result<R::Response, MirrorError> {
        self.send(request).await?.response().await
    }
}

/// Reads responses in order and hands each to the request written first;
/// tells `closed` when the connection ends.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    waiters: Waiters,
    addr: String,
    closed: Sender<MirrorError>,
) {
    let reason = loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut prefix).await {
            break format!("read failed: {e}");
        }
        let len = i32::from_be_bytes(prefix);
        let Ok(len) = usize::try_from(len) else {
            break format!("negative response length {len}");
        };
        if !(4..=KAFKA_RESPONSE_BYTES_MAX).contains(&len) {
            break format!("response of {len} bytes (at most {KAFKA_RESPONSE_BYTES_MAX} accepted)");
        }
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body).await {
            break format!("read failed: {e}");
        }
        let id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let waiter = waiters.lock().expect("waiters lock").queue.pop_front();
        match waiter {
            Some((expected, tx)) if expected == id => {
                let _ = tx.try_send(Bytes::from(body));
            }
            Some((expected, _)) => break format!("response {id} arrived where {expected} was due"),
            None => break format!("unrequested response {id}"),
        }
    };
    {
        let mut waiters = waiters.lock().expect("waiters lock");
        waiters.closed = Some(reason.clone());
        waiters.queue.clear();
    }
    let _ = closed.try_send(MirrorError::Closed { addr, reason });
}

/// A Kafka error code as text, `None` for 0.
fn error(code: i16) -> Option<String> {
    ResponseError::try_from_code(code).map(|e| format!("{e} (error {code})"))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The liveness probe of a session: ApiVersions on a connection of its own.
pub struct KafkaPinger {
    conn: KafkaConn,
}

impl KafkaPinger {
    pub async fn ping(&mut self) -> Result<(), MirrorError> {
        let answer = self.conn.call(&ApiVersionsRequest::default()).await?;
        match error(answer.error_code) {
            None => Ok(()),
            Some(e) => Err(MirrorError::Upstream(format!("ping (ApiVersions): {e}"))),
        }
    }
}

/// A connected Kafka session of one link.
pub struct KafkaSession {
    config: MirrorLinkConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    hub: String,
    /// Metadata and InitProducerId.
    control: KafkaConn,
    /// Where lost connections are reported (the session's failures).
    closed: Sender<MirrorError>,
    brokers: HashMap<i32, String>,
    controller: i32,
    conns: HashMap<i32, KafkaConn>,
    leaders: HashMap<(String, u32), i32>,
}

impl KafkaSession {
    /// Connects to the first bootstrap address that answers and reads the
    /// cluster's brokers.
    pub async fn connect(
        config: &MirrorLinkConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        hub: &str,
        closed: Sender<MirrorError>,
    ) -> Result<(KafkaSession, KafkaPinger), MirrorError> {
        let mut last = None;
        let mut control = None;
        for addr in &config.addrs {
            match KafkaConn::connect(addr, config, tls.as_ref(), closed.clone()).await {
                Ok(conn) => {
                    control = Some(conn);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(control) = control else {
            return Err(last.unwrap_or_else(|| MirrorError::Upstream("no address".into())));
        };
        let pinger = KafkaPinger {
            conn: KafkaConn::connect(control.addr(), config, tls.as_ref(), closed.clone()).await?,
        };
        let mut session = KafkaSession {
            config: config.clone(),
            tls,
            hub: hub.to_string(),
            control,
            closed,
            brokers: HashMap::new(),
            controller: -1,
            conns: HashMap::new(),
            leaders: HashMap::new(),
        };
        let timeout = Duration::from_millis(KAFKA_CONNECT_TIMEOUT_MS);
        smol::future::or(session.metadata(&[]), async {
            smol::Timer::after(timeout).await;
            Err(MirrorError::Timeout {
                what: "the cluster's metadata".into(),
                ms: KAFKA_CONNECT_TIMEOUT_MS,
            })
        })
        .await?;
        Ok((session, pinger))
    }

    /// A new idempotent producer id and epoch (InitProducerId without a
    /// transactional id), for a partition that starts a fresh chain.
    pub async fn init_producer(&mut self) -> Result<(i64, i16), MirrorError> {
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = None;
        request.transaction_timeout_ms = i32::MAX;
        request.producer_id = (-1).into();
        request.producer_epoch = -1;
        let init = self.control.call(&request).await?;
        if let Some(e) = error(init.error_code) {
            return Err(MirrorError::Upstream(format!("InitProducerId: {e}")));
        }
        Ok((init.producer_id.0, init.producer_epoch))
    }

    /// Metadata for `topics` (none: brokers only); remembers brokers and
    /// leaders.
    async fn metadata(&mut self, topics: &[&str]) -> Result<MetadataResponse, MirrorError> {
        self.metadata_creating(topics, false).await
    }

    /// [`Self::metadata`], asking the broker to create missing topics
    /// (with its default partition count) when `auto_create`.
    async fn metadata_creating(
        &mut self,
        topics: &[&str],
        auto_create: bool,
    ) -> Result<MetadataResponse, MirrorError> {
        let mut request = MetadataRequest::default();
        request.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut topic =
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                    topic.name = Some(topic_name(t));
                    topic
                })
                .collect(),
        );
        request.allow_auto_topic_creation = auto_create;
        let answer = self.control.call(&request).await?;
        for b in &answer.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        self.controller = answer.controller_id.0;
        for t in &answer.topics {
            let Some(name) = &t.name else { continue };
            for p in &t.partitions {
                if let Ok(partition) = u32::try_from(p.partition_index) {
                    self.leaders
                        .insert((name.0.as_str().to_string(), partition), p.leader_id.0);
                }
            }
        }
        Ok(answer)
    }

    /// The connection to broker `node`, opened on first use.
    async fn conn(&mut self, node: i32) -> Result<&mut KafkaConn, MirrorError> {
        if !self.conns.contains_key(&node) {
            let addr = self.brokers.get(&node).cloned().ok_or_else(|| {
                MirrorError::Upstream(format!("metadata names no address for broker {node}"))
            })?;
            let conn =
                KafkaConn::connect(&addr, &self.config, self.tls.as_ref(), self.closed.clone())
                    .await?;
            self.conns.insert(node, conn);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    fn leader(&self, topic: &str, partition: u32) -> Result<i32, MirrorError> {
        match self.leaders.get(&(topic.to_string(), partition)) {
            Some(&leader) if leader >= 0 => Ok(leader),
            _ => Err(MirrorError::Topic {
                topic: topic.to_string(),
                message: format!("partition {partition} has no leader upstream"),
            }),
        }
    }

    /// Makes sure `upstream` exists with at least `partitions` partitions
    /// (creating it with exactly that many), and returns per partition the
    /// source offset to resume from: one past the last record of
    /// `source_topic` from this hub found at the partition's tail, or
    /// `None` when the upstream partition is empty.
    pub async fn prepare(
        &mut self,
        upstream: &str,
        source_topic: &str,
        partitions: u32,
    ) -> Result<Vec<Option<UpstreamEnd>>, MirrorError> {
        let topic_error = |message: String| MirrorError::Topic {
            topic: upstream.to_string(),
            message,
        };
        let answer = self.metadata(&[upstream]).await?;
        let known = answer
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(upstream));
        let mut count = match known {
            Some(t) if t.error_code == 0 => t.partitions.len(),
            Some(t) if t.error_code == UNKNOWN_TOPIC_OR_PARTITION => 0,
            None => 0,
            Some(t) => {
                return Err(topic_error(format!(
                    "metadata: {}",
                    error(t.error_code).unwrap_or_default()
                )))
            }
        };
        if count == 0 {
            // Brokers without CreateTopics (librdkafka's mock cluster)
            // create topics on a Metadata request that allows it, with
            // their default partition count (checked below).
            let auto_create = self.control.version_of::<CreateTopicsRequest>().is_err();
            if auto_create {
                log::info!(
                    "mirror link {}: the cluster does not speak CreateTopics; asking it to \
                     auto-create {upstream}",
                    self.config.name
                );
            } else {
                self.create_topic(upstream, partitions).await?;
            }
            let mut polls = 0;
            loop {
                let answer = self.metadata_creating(&[upstream], auto_create).await?;
                let ready = answer.topics.iter().find(|t| {
                    t.name.as_ref().map(|n| n.0.as_str()) == Some(upstream)
                        && t.error_code == 0
                        && !t.partitions.is_empty()
                        && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
                });
                if let Some(t) = ready {
                    count = t.partitions.len();
                    break;
                }
                polls += 1;
                if polls >= LEADER_WAIT_POLLS_MAX {
                    return Err(topic_error(format!(
                        "created, but its partitions had no leaders after {} ms",
                        u64::from(LEADER_WAIT_POLLS_MAX) * LEADER_WAIT_POLL_MS
                    )));
                }
                smol::Timer::after(Duration::from_millis(LEADER_WAIT_POLL_MS)).await;
            }
        }
        if count < usize::try_from(partitions).unwrap_or(usize::MAX) {
            return Err(topic_error(format!(
                "has {count} partitions upstream but {partitions} here: partition i goes to \
                 upstream partition i, so add partitions upstream (kafka-topics --alter --partitions {partitions})"
            )));
        }
        let latest = self.list_offsets(upstream, partitions, -1).await?;
        let earliest = self.list_offsets(upstream, partitions, -2).await?;
        let mut resume = Vec::with_capacity(latest.len());
        for p in 0..partitions {
            let i = usize::try_from(p).unwrap_or(usize::MAX);
            let (start, end) = (earliest[i], latest[i]);
            if end <= start {
                resume.push(None);
                continue;
            }
            // Below the high watermark, so replicated as the topic
            // demands (acks=all): durable in Kafka's sense.
            let (next, tail_chain) = self
                .tail_position(upstream, source_topic, p, start, end)
                .await?;
            resume.push(Some(UpstreamEnd {
                send_from: next,
                durable: next,
                tail_chain,
            }));
        }
        Ok(resume)
    }

    async fn create_topic(&mut self, topic: &str, partitions: u32) -> Result<(), MirrorError> {
        let mut creatable =
            kafka_protocol::messages::create_topics_request::CreatableTopic::default();
        creatable.name = topic_name(topic);
        creatable.num_partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
        let version = self.control.version_of::<CreateTopicsRequest>()?;
        // -1: the broker's default replication factor (CreateTopics v4+).
        creatable.replication_factor = if version >= 4 { -1 } else { 1 };
        let mut request = CreateTopicsRequest::default();
        request.topics = vec![creatable];
        request.timeout_ms = CREATE_TOPICS_TIMEOUT_MS;
        let controller = self.controller;
        let conn = if controller >= 0 && self.brokers.contains_key(&controller) {
            self.conn(controller).await?
        } else {
            &mut self.control
        };
        let answer = conn.call(&request).await?;
        for t in &answer.topics {
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                return Err(MirrorError::Topic {
                    topic: topic.to_string(),
                    message: format!(
                        "cannot be created upstream: {}{}",
                        error(t.error_code).unwrap_or_default(),
                        t.error_message
                            .as_ref()
                            .map(|m| format!(": {}", m.as_str()))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        log::info!(
            "mirror link {}: created upstream topic {topic} with {partitions} partitions",
            self.config.name
        );
        Ok(())
    }

    /// ListOffsets at `timestamp` (-1 latest, -2 earliest) of partitions
    /// `0..partitions`, each asked of its leader.
    async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: u32,
        timestamp: i64,
    ) -> Result<Vec<i64>, MirrorError> {
        let mut by_leader: HashMap<i32, Vec<u32>> = HashMap::new();
        for p in 0..partitions {
            by_leader.entry(self.leader(topic, p)?).or_default().push(p);
        }
        let mut out = vec![0i64; usize::try_from(partitions).unwrap_or(0)];
        for (leader, parts) in by_leader {
            let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
            t.name = topic_name(topic);
            t.partitions = parts
                .iter()
                .map(|&p| {
                    let mut lp =
                        kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
                    lp.partition_index = i32::try_from(p).unwrap_or(i32::MAX);
                    lp.current_leader_epoch = -1;
                    lp.timestamp = timestamp;
                    lp
                })
                .collect();
            let mut request = ListOffsetsRequest::default();
            request.replica_id = BrokerId(-1);
            request.isolation_level = 0;
            request.topics = vec![t];
            let answer = self.conn(leader).await?.call(&request).await?;
            for t in answer.topics {
                for p in t.partitions {
                    if let Some(e) = error(p.error_code) {
                        return Err(MirrorError::Topic {
                            topic: topic.to_string(),
                            message: format!("ListOffsets of partition {}: {e}", p.partition_index),
                        });
                    }
                    if let Some(slot) = usize::try_from(p.partition_index)
                        .ok()
                        .and_then(|i| out.get_mut(i))
                    {
                        *slot = p.offset;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Walks back from the end of an upstream partition to the last record
    /// this hub mirrored there; returns the source offset after it and the
    /// producer chain that continues after it.
    async fn tail_position(
        &mut self,
        upstream: &str,
        source_topic: &str,
        partition: u32,
        start: i64,
        end: i64,
    ) -> Result<(u64, Option<ProducerChain>), MirrorError> {
        let topic_error = |message: String| MirrorError::Topic {
            topic: upstream.to_string(),
            message,
        };
        let mut fetch_at = end - 1;
        for _ in 0..TAIL_FETCHES_MAX {
            let records = self.fetch(upstream, partition, fetch_at).await?;
            let tail = decode_tail(&records).map_err(&topic_error)?;
            let below: Vec<_> = tail.iter().filter(|r| r.offset < end).collect();
            for record in below.iter().rev() {
                let Some(source) = &record.source else {
                    continue;
                };
                if source.hub != self.hub
                    || source.topic != source_topic
                    || source.partition != partition
                {
                    return Err(topic_error(format!(
                        "partition {partition} ends with a record mirrored from {}/{}/{}, not {}/{source_topic}/{partition}: \
                         two sources write this upstream topic; give one of them another topic_name",
                        source.hub, source.topic, source.partition, self.hub
                    )));
                }
                return Ok((source.offset + 1, record.next));
            }
            let first = tail.iter().map(|r| r.offset).min().unwrap_or(fetch_at);
            if first <= start || tail.is_empty() {
                break;
            }
            fetch_at = first - 1;
        }
        Err(topic_error(format!(
            "partition {partition} holds records ({start}..{end}) but none written by this hub's \
             mirror near its end: eddy resumes from the last record it wrote, so only its link \
             may write this topic (pick another topic_name, or empty the topic)"
        )))
    }

    /// The record batches of one partition from `offset` on.
    async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<Bytes, MirrorError> {
        let leader = self.leader(topic, partition)?;
        let mut fp = kafka_protocol::messages::fetch_request::FetchPartition::default();
        fp.partition = i32::try_from(partition).unwrap_or(i32::MAX);
        fp.current_leader_epoch = -1;
        fp.fetch_offset = offset;
        fp.log_start_offset = -1;
        fp.partition_max_bytes = TAIL_FETCH_BYTES_MAX;
        let mut ft = kafka_protocol::messages::fetch_request::FetchTopic::default();
        ft.topic = topic_name(topic);
        ft.partitions = vec![fp];
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = 0;
        request.min_bytes = 1;
        request.max_bytes = TAIL_FETCH_BYTES_MAX;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = vec![ft];
        let answer = self.conn(leader).await?.call(&request).await?;
        if let Some(e) = error(answer.error_code) {
            return Err(MirrorError::Upstream(format!("Fetch: {e}")));
        }
        let Some(p) = answer
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
        else {
            return Ok(Bytes::new());
        };
        if let Some(e) = error(p.error_code) {
            return Err(MirrorError::Topic {
                topic: topic.to_string(),
                message: format!("Fetch of partition {partition} at {offset}: {e}"),
            });
        }
        Ok(p.records.unwrap_or_default())
    }

    /// Writes one batch to its partition's leader (acks=all); the returned
    /// task completes when the leader acknowledged it, with the batch's
    /// upstream base offset.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: u32,
        batch: KafkaBatch,
    ) -> Result<smol::Task<Result<i64, MirrorError>>, MirrorError> {
        let leader = self.leader(topic, partition)?;
        let mut data = kafka_protocol::messages::produce_request::PartitionProduceData::default();
        data.index = i32::try_from(partition).unwrap_or(i32::MAX);
        data.records = Some(batch.bytes);
        let mut td = kafka_protocol::messages::produce_request::TopicProduceData::default();
        td.name = topic_name(topic);
        td.partition_data = vec![data];
        let mut request = ProduceRequest::default();
        request.transactional_id = None;
        request.acks = -1;
        request.timeout_ms = i32::try_from(self.config.request_timeout_ms).unwrap_or(i32::MAX);
        request.topic_data = vec![td];
        let pending = self.conn(leader).await?.send(&request).await?;
        let topic = topic.to_string();
        Ok(smol::spawn(async move {
            let answer = pending.response().await?;
            let Some(p) = answer
                .responses
                .into_iter()
                .flat_map(|t| t.partition_responses)
                .next()
            else {
                return Err(MirrorError::Protocol(format!(
                    "Produce to {topic}/{partition}: the answer names no partition"
                )));
            };
            if let Some(e) = error(p.error_code) {
                let detail = format!(
                    "{e}{}",
                    p.error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default()
                );
                if PRODUCER_STATE_ERRORS.contains(&p.error_code) {
                    // The broker's view of this partition's producer chain
                    // differs from the session's (a late request of an
                    // earlier session landed first, or the broker forgot
                    // the producer): nothing of the batch was appended.
                    return Err(MirrorError::ProducerState {
                        topic,
                        partition,
                        code: p.error_code,
                        message: detail,
                    });
                }
                return Err(MirrorError::Upstream(format!(
                    "Produce to {topic}/{partition}: {detail}"
                )));
            }
            Ok(p.base_offset)
        }))
    }
}
