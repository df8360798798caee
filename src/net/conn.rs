//! One client connection: handshake, `Hello`, then the request loop.
//!
//! The TLS handshake and the `Hello` must both complete within
//! `tls_handshake_timeout_ms` of the accept: a connection that never says
//! who it is holds its slot no longer than that. With a client CA, the
//! identity the device certificate proves is taken once, after the
//! handshake, and sent with every request ([`Caller`]).
//!
//! One task per connection does everything after the handshake: reads and
//! handles requests in order, polls the replies that wait, writes answers.
//! It does not touch storage (the broker does) and does not decode
//! anything but the frame and the request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tls_stream::TlsStream;
use super::NetContext;
use crate::broker::{encode, error_frame, AnswerBudget, Caller, Reply};
use crate::config::{ANSWER_BYTES_PENDING_MAX, WRITE_BUFFER_BYTES};
use crate::wire::{
    self, ErrorCode, FrameError, Request, Response, FRAME_PREFIX_BYTES, PROTOCOL_VERSION,
    PROTOCOL_VERSION_COMPRESSED_MIRROR,
};

/// A frame body buffer larger than this is replaced by a small one after
/// use, so a connection that once sent a very large batch does not keep
/// holding it; typical producer batches (≤ 256 KiB) reuse their buffer.
const BODY_BUFFER_KEEP_BYTES: usize = 256 << 10;

/// A frame body is read in steps of at most this many bytes, and its buffer
/// grows with what arrived, never to the announced length at once: a
/// connection that announces a 1 MiB frame and sends one byte holds about
/// this much, not 1 MiB.
pub(crate) const FRAME_READ_CHUNK_BYTES: usize = 16 << 10;

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs a connection to completion.
pub(super) async fn run(
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    handshake_slot: super::HandshakeSlot,
    ctx: Arc<NetContext>,
) {
    // Acks are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let limit = Duration::from_millis(ctx.limits.tls_handshake_timeout_ms);
    let hello_deadline = Instant::now() + limit;
    // Boxed, and done before `serve` starts: the handshake's future (with
    // the TLS session it produces) is far larger than what a connection
    // keeps afterwards; inline it would make every connection's task that
    // big for its whole life (1,544 bytes instead of a few hundred).
    let Some((stream, identity)) = Box::pin(handshake(tcp, peer, limit, &ctx)).await else {
        return;
    };
    drop(handshake_slot);
    let answers = Arc::new(AnswerBudget::new(
        ANSWER_BYTES_PENDING_MAX,
        ctx.stats.answer_bytes.clone(),
    ));
    let caller = Caller {
        identity,
        peer,
        answers,
    };
    let (reader, writer) = smol::io::split(stream);
    serve(reader, writer, caller, hello_deadline, &ctx).await;
}

/// The TLS handshake (none in plaintext mode) within `limit`, and the
/// identity the client's certificate proves (mTLS). `None`: it failed and
/// was counted and logged.
pub(super) async fn handshake(
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    limit: Duration,
    ctx: &NetContext,
) -> Option<(Box<dyn Io>, Arc<str>)> {
    handshake_with(tcp, peer, limit, ctx, ctx.tls.as_ref()).await
}

