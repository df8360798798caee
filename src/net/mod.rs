//! The listener and its connections: TLS, limits, frames in and out.
//!
//! Each accepted socket becomes one task that completes the TLS handshake
//! (within [`Limits::tls_handshake_timeout_ms`]), requires `Hello`, and then
//! reads frames and hands each decoded request to the broker, one at a
//! time. Requests that wait (fsync, long poll) are polled by the same task
//! while it reads on, at most [`Limits::inflight_max`] per connection; at
//! that bound the connection stops reading, which pushes back on the
//! client. The same task writes the answers, everything ready in one write.
//!
//! Bounds per connection: one frame body buffer (≤ `frame_bytes_max`,
//! shrunk back after large frames), `inflight_max` waiting requests, and
//! answers waiting to be written: at [`WRITE_BUFFER_BYTES`] the connection
//! stops reading until they are written (and a write that takes longer than
//! the frame timeout closes it).
//!
//! What a device connection costs (`eddy bench devices`, server RSS per
//! connection, and heaptrack at 2,000 TLS connections): ≈ 15–16 KB of RSS
//! per connection at 5,000–10,000 devices, of which rustls' receive buffer
//! is 4 KiB (its buffered API keeps it for the connection's life), the
//! connection's task ≈ 1–2 KB (each request's future is boxed and lives
//! only while the request is read and handled), the rest the session's
//! cipher state, the socket's reactor registration, the idle timer, the
//! shutdown listener and allocator overhead; an idempotent producer adds
//! ≈ 2.5 KB (its cached state and sled pages). Before: a second task per
//! connection for the writer and a 1 KB channel block for its queue.
//!
//! Connections never touch storage: they only call the broker.

mod conn;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_net::TcpListener;
use event_listener::Event;
use futures_rustls::TlsAcceptor;
use smol::Executor;

use crate::broker::Broker;
use crate::config::Limits;
#[allow(unused_imports)]
use crate::config::WRITE_BUFFER_BYTES;
use crate::shutdown::Shutdown;

/// Pause after `accept` fails (e.g. out of file descriptors) before trying
/// again, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;
/// At most one "connection limit reached" log line per this many rejections.
const REJECT_LOG_EVERY: u64 = 1_000;

/// Connection counters (for metrics, logs and tests).
#[derive(Debug, Default)]
pub struct NetStats {
    pub accepted: AtomicU64,
    pub rejected_limit: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub active: AtomicUsize,
}

/// What every connection task shares.
pub struct NetContext {
    pub broker: Arc<Broker>,
    pub limits: Limits,
    /// `None`: plaintext (development only).
    pub tls: Option<TlsAcceptor>,
    pub shutdown: Arc<Shutdown>,
    pub executor: Arc<Executor<'static>>,
    pub stats: NetStats,
    /// Fires when a connection ends (to wait for the drain).
    closed: Event,
}

impl NetContext {
    pub fn new(
        broker: Arc<Broker>,
        limits: Limits,
        tls: Option<TlsAcceptor>,
        shutdown: Arc<Shutdown>,
        executor: Arc<Executor<'static>>,
    ) -> NetContext {
        NetContext {
            broker,
            limits,
            tls,
            shutdown,
            executor,
            stats: NetStats::default(),
            closed: Event::new(),
        }
    }

    /// Waits until every connection has ended, or `timeout` passes.
    /// Returns the number still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listener = self.closed.listen();
            let active = self.stats.active.load(Ordering::Acquire);
            if active == 0 {
                return 0;
            }
            let expired = smol::future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    smol::Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if expired {
                return self.stats.active.load(Ordering::Acquire);
            }
        }
    }
}

/// Decrements the active count when a connection task ends, however it ends.
struct ActiveGuard(Arc<NetContext>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.stats.active.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify(usize::MAX);
    }
}

/// Accepts connections until shutdown.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<NetContext>) {
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, &ctx),
            Err(e) => {
                log::warn!(
                    "accept failed: {e} (out of file descriptors? raise LimitNOFILE / ulimit -n)"
                );
                smol::Timer::after(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
            }
        }
    }
}

fn admit(stream: async_net::TcpStream, peer: SocketAddr, ctx: &Arc<NetContext>) {
    let active = ctx.stats.active.fetch_add(1, Ordering::AcqRel);
    if active >= ctx.limits.connections_max {
        ctx.stats.active.fetch_sub(1, Ordering::AcqRel);
        let rejected = ctx.stats.rejected_limit.fetch_add(1, Ordering::Relaxed);
        if rejected % REJECT_LOG_EVERY == 0 {
            log::warn!(
                "connection from {peer} refused: {} connections open (connections_max); {} refused so far",
                ctx.limits.connections_max,
                rejected + 1
            );
        }
        drop(stream);
        return;
    }
    ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let guard = ActiveGuard(ctx.clone());
    let task_ctx = ctx.clone();
    ctx.executor
        .spawn(async move {
            let _guard = guard;
            conn::run(stream, peer, task_ctx).await;
        })
        .detach();
}
