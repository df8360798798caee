//! One client connection: handshake, `Hello`, then the request loop.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::lock::Semaphore;

use super::responses::{self, ResponseReceiver, ResponseSender};
use super::NetContext;
use crate::broker::{encode, error_frame, Reply};
use crate::config::WRITE_BUFFER_BYTES;
use crate::wire::{
    self, ErrorCode, FrameError, Request, Response, FRAME_PREFIX_BYTES, PROTOCOL_VERSION,
};

/// A frame body buffer larger than this is replaced by a small one after
/// use, so a connection that once sent a very large batch does not keep
/// holding it; typical producer batches (≤ 256 KiB) reuse their buffer.
const BODY_BUFFER_KEEP_BYTES: usize = 256 << 10;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs a connection to completion.
pub(super) async fn run(tcp: async_net::TcpStream, peer: SocketAddr, ctx: Arc<NetContext>) {
    // Acks are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match &ctx.tls {
        None => Box::new(tcp),
        Some(acceptor) => {
            let limit = Duration::from_millis(ctx.limits.tls_handshake_timeout_ms);
            // Boxed: the handshake's state is large and only needed now;
            // inline it would make every connection's task that big.
            match timeout(limit, Box::pin(acceptor.accept(tcp))).await {
                Some(Ok(tls)) => Box::new(tls),
                Some(Err(e)) => {
                    ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    log::info!("TLS handshake with {peer} failed: {e}");
                    return;
                }
                None => {
                    ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "TLS handshake with {peer} timed out after {} ms",
                        limit.as_millis()
                    );
                    return;
                }
            }
        }
    };
    let (reader, writer) = smol::io::split(stream);
    // Every response is queued while holding one of `inflight_max` permits,
    // so the queue never holds more than that.
    let (tx, rx) = responses::queue();
    let write_timeout = Duration::from_millis(ctx.limits.frame_timeout_ms);
    let writer_task = ctx
        .executor
        .spawn(write_loop(writer, rx, write_timeout, peer));
    read_loop(reader, tx, peer, &ctx).await;
    // The writer ends once every in-flight request has answered (each holds
    // a sender) and the queue is flushed.
    writer_task.await;
}

