//! One Kafka connection: TLS handshake (when the listener has TLS), then
//! size-prefixed frames in, answers out in request order.
//!
//! Two halves joined in one task: the reading half reads a frame (its size
//! checked against `limits.frame_bytes_max` before the body is allocated),
//! decodes the header and the request, and hands it to its handler, which
//! returns an [`Answer`] (ready, or a future: a produce waiting for fsync,
//! a fetch long-polling). Answers go through a channel of
//! `limits.inflight_max` slots to the writing half, which awaits them in
//! order (Kafka clients match answers to requests in order) and writes
//! them; a full channel stops the reading. acks=0 produces have no answer.
//!
//! Anything the codec cannot decode, an API or version this listener does
//! not advertise, or an oversized frame closes the connection (as Kafka
//! brokers do); ApiVersions at an unknown version gets a v0 answer with
//! UNSUPPORTED_VERSION and the list of supported APIs (KIP-511).
//!
//! This file knows no request's semantics; the handlers are in the
//! sibling files, one per API family.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, RequestHeader, ResponseHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::super::conn::{handshake, timeout};
use super::{admin, fetch, groups, metadata, produce, versions, KafkaContext};
use crate::broker::Caller;
use crate::log_limit::suppressed_note;

/// Decodes a request's body as the given type, or returns (from the
/// enclosing handler) an answer that closes the connection.
macro_rules! decode {
    ($t:ty, $body:ident, $version:ident, $ctx:ident, $caller:ident, $api:ident) => {
        match <$t>::decode(&mut $body, $version) {
            Ok(request) => request,
            Err(e) => return undecodable($ctx, $caller, $api, $version, &e),
        }
    };
}

/// A Kafka request header's fixed start: api key (2), version (2),
/// correlation id (4); shorter frames are refused.
const HEADER_FIXED_BYTES: usize = 8;

/// What the writing half does with one request's outcome.
pub(super) enum Out {
    /// Write this frame (length prefix included).
    Frame(Vec<u8>),
    /// Nothing to write (acks=0).
    Silent,
    /// Close the connection (after what came before it).
    Close,
}

/// One request's outcome, now or later.
pub(super) type Answer = Pin<Box<dyn Future<Output = Out> + Send>>;

/// An outcome that is ready.
pub(super) fn now(out: Out) -> Answer {
    Box::pin(std::future::ready(out))
}

/// Encodes `response` at `version` with its header and length prefix;
/// `Out::Close` (logged) if the codec refuses it, which is a bug here.
pub(super) fn frame<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Out {
    frame_with_header(
        correlation_id,
        R::header_version(version),
        version,
        response,
    )
}

