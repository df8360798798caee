//! eddy: a small durable event hub for gateways.
//!
//! Devices send keyed records over TLS; eddy stores them in partitioned,
//! offset-addressed logs on the gateway's disk (Kafka's model: topics,
//! partitions, keys, offsets) and acknowledges them at the level the producer
//! asked for (`received`, `durable`, or `mirrored` upstream).
//!
//! # Layout
//!
//! Data flows one way: `net → wire (pure codec) → broker → storage`.
//!
//! - [`wire`]: the device protocol. Frames, requests, responses, error codes,
//!   the record batch format and the partitioner. Pure (bytes ⇄ types), no I/O,
//!   and `no_std` without the `std` feature so firmware shares these exact types.
//! - `storage`: the only module that touches sled. Partition logs of CRC-checked
//!   batches, topic metadata and settings, group commit (one fsync covers many
//!   writes), retention, compaction, the disk budget, committed group offsets.
//! - `broker`: applies requests to storage: partitioning, topic auto-creation,
//!   waiting for durability, long-poll fetches, the consumer group coordinator.
//! - `net`: TLS listener, connection limits, frame reading and writing.
//! - `metrics`: the Prometheus `/metrics` endpoint; reads the other layers'
//!   counters, keeps none of its own.
//! - `reload`: reloads files (TLS certificate and key, client CA, ACL file)
//!   on SIGHUP or change.
//! - `acl`: the ACL file (who may produce, consume, administer what); the
//!   broker applies it to each request with the identity `net` passes.
//! - `log_limit`: rate bounds for log lines outsiders can trigger.
//! - `mirror`: forwards topics upstream (another eddy, or a Kafka-protocol
//!   cluster), exactly once, store-and-forward; a consumer of storage.
//! - `client`: an async client for the protocol (CLI, benchmarks, tests).
//! - `compression`: LZ4 and zstd of `eddy://` mirror requests (pure).
//! - `cli`: the `eddy` command line (argh).
//!
//! Everything but [`wire`] needs the `server` feature (on by default).

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod wire;

#[cfg(feature = "server")]
pub mod acl;
#[cfg(feature = "server")]
pub mod broker;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
pub mod compression;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod kafka_records;
#[cfg(feature = "server")]
pub mod log_limit;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod mirror;
#[cfg(feature = "server")]
pub mod net;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod time;
#[cfg(feature = "server")]
pub mod tls;