/// Why reading a frame stopped.
enum ReadEnd {
    /// The peer closed the connection between frames.
    Eof,
    /// Shutdown began while waiting for the next frame.
    Shutdown,
    /// The length prefix is over the limit.
    TooLarge(FrameError),
    /// No frame within the idle timeout, or a frame did not complete in time.
    Timeout(&'static str),
    Io(std::io::Error),
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: ResponseSender,
    peer: SocketAddr,
    ctx: &Arc<NetContext>,
) {
    let inflight = Arc::new(Semaphore::new(
        usize::try_from(ctx.limits.inflight_max).unwrap_or(1),
    ));
    let mut body = Vec::new();
    let mut client_id = String::new();
    loop {
        // At the in-flight bound, wait here: the connection stops reading.
        let permit = inflight.acquire_arc().await;
        match read_frame(&mut reader, &mut body, ctx).await {
            Ok(()) => {}
            Err(ReadEnd::Eof) | Err(ReadEnd::Shutdown) => return,
            Err(ReadEnd::TooLarge(e)) => {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                ctx.broker.stats.errors.count(ErrorCode::FrameTooLarge);
                log::info!("{peer} ({client_id}): {e}; closing");
                let _ = tx.send(error_frame(0, ErrorCode::FrameTooLarge, &e.to_string()));
                return;
            }
            Err(ReadEnd::Timeout(what)) => {
                log::debug!("{peer} ({client_id}): {what}; closing");
                return;
            }
            Err(ReadEnd::Io(e)) => {
                log::debug!("{peer} ({client_id}): read failed: {e}");
                return;
            }
        }
        let frame = match wire::decode_request(&body) {
            Ok(frame) => frame,
            Err(_) => {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                ctx.broker.stats.errors.count(ErrorCode::InvalidFrame);
                // The correlation id leads the frame; echo it when readable.
                let correlation_id = postcard::take_from_bytes::<u32>(&body)
                    .map(|(id, _)| id)
                    .unwrap_or(0);
                log::info!(
                    "{peer} ({client_id}): undecodable frame of {} bytes; closing",
                    body.len()
                );
                let message =
                    "frame is not a valid eddy request (wrong protocol or corrupted); closing";
                let _ = tx.send(error_frame(
                    correlation_id,
                    ErrorCode::InvalidFrame,
                    message,
                ));
                return;
            }
        };
        let correlation_id = frame.correlation_id;
        if client_id.is_empty() {
            // The first request must be Hello.
            let Request::Hello(hello) = frame.request else {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                ctx.broker.stats.errors.count(ErrorCode::HelloRequired);
                let message = "the first request on a connection must be Hello";
                let _ = tx.send(error_frame(
                    correlation_id,
                    ErrorCode::HelloRequired,
                    message,
                ));
                return;
            };
            if hello.protocol_version != PROTOCOL_VERSION {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                ctx.broker.stats.errors.count(ErrorCode::UnsupportedVersion);
                let message = format!(
                    "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION} (eddy {})",
                    hello.protocol_version,
                    env!("CARGO_PKG_VERSION")
                );
                log::info!("{peer} ({}): {message}", hello.client_id);
                let _ = tx.send(error_frame(
                    correlation_id,
                    ErrorCode::UnsupportedVersion,
                    &message,
                ));
                return;
            }
            client_id = if hello.client_id.is_empty() {
                "-".to_string()
            } else {
                hello
                    .client_id
                    .chars()
                    .take(wire::CLIENT_ID_BYTES_MAX)
                    .collect()
            };
            log::debug!("{peer} connected as {client_id}");
            let ok = encode(correlation_id, Response::Hello(ctx.broker.hello_ok()));
            if tx.send(ok).is_err() {
                return;
            }
            continue;
        }
        // Boxed for the same reason: a request's future (the largest is a
        // produce) lives only while it is handled, not for the connection.
        match Box::pin(ctx.broker.handle(correlation_id, frame.request)).await {
            Reply::Ready(response) => {
                if tx.send(response).is_err() {
                    return;
                }
                drop(permit);
            }
            Reply::Pending(future) => {
                let tx = tx.clone();
                ctx.executor
                    .spawn(async move {
                        let response = future.await;
                        let _ = tx.send(response);
                        drop(permit);
                    })
                    .detach();
            }
        }
        if body.capacity() > BODY_BUFFER_KEEP_BYTES {
            body = Vec::new();
        }
    }
}

/// Reads one frame body into `body`. Waiting for a frame to start is bounded
/// by the idle timeout and ends at shutdown; once started, the whole frame
/// must arrive within the frame timeout. The length is checked before the
/// body is allocated.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
    ctx: &NetContext,
) -> Result<(), ReadEnd> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let idle = Duration::from_millis(ctx.limits.idle_timeout_ms);
    let started = smol::future::or(
        async { Some(timeout(idle, reader.read(&mut prefix)).await) },
        async {
            ctx.shutdown.wait().await;
            None
        },
    )
    .await;
    let got = match started {
        None => return Err(ReadEnd::Shutdown),
        Some(None) => return Err(ReadEnd::Timeout("idle timeout")),
        Some(Some(Err(e))) => return Err(ReadEnd::Io(e)),
        Some(Some(Ok(0))) => return Err(ReadEnd::Eof),
        Some(Some(Ok(n))) => n,
    };
    let deadline = Instant::now() + Duration::from_millis(ctx.limits.frame_timeout_ms);
    timeout_at(deadline, reader.read_exact(&mut prefix[got..]))
        .await
        .ok_or(ReadEnd::Timeout("frame header did not complete in time"))?
        .map_err(ReadEnd::Io)?;
    let len =
        wire::decode_frame_len(prefix, ctx.limits.frame_bytes_max).map_err(ReadEnd::TooLarge)?;
    body.clear();
    body.resize(len, 0);
    timeout_at(deadline, reader.read_exact(body))
        .await
        .ok_or(ReadEnd::Timeout("frame body did not complete in time"))?
        .map_err(ReadEnd::Io)
}

/// Sends queued responses, coalescing what is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    rx: ResponseReceiver,
    write_timeout: Duration,
    peer: SocketAddr,
) {
    let mut out: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        let batch: &[u8] = if rx.is_empty() {
            &first
        } else {
            out.clear();
            out.extend_from_slice(&first);
            while out.len() < WRITE_BUFFER_BYTES {
                match rx.try_recv() {
                    Some(more) => out.extend_from_slice(&more),
                    None => break,
                }
            }
            &out
        };
        let written = timeout(write_timeout, async {
            writer.write_all(batch).await?;
            writer.flush().await
        })
        .await;
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                log::debug!("{peer}: write failed: {e}");
                return;
            }
            None => {
                log::info!(
                    "{peer}: not reading its responses for {} ms; closing",
                    write_timeout.as_millis()
                );
                return;
            }
        }
        if out.capacity() > BODY_BUFFER_KEEP_BYTES {
            out = Vec::new();
        }
    }
    // Every sender is gone: close cleanly (TLS close_notify).
    let _ = timeout(write_timeout, writer.close()).await;
}

/// `Some(output)` if `future` completes within `limit`.
async fn timeout<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    timeout_at(Instant::now() + limit, future).await
}

async fn timeout_at<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::at(deadline).await;
        None
    })
    .await
}