/// [`frame`] with an explicit response header version.
pub(super) fn frame_with_header<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    response: &R,
) -> Out {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(&[0; 4]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let encoded = header
        .encode(&mut out, header_version)
        .and_then(|()| response.encode(&mut out, version));
    if let Err(e) = encoded {
        log::error!("encoding a Kafka response (v{version}) failed: {e}");
        return Out::Close;
    }
    let Ok(len) = u32::try_from(out.len() - 4) else {
        return Out::Close;
    };
    out[..4].copy_from_slice(&len.to_be_bytes());
    Out::Frame(out.to_vec())
}

/// Runs a connection to completion.
pub(super) async fn run(
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    handshake_slot: crate::net::HandshakeSlot,
    ctx: Arc<KafkaContext>,
) {
    let _ = tcp.set_nodelay(true);
    let limit = Duration::from_millis(ctx.net.limits.tls_handshake_timeout_ms);
    let Some((stream, identity)) = Box::pin(handshake(tcp, peer, limit, &ctx.net)).await else {
        return;
    };
    drop(handshake_slot);
    // Kafka fetches do not reserve from it yet: the Kafka listener's own
    // bound is its in-flight limit times the frame size.
    let answers = Arc::new(crate::broker::AnswerBudget::new(
        crate::config::ANSWER_BYTES_PENDING_MAX,
        ctx.net.stats.answer_bytes.clone(),
    ));
    let caller = Caller {
        identity,
        peer,
        answers,
    };
    let (reader, writer) = smol::io::split(stream);
    let slots = usize::try_from(ctx.net.limits.inflight_max)
        .unwrap_or(1)
        .max(1);
    let (tx, rx) = smol::channel::bounded::<Answer>(slots);
    let reading = async {
        read_loop(reader, tx, &caller, &ctx).await;
        // The writing half finishes what was read, then ends the task.
        std::future::pending::<()>().await;
    };
    smol::future::or(reading, write_loop(writer, rx, &ctx)).await;
}

async fn read_loop<R: smol::io::AsyncRead + Unpin>(
    mut reader: R,
    tx: smol::channel::Sender<Answer>,
    caller: &Caller,
    ctx: &Arc<KafkaContext>,
) {
    let limits = &ctx.net.limits;
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let frame_time = Duration::from_millis(limits.frame_timeout_ms);
    let shutdown = &ctx.net.shutdown;
    loop {
        let mut prefix = [0u8; 4];
        let read = smol::future::or(
            async { timeout(idle, reader.read_exact(&mut prefix)).await },
            async {
                shutdown.wait().await;
                None
            },
        )
        .await;
        if !matches!(read, Some(Ok(()))) {
            return;
        }
        let len = u32::from_be_bytes(prefix);
        if len > limits.frame_bytes_max || (len as usize) < HEADER_FIXED_BYTES {
            protocol_error(
                ctx,
                caller,
                format_args!(
                    "frame of {len} bytes (limits.frame_bytes_max is {})",
                    limits.frame_bytes_max
                ),
            );
            return;
        }
        let mut body = vec![0u8; len as usize];
        if !matches!(
            timeout(frame_time, reader.read_exact(&mut body)).await,
            Some(Ok(()))
        ) {
            return;
        }
        let answer = handle(Bytes::from(body), caller, ctx).await;
        if tx.send(answer).await.is_err() {
            return;
        }
    }
}

async fn write_loop<W: smol::io::AsyncWrite + Unpin>(
    mut writer: W,
    rx: smol::channel::Receiver<Answer>,
    ctx: &KafkaContext,
) {
    let write_time = Duration::from_millis(ctx.net.limits.frame_timeout_ms);
    while let Ok(answer) = rx.recv().await {
        match answer.await {
            Out::Frame(bytes) => {
                let written = timeout(write_time, async {
                    writer.write_all(&bytes).await?;
                    writer.flush().await
                })
                .await;
                if !matches!(written, Some(Ok(()))) {
                    return;
                }
            }
            Out::Silent => {}
            Out::Close => return,
        }
    }
}

fn protocol_error(ctx: &KafkaContext, caller: &Caller, what: std::fmt::Arguments<'_>) {
    ctx.net
        .stats
        .protocol_errors
        .fetch_add(1, Ordering::Relaxed);
    if let Some(left_out) = ctx.net.refused_log.admit() {
        log::info!(
            "Kafka client {} ({}): {what}; closing{}",
            caller.peer,
            caller.identity,
            suppressed_note(left_out)
        );
    }
}

/// Decodes one request and hands it to its handler.
async fn handle(mut body: Bytes, caller: &Caller, ctx: &Arc<KafkaContext>) -> Answer {
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let api = ApiKey::try_from(key).ok();
    if !versions::supported(api, version) {
        if api == Some(ApiKey::ApiVersions) {
            return now(versions::unsupported_version(correlation_id));
        }
        protocol_error(
            ctx,
            caller,
            format_args!("API {key} v{version} is not supported (see ApiVersions)"),
        );
        return now(Out::Close);
    }
    let Some(api) = api else {
        return now(Out::Close);
    };
    if api == ApiKey::Produce && version < versions::PRODUCE_VERSION_MIN {
        protocol_error(
            ctx,
            caller,
            format_args!(
                "Produce v{version} (message format v0/v1) is not supported: eddy takes record \
                 batches v2, Produce v3 and later (Kafka 0.11+ clients)"
            ),
        );
        return now(Out::Close);
    }
    let header = match RequestHeader::decode(&mut body, api.request_header_version(version)) {
        Ok(header) => header,
        Err(e) => return undecodable(ctx, caller, api, version, &e),
    };
    let id = header.correlation_id;
    match api {
        ApiKey::ApiVersions => now(versions::api_versions(id, version)),
        ApiKey::Metadata => {
            let request = decode!(MetadataRequest, body, version, ctx, caller, api);
            now(metadata::metadata(id, version, request, caller, ctx).await)
        }
        ApiKey::Produce => {
            let request = decode!(ProduceRequest, body, version, ctx, caller, api);
            produce::produce(id, version, request, caller, ctx).await
        }
        ApiKey::Fetch => {
            let request = decode!(FetchRequest, body, version, ctx, caller, api);
            fetch::fetch(id, version, request, caller, ctx).await
        }
        ApiKey::ListOffsets => {
            let request = decode!(ListOffsetsRequest, body, version, ctx, caller, api);
            now(fetch::list_offsets(id, version, request, caller, ctx).await)
        }
        ApiKey::CreateTopics => {
            let request = decode!(CreateTopicsRequest, body, version, ctx, caller, api);
            now(admin::create_topics(id, version, request, caller, ctx).await)
        }
        ApiKey::DeleteTopics => {
            let request = decode!(DeleteTopicsRequest, body, version, ctx, caller, api);
            now(admin::delete_topics(id, version, request, caller, ctx).await)
        }
        ApiKey::DescribeConfigs => {
            let request = decode!(DescribeConfigsRequest, body, version, ctx, caller, api);
            now(admin::describe_configs(id, version, request, caller, ctx))
        }
        ApiKey::ListGroups => {
            let request = decode!(ListGroupsRequest, body, version, ctx, caller, api);
            now(admin::list_groups(id, version, request, caller, ctx).await)
        }
        ApiKey::DescribeAcls => now(admin::describe_acls(id, version, ctx)),
        _ => handle_group(api, id, version, header, body, caller, ctx).await,
    }
}

/// The group APIs (see [`groups`]). A join or sync waits for the rest of
/// the group; its answer is a future so that the reading half goes on.
async fn handle_group(
    api: ApiKey,
    id: i32,
    version: i16,
    header: RequestHeader,
    mut body: Bytes,
    caller: &Caller,
    ctx: &Arc<KafkaContext>,
) -> Answer {
    match api {
        ApiKey::FindCoordinator => {
            let request = decode!(FindCoordinatorRequest, body, version, ctx, caller, api);
            now(groups::find_coordinator(id, version, request, ctx))
        }
        ApiKey::InitProducerId => {
            let request = decode!(InitProducerIdRequest, body, version, ctx, caller, api);
            now(produce::init_producer_id(id, version, request, caller, ctx).await)
        }
        ApiKey::Heartbeat => {
            let request = decode!(HeartbeatRequest, body, version, ctx, caller, api);
            now(groups::heartbeat(id, version, request, caller, ctx))
        }
        ApiKey::LeaveGroup => {
            let request = decode!(LeaveGroupRequest, body, version, ctx, caller, api);
            now(groups::leave_group(id, version, request, caller, ctx))
        }
        ApiKey::OffsetFetch => {
            let request = decode!(OffsetFetchRequest, body, version, ctx, caller, api);
            now(groups::offset_fetch(id, version, request, caller, ctx).await)
        }
        ApiKey::JoinGroup => {
            let request = decode!(JoinGroupRequest, body, version, ctx, caller, api);
            let client_id = header.client_id.map(|c| c.to_string()).unwrap_or_default();
            let (caller, ctx) = (caller.clone(), ctx.clone());
            Box::pin(async move {
                groups::join_group(id, version, request, &client_id, &caller, &ctx).await
            })
        }
        ApiKey::SyncGroup => {
            let request = decode!(SyncGroupRequest, body, version, ctx, caller, api);
            let (caller, ctx) = (caller.clone(), ctx.clone());
            Box::pin(async move { groups::sync_group(id, version, request, &caller, &ctx).await })
        }
        ApiKey::OffsetCommit => {
            let request = decode!(OffsetCommitRequest, body, version, ctx, caller, api);
            let (caller, ctx) = (caller.clone(), ctx.clone());
            Box::pin(
                async move { groups::offset_commit(id, version, request, &caller, &ctx).await },
            )
        }
        _ => now(Out::Close),
    }
}

fn undecodable(
    ctx: &KafkaContext,
    caller: &Caller,
    api: ApiKey,
    version: i16,
    e: &dyn std::fmt::Display,
) -> Answer {
    protocol_error(
        ctx,
        caller,
        format_args!("undecodable {api:?} v{version}: {e}"),
    );
    now(Out::Close)
}
