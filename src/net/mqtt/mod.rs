//! The MQTT 3.1.1 / 5.0 listener: devices that speak MQTT publish into
//! eddy's durable topics and subscribe to them.
//!
//! A front end only: it frames and translates. A PUBLISH becomes a record
//! (the MQTT topic in a header, MQTT 5 properties as headers) appended
//! through the broker's protocol-neutral [`crate::broker::Broker::produce_to`]
//! to the eddy topic and key its route names ([`routes`]); a subscription
//! reads eddy topics with [`crate::broker::Broker::fetch_from`]. No MQTT
//! type reaches the broker or storage, and nothing here touches storage.
//!
//! Layout: [`codec`] (framing with the size bound; `codec_v4`, `codec_v5`:
//! the `mqtt-codec-kit` crate's packets ⇄ neutral ones), [`conn`] (the
//! connection loop: CONNECT, keep-alive, ordered acks, writes), `session`
//! (client ids, takeover, packet ids, QoS 2 state), [`exactly_once`] (QoS 2
//! across hub restarts: durable marks and nonces), `publish` (PUBLISH →
//! record → ack at the route's level), `subscribe` (SUBSCRIBE → delivery
//! tasks; persistent positions), [`retained`], [`routes`].
//!
//! Connections share the native listener's admission ([`super::NetContext`]:
//! connections in all and per source, handshake timeout), and have their
//! own bounds: `mqtt.packet_bytes_max`, `mqtt.inflight_max` (receive
//! maximum), `mqtt.keep_alive_max_s`, [`DELIVERIES_QUEUED_MAX`].
//!
//! Not here: shared subscriptions, bridges, AUTH exchanges (enhanced
//! authentication) — see README "MQTT devices".

pub mod codec;
mod codec_v4;
mod codec_v5;
mod conn;
pub mod exactly_once;
pub mod passwords;
mod publish;
pub mod retained;
pub mod routes;
mod session;
mod subscribe;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_net::TcpListener;

use super::NetContext;
use crate::config::MqttConfig;
use crate::log_limit::LogLimiter;
use routes::Router;
use session::Sessions;

/// Messages a connection's subscriptions may have queued for it before
/// their delivery tasks wait (back-pressure on the reads).
pub const DELIVERIES_QUEUED_MAX: usize = 64;

/// Counters of the MQTT listener (for metrics and tests).
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connections: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub denied: AtomicU64,
    /// CONNECTs refused for their user name or password.
    pub login_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
}

/// What every MQTT connection shares.
pub struct MqttContext {
    /// Admission, limits, executor, shutdown and the broker.
    pub net: Arc<NetContext>,
    pub config: MqttConfig,
    pub router: Router,
    /// `None`: plaintext (loopback, or the operator's loud waiver).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `Some`: CONNECT must log in, unless a client certificate did.
    pub passwords: Option<Arc<passwords::PasswordStore>>,
    pub stats: MqttStats,
    sessions: Sessions,
    /// QoS 2 marks (exactly once across restarts).
    marks: exactly_once::Marks,
    /// Bounds the log lines clients can trigger (denials, bad packets).
    log: LogLimiter,
}

impl MqttContext {
    pub fn new(
        net: Arc<NetContext>,
        config: MqttConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        passwords: Option<Arc<passwords::PasswordStore>>,
    ) -> MqttContext {
        MqttContext {
            router: Router::new(config.routes.clone()),
            net,
            config,
            tls,
            passwords,
            stats: MqttStats::default(),
            sessions: Sessions::default(),
            marks: exactly_once::Marks::default(),
            log: LogLimiter::new(),
        }
    }

    /// Logs a line a client caused, within the rate bound.
    fn log_client(&self, line: std::fmt::Arguments<'_>) {
        if let Some(left_out) = self.log.admit() {
            log::warn!(
                "mqtt: {line}{}",
                crate::log_limit::suppressed_note(left_out)
            );
        }
    }
}

/// Accepts MQTT connections until shutdown.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<MqttContext>) {
    let net = ctx.net.clone();
    super::accept_loop_with(listener, net, move |stream, peer, slot, _net| {
        conn::run(stream, peer, slot, ctx.clone())
    })
    .await
}
