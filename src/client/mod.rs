//! An async client for eddy's native protocol (smol, TLS via rustls).
//!
//! Used by the CLI, the benchmarks and the tests. One [`Client`] is one
//! connection; requests may be issued concurrently from many tasks and are
//! pipelined (each waits for the response with its correlation id).
//! A request is written by its caller when the connection is idle (no
//! extra task hop on a synchronous round trip); otherwise it is encoded
//! into one outbox that a writer task sends: what callers queue while a
//! write is under way goes out in the next single write (one TLS record
//! and one system call for many requests, not one each). The outbox is
//! bounded ([`OUTBOX_BYTES_MAX`]); callers wait when it is full.
//! [`Producer`] batches records per partition on top (Kafka's producer
//! model).
//!
//! This module knows the wire protocol and sockets, nothing about storage.

mod admin;
pub mod group;
mod mirror;
pub mod producer;
mod records;

pub use admin::{GroupInfo, GroupLag, GroupListing, MemberInfo, PartitionCounters};
pub use group::{GroupConsumer, GroupConsumerOptions, OffsetReset, Polled, RebalanceEvent};
pub use mirror::{MirrorLinkInfo, MirrorPartitionInfo};
pub use producer::{Delivery, Producer, ProducerOptions, RecordAck};
pub use records::{for_each_record, records_from, ConsumedRecord};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::Event;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::{self, TlsError};
use crate::wire::{
    self, Acks, CreateTopic, ErrorCode, Fetch, FetchPartition, Hello, InitProducer, Metadata,
    PartitionAck, Ping, Produce, ProducerInit, Request, RequestFrame, Response, TopicRef,
    FRAME_PREFIX_BYTES, PROTOCOL_VERSION,
};

