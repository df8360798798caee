//! The `eddy://` upstream: another eddy, over its native protocol (TLS,
//! client certificate optional).
//!
//! A session opens two connections: bulk (pipelined `MirrorProduce`
//! requests) and control (topic set-up and the liveness ping, so a ping
//! never waits behind a megabyte of batches). A topic is created upstream
//! with the same partition count and `mirror.source = HUB/TOPIC`; the
//! upstream refuses other writers to it and stores each forwarded batch at
//! its source offset, so an upstream partition's log end is exactly where
//! the source resumes sending, and a replay is recognised and skipped.
//! What counts as acknowledged is only what is below the upstream's
//! durable end: records appended upstream but not yet fsynced there are
//! not yet `mirrored` (and stay here) until the upstream's durable end
//! passes them (an acknowledgement of a later request, or a look at its
//! watermarks every `link::TOPIC_SCAN_MS`).
//!
//! Compression (the link's `compression`, lz4 or zstd) is negotiated in
//! `Hello`: the link says [`PROTOCOL_VERSION_COMPRESSED_MIRROR`] and, when
//! an older upstream answers `UnsupportedVersion`, connects again with
//! version 1 and sends that session's requests uncompressed.

use std::sync::Arc;
use std::time::Duration;

use super::{MirrorError, UpstreamEnd};
use crate::client::{Client, ClientError, ClientOptions, ClientTls};
use crate::compression::compress;
use crate::config::mirror::UplinkCompression;
use crate::config::MirrorLinkConfig;
use crate::wire::{
    Compression, ErrorCode, MirrorProduce, MirrorProduceCompressed, MirrorProduced, Request,
    Response, PROTOCOL_VERSION, PROTOCOL_VERSION_COMPRESSED_MIRROR,
};

/// Bytes of a `MirrorProduce` frame besides its batches (names, fields),
/// kept free below the upstream's frame limit.
const MIRROR_PRODUCE_OVERHEAD_BYTES: u32 = 4 << 10;
/// Time to connect and say Hello, in ms.
const EDDY_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// A connected session to an eddy upstream.
pub struct EddySession {
    bulk: Client,
    control: Arc<Client>,
    hub: String,
    request_timeout_ms: u32,
    /// Most batch bytes per request (the link's setting, capped by the
    /// upstream's frame limit).
    request_bytes_max: usize,
    /// The codec of this session's requests (`None`: uncompressed, by
    /// setting or because the upstream is older).
    compression: Option<Compression>,
}

/// Connects bulk and control speaking `protocol_version`.
async fn connect_pair(
    options: &ClientOptions,
    tls: &Option<Arc<rustls::ClientConfig>>,
    protocol_version: u16,
) -> Result<(Client, Client), ClientError> {
    let bulk = Client::connect_speaking(options, tls.clone(), protocol_version).await?;
    let control = Client::connect_speaking(options, tls.clone(), protocol_version).await?;
    Ok((bulk, control))
}

/// Connects bulk and control offering compression when `wanted`; falls
/// back to version 1 (uncompressed) when the upstream does not speak it.
async fn connect_negotiating(
    options: &ClientOptions,
    tls: &Option<Arc<rustls::ClientConfig>>,
    wanted: Option<Compression>,
) -> Result<(Client, Client, Option<Compression>), ClientError> {
    if wanted.is_some() {
        match connect_pair(options, tls, PROTOCOL_VERSION_COMPRESSED_MIRROR).await {
            Ok((bulk, control)) => return Ok((bulk, control, wanted)),
            Err(e) if e.code() == Some(ErrorCode::UnsupportedVersion) => {
                log::info!(
                    "mirror: {} is an older eddy without compressed mirror requests: sending uncompressed",
                    options.server
                );
            }
            Err(e) => return Err(e),
        }
    }
    let (bulk, control) = connect_pair(options, tls, PROTOCOL_VERSION).await?;
    Ok((bulk, control, None))
}

