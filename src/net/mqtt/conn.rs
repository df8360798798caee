//! One MQTT connection: TLS (unless plaintext), CONNECT within the
//! handshake timeout, then one task that reads packets, handles them in
//! order, sends acknowledgements in the order the PUBLISHes came (each
//! once it is due: [`super::publish`]), delivers subscriptions' records
//! ([`super::subscribe`]), and writes — all concurrently, within bounds:
//! at most `mqtt.inflight_max` PUBLISHes waiting for their ack (then it
//! stops reading), at most the client's receive maximum of unacknowledged
//! deliveries, [`WRITE_BUFFER_BYTES`] of output.
//!
//! The connection ends at DISCONNECT, a malformed packet or protocol
//! error (this connection only), a keep-alive of 1.5 × the negotiated
//! interval without a packet, a takeover by the same client id, a write
//! that takes longer than `limits.frame_timeout_ms`, or shutdown. Except
//! after a normal DISCONNECT, the will is published.
//!
//! No storage and no broker call of its own beyond what `publish` and
//! `subscribe` ask.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use smol::io::{AsyncWriteExt, ReadHalf};

use super::codec::{self, reason, CodecError, Connect, Inbound, Outbound, Version};
use super::publish::{self, AckFuture, Acked};
use super::session::{self, Claim, Session, Shared};
use super::subscribe::{Delivery, Subscriber, Subscriptions};
use super::{MqttContext, DELIVERIES_QUEUED_MAX};
use crate::config::WRITE_BUFFER_BYTES;
use crate::net::conn::{handshake_with, timeout, write_all, Io, Writer, Written};

/// How often a persistent session's positions are committed, in ms.
const POSITION_COMMIT_INTERVAL_MS: u64 = 1_000;
/// Longest client id accepted, in bytes.
const CLIENT_ID_BYTES_MAX: usize = 128;

type Reader = ReadHalf<Box<dyn Io>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ReadDone = (Reader, Vec<u8>, Result<(), CodecError>);

/// Runs a connection to completion.
pub(super) async fn run(
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    handshake_slot: crate::net::HandshakeSlot,
    ctx: Arc<MqttContext>,
) {
    let _ = tcp.set_nodelay(true);
    let limit = Duration::from_millis(ctx.net.limits.tls_handshake_timeout_ms);
    let deadline = Instant::now() + limit;
    let Some((stream, identity)) =
        Box::pin(handshake_with(tcp, peer, limit, &ctx.net, ctx.tls.as_ref())).await
    else {
        return;
    };
    drop(handshake_slot);
    let (mut reader, mut writer) = smol::io::split(stream);
    let max = ctx.config.packet_bytes_max as usize;
    let mut buf = Vec::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let first = match timeout(left, codec::read_packet(&mut reader, &mut buf, max)).await {
        Some(Ok(())) => codec::decode(None, &buf),
        Some(Err(e)) => Err(e),
        None => return,
    };
    let connect = match first {
        Ok(Inbound::Connect(c)) => c,
        Err(CodecError::UnsupportedLevel(level)) => {
            ctx.log_client(format_args!("{peer}: CONNECT with protocol level {level}"));
            let mut out = Vec::new();
            codec::encode(
                Version::V311,
                connack(reason::UNSUPPORTED_PROTOCOL_VERSION),
                &mut out,
            );
            let _ = writer.write_all(&out).await;
            return;
        }
        Ok(_) => return,
        Err(e) => {
            ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            ctx.log_client(format_args!("{peer}: bad CONNECT: {e}"));
            return;
        }
    };
    let identity = match login(&ctx, &connect, identity, peer).await {
        Ok(identity) => identity,
        Err(code) => {
            let mut out = Vec::new();
            codec::encode(connect.version, connack(code), &mut out);
            let _ = writer.write_all(&out).await;
            return;
        }
    };
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    Connection::open(&ctx, *connect, identity, peer, reader, writer)
        .await
        .serve()
        .await;
}