/// Largest response frame the client accepts, in bytes. Servers never send
/// more than their `frame_bytes_max`; this is a sanity bound on top.
pub const RESPONSE_FRAME_BYTES_MAX: u32 = 64 << 20;
/// Default time to establish TCP + TLS + Hello, in ms.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Encoded requests queued for the writer, in bytes, before callers wait
/// for it to take them (one request larger than this still goes alone).
pub const OUTBOX_BYTES_MAX: usize = 4 << 20;
/// The writer's buffer is dropped after a write larger than this, so a
/// client that once sent a burst does not keep holding it.
const OUTBOX_KEEP_BYTES: usize = 1 << 20;

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port`.
    pub server: String,
    /// `None`: plaintext (only for servers started with `--insecure-plaintext`).
    pub tls: Option<ClientTls>,
    /// Sent in `Hello`, shown in the server's logs.
    pub client_id: String,
    pub connect_timeout: Duration,
}

/// TLS settings of a client.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// PEM file with the CA(s) to trust.
    pub ca: PathBuf,
    /// Name to verify the server certificate against; default: the host
    /// part of `server`.
    pub server_name: Option<String>,
    /// Client certificate chain and private key (PEM files) to present to
    /// a server that requires one (mTLS); `None`: present none.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientOptions {
    /// TLS to `server`, trusting `ca`.
    pub fn tls(server: impl Into<String>, ca: impl Into<PathBuf>) -> ClientOptions {
        ClientOptions {
            server: server.into(),
            tls: Some(ClientTls {
                ca: ca.into(),
                server_name: None,
                identity: None,
            }),
            client_id: format!("eddy-client-{}", std::process::id()),
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
        }
    }

    /// Plaintext to `server`.
    pub fn plaintext(server: impl Into<String>) -> ClientOptions {
        ClientOptions {
            server: server.into(),
            tls: None,
            client_id: format!("eddy-client-{}", std::process::id()),
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {server}: {source} (is `eddy serve` running there?)")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("connecting to {server} timed out after {ms} ms")]
    ConnectTimeout { server: String, ms: u64 },
    #[error("TLS handshake with {server} failed: {source} (does --ca name the CA that signed the server's certificate?)")]
    Handshake {
        server: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("a record of up to {bytes} bytes does not fit in a batch of at most {max} bytes of records (raise ProducerOptions::batch_bytes_max, up to the server's batch_bytes_max, or send a smaller record)")]
    RecordTooLarge { bytes: usize, max: usize },
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Pending = Arc<Mutex<PendingState>>;

#[derive(Default)]
struct PendingState {
    waiting: HashMap<u32, Sender<Vec<u8>>>,
    /// Set when the connection is gone: why.
    closed: Option<String>,
}

/// What the server said in its `Hello` answer.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub protocol_version: u16,
    pub server_version: String,
    pub hub_id: String,
    pub frame_bytes_max: u32,
    pub batch_bytes_max: u32,
    pub inflight_max: u32,
}

/// A response body, kept whole so that decoded values can borrow from it.
pub struct ResponseBody(Vec<u8>);

impl ResponseBody {
    /// Decodes the response; an `Error` response becomes [`ClientError::Server`].
    pub fn decode(&self) -> Result<Response<'_>, ClientError> {
        let frame =
            wire::decode_response(&self.0).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match frame.response {
            Response::Error(e) => Err(ClientError::Server {
                code: e.code,
                message: e.message.to_string(),
            }),
            other => Ok(other),
        }
    }
}

/// Owned watermarks of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMarks {
    pub partition: u32,
    pub log_start: u64,
    pub log_end: u64,
    pub durable: u64,
}

/// Owned description of a topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub created_ms: u64,
    pub configs: Vec<(String, String)>,
    pub watermarks: Vec<PartitionMarks>,
}

/// Requests encoded and waiting for the writer task.
struct Outbox {
    state: Mutex<OutboxState>,
    /// Fired when the outbox turns non-empty (the writer waits on it).
    filled: Event,
    /// Fired when the writer took the queued bytes (full callers wait on it).
    drained: Event,
}

#[derive(Default)]
struct OutboxState {
    bytes: Vec<u8>,
    /// Set when the writer stopped: why.
    failed: Option<String>,
}

type Writer = Arc<smol::lock::Mutex<smol::io::WriteHalf<Box<dyn Io>>>>;

/// One connection to a server.
pub struct Client {
    outbox: Arc<Outbox>,
    writer: Writer,
    pending: Pending,
    next_id: AtomicU32,
    info: ServerInfo,
    _reader: smol::Task<()>,
    _writer: smol::Task<()>,
}

/// A request that was queued; await it for its response.
pub struct PendingCall {
    rx: Receiver<Vec<u8>>,
    pending: Pending,
}

impl PendingCall {
    /// Waits for the response.
    pub async fn response(self) -> Result<ResponseBody, ClientError> {
        match self.rx.recv().await {
            Ok(body) => Ok(ResponseBody(body)),
            Err(_) => {
                let reason = self.pending.lock().expect("pending lock").closed.clone();
                Err(ClientError::Closed(
                    reason.unwrap_or_else(|| "connection lost".into()),
                ))
            }
        }
    }
}

impl Client {
    /// Connects, completes TLS and `Hello`.
    pub async fn connect(options: &ClientOptions) -> Result<Client, ClientError> {
        Client::connect_with_tls_config(options, None).await
    }

    /// [`Client::connect`] with a prebuilt rustls configuration (e.g. one
    /// presenting a client certificate) instead of one made from
    /// `options.tls.ca`; `options.tls` still selects TLS and the name.
    pub async fn connect_with_tls_config(
        options: &ClientOptions,
        tls_config: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client, ClientError> {
        Client::connect_speaking(options, tls_config, PROTOCOL_VERSION).await
    }

    /// [`Client::connect_with_tls_config`] saying `Hello` with
    /// `protocol_version` (a mirror link offering compression says
    /// [`crate::wire::PROTOCOL_VERSION_COMPRESSED_MIRROR`]; an older server
    /// answers [`ErrorCode::UnsupportedVersion`]).
    pub async fn connect_speaking(
        options: &ClientOptions,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        protocol_version: u16,
    ) -> Result<Client, ClientError> {
        let ms = u64::try_from(options.connect_timeout.as_millis()).unwrap_or(u64::MAX);
        let connecting = Client::connect_inner(options, tls_config, protocol_version);
        smol::future::or(connecting, async {
            smol::Timer::after(options.connect_timeout).await;
            Err(ClientError::ConnectTimeout {
                server: options.server.clone(),
                ms,
            })
        })
        .await
    }

    async fn connect_inner(
        options: &ClientOptions,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        protocol_version: u16,
    ) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            server: options.server.clone(),
            source,
        };
        let tcp = async_net::TcpStream::connect(options.server.as_str())
            .await
            .map_err(connect_error)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &options.tls {
            None => Box::new(tcp),
            Some(t) => {
                let config = match tls_config {
                    Some(config) => config,
                    None => tls::client_config_with_cert(
                        &t.ca,
                        t.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                    )?,
                };
                let host = match &t.server_name {
                    Some(name) => name.clone(),
                    None => host_of(&options.server),
                };
                let name = tls::server_name(&host)?;
                let connector = futures_rustls::TlsConnector::from(config);
                let tls_stream = connector.connect(name, tcp).await.map_err(|source| {
                    ClientError::Handshake {
                        server: options.server.clone(),
                        source,
                    }
                })?;
                Box::new(tls_stream)
            }
        };
        let (reader, writer) = smol::io::split(stream);
        let pending: Pending = Arc::new(Mutex::new(PendingState::default()));
        let reader_task = smol::spawn(read_loop(reader, pending.clone()));
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState::default()),
            filled: Event::new(),
            drained: Event::new(),
        });
        let writer: Writer = Arc::new(smol::lock::Mutex::new(writer));
        let writer_task = smol::spawn(write_loop(writer.clone(), outbox.clone(), pending.clone()));
        let mut client = Client {
            outbox,
            writer,
            pending,
            next_id: AtomicU32::new(1),
            info: ServerInfo {
                protocol_version: 0,
                server_version: String::new(),
                hub_id: String::new(),
                frame_bytes_max: 0,
                batch_bytes_max: 0,
                inflight_max: 0,
            },
            _reader: reader_task,
            _writer: writer_task,
        };
        let body = client
            .call(Request::Hello(Hello {
                protocol_version,
                client_id: &options.client_id,
            }))
            .await?;
        match body.decode()? {
            Response::Hello(ok) => {
                client.info = ServerInfo {
                    protocol_version: ok.protocol_version,
                    server_version: ok.server_version.to_string(),
                    hub_id: ok.hub_id.to_string(),
                    frame_bytes_max: ok.frame_bytes_max,
                    batch_bytes_max: ok.batch_bytes_max,
                    inflight_max: ok.inflight_max,
                };
            }
            other => return Err(unexpected(&other)),
        }
        Ok(client)
    }

    /// What the server announced.
    pub fn server_info(&self) -> &ServerInfo {
        &self.info
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, request: Request<'_>) -> Result<ResponseBody, ClientError> {
        self.start(request).await?.response().await
    }

    /// Queues a request (waiting while the outbox is full) and returns the
    /// call to await its response. Requests started one after the other
    /// reach the server in that order.
    pub async fn start(&self, request: Request<'_>) -> Result<PendingCall, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = smol::channel::bounded(1);
        {
            let mut state = self.pending.lock().expect("pending lock");
            if let Some(reason) = &state.closed {
                return Err(ClientError::Closed(reason.clone()));
            }
            state.waiting.insert(id, tx);
        }
        let frame = RequestFrame {
            correlation_id: id,
            request,
        };
        enum Step<'a> {
            Failed(String),
            WriteDirect(smol::lock::MutexGuard<'a, smol::io::WriteHalf<Box<dyn Io>>>),
            Queued { was_empty: bool },
            Full,
        }
        let mut listener = None;
        loop {
            let step = {
                let mut state = self.outbox.state.lock().expect("outbox lock");
                if let Some(reason) = &state.failed {
                    Step::Failed(reason.clone())
                } else if let Some(writer) = state
                    .bytes
                    .is_empty()
                    .then(|| self.writer.try_lock())
                    .flatten()
                {
                    // Idle connection: write it ourselves, no task hop. Any
                    // request queued from now on goes after ours.
                    Step::WriteDirect(writer)
                } else if state.bytes.len() >= OUTBOX_BYTES_MAX {
                    Step::Full
                } else {
                    let was_empty = state.bytes.is_empty();
                    wire::encode_request(&frame, &mut state.bytes);
                    Step::Queued { was_empty }
                }
            };
            match step {
                Step::Failed(reason) => return Err(self.forget(id, reason)),
                Step::WriteDirect(writer) => {
                    let mut bytes = Vec::new();
                    wire::encode_request(&frame, &mut bytes);
                    if let Err(e) = write_flush(writer, &bytes).await {
                        let reason = format!("write failed: {e}");
                        fail_connection(&self.outbox, &self.pending, &reason);
                        return Err(ClientError::Closed(reason));
                    }
                    break;
                }
                Step::Queued { was_empty } => {
                    if was_empty {
                        self.outbox.filled.notify(1);
                    }
                    break;
                }
                // Full: listen, then look again before waiting.
                Step::Full => match listener.take() {
                    None => listener = Some(self.outbox.drained.listen()),
                    Some(l) => l.await,
                },
            }
        }
        Ok(PendingCall {
            rx,
            pending: self.pending.clone(),
        })
    }

    /// Drops the waiter of request `id`; the error to return for it.
    fn forget(&self, id: u32, reason: String) -> ClientError {
        self.pending
            .lock()
            .expect("pending lock")
            .waiting
            .remove(&id);
        ClientError::Closed(reason)
    }

    /// Appends an encoded batch; returns where it landed, per partition.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        acks: Acks,
        timeout_ms: u32,
        batch: &[u8],
    ) -> Result<Vec<PartitionAck>, ClientError> {
        let body = self
            .call(Request::Produce(Produce {
                topic,
                partition,
                acks,
                timeout_ms,
                batch,
            }))
            .await?;
        match body.decode()? {
            Response::Produced(p) => Ok(p.partitions),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches; decode with [`ResponseBody::decode`] (a `Fetched`).
    pub async fn fetch(
        &self,
        topic: &str,
        partitions: &[FetchPartition],
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<ResponseBody, ClientError> {
        let body = self
            .call(Request::Fetch(Fetch {
                topic,
                partitions: partitions.to_vec(),
                max_bytes,
                max_wait_ms,
            }))
            .await?;
        match body.decode()? {
            Response::Fetched(_) => {}
            other => return Err(unexpected(&other)),
        }
        Ok(body)
    }

    /// Topic names and partition counts (all topics when `topics` is empty).
    pub async fn metadata(&self, topics: &[&str]) -> Result<Vec<(String, u32)>, ClientError> {
        let body = self
            .call(Request::Metadata(Metadata {
                topics: topics.to_vec(),
            }))
            .await?;
        match body.decode()? {
            Response::Metadata(m) => Ok(m
                .topics
                .iter()
                .map(|t| (t.name.to_string(), t.partitions))
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicInfo, ClientError> {
        let body = self
            .call(Request::CreateTopic(CreateTopic {
                name,
                partitions,
                configs: Vec::new(),
            }))
            .await?;
        topic_info(&body)
    }

    /// Describes a topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        let body = self
            .call(Request::DescribeTopic(TopicRef { topic: name }))
            .await?;
        topic_info(&body)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let body = self
            .call(Request::DeleteTopic(TopicRef { topic: name }))
            .await?;
        match body.decode()? {
            Response::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Watermarks of every partition of a topic.
    pub async fn watermarks(&self, topic: &str) -> Result<Vec<PartitionMarks>, ClientError> {
        let body = self.call(Request::Watermarks(TopicRef { topic })).await?;
        match body.decode()? {
            Response::Watermarks(w) => Ok(w
                .iter()
                .map(|m| PartitionMarks {
                    partition: m.partition,
                    log_start: m.log_start,
                    log_end: m.log_end,
                    durable: m.durable,
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// The idempotent producer id of a stable name, a new epoch (fencing
    /// older sessions of that name) and the sequence to continue with.
    pub async fn init_producer(&self, name: &str) -> Result<ProducerInit, ClientError> {
        let body = self
            .call(Request::InitProducer(InitProducer { name }))
            .await?;
        match body.decode()? {
            Response::ProducerInit(init) => Ok(init),
            other => Err(unexpected(&other)),
        }
    }

    /// Round trip of a ping.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let started = std::time::Instant::now();
        let nonce = u64::from(self.next_id.load(Ordering::Relaxed));
        let body = self.call(Request::Ping(Ping { nonce })).await?;
        match body.decode()? {
            Response::Pong(p) if p.nonce == nonce => Ok(started.elapsed()),
            other => Err(unexpected(&other)),
        }
    }
}

pub(crate) fn topic_info(body: &ResponseBody) -> Result<TopicInfo, ClientError> {
    match body.decode()? {
        Response::Topic(t) => Ok(TopicInfo {
            name: t.name.to_string(),
            partitions: t.partitions,
            created_ms: t.created_ms,
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.to_string()))
                .collect(),
            watermarks: t
                .watermarks
                .iter()
                .map(|m| PartitionMarks {
                    partition: m.partition,
                    log_start: m.log_start,
                    log_end: m.log_end,
                    durable: m.durable,
                })
                .collect(),
        }),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn unexpected(response: &Response<'_>) -> ClientError {
    let name = match response {
        Response::Hello(_) => "Hello",
        Response::Pong(_) => "Pong",
        Response::Produced(_) => "Produced",
        Response::Fetched(_) => "Fetched",
        Response::Metadata(_) => "Metadata",
        Response::Topic(_) => "Topic",
        Response::Deleted => "Deleted",
        Response::Watermarks(_) => "Watermarks",
        Response::Error(_) => "Error",
        Response::GroupHeartbeat(_) => "GroupHeartbeat",
        Response::Committed => "Committed",
        Response::GroupOffsets(_) => "GroupOffsets",
        Response::Groups(_) => "Groups",
        Response::Group(_) => "Group",
        Response::TopicStats(_) => "TopicStats",
        Response::Offsets(_) => "Offsets",
        Response::ProducerInit(_) => "ProducerInit",
        Response::MirrorProduced(_) => "MirrorProduced",
        Response::MirrorStatus(_) => "MirrorStatus",
    };
    ClientError::Protocol(format!("unexpected {name} response"))
}

/// The host part of `host:port` (brackets removed from IPv6 literals).
fn host_of(server: &str) -> String {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => server,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The connection cannot be written to any more: every later request and
/// every request waiting for its response fails with `reason`.
fn fail_connection(outbox: &Outbox, pending: &Pending, reason: &str) {
    outbox
        .state
        .lock()
        .expect("outbox lock")
        .failed
        .get_or_insert_with(|| reason.to_string());
    outbox.drained.notify(usize::MAX);
    let mut state = pending.lock().expect("pending lock");
    state.closed.get_or_insert_with(|| reason.to_string());
    // Dropping the senders wakes every waiter with an error.
    state.waiting.clear();
}

async fn write_flush<W: AsyncWrite + Unpin>(
    mut writer: smol::lock::MutexGuard<'_, W>,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Sends what callers queued in the outbox: everything queued while the
/// previous write was under way goes out as one write and one flush.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: Arc<smol::lock::Mutex<W>>,
    outbox: Arc<Outbox>,
    pending: Pending,
) {
    let mut sending: Vec<u8> = Vec::new();
    loop {
        let listener = outbox.filled.listen();
        if outbox.state.lock().expect("outbox lock").bytes.is_empty() {
            listener.await;
            continue;
        }
        // Behind a caller writing its own request, if any; then take
        // everything queued (nothing can be written in between).
        let guard = writer.lock().await;
        std::mem::swap(
            &mut outbox.state.lock().expect("outbox lock").bytes,
            &mut sending,
        );
        outbox.drained.notify(usize::MAX);
        if let Err(e) = write_flush(guard, &sending).await {
            fail_connection(&outbox, &pending, &format!("write failed: {e}"));
            return;
        }
        if sending.capacity() > OUTBOX_KEEP_BYTES {
            sending = Vec::new();
        } else {
            sending.clear();
        }
    }
}

/// Reads responses and hands each to the request waiting for its id.
async fn read_loop<R: AsyncRead + Unpin>(mut reader: R, pending: Pending) {
    let reason = loop {
        let mut prefix = [0u8; FRAME_PREFIX_BYTES];
        if let Err(e) = reader.read_exact(&mut prefix).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "server closed the connection".to_string()
            } else {
                format!("read failed: {e}")
            };
        }
        if wire::looks_like_tls_record(prefix) {
            break "the server speaks TLS and this client connected without it: \
                   drop --plaintext (plaintext is for a hub started with --insecure-plaintext)"
                .to_string();
        }
        let len = match wire::decode_frame_len(prefix, RESPONSE_FRAME_BYTES_MAX) {
            Ok(len) => len,
            Err(e) => break e.to_string(),
        };
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body).await {
            break format!("read failed: {e}");
        }
        let Ok((id, _)) = postcard::take_from_bytes::<u32>(&body) else {
            break "undecodable response".to_string();
        };
        let waiter = pending.lock().expect("pending lock").waiting.remove(&id);
        match waiter {
            Some(tx) => {
                let _ = tx.try_send(body);
            }
            None if id == 0 => {
                // A connection-level error (e.g. FrameTooLarge) before the
                // server could read our id: fail everyone with its message.
                let message = match wire::decode_response(&body) {
                    Ok(wire::ResponseFrame {
                        response: Response::Error(e),
                        ..
                    }) => format!("{}: {}", e.code, e.message),
                    _ => "server sent a response with id 0".to_string(),
                };
                break message;
            }
            None => break format!("response for unknown request id {id}"),
        }
    };
    let mut state = pending.lock().expect("pending lock");
    state.closed.get_or_insert(reason);
    // Dropping the senders wakes every waiter with an error.
    state.waiting.clear();
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(super::host_of("127.0.0.1:7654"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:7654"), "::1");
        assert_eq!(super::host_of("gateway.local:1"), "gateway.local");
        assert_eq!(super::host_of("gateway.local"), "gateway.local");
    }
}
