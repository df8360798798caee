//! The device protocol: frames, requests, responses, error codes.
//!
//! This module is pure (bytes ⇄ types) and compiles without `std`: firmware
//! links exactly these type definitions (with `default-features = false`), so
//! the device and the server can never disagree about the wire format.
//! It does no I/O, knows nothing about storage, and never allocates unless the
//! `std` feature is on (then [`List`] is a `Vec`; without it a `heapless::Vec`).
//!
//! # Framing
//!
//! A frame is a `u32` big-endian length followed by that many bytes of a
//! postcard-encoded [`RequestFrame`] or [`ResponseFrame`]. The reader checks the
//! length against its maximum **before** allocating or reading the body
//! ([`decode_frame_len`]). Every request carries a correlation id; a client
//! may pipeline requests and the server answers each with the same id
//! (not necessarily in order).
//!
//! # Stability
//!
//! postcard encodes structs positionally and enums by variant index. The
//! variant order of [`Request`], [`Response`] and [`ErrorCode`] is therefore
//! part of the protocol: new variants go at the end, and a change to an
//! existing layout bumps [`PROTOCOL_VERSION`].

pub mod batch;
mod checksum;
pub mod device;
pub mod partitioner;
pub mod producer;

pub use checksum::crc32c;

/// Byte-slice fields written in one copy. serde serialises a `[u8]` as a
/// sequence, one `u8` at a time; postcard encodes a sequence of bytes and
/// a byte string alike (varint length, then the bytes), so
/// `serialize_bytes` gives the very same wire bytes, only without a call
/// per byte. Decoding is unchanged (serde borrows `&[u8]` as bytes).
pub(crate) mod raw_bytes {
    use serde::{Serialize, Serializer};

    pub(crate) fn bytes<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    pub(crate) fn option_bytes<S: Serializer>(
        bytes: &Option<&[u8]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => serializer.serialize_some(&Bytes(b)),
            None => serializer.serialize_none(),
        }
    }
}
pub use producer::{InitProducer, ProducerInit};

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks (sent in [`Hello`]).
pub const PROTOCOL_VERSION: u16 = 1;

/// Version 1 plus [`Request::MirrorProduceCompressed`]: a mirror link that
/// compresses says `Hello` with this version. A server that answers `Hello`
/// to it takes compressed mirror requests on that connection; an older one
/// answers `UnsupportedVersion`, and the link says `Hello` again with
/// [`PROTOCOL_VERSION`] and sends uncompressed. Every frame of version 1
/// is unchanged (firmware keeps saying version 1).
pub const PROTOCOL_VERSION_COMPRESSED_MIRROR: u16 = 2;

/// Bytes of the big-endian length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Default upper bound of a frame body (after the prefix), in bytes: 1 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 1 << 20;

/// Default upper bound of one produced batch, in bytes (Kafka's
/// `message.max.bytes`). Must stay below the frame maximum.
pub const BATCH_BYTES_MAX_DEFAULT: u32 = 1_000_000;

/// Longest topic name, in bytes (as Kafka).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Longest client id, in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 255;

/// Capacity of a [`List`] when built without `std` (firmware). Longer lists
/// fail to decode with a clear error rather than overflowing.
pub const LIST_LEN_MAX_NO_STD: usize = 8;

/// A sequence on the wire. With `std` it is a `Vec`; without it a
/// `heapless::Vec` of [`LIST_LEN_MAX_NO_STD`] elements. postcard encodes both
/// identically (varint length, then the elements).
#[cfg(feature = "std")]
pub type List<T> = std::vec::Vec<T>;
/// A sequence on the wire (`no_std`: a bounded `heapless::Vec`).
#[cfg(not(feature = "std"))]
pub type List<T> = heapless::Vec<T, LIST_LEN_MAX_NO_STD>;

/// A request with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame<'a> {
    /// Chosen by the client; echoed in the response.
    pub correlation_id: u32,
    #[serde(borrow)]
    pub request: Request<'a>,
}

/// A response to the request with the same correlation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame<'a> {
    pub correlation_id: u32,
    #[serde(borrow)]
    pub response: Response<'a>,
}