impl EddySession {
    /// Connects (bulk and control) to the first address that answers.
    pub async fn connect(
        config: &MirrorLinkConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        hub: &str,
    ) -> Result<EddySession, MirrorError> {
        let mut last = None;
        for addr in &config.addrs {
            let options = ClientOptions {
                server: addr.clone(),
                tls: (!config.insecure_plaintext).then(|| ClientTls {
                    ca: config.ca.clone().unwrap_or_default(),
                    server_name: config.server_name.clone(),
                    identity: config.cert.clone().zip(config.key.clone()),
                }),
                client_id: format!("eddy-mirror {hub} {}", config.name),
                connect_timeout: Duration::from_millis(EDDY_CONNECT_TIMEOUT_MS),
            };
            let wanted = match config.compression {
                UplinkCompression::Lz4 => Some(Compression::Lz4),
                UplinkCompression::Zstd => Some(Compression::Zstd),
                // Snappy is refused for eddy:// links by the config check.
                UplinkCompression::None | UplinkCompression::Snappy => None,
            };
            match connect_negotiating(&options, &tls, wanted).await {
                Ok((bulk, control, compression)) => {
                    let frame_cap = bulk
                        .server_info()
                        .frame_bytes_max
                        .saturating_sub(MIRROR_PRODUCE_OVERHEAD_BYTES);
                    let request_bytes_max =
                        usize::try_from(config.request_bytes_max.min(frame_cap)).unwrap_or(0);
                    return Ok(EddySession {
                        bulk,
                        control: Arc::new(control),
                        hub: hub.to_string(),
                        request_timeout_ms: u32::try_from(config.request_timeout_ms)
                            .unwrap_or(u32::MAX),
                        request_bytes_max,
                        compression,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || MirrorError::Upstream("no address".into()),
            MirrorError::from,
        ))
    }

    /// Most batch bytes per request.
    pub fn request_bytes_max(&self) -> usize {
        self.request_bytes_max
    }

    /// The connection pings go over.
    pub fn control(&self) -> Arc<Client> {
        self.control.clone()
    }

    /// Makes sure `upstream` exists as a mirror of this hub's
    /// `source_topic` with at least `partitions` partitions, and returns
    /// per partition where it stands: sending resumes at its log end (a
    /// replay of what it appended is skipped), but only what is below its
    /// durable end counts as acknowledged (an upstream crash loses the
    /// rest, and the next session sends it again). `None` when the
    /// partition never received anything.
    pub async fn prepare(
        &mut self,
        upstream: &str,
        source_topic: &str,
        partitions: u32,
    ) -> Result<Vec<Option<UpstreamEnd>>, MirrorError> {
        let source = format!("{}/{source_topic}", self.hub);
        let topic_error = |message: String| MirrorError::Topic {
            topic: upstream.to_string(),
            message,
        };
        let info = match self.control.describe_topic(upstream).await {
            Ok(info) => info,
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => {
                let configs = [("mirror.source".to_string(), source.clone())];
                match self
                    .control
                    .create_topic_with(upstream, partitions, &configs)
                    .await
                {
                    Ok(info) => {
                        log::info!(
                            "mirror: created upstream topic {upstream} with {partitions} partitions"
                        );
                        info
                    }
                    // Created meanwhile (an earlier session's request).
                    Err(e) if e.code() == Some(ErrorCode::TopicExists) => {
                        self.control.describe_topic(upstream).await?
                    }
                    Err(e) if e.code().is_some() => return Err(topic_error(e.to_string())),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) if e.code().is_some() => return Err(topic_error(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let recorded = info
            .configs
            .iter()
            .find(|(n, _)| n == "mirror.source")
            .map(|(_, v)| v.as_str());
        if recorded != Some(source.as_str()) {
            return Err(topic_error(format!(
                "exists upstream but is not a mirror of {source} (mirror.source = {}): \
                 pick another topic_name for this link, or delete that topic upstream",
                recorded.unwrap_or("unset")
            )));
        }
        if info.partitions < partitions {
            return Err(topic_error(format!(
                "has {} partitions upstream but {partitions} here (partition i goes to upstream partition i)",
                info.partitions
            )));
        }
        let marks = self.control.watermarks(upstream).await?;
        Ok((0..partitions)
            .map(|p| {
                marks
                    .iter()
                    .find(|m| m.partition == p)
                    .filter(|m| m.log_end > 0)
                    .map(|m| UpstreamEnd {
                        send_from: m.log_end,
                        durable: m.durable.min(m.log_end),
                        tail_chain: None,
                    })
            })
            .collect())
    }

    /// The durable end of every partition of `upstream`.
    pub async fn durable_ends(&self, upstream: &str) -> Result<Vec<(u32, u64)>, MirrorError> {
        let marks = self.control.watermarks(upstream).await?;
        Ok(marks.iter().map(|m| (m.partition, m.durable)).collect())
    }

    /// Writes batches (stored bytes, producer stamps cleared) of one
    /// partition, compressed when the session does; the task completes
    /// when the upstream has them durably. Also returns the bytes of the
    /// request's batches as sent (after compression).
    pub async fn send(
        &mut self,
        upstream: &str,
        source_topic: &str,
        partition: u32,
        batches: Vec<u8>,
    ) -> Result<(smol::Task<Result<MirrorProduced, MirrorError>>, usize), MirrorError> {
        let produce = |batches| MirrorProduce {
            source_hub: &self.hub,
            source_topic,
            topic: upstream,
            partition,
            timeout_ms: self.request_timeout_ms,
            batches,
        };
        let (pending, sent_bytes) = match self.compression {
            None => (
                self.bulk
                    .start(Request::MirrorProduce(produce(&batches)))
                    .await?,
                batches.len(),
            ),
            Some(codec) => {
                // The request's batches fit in a frame, so in a u32.
                let raw_bytes = u32::try_from(batches.len()).unwrap_or(u32::MAX);
                let packed = smol::unblock(move || compress(codec, &batches))
                    .await
                    .map_err(|e| MirrorError::Protocol(e.to_string()))?;
                let request = Request::MirrorProduceCompressed(MirrorProduceCompressed {
                    compression: codec,
                    raw_bytes,
                    produce: produce(&packed),
                });
                (self.bulk.start(request).await?, packed.len())
            }
        };
        let task = smol::spawn(async move {
            let body = pending.response().await?;
            match body.decode()? {
                Response::MirrorProduced(done) => Ok(done),
                _ => Err(MirrorError::Protocol(
                    "MirrorProduce answered with something else".into(),
                )),
            }
        });
        Ok((task, sent_bytes))
    }
}
