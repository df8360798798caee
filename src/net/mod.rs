//! The listener and its connections: TLS, limits, frames in and out.
//!
//! Each accepted socket becomes one task that completes the TLS handshake
//! and `Hello` (together within [`Limits::tls_handshake_timeout_ms`]), and then
//! reads frames and hands each decoded request to the broker, one at a
//! time. Requests that wait (fsync, long poll) are polled by the same task
//! while it reads on, at most [`Limits::inflight_max`] per connection; at
//! that bound the connection stops reading, which pushes back on the
//! client. The same task writes the answers, everything ready in one write.
//!
//! Bounds per connection: one frame body buffer (≤ `frame_bytes_max`,
//! grown only as the frame's bytes arrive — never to the announced length
//! at once — and shrunk back after large frames), `inflight_max` waiting
//! requests, and answers pending: a fetch reserves its answer's size from
//! the connection's [`crate::broker::AnswerBudget`]
//! ([`crate::config::ANSWER_BYTES_PENDING_MAX`]) before it reads, and every
//! answer is counted there until written; while it is spent, or while
//! [`WRITE_BUFFER_BYTES`] of answers wait, the connection stops reading
//! (and a write that takes longer than the frame timeout closes it).
//! [`NetStats::frame_buffer_bytes`] and [`NetStats::answer_bytes`] count
//! both across connections.
//!
//! What a device connection costs (heaptrack at 10,000 TLS devices sending
//! one reading a second; `eddy bench devices`): ≈ 6.8 KB of heap each. The
//! TLS session is most of it and is rustls' and ring's: the connection
//! struct ≈ 2.2 KB, the cipher state 2 × 560 bytes (ring's key is that size
//! for every algorithm), its handshake deframer's 640-byte buffer and some
//! 0.5 KB of handshake leftovers — ≈ 4 KB. Then the connection's task and
//! the frame reader waiting for the next frame, ≈ 1.4–2 KB (release:
//! 576 + 800 bytes of future state; each request's future is boxed and
//! lives only while the request is handled),
//! the socket's reactor registration ≈ 0.3 KB, and an idempotent producer's
//! cached state ≈ 0.5 KB (plus its sled pages). No buffer is held while a
//! connection is idle: TLS runs over rustls' unbuffered API
//! ([`tls_stream`]), whose buffers exist only while bytes are in flight —
//! rustls' buffered API kept a 4 KiB receive buffer per connection for its
//! life (40 MB at 10,000 devices). sled's cache and write buffers come on
//! top, once per hub.
//!
//! Admission: at most [`Limits::connections_max`] connections, at most
//! [`Limits::connections_per_ip_max`] from one source address (IPv6: one
//! /48 prefix, [`IPV6_SOURCE_PREFIX_BITS`]), and at most
//! [`Limits::handshakes_max`] in the TLS handshake at once (so half-open
//! handshakes cannot take the established devices' slots); beyond any of
//! them the socket is closed at once, before any TLS work. A handshake costs CPU only when bytes arrive, so a flood of idle
//! or slow (slowloris) connections costs memory and slots, both bounded,
//! and is cut off after the handshake timeout; the accept loop never waits
//! on a connection. With a client CA, the identity the device certificate
//! proves is passed with each request to the broker
//! ([`crate::broker::Caller`]), which applies the ACL.
//!
//! Log lines that outsiders can trigger (failed handshakes, refused
//! connections) are rate-bounded ([`crate::log_limit`]).
//!
//! Connections never touch storage: they only call the broker.

mod conn;
pub mod kafka;
pub mod mqtt;
pub mod tls_stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_net::TcpListener;
use event_listener::Event;
use smol::Executor;

use crate::broker::Broker;
use crate::config::Limits;
#[allow(unused_imports)]
use crate::config::WRITE_BUFFER_BYTES;
use crate::log_limit::{suppressed_note, LogLimiter};
use crate::shutdown::Shutdown;