/// The connection's identity: its client certificate's (mTLS); else, with
/// a password file, CONNECT's user name once its password checks out;
/// else `anonymous` (the identity `handshake_with` gave). `Err`: the
/// CONNACK reason code refusing the CONNECT (MQTT 5: 0x86 bad user name
/// or password, 0x87 no user name; 3.1.1: return codes 4 and 5).
async fn login(
    ctx: &MqttContext,
    connect: &Connect,
    identity: Arc<str>,
    peer: SocketAddr,
) -> Result<Arc<str>, u8> {
    let Some(passwords) = &ctx.passwords else {
        return Ok(identity);
    };
    if ctx.tls.is_some() && ctx.net.client_auth {
        return Ok(identity);
    }
    let refuse = |code: u8, why: std::fmt::Arguments<'_>| {
        ctx.stats.login_failures.fetch_add(1, Ordering::Relaxed);
        ctx.log_client(format_args!("{peer}: CONNECT refused: {why}"));
        Err(code)
    };
    let Some(user) = &connect.username else {
        return refuse(
            reason::NOT_AUTHORIZED,
            format_args!("no user name (mqtt.password_file is set)"),
        );
    };
    // The same work with or without a password (and for unknown users).
    let password = connect.password.as_deref().unwrap_or_default();
    let checked = passwords.check(user, password.as_bytes()).await;
    if !checked || connect.password.is_none() {
        return refuse(
            reason::BAD_USER_NAME_OR_PASSWORD,
            format_args!("bad user name or password for user {user:?}"),
        );
    }
    Ok(Arc::from(user.as_str()))
}

fn connack(code: u8) -> Outbound {
    Outbound::Connack {
        session_present: false,
        code,
        receive_maximum: 1,
        packet_bytes_max: 0,
        keep_alive_s: None,
        assigned_client_id: None,
    }
}

/// What woke the connection.
enum Event {
    Read(Reader, Vec<u8>, Result<(), CodecError>),
    Acked(Acked),
    Delivery(Option<Delivery>),
    Written(Writer, Vec<u8>, Option<String>),
    Commit,
    Close(&'static str),
}

/// One accepted connection's state.
struct Connection {
    ctx: Arc<MqttContext>,
    peer: SocketAddr,
    identity: Arc<str>,
    version: Version,
    session: Session,
    claim: Option<Claim>,
    will: Option<codec::Message>,
    keep_alive: Duration,
    /// The most deliveries unacknowledged (the client's receive maximum).
    client_receive_max: usize,
    client_packet_max: usize,
    subscriptions: Subscriptions,
    deliveries: smol::channel::Receiver<Delivery>,
    reader: Option<Reader>,
    writer: Option<Writer>,
    /// Answers to send, and the buffer of the last write.
    out: Vec<u8>,
    spare: Vec<u8>,
    /// Set when the connection must close after writing what is queued.
    closing: Option<String>,
    /// Whether the will is dropped (a normal DISCONNECT).
    clean_exit: bool,
}

impl Connection {
    /// Accepts or refuses the CONNECT; a refused one is answered and
    /// marked closing.
    async fn open(
        ctx: &Arc<MqttContext>,
        connect: Connect,
        identity: Arc<str>,
        peer: SocketAddr,
        reader: Reader,
        writer: Writer,
    ) -> Connection {
        let (tx, rx) = smol::channel::bounded(DELIVERIES_QUEUED_MAX);
        let version = connect.version;
        let persistent = connect.session_expiry_s > 0;
        let mut client_id = connect.client_id.clone();
        let mut assigned = None;
        let mut refusal = None;
        if client_id.is_empty() {
            if persistent || !connect.clean_start {
                refusal = Some(reason::CLIENT_IDENTIFIER_NOT_VALID);
            }
            client_id = format!("auto-{:016x}", fastrand::u64(..));
            assigned = (version == Version::V5).then(|| client_id.clone());
        } else if client_id.len() > CLIENT_ID_BYTES_MAX || client_id.contains(char::is_control) {
            refusal = Some(reason::CLIENT_IDENTIFIER_NOT_VALID);
        }
        let keep_max = ctx.config.keep_alive_max_s;
        let keep_alive_s = match connect.keep_alive_s {
            0 => keep_max,
            s => s.min(keep_max),
        };
        let mut conn = Connection {
            ctx: ctx.clone(),
            peer,
            identity,
            version,
            session: Session::new(client_id.clone(), persistent, Shared::default()),
            claim: None,
            will: None,
            keep_alive: Duration::from_millis(u64::from(keep_alive_s) * 1_500),
            client_receive_max: usize::from(connect.receive_maximum.unwrap_or(u16::MAX).max(1)),
            client_packet_max: connect.packet_bytes_max.map_or(usize::MAX, |m| m as usize),
            subscriptions: Subscriptions::new(tx),
            deliveries: rx,
            reader: Some(reader),
            writer: Some(writer),
            out: Vec::new(),
            spare: Vec::new(),
            closing: None,
            clean_exit: false,
        };
        if let Some(code) = refusal {
            conn.ctx.log_client(format_args!(
                "{peer}: CONNECT refused: client id {:?} (empty needs a clean session; at most {CLIENT_ID_BYTES_MAX} bytes, no control characters)",
                connect.client_id
            ));
            conn.send(connack(code));
            conn.closing = Some("refused".into());
            return conn;
        }
        let (claim, kept, session_present) = ctx.sessions.claim(&client_id, !persistent);
        if !persistent {
            // A clean session forgets the positions and QoS 2 marks of an
            // earlier one.
            let group = session::group_of(&client_id);
            if let Err(e) = ctx.net.broker.forget_positions(&group).await {
                log::warn!("mqtt: could not forget {group}: {e}");
            }
            conn.forget_marks().await;
        }
        let resubscribe = kept.lock().expect("session lock").subscriptions.clone();
        conn.session = Session::new(client_id, persistent, kept);
        conn.claim = Some(claim);
        conn.will = connect.will;
        conn.send(Outbound::Connack {
            session_present,
            code: reason::SUCCESS,
            receive_maximum: ctx.config.inflight_max,
            packet_bytes_max: ctx.config.packet_bytes_max,
            keep_alive_s: (keep_alive_s != connect.keep_alive_s).then_some(keep_alive_s),
            assigned_client_id: assigned,
        });
        if !resubscribe.is_empty() {
            // A persistent session's subscriptions carry on.
            conn.subscribe(&resubscribe).await;
        }
        conn
    }