/// Everything a client can ask. The first request on a connection must be
/// [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Opens the session: protocol version and who is asking.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Liveness check; answered with [`Response::Pong`] carrying the same nonce.
    Ping(Ping),
    /// Append a batch of records to a topic.
    #[serde(borrow)]
    Produce(Produce<'a>),
    /// Read batches from one or more partitions of a topic (long poll).
    #[serde(borrow)]
    Fetch(Fetch<'a>),
    /// Hub facts and topics with their partition counts. An empty list asks
    /// for every topic ("list topics").
    #[serde(borrow)]
    Metadata(Metadata<'a>),
    /// Create a topic.
    #[serde(borrow)]
    CreateTopic(CreateTopic<'a>),
    /// Delete a topic and all its data.
    #[serde(borrow)]
    DeleteTopic(TopicRef<'a>),
    /// Config and per-partition watermarks of one topic.
    #[serde(borrow)]
    DescribeTopic(TopicRef<'a>),
    /// Per-partition watermarks of one topic.
    #[serde(borrow)]
    Watermarks(TopicRef<'a>),
    /// Consumer group membership (KIP-848 style): join (epoch 0), heartbeat
    /// (current epoch) or leave (epoch -1); answered with
    /// [`Response::GroupHeartbeat`] carrying the member's assignment.
    #[serde(borrow)]
    GroupHeartbeat(GroupHeartbeat<'a>),
    /// Commit consumed offsets of a group; answered with
    /// [`Response::Committed`] once they are fsynced.
    #[serde(borrow)]
    CommitOffsets(CommitOffsets<'a>),
    /// Committed offsets of a group; answered with [`Response::GroupOffsets`].
    #[serde(borrow)]
    FetchOffsets(FetchOffsets<'a>),
    /// Every known group; answered with [`Response::Groups`].
    ListGroups,
    /// Members, assignment, committed offsets and lag of a group.
    #[serde(borrow)]
    DescribeGroup(GroupRef<'a>),
    /// Delete the committed offsets of a group without members.
    #[serde(borrow)]
    DeleteGroup(GroupRef<'a>),
    /// Set or remove topic settings; answered with [`Response::Topic`].
    #[serde(borrow)]
    AlterTopicConfig(AlterTopicConfig<'a>),
    /// Storage counters per partition (bytes, retention, compaction, drops).
    #[serde(borrow)]
    TopicStats(TopicRef<'a>),
    /// Per partition, the earliest offset whose timestamp is at or after a
    /// time; answered with [`Response::Offsets`].
    #[serde(borrow)]
    OffsetsForTimestamp(OffsetsForTimestamp<'a>),
    /// Maps a device's stable name to its idempotent producer id, fences
    /// older sessions of it and returns the sequence to continue with
    /// ([`producer`]).
    #[serde(borrow)]
    InitProducer(InitProducer<'a>),
    /// From another hub's mirror link: append batches at the offsets they
    /// have on the source (offsets and partition preserved); a replay of
    /// what is stored already is answered as done ([`MirrorProduce`]).
    #[serde(borrow)]
    MirrorProduce(MirrorProduce<'a>),
    /// State, watermark and lag of every mirror link of this hub; answered
    /// with [`Response::MirrorStatus`].
    MirrorStatus,
    /// [`Request::MirrorProduce`] with its batches compressed; answered
    /// the same way. A client sends it only once a `Hello` with
    /// [`PROTOCOL_VERSION_COMPRESSED_MIRROR`] was answered (an older server
    /// cannot decode it).
    #[serde(borrow)]
    MirrorProduceCompressed(MirrorProduceCompressed<'a>),
}

/// Everything the server answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    #[serde(borrow)]
    Hello(HelloOk<'a>),
    Pong(Ping),
    Produced(Produced),
    #[serde(borrow)]
    Fetched(Fetched<'a>),
    #[serde(borrow)]
    Metadata(MetadataReply<'a>),
    /// Answer to CreateTopic and DescribeTopic.
    #[serde(borrow)]
    Topic(TopicDescription<'a>),
    /// Answer to DeleteTopic.
    Deleted,
    #[serde(borrow)]
    Watermarks(List<PartitionWatermarks<'a>>),
    /// The request failed; see [`ErrorCode`]. After `InvalidFrame`,
    /// `FrameTooLarge`, `UnsupportedVersion` and `HelloRequired` the server
    /// closes the connection.
    #[serde(borrow)]
    Error(ErrorReply<'a>),
    /// Answer to `GroupHeartbeat`.
    #[serde(borrow)]
    GroupHeartbeat(GroupHeartbeatReply<'a>),
    /// Answer to `CommitOffsets`: every offset is durable.
    Committed,
    /// Answer to `FetchOffsets`.
    #[serde(borrow)]
    GroupOffsets(List<TopicOffsets<'a>>),
    /// Answer to `ListGroups`.
    #[serde(borrow)]
    Groups(List<GroupSummary<'a>>),
    /// Answer to `DescribeGroup`.
    #[serde(borrow)]
    Group(GroupDescription<'a>),
    /// Answer to `TopicStats`.
    TopicStats(List<PartitionStats>),
    /// Answer to `OffsetsForTimestamp`.
    Offsets(List<PartitionOffset>),
    /// Answer to [`Request::InitProducer`].
    ProducerInit(ProducerInit),
    /// Answer to [`Request::MirrorProduce`]: everything below `log_end` is
    /// durable on this hub.
    MirrorProduced(MirrorProduced),
    /// Answer to [`Request::MirrorStatus`].
    #[serde(borrow)]
    MirrorStatus(List<MirrorLinkStatus<'a>>),
}

/// First request of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Must equal the server's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Free-form name of the client, for logs (at most [`CLIENT_ID_BYTES_MAX`]).
    pub client_id: &'a str,
}

/// The server's answer to [`Hello`]: who it is and the limits it enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloOk<'a> {
    pub protocol_version: u16,
    /// eddy's version (`CARGO_PKG_VERSION`).
    pub server_version: &'a str,
    /// Stable identity of this hub.
    pub hub_id: &'a str,
    /// Largest frame body the server accepts, in bytes.
    pub frame_bytes_max: u32,
    /// Largest produced batch the server accepts, in bytes.
    pub batch_bytes_max: u32,
    /// Requests a client may have in flight on one connection; further
    /// requests wait (the server stops reading) until one completes.
    pub inflight_max: u32,
}

/// Ping and pong carry the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub nonce: u64,
}

/// How long a producer waits before its produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// In eddy's memory and queued for disk. Fast; may be lost in a crash.
    Received,
    /// fsynced to the gateway's disk (group commit). The default.
    Durable,
    /// Acknowledged by the upstream cluster the topic is mirrored to.
    Mirrored,
}

/// Append a batch to a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Produce<'a> {
    pub topic: &'a str,
    /// `Some(p)`: every record goes to partition `p`. `None`: eddy chooses per
    /// record: `murmur2(key) mod partitions` (Kafka's default partitioner) for
    /// keyed records, one round-robin partition per request for keyless ones.
    pub partition: Option<u32>,
    pub acks: Acks,
    /// Longest the server waits for `acks` before answering `Timeout`
    /// (the records stay appended), in milliseconds.
    pub timeout_ms: u32,
    /// One encoded batch ([`batch`]); its `base_offset` is ignored.
    #[serde(serialize_with = "raw_bytes::bytes")]
    pub batch: &'a [u8],
}

/// Where one produced batch (or the part of it that went to one partition)
/// landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAck {
    pub partition: u32,
    /// Offset of the first record that went to this partition; the others
    /// follow densely, in the order they had in the batch.
    pub base_offset: u64,
    pub record_count: u32,
}

/// Answer to a produce: one entry per partition the batch was spread over,
/// in increasing partition order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Produced {
    pub partitions: List<PartitionAck>,
}

/// Read from several partitions of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetch<'a> {
    pub topic: &'a str,
    pub partitions: List<FetchPartition>,
    /// Soft limit on the batch bytes returned (across partitions). The first
    /// batch is returned even when it is larger, so a consumer always moves.
    pub max_bytes: u32,
    /// When no partition has data at its offset, wait up to this long for
    /// some to arrive (long poll), in milliseconds.
    pub max_wait_ms: u32,
}

/// One partition of a fetch and the offset to read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    pub partition: u32,
    pub offset: u64,
}

/// Answer to a fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched<'a> {
    #[serde(borrow)]
    pub partitions: List<FetchedPartition<'a>>,
}

/// What one partition returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedPartition<'a> {
    pub partition: u32,
    /// `OffsetOutOfRange` when the offset is below `log_start` or above
    /// `high_watermark`; `UnknownPartition` when it does not exist.
    pub error: Option<ErrorCode>,
    /// Earliest offset still stored.
    pub log_start: u64,
    /// End of what consumers may read: every offset below it is durable.
    pub high_watermark: u64,
    /// Whole batches, concatenated ([`batch::Batches`]). The first one may
    /// start before the requested offset; skip those records.
    #[serde(serialize_with = "raw_bytes::bytes")]
    pub batches: &'a [u8],
}

/// Hub metadata request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata<'a> {
    /// Topics to describe; empty = all.
    #[serde(borrow)]
    pub topics: List<&'a str>,
}

/// Hub metadata answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataReply<'a> {
    pub hub_id: &'a str,
    #[serde(borrow)]
    pub topics: List<TopicSummary<'a>>,
}

/// A topic and its partition count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSummary<'a> {
    pub name: &'a str,
    pub partitions: u32,
}

/// Create a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTopic<'a> {
    pub name: &'a str,
    pub partitions: u32,
    /// Topic settings by name (e.g. `retention.ms`); unknown names are an
    /// `InvalidConfig` error.
    #[serde(borrow)]
    pub configs: List<ConfigEntry<'a>>,
}

/// A topic setting as text, as in Kafka's configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Names a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRef<'a> {
    pub topic: &'a str,
}

/// A topic's settings and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicDescription<'a> {
    pub name: &'a str,
    pub partitions: u32,
    pub created_ms: u64,
    #[serde(borrow)]
    pub configs: List<ConfigEntry<'a>>,
    #[serde(borrow)]
    pub watermarks: List<PartitionWatermarks<'a>>,
}

/// The watermarks of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionWatermarks<'a> {
    pub partition: u32,
    /// Earliest offset still stored.
    pub log_start: u64,
    /// Next offset to be assigned (everything appended, durable or not).
    pub log_end: u64,
    /// Every offset below this one is fsynced.
    pub durable: u64,
    /// Per upstream link: every offset below this one has been acknowledged
    /// upstream. Empty when the topic is not mirrored.
    #[serde(borrow)]
    pub mirrored: List<MirrorWatermark<'a>>,
}

/// How far one upstream link has mirrored a partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorWatermark<'a> {
    pub link: &'a str,
    pub offset: u64,
}

/// Names a consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRef<'a> {
    pub group: &'a str,
}

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicPartitions<'a> {
    pub topic: &'a str,
    pub partitions: List<u32>,
}

/// A member's heartbeat (KIP-848's ConsumerGroupHeartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupHeartbeat<'a> {
    /// Group id: 1–249 characters of `[a-zA-Z0-9._-]`.
    pub group: &'a str,
    /// Empty when joining: the coordinator assigns one.
    pub member_id: &'a str,
    /// 0 = join, -1 = leave, otherwise the epoch of the last reply.
    pub member_epoch: i32,
    /// Shown by describe.
    pub client_id: &'a str,
    /// Subscribed topic names.
    #[serde(borrow)]
    pub topics: List<&'a str>,
    /// Or a regular expression that whole topic names must match.
    pub pattern: Option<&'a str>,
    /// The member is removed when no heartbeat arrives for this long, in ms
    /// (0 = the server's default).
    pub session_timeout_ms: u32,
    /// How long the member may take to give up revoked partitions, in ms
    /// (0 = the server's default); past it the member is removed.
    pub rebalance_timeout_ms: u32,
    /// Partitions the member currently consumes. A revoked partition is
    /// released once a heartbeat no longer lists it.
    #[serde(borrow)]
    pub owned: List<TopicPartitions<'a>>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupHeartbeatReply<'a> {
    pub member_id: &'a str,
    /// Send it with the next heartbeat and with commits (-1 after a leave).
    pub member_epoch: i32,
    /// Send the next heartbeat within this many ms.
    pub heartbeat_interval_ms: u32,
    /// The partitions the member may consume now (complete, not a delta).
    /// Owned partitions missing here must be given up (commit, stop
    /// fetching) and left out of the next heartbeat.
    #[serde(borrow)]
    pub assignment: List<TopicPartitions<'a>>,
}

/// An offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub partition: u32,
    pub offset: u64,
}

/// Offsets of partitions of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicOffsets<'a> {
    pub topic: &'a str,
    pub partitions: List<PartitionOffset>,
}

/// Commit offsets (the next offset to consume, as in Kafka).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitOffsets<'a> {
    pub group: &'a str,
    /// The committing member; empty (with epoch -1) for an administrative
    /// commit, accepted only while the group has no members.
    pub member_id: &'a str,
    pub member_epoch: i32,
    #[serde(borrow)]
    pub offsets: List<TopicOffsets<'a>>,
}

/// Ask for committed offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchOffsets<'a> {
    pub group: &'a str,
    /// Topics to return; empty = all.
    #[serde(borrow)]
    pub topics: List<&'a str>,
}

/// State of a consumer group (as Kafka's consumer groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    /// No members (offsets may be committed).
    Empty,
    /// Members are moving towards the current target assignment.
    Reconciling,
    /// Every member has exactly its target assignment.
    Stable,
}

/// One line of a group listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary<'a> {
    pub group: &'a str,
    pub state: GroupState,
    pub members: u32,
    pub group_epoch: i32,
}