/// Pause after `accept` fails (e.g. out of file descriptors) before trying
/// again, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// Connection counters (for metrics, logs and tests).
#[derive(Debug, Default)]
pub struct NetStats {
    pub accepted: AtomicU64,
    pub rejected_limit: AtomicU64,
    /// Refused because their source had `connections_per_ip_max` open.
    pub rejected_per_ip: AtomicU64,
    /// Refused because `handshakes_max` connections were in the handshake.
    pub rejected_handshakes: AtomicU64,
    /// Connections in the TLS handshake now (a gauge; `handshakes_max`).
    pub handshaking: AtomicUsize,
    pub handshake_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub active: AtomicUsize,
    /// Bytes of frame body buffers held by all connections now (a gauge).
    pub frame_buffer_bytes: AtomicUsize,
    /// Bytes of answers pending in all connections now: reserved by
    /// fetches about to read, or waiting to be written (a gauge;
    /// [`crate::broker::AnswerBudget`]).
    pub answer_bytes: Arc<AtomicUsize>,
}

/// What every connection task shares.
pub struct NetContext {
    pub broker: Arc<Broker>,
    pub limits: Limits,
    /// `None`: plaintext (development only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether devices must present a certificate (a client CA is set);
    /// their identity is then read from it.
    pub client_auth: bool,
    pub shutdown: Arc<Shutdown>,
    pub executor: Arc<Executor<'static>>,
    pub stats: NetStats,
    /// Fires when a connection ends (to wait for the drain).
    closed: Event,
    /// Open connections per source ([`source_key`]); an entry lives while
    /// its count is above zero, so at most `connections_max` entries.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// Rate bounds of the log lines outsiders can trigger.
    pub(crate) refused_log: LogLimiter,
    pub(crate) handshake_log: LogLimiter,
    /// The identity of connections without a certificate, shared by all of
    /// them (no allocation per connection).
    pub(crate) anonymous: Arc<str>,
    /// The identity of plaintext connections (`anonymous` unless a listener
    /// names its own, [`NetContext::with_plaintext_identity`]).
    pub(crate) plaintext_identity: Arc<str>,
}

impl NetContext {
    pub fn new(
        broker: Arc<Broker>,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
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
            client_auth: false,
            per_source: Mutex::new(HashMap::new()),
            refused_log: LogLimiter::new(),
            handshake_log: LogLimiter::new(),
            anonymous: Arc::from(crate::tls::ANONYMOUS_IDENTITY),
            plaintext_identity: Arc::from(crate::tls::ANONYMOUS_IDENTITY),
        }
    }

    /// The identity plaintext connections get (the Kafka listener's
    /// loopback clients, [`kafka::KAFKA_LOCAL_IDENTITY`]).
    pub fn with_plaintext_identity(mut self, identity: &str) -> NetContext {
        self.plaintext_identity = Arc::from(identity);
        self
    }

    /// Devices must present a certificate (the acceptor asks for one).
    pub fn with_client_auth(mut self, required: bool) -> NetContext {
        self.client_auth = required;
        self
    }

    /// Connections open now from `ip`'s source (for tests and metrics).
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_source
            .lock()
            .expect("per-source lock")
            .get(&source_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Takes a slot for `ip`'s source; `false` at `connections_per_ip_max`.
    fn take_source_slot(&self, ip: IpAddr) -> bool {
        let mut open = self.per_source.lock().expect("per-source lock");
        let count = open.entry(source_key(ip)).or_insert(0);
        if *count >= self.limits.connections_per_ip_max {
            return false;
        }
        *count += 1;
        true
    }

    fn release_source_slot(&self, ip: IpAddr) {
        let key = source_key(ip);
        let mut open = self.per_source.lock().expect("per-source lock");
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
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

/// Leading bits of an IPv6 address that name one source for the
/// per-source limit: a /48, what one site is usually given. A host has a
/// /64 and a customer often a /56, so counting those would let one site
/// open `connections_per_ip_max` connections per /64 (256 of them in a
/// /56) and fill the global cap; at /48 a /56 or /64 is one source.
pub const IPV6_SOURCE_PREFIX_BITS: u32 = 48;

/// What a per-source limit counts: an IPv4 address, or the
/// [`IPV6_SOURCE_PREFIX_BITS`] prefix of an IPv6 address. An IPv4-mapped
/// IPv6 address counts as its IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let host_bits = 128 - IPV6_SOURCE_PREFIX_BITS;
                let prefix = u128::from(v6) & !((1u128 << host_bits) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Holds one of the `handshakes_max` slots while a connection is in its
/// TLS handshake; given back when the handshake ends, however it ends.
pub(crate) struct HandshakeSlot(Arc<NetContext>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.stats.handshaking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives back the connection's slots (global and per source) when its task
/// ends, however it ends.
struct ActiveGuard(Arc<NetContext>, IpAddr);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.release_source_slot(self.1);
        self.0.stats.active.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify(usize::MAX);
    }
}

/// Accepts connections until shutdown.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<NetContext>) {
    accept_loop_with(listener, ctx, conn::run).await
}

/// Accepts connections until shutdown, each admitted one served by `run`
/// (the protocol's connection task) within `ctx`'s limits.
pub(crate) async fn accept_loop_with<F, Fut>(listener: TcpListener, ctx: Arc<NetContext>, run: F)
where
    F: Fn(async_net::TcpStream, SocketAddr, HandshakeSlot, Arc<NetContext>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
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
            Ok((stream, peer)) => admit(stream, peer, &ctx, &run),
            Err(e) => {
                log::warn!(
                    "accept failed: {e} (out of file descriptors? raise LimitNOFILE / ulimit -n)"
                );
                smol::Timer::after(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
            }
        }
    }
}