/// [`handshake`] with another listener's TLS setting (`None`: plaintext);
/// the MQTT listener's.
pub(super) async fn handshake_with(
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    limit: Duration,
    ctx: &NetContext,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Option<(Box<dyn Io>, Arc<str>)> {
    let Some(config) = tls else {
        return Some((Box::new(tcp), ctx.plaintext_identity.clone()));
    };
    let handshake_failed = |what: std::fmt::Arguments<'_>| {
        ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = ctx.handshake_log.admit() {
            log::info!(
                "TLS handshake with {peer} {what}{}",
                crate::log_limit::suppressed_note(left_out)
            );
        }
    };
    let tls = match timeout(limit, TlsStream::accept(tcp, config.clone())).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            // A client that did not start TLS (a plaintext client): say so.
            let plaintext = e.to_string().contains("InvalidContentType");
            let hint = if plaintext {
                " (the client speaks plaintext: it must use TLS, e.g. drop --plaintext)"
            } else {
                ""
            };
            handshake_failed(format_args!("failed: {e}{hint}"));
            return None;
        }
        None => {
            handshake_failed(format_args!("timed out after {} ms", limit.as_millis()));
            return None;
        }
    };
    if !ctx.client_auth {
        return Some((Box::new(tls), ctx.anonymous.clone()));
    }
    let proved = tls
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(crate::tls::TlsError::NoIdentity)
        .and_then(crate::tls::identity_of);
    match proved {
        Ok(proved) => Some((Box::new(tls), proved.into())),
        Err(e) => {
            handshake_failed(format_args!("refused: {e}"));
            None
        }
    }
}

type Reader = smol::io::ReadHalf<Box<dyn Io>>;
pub(super) type Writer = smol::io::WriteHalf<Box<dyn Io>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A write's outcome: the writer and buffer back, and why it failed.
pub(super) type Written = (Writer, Vec<u8>, Option<String>);

/// What reading and handling one request ended with.
enum Step {
    /// Handled: its reply (ready, or a future of it).
    Reply(Reply),
    /// `Hello` answered: the connection is open for requests.
    Hello(Vec<u8>),
    /// Stop reading: send this last frame (if any), finish what is in
    /// flight, close.
    Close(Option<Vec<u8>>),
}

/// The reading side, handed to each request future and back.
struct ReadSide {
    reader: Reader,
    body: BodyBuffer,
    /// Empty until `Hello`.
    client_id: String,
    /// Who is connected (sent with every request).
    caller: Caller,
    /// Until `Hello`, the connection has what is left of the handshake time.
    hello_deadline: Instant,
}

/// What woke the connection.
enum Event {
    Request(ReadSide, Step),
    Answered(Vec<u8>),
    Written(Writer, Vec<u8>, Option<String>),
}