/// A group member as describe shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberDescription<'a> {
    pub member_id: &'a str,
    pub client_id: &'a str,
    pub member_epoch: i32,
    /// What it consumes now.
    #[serde(borrow)]
    pub assigned: List<TopicPartitions<'a>>,
    /// Revoked from it, not yet released.
    #[serde(borrow)]
    pub revoking: List<TopicPartitions<'a>>,
}

/// Committed offset and lag of one partition of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionLag<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// Member that consumes it now.
    pub owner: Option<&'a str>,
    /// Next offset the group will consume; `None` when never committed.
    pub committed: Option<u64>,
    pub log_start: u64,
    /// End of what consumers may read (durable); lag = this − committed.
    pub high_watermark: u64,
}

/// Answer to `DescribeGroup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDescription<'a> {
    pub group: &'a str,
    pub state: GroupState,
    pub group_epoch: i32,
    #[serde(borrow)]
    pub members: List<MemberDescription<'a>>,
    #[serde(borrow)]
    pub partitions: List<PartitionLag<'a>>,
}

/// Change topic settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlterTopicConfig<'a> {
    pub topic: &'a str,
    /// Settings to set (validated as at create).
    #[serde(borrow)]
    pub set: List<ConfigEntry<'a>>,
    /// Settings to return to their defaults.
    #[serde(borrow)]
    pub delete: List<&'a str>,
}