fn admit<F, Fut>(stream: async_net::TcpStream, peer: SocketAddr, ctx: &Arc<NetContext>, run: &F)
where
    F: Fn(async_net::TcpStream, SocketAddr, HandshakeSlot, Arc<NetContext>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let active = ctx.stats.active.fetch_add(1, Ordering::AcqRel);
    if active >= ctx.limits.connections_max {
        ctx.stats.active.fetch_sub(1, Ordering::AcqRel);
        let rejected = ctx.stats.rejected_limit.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = ctx.refused_log.admit() {
            log::warn!(
                "connection from {peer} refused: {} connections open (limits.connections_max, --max-connections); {} refused so far{}",
                ctx.limits.connections_max,
                rejected + 1,
                suppressed_note(left_out)
            );
        }
        drop(stream);
        return;
    }
    if !ctx.take_source_slot(peer.ip()) {
        ctx.stats.active.fetch_sub(1, Ordering::AcqRel);
        let rejected = ctx.stats.rejected_per_ip.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = ctx.refused_log.admit() {
            log::warn!(
                "connection from {peer} refused: {} connections open from {} (limits.connections_per_ip_max, --max-connections-per-ip); {} refused so far{}",
                ctx.limits.connections_per_ip_max,
                source_key(peer.ip()),
                rejected + 1,
                suppressed_note(left_out)
            );
        }
        drop(stream);
        return;
    }
    let guard = ActiveGuard(ctx.clone(), peer.ip());
    let handshaking = ctx.stats.handshaking.fetch_add(1, Ordering::AcqRel);
    let handshake = HandshakeSlot(ctx.clone());
    if handshaking >= ctx.limits.handshakes_max {
        let rejected = ctx
            .stats
            .rejected_handshakes
            .fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = ctx.refused_log.admit() {
            log::warn!(
                "connection from {peer} refused: {} connections in the TLS handshake (limits.handshakes_max); {} refused so far{}",
                ctx.limits.handshakes_max,
                rejected + 1,
                suppressed_note(left_out)
            );
        }
        drop((handshake, guard, stream));
        return;
    }
    ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let connection = run(stream, peer, handshake, ctx.clone());
    ctx.executor
        .spawn(async move {
            let _guard = guard;
            connection.await;
        })
        .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16, item 11: the addresses of one /48 (a site; its /56s and
    /// /64s) are one source; the next /48 is another.
    #[test]
    fn an_ipv6_site_is_one_source() {
        let key = |text: &str| source_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:ff::1"), key("2001:db8:1:0::2"));
        assert_eq!(key("2001:db8:1:ab00::1"), key("2001:db8:1:cd42::9"));
        assert_ne!(key("2001:db8:1::1"), key("2001:db8:2::1"));
        assert_eq!(key("::ffff:10.0.0.7"), key("10.0.0.7"));
    }
}