/// The connection's one task: reads and handles requests one at a time (in
/// order), polls the replies that wait (fsync, long poll) — at most
/// `inflight_max` — and writes what is ready, all concurrently. Answers go
/// out from this task, without a hop to another: what becomes ready while
/// a write is under way goes out in the next single write. Reading pauses
/// at the in-flight bound, while [`WRITE_BUFFER_BYTES`] of answers wait
/// for a peer that does not read them, and while the connection's
/// [`AnswerBudget`] ([`ANSWER_BYTES_PENDING_MAX`]) is spent: every answer is
/// counted there from when it is ready (fetches: from before they read)
/// until it is written.
async fn serve(
    reader: Reader,
    writer: Writer,
    caller: Caller,
    hello_deadline: Instant,
    ctx: &Arc<NetContext>,
) {
    let peer = caller.peer;
    let answers = caller.answers.clone();
    let inflight_max = usize::try_from(ctx.limits.inflight_max).unwrap_or(1);
    let write_timeout = Duration::from_millis(ctx.limits.frame_timeout_ms);
    let mut read_side = Some(ReadSide {
        reader,
        body: BodyBuffer::new(ctx.clone()),
        client_id: String::new(),
        caller,
        hello_deadline,
    });
    let mut writer = Some(writer);
    let mut request: Option<BoxFuture<(ReadSide, Step)>> = None;
    let mut waiting: Vec<BoxFuture<Vec<u8>>> = Vec::new();
    let mut writing: Option<BoxFuture<Written>> = None;
    // Answers ready to go out, and the buffer the last write used.
    let mut out: Vec<u8> = Vec::new();
    let mut spare: Vec<u8> = Vec::new();
    let mut reading = true;
    loop {
        if reading
            && request.is_none()
            && waiting.len() < inflight_max
            && out.len() < WRITE_BUFFER_BYTES
            && !answers.is_spent()
        {
            if let Some(side) = read_side.take() {
                request = Some(Box::pin(next_request(side, ctx.clone())));
            }
        }
        if writing.is_none() && !out.is_empty() {
            if let Some(w) = writer.take() {
                let buf = std::mem::replace(&mut out, std::mem::take(&mut spare));
                writing = Some(Box::pin(write_all(w, buf, write_timeout)));
            }
        }
        if request.is_none() && waiting.is_empty() && writing.is_none() && out.is_empty() {
            break;
        }
        let event = std::future::poll_fn(|cx| {
            if let Some(f) = request.as_mut() {
                if let Poll::Ready((side, step)) = f.as_mut().poll(cx) {
                    return Poll::Ready(Event::Request(side, step));
                }
            }
            for i in 0..waiting.len() {
                if let Poll::Ready(answer) = waiting[i].as_mut().poll(cx) {
                    drop(waiting.swap_remove(i));
                    return Poll::Ready(Event::Answered(answer));
                }
            }
            if let Some(f) = writing.as_mut() {
                if let Poll::Ready((w, buf, error)) = f.as_mut().poll(cx) {
                    return Poll::Ready(Event::Written(w, buf, error));
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Request(side, step) => {
                request = None;
                read_side = Some(side);
                match step {
                    Step::Reply(Reply::Ready(answer)) | Step::Hello(answer) => {
                        answers.hold(answer.len());
                        out.extend_from_slice(&answer);
                    }
                    Step::Reply(Reply::Pending(future)) => waiting.push(future),
                    Step::Close(last) => {
                        if let Some(last) = last {
                            answers.hold(last.len());
                            out.extend_from_slice(&last);
                        }
                        reading = false;
                    }
                }
            }
            Event::Answered(answer) => {
                answers.hold(answer.len());
                out.extend_from_slice(&answer);
            }
            Event::Written(w, mut buf, error) => {
                writing = None;
                if let Some(error) = error {
                    log::debug!("{peer}: {error}; closing");
                    return;
                }
                answers.release(buf.len());
                writer = Some(w);
                buf.clear();
                if buf.capacity() <= BODY_BUFFER_KEEP_BYTES {
                    spare = buf;
                }
            }
        }
    }
    // Everything answered and written: close cleanly (TLS close_notify).
    if let Some(mut w) = writer {
        let _ = timeout(write_timeout, w.close()).await;
    }
}

/// Writes and flushes `buf` within `limit`; hands the writer and the buffer
/// back, with why it failed if it did.
pub(super) async fn write_all(mut writer: Writer, buf: Vec<u8>, limit: Duration) -> Written {
    let written = timeout(limit, async {
        writer.write_all(&buf).await?;
        writer.flush().await
    })
    .await;
    let error = match written {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!("write failed: {e}")),
        None => Some(format!(
            "not reading its responses for {} ms",
            limit.as_millis()
        )),
    };
    (writer, buf, error)
}

/// Why reading a frame stopped.
enum ReadEnd {
    /// The peer closed the connection between frames.
    Eof,
    /// Shutdown began while waiting for the next frame.
    Shutdown,
    /// The length prefix is over the limit.
    TooLarge(FrameError),
    /// No frame within the idle timeout.
    Timeout(&'static str),
    /// A frame began but did not complete: not within the frame timeout, or
    /// the peer closed its side in the middle of it.
    Truncated(String),
    Io(std::io::Error),
}

/// Reads the next frame and handles it: `Hello` first, then any request
/// (handed to the broker, which appends before this returns, so pipelined
/// produces keep their order). Owns the reading side while it runs.
async fn next_request(mut side: ReadSide, ctx: Arc<NetContext>) -> (ReadSide, Step) {
    let step = read_and_handle(&mut side, &ctx).await;
    if side.body.bytes.capacity() > BODY_BUFFER_KEEP_BYTES {
        side.body.bytes = Vec::new();
    }
    side.body.account();
    (side, step)
}

/// A connection's frame body buffer, its capacity counted in
/// [`super::NetStats::frame_buffer_bytes`] while it lives.
struct BodyBuffer {
    bytes: Vec<u8>,
    /// What the gauge counts for this buffer now.
    counted: usize,
    ctx: Arc<NetContext>,
}

impl BodyBuffer {
    fn new(ctx: Arc<NetContext>) -> BodyBuffer {
        BodyBuffer {
            bytes: Vec::new(),
            counted: 0,
            ctx,
        }
    }

    /// Brings the gauge up to date with the buffer's capacity.
    fn account(&mut self) {
        let now = self.bytes.capacity();
        let gauge = &self.ctx.stats.frame_buffer_bytes;
        if now > self.counted {
            gauge.fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

impl Drop for BodyBuffer {
    fn drop(&mut self) {
        self.bytes = Vec::new();
        self.account();
    }
}

async fn read_and_handle(side: &mut ReadSide, ctx: &Arc<NetContext>) -> Step {
    let peer = side.caller.peer;
    let client_id = &mut side.client_id;
    let idle = if client_id.is_empty() {
        side.hello_deadline
            .saturating_duration_since(Instant::now())
    } else {
        Duration::from_millis(ctx.limits.idle_timeout_ms)
    };
    match read_frame(&mut side.reader, &mut side.body, idle, ctx).await {
        Ok(()) => {}
        Err(ReadEnd::Eof) | Err(ReadEnd::Shutdown) => return Step::Close(None),
        Err(ReadEnd::TooLarge(e)) => {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.broker.stats.errors.count(ErrorCode::FrameTooLarge);
            let tls = matches!(e, crate::wire::FrameError::TooLarge { len, .. }
                if crate::wire::looks_like_tls_record(len.to_be_bytes()));
            let hint = if tls {
                " (the client speaks TLS to this plaintext listener: it must use --plaintext)"
            } else {
                ""
            };
            log::info!("{peer} ({client_id}): {e}{hint}; closing");
            return Step::Close(Some(error_frame(
                0,
                ErrorCode::FrameTooLarge,
                &e.to_string(),
            )));
        }
        Err(ReadEnd::Timeout(what)) => {
            log::debug!("{peer} ({client_id}): {what}; closing");
            return Step::Close(None);
        }
        Err(ReadEnd::Truncated(what)) => {
            // Answered where possible: a peer that stopped sending (or shut
            // down its writing side) may still read why it is cut off.
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.broker.stats.errors.count(ErrorCode::InvalidFrame);
            log::info!("{peer} ({client_id}): {what}; closing");
            return Step::Close(Some(error_frame(
                0,
                ErrorCode::InvalidFrame,
                &format!("{what}; closing"),
            )));
        }
        Err(ReadEnd::Io(e)) => {
            log::debug!("{peer} ({client_id}): read failed: {e}");
            return Step::Close(None);
        }
    }
    let body = &side.body.bytes;
    let frame = match wire::decode_request(body) {
        Ok(frame) => frame,
        Err(_) => {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.broker.stats.errors.count(ErrorCode::InvalidFrame);
            // The correlation id leads the frame; echo it when readable.
            let correlation_id = postcard::take_from_bytes::<u32>(body)
                .map(|(id, _)| id)
                .unwrap_or(0);
            log::info!(
                "{peer} ({client_id}): undecodable frame of {} bytes; closing",
                body.len()
            );
            let message =
                "frame is not a valid eddy request (wrong protocol or corrupted); closing";
            return Step::Close(Some(error_frame(
                correlation_id,
                ErrorCode::InvalidFrame,
                message,
            )));
        }
    };
    let correlation_id = frame.correlation_id;
    if client_id.is_empty() {
        // The first request must be Hello.
        let Request::Hello(hello) = frame.request else {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.broker.stats.errors.count(ErrorCode::HelloRequired);
            let message = "the first request on a connection must be Hello";
            return Step::Close(Some(error_frame(
                correlation_id,
                ErrorCode::HelloRequired,
                message,
            )));
        };
        if !(PROTOCOL_VERSION..=PROTOCOL_VERSION_COMPRESSED_MIRROR)
            .contains(&hello.protocol_version)
        {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.broker.stats.errors.count(ErrorCode::UnsupportedVersion);
            let message = format!(
                "protocol version {} is not supported; this server speaks \
                 {PROTOCOL_VERSION} to {PROTOCOL_VERSION_COMPRESSED_MIRROR} (eddy {})",
                hello.protocol_version,
                env!("CARGO_PKG_VERSION")
            );
            log::info!("{peer} ({}): {message}", hello.client_id);
            return Step::Close(Some(error_frame(
                correlation_id,
                ErrorCode::UnsupportedVersion,
                &message,
            )));
        }
        *client_id = if hello.client_id.is_empty() {
            "-".to_string()
        } else {
            hello
                .client_id
                .chars()
                .take(wire::CLIENT_ID_BYTES_MAX)
                .collect()
        };
        log::debug!(
            "{peer} connected as {client_id} (identity {})",
            side.caller.identity
        );
        return Step::Hello(encode(
            correlation_id,
            Response::Hello(ctx.broker.hello_ok(hello.protocol_version)),
        ));
    }
    // Boxed: a request's future (the largest is a produce) lives only
    // while it is handled, not while the connection waits for a frame.
    Step::Reply(
        Box::pin(
            ctx.broker
                .handle_as(&side.caller, correlation_id, frame.request),
        )
        .await,
    )
}

/// Reads one frame body into `body`. Waiting for a frame to start is bounded
/// by the idle timeout and ends at shutdown; once started, the whole frame
/// must arrive within the frame timeout. The length is checked before the
/// body is allocated.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut BodyBuffer,
    idle: Duration,
    ctx: &NetContext,
) -> Result<(), ReadEnd> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
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
    let frame_timeout_ms = ctx.limits.frame_timeout_ms;
    let deadline = Instant::now() + Duration::from_millis(frame_timeout_ms);
    let truncated = |read: Option<std::io::Result<()>>| match read {
        Some(Ok(())) => Ok(()),
        None => Err(ReadEnd::Truncated(format!(
            "frame did not complete within frame_timeout_ms ({frame_timeout_ms} ms)"
        ))),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadEnd::Truncated(
            "connection closed in the middle of a frame".to_string(),
        )),
        Some(Err(e)) => Err(ReadEnd::Io(e)),
    };
    truncated(timeout_at(deadline, reader.read_exact(&mut prefix[got..])).await)?;
    let len =
        wire::decode_frame_len(prefix, ctx.limits.frame_bytes_max).map_err(ReadEnd::TooLarge)?;
    body.bytes.clear();
    truncated(timeout_at(deadline, read_growing(reader, body, len)).await)
}

/// Reads exactly `len` bytes into the empty `body`, growing it only as bytes
/// arrive ([`FRAME_READ_CHUNK_BYTES`] at most ahead of them): a peer that
/// announces a large frame and sends little makes the hub hold little.
async fn read_growing<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BodyBuffer,
    len: usize,
) -> std::io::Result<()> {
    debug_assert!(buffer.bytes.is_empty());
    while buffer.bytes.len() < len {
        let body = &mut buffer.bytes;
        let start = body.len();
        let want = (len - start).min(FRAME_READ_CHUNK_BYTES);
        if body.capacity() < start + want {
            // Double what arrived (not the announced length), so a large
            // frame that does arrive costs few reallocations.
            let grow = start.max(want).min(len - start);
            body.reserve_exact(grow);
            buffer.account();
        }
        let body = &mut buffer.bytes;
        body.resize(start + want, 0);
        let n = match reader.read(&mut body[start..]).await {
            Ok(n) => n,
            Err(e) => {
                body.truncate(start);
                return Err(e);
            }
        };
        body.truncate(start + n);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// `Some(output)` if `future` completes within `limit`.
pub(super) async fn timeout<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
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