/// Storage counters of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    pub partition: u32,
    /// Bytes of stored batches (what the disk budget counts).
    pub stored_bytes: u64,
    /// Records removed by retention (age or size).
    pub retention_removed_records: u64,
    /// Records removed by compaction (superseded or expired tombstones).
    pub compaction_removed_records: u64,
    /// Completed compaction passes.
    pub compaction_passes: u64,
    /// Records dropped to stay within the disk budget (`on_full=drop_oldest`).
    pub dropped_records: u64,
    /// Bytes dropped to stay within the disk budget.
    pub dropped_bytes: u64,
    /// Records at or above this offset are kept for the mirror; `None`
    /// when nothing is held back.
    pub keep_from: Option<u64>,
}

/// Ask for offsets by time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetsForTimestamp<'a> {
    pub topic: &'a str,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// Batches of one source partition, forwarded by a mirror link.
///
/// The receiving hub appends each batch at its `base_offset` (the offset
/// it has on the source), so offsets and partitions are preserved and the
/// upstream partition's log end is where the source must resume. A batch
/// that ends at or below the log end is a replay and is skipped; one that
/// overlaps it is refused with `MirrorConflict`. The topic must have been
/// created as a mirror of `source_hub`/`source_topic` (topic setting
/// `mirror.source`), and ordinary produces to it are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorProduce<'a> {
    /// Hub id of the source.
    pub source_hub: &'a str,
    /// Topic name on the source.
    pub source_topic: &'a str,
    /// Topic to append to here.
    pub topic: &'a str,
    pub partition: u32,
    /// Longest the receiver waits for the fsync before answering `Timeout`,
    /// in ms.
    pub timeout_ms: u32,
    /// Whole stored batches, concatenated, ascending, with their source
    /// base offsets and without producer stamps.
    pub batches: &'a [u8],
}

/// A compression codec of [`MirrorProduceCompressed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// An LZ4 block (no frame header; the size is `raw_bytes`).
    Lz4,
    /// One zstd frame.
    Zstd,
}

impl Compression {
    /// Short stable name (as in the link setting).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// A [`MirrorProduce`] whose `batches` hold the compressed form of the
/// concatenated batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorProduceCompressed<'a> {
    pub compression: Compression,
    /// Bytes of the batches once decompressed; the receiver refuses more
    /// than its frame limit before it decompresses anything.
    pub raw_bytes: u32,
    /// `batches` compressed with `compression`.
    #[serde(borrow)]
    pub produce: MirrorProduce<'a>,
}

/// Answer to [`MirrorProduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorProduced {
    pub partition: u32,
    /// The partition's log end after the append; every offset below it is
    /// durable here.
    pub log_end: u64,
    /// Records of the request that were stored already (a replay).
    pub skipped_records: u64,
}

/// Where a mirror link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MirrorLinkState {
    /// Connecting, or reading the upstream's tails before sending.
    Connecting,
    /// Connected and forwarding.
    Up,
    /// Disconnected; waiting for the next attempt (backoff).
    Down,
}

impl MirrorLinkState {
    /// Short stable name.
    pub fn name(self) -> &'static str {
        match self {
            MirrorLinkState::Connecting => "connecting",
            MirrorLinkState::Up => "up",
            MirrorLinkState::Down => "down",
        }
    }
}

/// One mirror link as `eddy mirror status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorLinkStatus<'a> {
    pub link: &'a str,
    /// The upstream's URL (`eddy://…`, `kafka://…`).
    pub upstream: &'a str,
    pub state: MirrorLinkState,
    /// Since when (ms since the epoch).
    pub state_since_ms: u64,
    /// The last failure, if any (kept after recovery).
    pub last_error: Option<&'a str>,
    pub last_error_ms: u64,
    /// Sessions that ended in an error since the hub started.
    pub reconnects: u64,
    /// Records and bytes the upstream acknowledged since the hub started.
    pub records_mirrored: u64,
    pub bytes_mirrored: u64,
    /// Records removed locally (retention or the disk budget, as the
    /// topic's policy allowed) before this link forwarded them.
    pub dropped_records: u64,
    #[serde(borrow)]
    pub partitions: List<MirrorPartitionStatus<'a>>,
}

