//! The Kafka-protocol listener: stock Kafka clients (librdkafka, kcat,
//! KafkaJS, Java) produce to and consume from eddy's topics.
//!
//! Framing and translation only: a request is decoded with the
//! `kafka-protocol` crate (its `broker` feature), checked against the ACL
//! ([`crate::broker::Broker::authorize`], the same rules as the native
//! protocol), turned into the broker's protocol-neutral operations
//! ([`crate::broker::ops`]) and the answer encoded back. No Kafka type
//! reaches the broker or storage; record batches are converted at this edge
//! ([`crate::kafka_records`]).
//!
//! Semantics (eddy's, not a parallel model): Kafka topics are eddy topics;
//! offsets are eddy's offsets; a consumer reads only durable records (the
//! high watermark and the last stable offset are the durable end); acks=0
//! and acks=1 are answered when appended (`received`; acks=0 gets no
//! answer at all), acks=all when fsynced (`durable`). One node (id
//! [`NODE_ID`]) leads every partition, at the advertised host and port.
//!
//! Connections are admitted by the same accept loop and limits as the
//! native listener (connections in all and per source, TLS handshake
//! timeout), with this listener's own counters; frames are bounded by
//! `limits.frame_bytes_max` (checked before the body is allocated),
//! requests in flight per connection by `limits.inflight_max`, an idle
//! connection is closed after `limits.idle_timeout_ms`.
//!
//! Identity: with TLS, the client certificate's (as for devices) or
//! `anonymous`; a plaintext client (loopback only, see
//! [`crate::config::KafkaConfig`]) is [`KAFKA_LOCAL_IDENTITY`], which ACL
//! rules can name.
//!
//! Consumer groups speak the classic protocol (client-side assignment,
//! [`groups`]); their committed offsets are eddy's.
//!
//! Idempotent producers get a producer session from InitProducerId; their
//! sequences count per partition on eddy's producer state
//! ([`crate::broker::producer_sessions`]).
//!
//! Admin calls (CreateTopics, DeleteTopics, DescribeConfigs, ListGroups,
//! DescribeAcls) are in [`admin`].
//!
//! Not here: transactions, KIP-848 groups, quotas; an
//! unsupported request is answered per ApiVersions' promise, i.e. never
//! sent by a client that asked (see [`versions`]).

mod admin;
mod conn;
mod errors;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod versions;

use std::sync::Arc;

use async_net::TcpListener;

use super::NetContext;

/// The identity of a plaintext (loopback) Kafka client, for ACL rules.
pub const KAFKA_LOCAL_IDENTITY: &str = "kafka-local";

/// This hub's node id in Metadata answers (it leads every partition).
pub const NODE_ID: i32 = 0;

/// What every Kafka connection shares.
pub struct KafkaContext {
    /// Broker, limits, TLS, counters of this listener.
    pub net: Arc<NetContext>,
    /// Host and port Metadata names for this node (what clients reach).
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Accepts Kafka connections until shutdown.
pub async fn accept_loop(listener: TcpListener, ctx: Arc<KafkaContext>) {
    let net = ctx.net.clone();
    super::accept_loop_with(listener, net, move |tcp, peer, slot, _| {
        conn::run(tcp, peer, slot, ctx.clone())
    })
    .await
}
