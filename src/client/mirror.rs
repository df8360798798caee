//! Client calls about mirroring: the status of a hub's mirror links (owned
//! copies of the wire types, for the CLI and tests).
//!
//! The mirror's own writes (`MirrorProduce`) are sent by `crate::mirror`
//! through [`Client::start`]; nothing here writes records.

use serde::Serialize;

use super::{unexpected, Client, ClientError};
use crate::wire::{Request, Response, TopicRef};

/// One mirror link of a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorLinkInfo {
    pub link: String,
    pub upstream: String,
    /// `connecting`, `up` or `down`.
    pub state: String,
    pub state_since_ms: u64,
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    pub reconnects: u64,
    pub records_mirrored: u64,
    pub bytes_mirrored: u64,
    pub dropped_records: u64,
    pub partitions: Vec<MirrorPartitionInfo>,
}

/// One partition of a mirror link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorPartitionInfo {
    pub topic: String,
    pub upstream_topic: String,
    pub partition: u32,
    pub mirrored: u64,
    pub log_end: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
}

impl Client {
    /// State, watermark and lag of every mirror link of the hub (empty
    /// when it has none).
    pub async fn mirror_status(&self) -> Result<Vec<MirrorLinkInfo>, ClientError> {
        let body = self.call(Request::MirrorStatus).await?;
        match body.decode()? {
            Response::MirrorStatus(links) => Ok(links
                .iter()
                .map(|l| MirrorLinkInfo {
                    link: l.link.to_string(),
                    upstream: l.upstream.to_string(),
                    state: l.state.name().to_string(),
                    state_since_ms: l.state_since_ms,
                    last_error: l.last_error.map(str::to_string),
                    last_error_ms: l.last_error_ms,
                    reconnects: l.reconnects,
                    records_mirrored: l.records_mirrored,
                    bytes_mirrored: l.bytes_mirrored,
                    dropped_records: l.dropped_records,
                    partitions: l
                        .partitions
                        .iter()
                        .map(|p| MirrorPartitionInfo {
                            topic: p.topic.to_string(),
                            upstream_topic: p.upstream_topic.to_string(),
                            partition: p.partition,
                            mirrored: p.mirrored,
                            log_end: p.log_end,
                            lag_records: p.lag_records,
                            lag_bytes: p.lag_bytes,
                        })
                        .collect(),
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Per partition of `topic`, each mirror link's `mirrored` watermark
    /// (from the Watermarks reply): `(partition, [(link, offset)])`.
    pub async fn mirrored_watermarks(
        &self,
        topic: &str,
    ) -> Result<Vec<(u32, Vec<(String, u64)>)>, ClientError> {
        let body = self.call(Request::Watermarks(TopicRef { topic })).await?;
        match body.decode()? {
            Response::Watermarks(w) => Ok(w
                .iter()
                .map(|m| {
                    let links = m
                        .mirrored
                        .iter()
                        .map(|l| (l.link.to_string(), l.offset))
                        .collect();
                    (m.partition, links)
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }
}