/// One partition of a mirror link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorPartitionStatus<'a> {
    pub topic: &'a str,
    /// The topic's name upstream.
    pub upstream_topic: &'a str,
    pub partition: u32,
    /// Every offset below this one has been acknowledged upstream.
    pub mirrored: u64,
    /// The local log end.
    pub log_end: u64,
    /// Offsets not yet acknowledged upstream (`log_end - mirrored`).
    pub lag_records: u64,
    /// Stored bytes not yet acknowledged upstream (estimated from the
    /// partition's average batch density).
    pub lag_bytes: u64,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    pub code: ErrorCode,
    /// What went wrong and, where there is one, the fix.
    pub message: &'a str,
}

/// Why a request failed. The number is the wire value (postcard variant
/// index): stable, documented, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// 0: the frame could not be decoded, or did not complete (within the
    /// server's frame timeout, or before the client closed its side). The
    /// connection is closed.
    InvalidFrame = 0,
    /// 1: the frame is larger than the server's `frame_bytes_max`. Closed.
    FrameTooLarge = 1,
    /// 2: the client's protocol version is not spoken here. Closed.
    UnsupportedVersion = 2,
    /// 3: the first request was not `Hello`. Closed.
    HelloRequired = 3,
    /// 4: a field has a value the server does not accept.
    InvalidRequest = 4,
    /// 5: no such topic (and auto-creation is off).
    UnknownTopic = 5,
    /// 6: the topic has no such partition.
    UnknownPartition = 6,
    /// 7: create of a topic that exists.
    TopicExists = 7,
    /// 8: topic names are 1–249 bytes of `[a-zA-Z0-9._-]`.
    InvalidTopicName = 8,
    /// 9: an unknown topic setting or a bad value.
    InvalidConfig = 9,
    /// 10: the batch is larger than `batch_bytes_max`.
    RecordTooLarge = 10,
    /// 11: a batch failed its CRC32C or structure check.
    CorruptBatch = 11,
    /// 12: the offset is outside the partition's stored range.
    OffsetOutOfRange = 12,
    /// 13: the disk (or eddy's disk budget) is full. Nothing was written.
    DiskFull = 13,
    /// 14: this identity may not do that.
    NotAuthorized = 14,
    /// 15: the records were appended but not acknowledged at the requested
    /// level within the timeout.
    Timeout = 15,
    /// 16: the consumer group is rebalancing; retry after the next heartbeat.
    RebalanceInProgress = 16,
    /// 17: the server is shutting down; reconnect later.
    ShuttingDown = 17,
    /// 18: the server could not read or write its storage.
    StorageError = 18,
    /// 19: the request is valid but not available here (e.g. `mirrored`
    /// acks on a hub without a mirror link).
    NotSupported = 19,
    /// 20: the server has reached its connection limit.
    TooManyConnections = 20,
    /// 21: the group has no member with this id (it left, or its session
    /// expired): rejoin with epoch 0.
    UnknownMemberId = 21,
    /// 22: the member's epoch is not its current one: it was fenced; give up
    /// every partition and rejoin with epoch 0.
    FencedMemberEpoch = 22,
    /// 23: a commit from a member whose epoch is stale or that does not own
    /// the partition (any more).
    StaleMemberEpoch = 23,
    /// 24: the group has active members; the operation needs an empty group.
    GroupNotEmpty = 24,
    /// 25: no group with that id (no members, no committed offsets).
    UnknownGroup = 25,
    /// 26: an idempotent batch skipped sequence numbers (its base sequence
    /// is ahead of the next expected one). Nothing was written; resend the
    /// missing batches first, or call `InitProducer` to learn the next one.
    OutOfOrderSequence = 26,
    /// 27: an idempotent batch was appended before, but too long ago for
    /// eddy to still know its offsets. Nothing was written again; treat it
    /// as acknowledged.
    DuplicateSequence = 27,
    /// 28: a newer session of this producer called `InitProducer`; this
    /// one's batches are refused. Call `InitProducer` again.
    ProducerFenced = 28,
    /// 29: the batch names a producer id this hub never issued. Call
    /// `InitProducer` first.
    UnknownProducer = 29,
    /// 30: a mirror write conflicts with the topic: it is not a mirror of
    /// that source, a mirrored batch overlaps what is stored, or an
    /// ordinary produce went to a topic only its mirror link writes.
    MirrorConflict = 30,
}

impl ErrorCode {
    /// Short stable name, as used in logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidFrame => "InvalidFrame",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::HelloRequired => "HelloRequired",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::UnknownTopic => "UnknownTopic",
            ErrorCode::UnknownPartition => "UnknownPartition",
            ErrorCode::TopicExists => "TopicExists",
            ErrorCode::InvalidTopicName => "InvalidTopicName",
            ErrorCode::InvalidConfig => "InvalidConfig",
            ErrorCode::RecordTooLarge => "RecordTooLarge",
            ErrorCode::CorruptBatch => "CorruptBatch",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::DiskFull => "DiskFull",
            ErrorCode::NotAuthorized => "NotAuthorized",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::RebalanceInProgress => "RebalanceInProgress",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::StorageError => "StorageError",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::TooManyConnections => "TooManyConnections",
            ErrorCode::UnknownMemberId => "UnknownMemberId",
            ErrorCode::FencedMemberEpoch => "FencedMemberEpoch",
            ErrorCode::StaleMemberEpoch => "StaleMemberEpoch",
            ErrorCode::GroupNotEmpty => "GroupNotEmpty",
            ErrorCode::UnknownGroup => "UnknownGroup",
            ErrorCode::OutOfOrderSequence => "OutOfOrderSequence",
            ErrorCode::DuplicateSequence => "DuplicateSequence",
            ErrorCode::ProducerFenced => "ProducerFenced",
            ErrorCode::UnknownProducer => "UnknownProducer",
            ErrorCode::MirrorConflict => "MirrorConflict",
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::HelloRequired
                | ErrorCode::TooManyConnections
                | ErrorCode::ShuttingDown
        )
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The declared length exceeds the reader's maximum.
    TooLarge { len: u32, max: u32 },
    /// The body is not a valid postcard message of the expected type, or has
    /// trailing bytes.
    Malformed,
    /// The output buffer is too small (encoding into a fixed buffer).
    BufferFull,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            FrameError::Malformed => f.write_str("frame is not a valid message"),
            FrameError::BufferFull => f.write_str("output buffer too small for the frame"),
        }
    }
}