    /// Queues a packet for the client.
    fn send(&mut self, packet: Outbound) {
        codec::encode(self.version, packet, &mut self.out);
    }

    async fn subscribe(&mut self, filters: &[(String, u8)]) -> Vec<u8> {
        let who = Subscriber {
            identity: &self.identity,
            client_id: &self.session.client_id,
            persistent: self.session.persistent,
        };
        let codes = self.subscriptions.subscribe(&self.ctx, &who, filters).await;
        let mut kept = self.session.kept.lock().expect("session lock");
        for ((filter, _), code) in filters.iter().zip(&codes) {
            let kept = &mut kept.subscriptions;
            kept.retain(|(f, _)| f != filter);
            if *code <= 2 {
                kept.push((filter.clone(), *code));
            }
        }
        drop(kept);
        codes
    }

    /// The connection's loop (see the module doc).
    async fn serve(mut self) {
        let inflight_max = usize::from(self.ctx.config.inflight_max);
        let write_timeout = Duration::from_millis(self.ctx.net.limits.frame_timeout_ms);
        let packet_max = self.ctx.config.packet_bytes_max as usize;
        let mut reading: Option<BoxFuture<ReadDone>> = None;
        let mut pending: VecDeque<AckFuture> = VecDeque::new();
        let mut receiving: Option<BoxFuture<Option<Delivery>>> = None;
        let mut writing: Option<BoxFuture<Written>> = None;
        let mut keep_alive = smol::Timer::after(self.keep_alive);
        let mut commit = smol::Timer::interval(Duration::from_millis(POSITION_COMMIT_INTERVAL_MS));
        let mut ended = self.ended();
        let mut buf = Vec::new();
        loop {
            let open = self.closing.is_none();
            if open
                && reading.is_none()
                && pending.len() < inflight_max
                && self.out.len() < WRITE_BUFFER_BYTES
            {
                if let Some(mut reader) = self.reader.take() {
                    let mut b = std::mem::take(&mut buf);
                    reading = Some(Box::pin(async move {
                        let r = codec::read_packet(&mut reader, &mut b, packet_max).await;
                        (reader, b, r)
                    }));
                }
            }
            if open
                && receiving.is_none()
                && self.session.unacked.len() < self.client_receive_max
                && self.out.len() < WRITE_BUFFER_BYTES
            {
                let rx = self.deliveries.clone();
                receiving = Some(Box::pin(async move { rx.recv().await.ok() }));
            }
            if writing.is_none() && !self.out.is_empty() {
                if let Some(w) = self.writer.take() {
                    let out = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
                    writing = Some(Box::pin(write_all(w, out, write_timeout)));
                }
            }
            if !open && pending.is_empty() && writing.is_none() && self.out.is_empty() {
                break;
            }
            let event = std::future::poll_fn(|cx| {
                if let Some(f) = reading.as_mut() {
                    if let Poll::Ready((r, b, result)) = f.as_mut().poll(cx) {
                        return Poll::Ready(Event::Read(r, b, result));
                    }
                }
                if let Some(f) = pending.front_mut() {
                    if let Poll::Ready(acked) = f.as_mut().poll(cx) {
                        return Poll::Ready(Event::Acked(acked));
                    }
                }
                if let Some(f) = writing.as_mut() {
                    if let Poll::Ready((w, b, e)) = f.as_mut().poll(cx) {
                        return Poll::Ready(Event::Written(w, b, e));
                    }
                }
                if let Some(f) = receiving.as_mut() {
                    if let Poll::Ready(d) = f.as_mut().poll(cx) {
                        return Poll::Ready(Event::Delivery(d));
                    }
                }
                if open {
                    if Pin::new(&mut keep_alive).poll(cx).is_ready() {
                        return Poll::Ready(Event::Close("keep-alive expired"));
                    }
                    if let Poll::Ready(why) = ended.as_mut().poll(cx) {
                        return Poll::Ready(Event::Close(why));
                    }
                }
                if self.session.persistent && futures_lite_poll_next(&mut commit, cx) {
                    return Poll::Ready(Event::Commit);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Read(r, b, result) => {
                    reading = None;
                    self.reader = Some(r);
                    keep_alive.set_after(self.keep_alive);
                    match result.and_then(|()| codec::decode(Some(self.version), &b)) {
                        Ok(packet) => {
                            if let Some(ack) = self.handle(packet).await {
                                pending.push_back(ack);
                            }
                        }
                        Err(e) => self.fail(e),
                    }
                    buf = b;
                }
                Event::Acked(acked) => {
                    pending.pop_front();
                    self.acked(acked);
                }
                Event::Delivery(d) => {
                    receiving = None;
                    match d {
                        Some(d) => self.deliver(d),
                        None => self.closing = Some("subscriptions ended".into()),
                    }
                }
                Event::Written(w, b, error) => {
                    writing = None;
                    self.writer = Some(w);
                    self.spare = b;
                    self.spare.clear();
                    if let Some(e) = error {
                        self.out.clear();
                        pending.clear();
                        self.closing.get_or_insert(e);
                    }
                }
                Event::Commit => self.commit_positions().await,
                Event::Close(why) => {
                    if why == "taken over" && self.version == Version::V5 {
                        self.send(Outbound::Disconnect {
                            code: reason::SESSION_TAKEN_OVER,
                        });
                    }
                    if why == "keep-alive expired" && self.version == Version::V5 {
                        self.send(Outbound::Disconnect {
                            code: reason::KEEP_ALIVE_TIMEOUT,
                        });
                    }
                    self.closing = Some(why.into());
                }
            }
        }
        self.finish().await;
    }

    /// Completes when the session is taken over or the hub shuts down.
    fn ended(&self) -> BoxFuture<&'static str> {
        let shutdown = self.ctx.net.shutdown.clone();
        let claim = self
            .claim
            .as_ref()
            .map(|c| (c.taken_over.clone(), c.event.clone()));
        Box::pin(async move {
            let taken = async {
                let Some((flag, event)) = claim else {
                    return std::future::pending().await;
                };
                loop {
                    let listener = event.listen();
                    if flag.load(Ordering::Acquire) {
                        return "taken over";
                    }
                    listener.await;
                }
            };
            smol::future::or(taken, async {
                shutdown.wait().await;
                "hub shutting down"
            })
            .await
        })
    }

    /// A malformed packet or protocol error: this connection closes.
    fn fail(&mut self, e: CodecError) {
        if !matches!(e, CodecError::Closed) {
            self.ctx
                .stats
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            self.ctx.log_client(format_args!(
                "{} ({}): {e}; closing the connection",
                self.peer, self.session.client_id
            ));
            if self.version == Version::V5 {
                let code = match e {
                    CodecError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
                    _ => reason::MALFORMED_PACKET,
                };
                self.send(Outbound::Disconnect { code });
            }
        }
        self.closing = Some(e.to_string());
    }

    /// Handles one packet; a PUBLISH returns its acknowledgement to wait
    /// for.
    async fn handle(&mut self, packet: Inbound) -> Option<AckFuture> {
        match packet {
            Inbound::Publish { pkid, message } => return self.publish(pkid, message).await,
            Inbound::Puback(pkid) => self.session.acknowledged(pkid),
            Inbound::Pubrel(pkid) => self.release(pkid).await,
            // Deliveries are at QoS 0 or 1: nothing to complete.
            Inbound::Pubrec(_) | Inbound::Pubcomp(_) => {}
            Inbound::Subscribe { pkid, filters } => {
                let codes = self.subscribe(&filters).await;
                self.send(Outbound::Suback {
                    pkid,
                    codes: codes.clone(),
                });
                for ((filter, _), code) in filters.iter().zip(codes) {
                    if code <= 2 {
                        self.deliver_retained(filter, code).await;
                    }
                }
            }
            Inbound::Unsubscribe { pkid, filters } => {
                for f in &filters {
                    self.subscriptions.unsubscribe(f);
                    let mut kept = self.session.kept.lock().expect("session lock");
                    kept.subscriptions.retain(|(k, _)| k != f);
                }
                self.send(Outbound::Unsuback {
                    pkid,
                    count: filters.len(),
                });
            }
            Inbound::Pingreq => self.send(Outbound::Pingresp),
            Inbound::Disconnect { with_will } => {
                self.clean_exit = !with_will;
                self.closing = Some("DISCONNECT".into());
            }
            Inbound::Connect(_) => self.fail(CodecError::Malformed("a second CONNECT".into())),
        }
        None
    }

    async fn publish(&mut self, pkid: u16, mut message: codec::Message) -> Option<AckFuture> {
        let resend = self
            .session
            .kept
            .lock()
            .expect("session lock")
            .qos2
            .contains(&pkid);
        if message.qos == 2 && resend {
            // A resend of a QoS 2 message already stored: answer again.
            self.send(Outbound::Pubrec {
                pkid,
                code: reason::SUCCESS,
            });
            return None;
        }
        let topic = std::mem::take(&mut message.topic);
        let Some(topic) = self.session.resolve_alias(topic, message.props.topic_alias) else {
            self.send(Outbound::Disconnect {
                code: reason::TOPIC_ALIAS_INVALID,
            });
            self.closing = Some("unknown topic alias".into());
            return None;
        };
        if !super::routes::is_valid_topic(&topic) {
            self.fail(CodecError::Malformed(format!("PUBLISH to topic {topic:?}")));
            return None;
        }
        message.topic = topic;
        let once = if message.qos == 2 {
            match self.resent(pkid).await {
                Ok(Some(once)) => Some(once),
                Ok(None) => return None,
                Err(acked) => return Some(Box::pin(std::future::ready(acked))),
            }
        } else {
            None
        };
        if message.retain {
            super::retained::store(&self.ctx, &self.identity, &message).await;
        }
        let (ctx, identity, version) = (&self.ctx, &self.identity, self.version);
        Some(publish::publish(ctx, identity, version, pkid, message, once).await)
    }

    /// A QoS 2 PUBLISH of `pkid` not answered from this session's memory:
    /// a new message, or a resend whose record is stored (PUBREC queued:
    /// `Ok(None)`) or is not ([`super::exactly_once`]).
    async fn resent(&mut self, pkid: u16) -> Result<Option<publish::Once>, Acked> {
        let ctx = self.ctx.clone();
        let client_id = self.session.client_id.clone();
        let Some(mark) = ctx.marks.lookup(&ctx, &client_id, pkid).await else {
            return Ok(Some(publish::Once::New { client_id }));
        };
        match super::exactly_once::is_stored(&ctx, &mark).await {
            Ok(true) => {
                let mut kept = self.session.kept.lock().expect("session lock");
                kept.qos2.insert(pkid);
                drop(kept);
                self.send(Outbound::Pubrec {
                    pkid,
                    code: reason::SUCCESS,
                });
                Ok(None)
            }
            Ok(false) => Ok(Some(publish::Once::Resend(mark))),
            Err(e) => Err(publish::refuse(
                self.version,
                2,
                pkid,
                reason::UNSPECIFIED_ERROR,
                e.to_string(),
            )),
        }
    }

    /// PUBREL: the QoS 2 message's mark goes (durably), then PUBCOMP. If
    /// the mark cannot be deleted the connection closes (the client sends
    /// PUBREL again): answering would let a reused packet id pass for a
    /// resend.
    async fn release(&mut self, pkid: u16) {
        let kept = &self.session.kept;
        kept.lock().expect("session lock").qos2.remove(&pkid);
        let ctx = self.ctx.clone();
        let released = ctx
            .marks
            .release(&ctx, &self.identity, &self.session.client_id, pkid)
            .await;
        match released {
            Ok(()) => self.send(Outbound::Pubcomp { pkid }),
            Err(e) => {
                self.ctx.log_client(format_args!(
                    "{} ({}): PUBREL {pkid}: {e}; closing",
                    self.peer, self.session.client_id
                ));
                self.closing = Some(e.to_string());
            }
        }
    }

    fn acked(&mut self, acked: Acked) {
        match acked {
            Acked::Send { packet, qos2 } => {
                if let Some(pkid) = qos2 {
                    let mut kept = self.session.kept.lock().expect("session lock");
                    kept.qos2.insert(pkid);
                }
                self.send(packet);
            }
            Acked::Nothing => {}
            Acked::Close(why) => {
                self.ctx.log_client(format_args!(
                    "{} ({}): {why}; closing (MQTT 3.1.1 has no negative PUBACK)",
                    self.peer, self.session.client_id
                ));
                self.closing = Some(why);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let pkid = (d.message.qos > 0).then(|| self.session.next_pkid());
        let before = self.out.len();
        self.send(Outbound::Publish {
            pkid: pkid.unwrap_or(0),
            message: d.message,
        });
        if self.out.len() - before > self.client_packet_max {
            // MQTT 5: a packet larger than the client takes is dropped.
            self.out.truncate(before);
            self.session.delivered(d.topic, d.partition, d.offset, None);
            return;
        }
        self.ctx.stats.delivered.fetch_add(1, Ordering::Relaxed);
        self.session.delivered(d.topic, d.partition, d.offset, pkid);
    }

    /// Sends the retained messages matching `filter` (after its SUBACK).
    async fn deliver_retained(&mut self, filter: &str, qos: u8) {
        for message in super::retained::matching(&self.ctx, filter, qos).await {
            let pkid = (qos > 0).then(|| self.session.next_pkid());
            if let Some(pkid) = pkid {
                self.session.reserve(pkid);
            }
            self.send(Outbound::Publish {
                pkid: pkid.unwrap_or(0),
                message,
            });
        }
    }

    /// Deletes the client's QoS 2 marks (a session that is not kept).
    async fn forget_marks(&self) {
        let ctx = &self.ctx;
        let client_id = &self.session.client_id;
        if let Err(e) = ctx
            .marks
            .forget_client(ctx, &self.identity, client_id)
            .await
        {
            log::warn!("mqtt: could not forget the QoS 2 marks of {client_id}: {e}");
        }
    }

    async fn commit_positions(&mut self) {
        let positions = self.session.positions_to_commit();
        if positions.is_empty() {
            return;
        }
        let group = session::group_of(&self.session.client_id);
        if let Err(e) = self
            .ctx
            .net
            .broker
            .commit_positions(&group, positions)
            .await
        {
            log::warn!("mqtt: could not commit the positions of {group}: {e}");
        }
    }

    /// After the loop: the will, the last positions, the session kept.
    async fn finish(mut self) {
        if !self.clean_exit {
            if let Some(will) = self.will.take() {
                if will.retain {
                    super::retained::store(&self.ctx, &self.identity, &will).await;
                }
                let ack =
                    publish::publish(&self.ctx, &self.identity, self.version, 0, will, None).await;
                // Waits for the will's ack level like any publish.
                let _ = ack.await;
            }
        }
        if self.session.persistent {
            self.commit_positions().await;
        } else {
            self.forget_marks().await;
        }
        if let Some(claim) = self.claim.take() {
            self.ctx.sessions.release(
                &self.session.client_id,
                claim.generation,
                self.session.persistent,
                &self.session.kept,
            );
        }
    }
}

/// Whether an interval timer fired (polls it as a stream).
fn futures_lite_poll_next(timer: &mut smol::Timer, cx: &mut std::task::Context<'_>) -> bool {
    use smol::stream::Stream;
    matches!(Pin::new(timer).poll_next(cx), Poll::Ready(Some(_)))
}
