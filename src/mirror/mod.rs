//! Mirroring upstream: store-and-forward of local topics into another eddy
//! (`eddy://`) or a Kafka-protocol cluster (`kafka://`), exactly once.
//!
//! The mirror is a consumer of local storage with its own connections and
//! its own bounded queues: it never sits in a producer's path (only
//! `acks=mirrored` producers wait for it). Per link, one task
//! ([`link`]) runs sessions: connect, make sure each selected topic exists
//! upstream (`{hub_id}.{topic}` by default, same partition count, partition
//! i → upstream partition i), learn from the upstream where each partition
//! stands, then forward durable batches in topic-priority order and advance
//! the `mirrored` watermark when the upstream acknowledges.
//!
//! Exactly once without transactions: each upstream partition has exactly
//! one writer (this hub's link), and every session starts from what the
//! upstream has, whatever the local cursor says:
//! - `eddy://` ([`eddy`]): batches keep their source offsets
//!   (`MirrorProduce`); the upstream stores each at its offset and skips
//!   replays, so its log end is the resume point.
//! - `kafka://` ([`kafka`]): every record carries its source position in
//!   the `eddy.source` header ([`records`]); the session reads the tail of
//!   each upstream partition (ListOffsets, Fetch) and resumes after the last
//!   source offset found there. Each upstream partition keeps one
//!   idempotent producer chain across sessions and restarts ([`chain`]),
//!   with sequence numbers that follow the records, so a request of an
//!   earlier session that lands after the next one resent its records is
//!   a duplicate (or out of order) for Kafka, never appended twice.
//!
//! A failed session is retried with capped exponential backoff and jitter
//! ([`backoff`]); liveness is a ping on a control connection of its own, so
//! it never waits behind bulk data. The durable cursors ([`crate::storage`])
//! and `keep_from` keep unmirrored data from retention and the disk budget
//! unless the topic says `on_full.unmirrored=drop`.
//!
//! This module reads storage through its API (never sled) and never handles
//! device connections.

mod backoff;
mod chain;
mod eddy;
mod kafka;
mod link;
pub mod records;
pub mod state;
mod throttle;

use std::path::Path;
use std::sync::Arc;

use smol::Executor;

pub use state::{LinkSnapshot, LinkState, MirrorState, PartitionSnapshot};

use crate::client::ClientError;
use crate::config::MirrorLinkConfig;
use crate::shutdown::Shutdown;
use crate::storage::{Storage, StorageError};
use crate::tls::{self, TlsError};

/// Errors of the mirror.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirror link {link}: {source}")]
    Tls { link: String, source: Box<TlsError> },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source} (does the link's ca name the CA that signed the upstream's certificate?)")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} lost: {reason}")]
    Closed { addr: String, reason: String },
    #[error("upstream refused: {0}")]
    Upstream(String),
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error(
        "upstream {topic}/{partition} refused a batch for its producer chain: {message}; \
         the next session resumes from the partition's tail"
    )]
    ProducerState {
        topic: String,
        partition: u32,
        /// Kafka's error code.
        code: i16,
        message: String,
    },
    #[error("upstream did not answer {what} within {ms} ms")]
    Timeout { what: String, ms: u64 },
    #[error("upstream sent something undecodable: {0}")]
    Protocol(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where an upstream partition stands, as a session learns it on (re)connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UpstreamEnd {
    /// The source offset to send next: the upstream has every offset below
    /// (an `eddy://` upstream: appended, perhaps not durable yet; it skips
    /// a replay of what it has, so sending from here is safe either way).
    send_from: u64,
    /// Every source offset below this one is durable upstream (at most
    /// `send_from`): all that the `mirrored` watermark, the cursor and
    /// `keep_from` may claim.
    durable: u64,
    /// `kafka://`: the producer chain after the upstream's last record of
    /// this source (`None` when it holds none, or it was not written by an
    /// idempotent producer).
    tail_chain: Option<crate::storage::ProducerChain>,
}

/// The running mirror: its shared state and its link tasks.
pub struct Mirror {
    pub state: Arc<MirrorState>,
    tasks: Vec<smol::Task<()>>,
}

impl Mirror {
    /// Waits for the link tasks to end (after shutdown was triggered).
    pub async fn join(self) {
        for task in self.tasks {
            task.await;
        }
    }
}

/// Starts one task per link on `executor`. Before it returns, every
/// partition of a mirrored topic keeps its unmirrored data (`keep_from`
/// from the durable cursors), so maintenance never races the mirror.
/// Fails when a link's TLS files do not load.
pub fn start(
    storage: Arc<Storage>,
    hub_id: &str,
    links: &[MirrorLinkConfig],
    executor: &Arc<Executor<'static>>,
    shutdown: Arc<Shutdown>,
) -> Result<Mirror, MirrorError> {
    let state = Arc::new(MirrorState::new(hub_id, links));
    let mut tls_configs = Vec::with_capacity(links.len());
    for link in links {
        tls_configs.push(client_tls(link)?);
    }
    let filter_state = state.clone();
    storage.set_mirror_filter(Arc::new(move |topic: &str| filter_state.is_mirrored(topic)));
    for link in state.links() {
        link::track_local(&state, link, &storage)?;
    }
    let mut tasks = Vec::with_capacity(links.len());
    for (link, tls_config) in state.links().iter().zip(tls_configs) {
        let task = executor.spawn(link::run(
            state.clone(),
            link.clone(),
            storage.clone(),
            tls_config,
            shutdown.clone(),
        ));
        tasks.push(task);
        log::info!(
            "mirror link {} to {} (topics: {})",
            link.name(),
            link.config.url,
            describe_selection(&link.config)
        );
    }
    Ok(Mirror { state, tasks })
}

fn describe_selection(config: &MirrorLinkConfig) -> String {
    match (config.topics.is_empty(), &config.pattern) {
        (true, None) => "all".into(),
        (false, None) => config.topics.join(","),
        (true, Some(p)) => format!("/{p}/"),
        (false, Some(p)) => format!("{} and /{p}/", config.topics.join(",")),
    }
}

/// The rustls configuration of a link: trusts its `ca`, presents its
/// client certificate when it has one. `None`: plaintext.
fn client_tls(link: &MirrorLinkConfig) -> Result<Option<Arc<rustls::ClientConfig>>, MirrorError> {
    let Some(ca) = &link.ca else {
        return Ok(None);
    };
    let tls_error = |source| MirrorError::Tls {
        link: link.name.clone(),
        source: Box::new(source),
    };
    let identity = match (&link.cert, &link.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    client_config(ca, identity).map_err(tls_error).map(Some)
}

/// A client config trusting exactly the CAs in `ca`, presenting `identity`
/// (certificate chain and key) to upstreams that ask for one.
fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(tls::load_certs(cert)?, tls::load_key(key)?)
            .map_err(|source| TlsError::BadPair {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            })?,
    };
    Ok(Arc::new(config))
}

/// Host part of `host:port`, for TLS server names.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