/// Reads the length prefix and checks it against `frame_bytes_max` before the
/// caller allocates anything for the body.
pub fn decode_frame_len(
    prefix: [u8; FRAME_PREFIX_BYTES],
    frame_bytes_max: u32,
) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    // u32 always fits in usize on the 32- and 64-bit targets eddy supports.
    Ok(len as usize)
}

/// Whether a frame's length prefix is really the start of a TLS record
/// (content type 20–23, protocol version 3.x): a peer speaking TLS to a
/// plaintext endpoint, so the error can say that instead of "frame too
/// large". No eddy frame is that large (the limits are far below 320 MiB).
pub fn looks_like_tls_record(prefix: [u8; FRAME_PREFIX_BYTES]) -> bool {
    (0x14..=0x17).contains(&prefix[0]) && prefix[1] == 0x03 && prefix[2] <= 0x04
}

/// Decodes a request body (without its prefix). Trailing bytes are an error.
pub fn decode_request(body: &[u8]) -> Result<RequestFrame<'_>, FrameError> {
    decode_exact(body)
}

/// Decodes a response body (without its prefix). Trailing bytes are an error.
pub fn decode_response(body: &[u8]) -> Result<ResponseFrame<'_>, FrameError> {
    decode_exact(body)
}

fn decode_exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(FrameError::Malformed),
    }
}

/// Encodes a whole frame (prefix and body) into `buf`, returning its length.
/// For firmware: no allocation.
pub fn encode_request_into(frame: &RequestFrame<'_>, buf: &mut [u8]) -> Result<usize, FrameError> {
    encode_into(frame, buf)
}

/// Encodes a whole response frame (prefix and body) into `buf`.
pub fn encode_response_into(
    frame: &ResponseFrame<'_>,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    encode_into(frame, buf)
}

fn encode_into<T: Serialize>(value: &T, buf: &mut [u8]) -> Result<usize, FrameError> {
    if buf.len() < FRAME_PREFIX_BYTES {
        return Err(FrameError::BufferFull);
    }
    let (prefix, body) = buf.split_at_mut(FRAME_PREFIX_BYTES);
    let body_len = postcard::to_slice(value, body)
        .map_err(|_| FrameError::BufferFull)?
        .len();
    let body_len_u32 = u32::try_from(body_len).map_err(|_| FrameError::BufferFull)?;
    prefix.copy_from_slice(&body_len_u32.to_be_bytes());
    Ok(FRAME_PREFIX_BYTES + body_len)
}

/// Appends a whole request frame (prefix and body) to `out`.
#[cfg(feature = "std")]
pub fn encode_request(frame: &RequestFrame<'_>, out: &mut std::vec::Vec<u8>) {
    encode_append(frame, out)
}

/// Appends a whole response frame (prefix and body) to `out`.
#[cfg(feature = "std")]
pub fn encode_response(frame: &ResponseFrame<'_>, out: &mut std::vec::Vec<u8>) {
    encode_append(frame, out)
}

#[cfg(feature = "std")]
fn encode_append<T: Serialize>(value: &T, out: &mut std::vec::Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    // Serializing into a Vec cannot fail for these types (no maps with
    // non-string keys, no unsized sequences).
    let mut out_taken = core::mem::take(out);
    out_taken = postcard::to_extend(value, out_taken).expect("postcard encoding into a Vec");
    *out = out_taken;
    let body_len = out.len() - start - FRAME_PREFIX_BYTES;
    let body_len_u32 = u32::try_from(body_len).expect("frame body under 4 GiB");
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&body_len_u32.to_be_bytes());
}

/// Whether `name` is a valid topic name: 1–249 bytes of `[a-zA-Z0-9._-]`,
/// and not `.` or `..`.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The byte fields written with `serialize_bytes` encode exactly as
    /// serde's default sequence of `u8` did: the wire format is unchanged.
    #[test]
    fn raw_byte_fields_encode_like_a_sequence_of_bytes() {
        #[derive(Serialize)]
        struct AsSequence<'a> {
            offset_delta: u32,
            timestamp_delta_ms: i64,
            key: Option<&'a [u8]>,
            value: &'a [u8],
            headers: &'a [u8],
        }
        let value: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
        for key in [None, Some(&b"sensor-7"[..]), Some(&[][..])] {
            let record = batch::Record {
                offset_delta: 3,
                timestamp_delta_ms: -5,
                key,
                value: &value,
                headers: batch::Headers(b"\x01\x01a\x01b"),
            };
            let sequence = AsSequence {
                offset_delta: 3,
                timestamp_delta_ms: -5,
                key,
                value: &value,
                headers: b"\x01\x01a\x01b",
            };
            assert_eq!(
                postcard::to_allocvec(&record).unwrap(),
                postcard::to_allocvec(&sequence).unwrap()
            );
        }
        let produce = Request::Produce(Produce {
            topic: "t",
            partition: Some(1),
            acks: Acks::Durable,
            timeout_ms: 10,
            batch: &value,
        });
        let mut encoded = Vec::new();
        encode_request(
            &RequestFrame {
                correlation_id: 9,
                request: produce.clone(),
            },
            &mut encoded,
        );
        // Body: id 9, variant index, topic, partition, acks, timeout, then
        // the batch as varint length + bytes.
        let tail = &encoded[encoded.len() - value.len() - 2..];
        assert_eq!(&tail[..2], &[0xe8, 0x07]);
        assert_eq!(&tail[2..], &value[..]);
        roundtrip_request(produce);
    }

    fn roundtrip_request(request: Request<'_>) {
        let frame = RequestFrame {
            correlation_id: 77,
            request,
        };
        let mut out = Vec::new();
        encode_request(&frame, &mut out);
        let len = decode_frame_len(out[..4].try_into().unwrap(), FRAME_BYTES_MAX_DEFAULT).unwrap();
        assert_eq!(len, out.len() - 4);
        assert_eq!(decode_request(&out[4..]).unwrap(), frame);
        // The fixed-buffer encoder produces the same bytes.
        let mut fixed = vec![0u8; out.len()];
        assert_eq!(encode_request_into(&frame, &mut fixed).unwrap(), out.len());
        assert_eq!(fixed, out);
        // One byte short is a clear error, not a panic.
        let mut short = vec![0u8; out.len() - 1];
        assert_eq!(
            encode_request_into(&frame, &mut short),
            Err(FrameError::BufferFull)
        );
    }

    #[test]
    fn requests_round_trip() {
        roundtrip_request(Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: "dev-1",
        }));
        roundtrip_request(Request::Ping(Ping { nonce: u64::MAX }));
        roundtrip_request(Request::Produce(Produce {
            topic: "t",
            partition: Some(3),
            acks: Acks::Durable,
            timeout_ms: 30_000,
            batch: &[1, 2, 3],
        }));
        roundtrip_request(Request::Fetch(Fetch {
            topic: "t",
            partitions: vec![
                FetchPartition {
                    partition: 0,
                    offset: 5,
                },
                FetchPartition {
                    partition: 7,
                    offset: 0,
                },
            ],
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        }));
        roundtrip_request(Request::Metadata(Metadata {
            topics: vec!["a", "b"],
        }));
        roundtrip_request(Request::CreateTopic(CreateTopic {
            name: "a",
            partitions: 8,
            configs: vec![ConfigEntry {
                name: "x",
                value: "y",
            }],
        }));
        roundtrip_request(Request::DeleteTopic(TopicRef { topic: "a" }));
        roundtrip_request(Request::DescribeTopic(TopicRef { topic: "a" }));
        roundtrip_request(Request::Watermarks(TopicRef { topic: "a" }));
        roundtrip_request(Request::GroupHeartbeat(GroupHeartbeat {
            group: "g",
            member_id: "",
            member_epoch: 0,
            client_id: "c",
            topics: vec!["a"],
            pattern: Some("sensors\\..*"),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 0,
            owned: vec![TopicPartitions {
                topic: "a",
                partitions: vec![0, 3],
            }],
        }));
        roundtrip_request(Request::CommitOffsets(CommitOffsets {
            group: "g",
            member_id: "m",
            member_epoch: 4,
            offsets: vec![TopicOffsets {
                topic: "a",
                partitions: vec![PartitionOffset {
                    partition: 1,
                    offset: 99,
                }],
            }],
        }));
        roundtrip_request(Request::FetchOffsets(FetchOffsets {
            group: "g",
            topics: vec![],
        }));
        roundtrip_request(Request::ListGroups);
        roundtrip_request(Request::DescribeGroup(GroupRef { group: "g" }));
        roundtrip_request(Request::DeleteGroup(GroupRef { group: "g" }));
        roundtrip_request(Request::AlterTopicConfig(AlterTopicConfig {
            topic: "a",
            set: vec![ConfigEntry {
                name: "retention.ms",
                value: "1000",
            }],
            delete: vec!["priority"],
        }));
        roundtrip_request(Request::TopicStats(TopicRef { topic: "a" }));
        roundtrip_request(Request::OffsetsForTimestamp(OffsetsForTimestamp {
            topic: "a",
            timestamp_ms: -5,
        }));
        roundtrip_request(Request::InitProducer(InitProducer { name: "truck-17" }));
        roundtrip_request(Request::MirrorProduce(MirrorProduce {
            source_hub: "gw-1",
            source_topic: "t",
            topic: "gw-1.t",
            partition: 2,
            timeout_ms: 30_000,
            batches: &[1, 2, 3],
        }));
        roundtrip_request(Request::MirrorStatus);
        roundtrip_request(Request::MirrorProduceCompressed(MirrorProduceCompressed {
            compression: Compression::Zstd,
            raw_bytes: 70,
            produce: MirrorProduce {
                source_hub: "gw-1",
                source_topic: "t",
                topic: "gw-1.t",
                partition: 2,
                timeout_ms: 30_000,
                batches: &[9, 8],
            },
        }));
    }

    #[test]
    fn a_version_one_request_keeps_its_bytes() {
        // Appending the compressed variant must not renumber the others:
        // an older upstream decodes every version-1 frame as before.
        let frame = RequestFrame {
            correlation_id: 1,
            request: Request::MirrorStatus,
        };
        let mut buf = [0u8; 16];
        let n = encode_request_into(&frame, &mut buf).unwrap();
        assert_eq!(&buf[FRAME_PREFIX_BYTES..n], &[1, 20]);
    }

    #[test]
    fn responses_round_trip() {
        let responses = vec![
            Response::Hello(HelloOk {
                protocol_version: 1,
                server_version: "0.1.0",
                hub_id: "hub",
                frame_bytes_max: 1,
                batch_bytes_max: 2,
                inflight_max: 3,
            }),
            Response::Pong(Ping { nonce: 9 }),
            Response::Produced(Produced {
                partitions: vec![PartitionAck {
                    partition: 1,
                    base_offset: 10,
                    record_count: 3,
                }],
            }),
            Response::Fetched(Fetched {
                partitions: vec![FetchedPartition {
                    partition: 0,
                    error: Some(ErrorCode::OffsetOutOfRange),
                    log_start: 4,
                    high_watermark: 9,
                    batches: &[9, 9],
                }],
            }),
            Response::Deleted,
            Response::Watermarks(vec![PartitionWatermarks {
                partition: 0,
                log_start: 0,
                log_end: 5,
                durable: 4,
                mirrored: vec![MirrorWatermark {
                    link: "dc",
                    offset: 3,
                }],
            }]),
            Response::Error(ErrorReply {
                code: ErrorCode::DiskFull,
                message: "disk full",
            }),
            Response::GroupHeartbeat(GroupHeartbeatReply {
                member_id: "m",
                member_epoch: 3,
                heartbeat_interval_ms: 5_000,
                assignment: vec![TopicPartitions {
                    topic: "a",
                    partitions: vec![1],
                }],
            }),
            Response::Committed,
            Response::GroupOffsets(vec![TopicOffsets {
                topic: "a",
                partitions: vec![PartitionOffset {
                    partition: 0,
                    offset: 7,
                }],
            }]),
            Response::Groups(vec![GroupSummary {
                group: "g",
                state: GroupState::Stable,
                members: 2,
                group_epoch: 9,
            }]),
            Response::Group(GroupDescription {
                group: "g",
                state: GroupState::Reconciling,
                group_epoch: 2,
                members: vec![MemberDescription {
                    member_id: "m",
                    client_id: "c",
                    member_epoch: 2,
                    assigned: vec![],
                    revoking: vec![TopicPartitions {
                        topic: "a",
                        partitions: vec![0],
                    }],
                }],
                partitions: vec![PartitionLag {
                    topic: "a",
                    partition: 0,
                    owner: None,
                    committed: Some(4),
                    log_start: 0,
                    high_watermark: 10,
                }],
            }),
            Response::TopicStats(vec![PartitionStats {
                partition: 0,
                stored_bytes: 1,
                retention_removed_records: 2,
                compaction_removed_records: 3,
                compaction_passes: 4,
                dropped_records: 5,
                dropped_bytes: 6,
                keep_from: Some(7),
            }]),
            Response::Offsets(vec![PartitionOffset {
                partition: 2,
                offset: 8,
            }]),
            Response::ProducerInit(ProducerInit {
                producer_id: 7,
                producer_epoch: 3,
                next_sequence: 41,
            }),
            Response::MirrorProduced(MirrorProduced {
                partition: 1,
                log_end: 99,
                skipped_records: 3,
            }),
            Response::MirrorStatus(vec![MirrorLinkStatus {
                link: "dc",
                upstream: "kafka://k:9092",
                state: MirrorLinkState::Down,
                state_since_ms: 5,
                last_error: Some("refused"),
                last_error_ms: 4,
                reconnects: 2,
                records_mirrored: 10,
                bytes_mirrored: 1000,
                dropped_records: 1,
                partitions: vec![MirrorPartitionStatus {
                    topic: "t",
                    upstream_topic: "gw.t",
                    partition: 0,
                    mirrored: 7,
                    log_end: 9,
                    lag_records: 2,
                    lag_bytes: 200,
                }],
            }]),
        ];
        for response in responses {
            let frame = ResponseFrame {
                correlation_id: 5,
                response,
            };
            let mut out = Vec::new();
            encode_response(&frame, &mut out);
            assert_eq!(decode_response(&out[4..]).unwrap(), frame);
        }
    }

    #[test]
    fn frame_length_is_checked_before_allocation() {
        assert_eq!(decode_frame_len(100u32.to_be_bytes(), 100), Ok(100));
        assert_eq!(
            decode_frame_len(101u32.to_be_bytes(), 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert!(decode_frame_len(u32::MAX.to_be_bytes(), FRAME_BYTES_MAX_DEFAULT).is_err());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert_eq!(decode_request(&[]), Err(FrameError::Malformed));
        assert_eq!(decode_request(&[0xff; 16]), Err(FrameError::Malformed));
        let mut out = Vec::new();
        encode_request(
            &RequestFrame {
                correlation_id: 1,
                request: Request::Ping(Ping { nonce: 1 }),
            },
            &mut out,
        );
        out.push(0);
        assert_eq!(decode_request(&out[4..]), Err(FrameError::Malformed));
        // Every truncation of a valid frame is rejected, never a panic.
        out.pop();
        for cut in 0..out.len() - 4 {
            assert_eq!(
                decode_request(&out[4..4 + cut]),
                Err(FrameError::Malformed),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn error_codes_have_their_documented_wire_values() {
        let all = [
            ErrorCode::InvalidFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnsupportedVersion,
            ErrorCode::HelloRequired,
            ErrorCode::InvalidRequest,
            ErrorCode::UnknownTopic,
            ErrorCode::UnknownPartition,
            ErrorCode::TopicExists,
            ErrorCode::InvalidTopicName,
            ErrorCode::InvalidConfig,
            ErrorCode::RecordTooLarge,
            ErrorCode::CorruptBatch,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::DiskFull,
            ErrorCode::NotAuthorized,
            ErrorCode::Timeout,
            ErrorCode::RebalanceInProgress,
            ErrorCode::ShuttingDown,
            ErrorCode::StorageError,
            ErrorCode::NotSupported,
            ErrorCode::TooManyConnections,
            ErrorCode::UnknownMemberId,
            ErrorCode::FencedMemberEpoch,
            ErrorCode::StaleMemberEpoch,
            ErrorCode::GroupNotEmpty,
            ErrorCode::UnknownGroup,
            ErrorCode::OutOfOrderSequence,
            ErrorCode::DuplicateSequence,
            ErrorCode::ProducerFenced,
            ErrorCode::UnknownProducer,
            ErrorCode::MirrorConflict,
        ];
        for (i, code) in all.iter().enumerate() {
            assert_eq!(*code as usize, i);
            // postcard writes the variant index as a varint: one byte here.
            assert_eq!(
                postcard::to_allocvec(code).unwrap(),
                vec![u8::try_from(i).unwrap()],
                "{code}"
            );
        }
    }

    #[test]
    fn topic_names() {
        assert!(is_valid_topic_name("sensors.temp-1_a"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name(".."));
        assert!(!is_valid_topic_name("a/b"));
        assert!(!is_valid_topic_name(&"a".repeat(250)));
        assert!(is_valid_topic_name(&"a".repeat(249)));
    }
}
