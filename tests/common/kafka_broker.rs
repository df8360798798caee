//! A one-node Kafka-protocol broker with Kafka's idempotent-producer
//! checks, for the exactly-once tests of the Kafka mirror that librdkafka's
//! mock cluster cannot serve: the mock checks producer ids and sequence
//! numbers only for transactional producers (`rd_kafka_mock_validate_records`
//! in rdkafka_mock.c returns early without a transactional id), so it
//! appends a late duplicate of an idempotent producer's batch like any
//! other.
//!
//! The checks are those of Kafka's `ProducerStateManager` (3.x): per
//! partition and producer id the epoch and the last five batches; a batch
//! of an older epoch is refused (`INVALID_PRODUCER_EPOCH`); one repeating
//! the first and last sequence of a remembered batch is answered as a
//! success with that batch's offset and not appended; otherwise its first
//! sequence must follow the last one (a new epoch: start at 0), else
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`; a producer the partition does not know
//! may start anywhere. Enough of ApiVersions (v0), Metadata (auto-creating),
//! InitProducerId, Produce, ListOffsets and Fetch for eddy's mirror; no
//! CreateTopics (the mirror then asks Metadata to create topics, with
//! [`KafkaBroker::PARTITIONS`]), no replication (the high watermark is the
//! log end).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    api_versions_response::ApiVersion, fetch_response, list_offsets_response, metadata_response,
    produce_response, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest,
    FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

use super::mirror::Seen;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const CORRUPT_MESSAGE: i16 = 2;
/// Batches remembered per producer and partition (Kafka's window).
const PRODUCER_BATCHES_KEPT: usize = 5;

/// What the broker did with Produce requests of idempotent producers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProduceStats {
    pub appended: u64,
    /// Answered as a success without appending (a resend).
    pub duplicates: u64,
    pub out_of_order: u64,
    pub fenced: u64,
    pub unknown_producer: u64,
}

struct ProducerEntry {
    epoch: i16,
    /// (first sequence, last sequence, base offset), oldest first.
    batches: VecDeque<(i32, i32, i64)>,
}

#[derive(Default)]
struct Partition {
    /// (base offset, batch with its base offset set), in offset order.
    batches: Vec<(i64, Bytes)>,
    end: i64,
    producers: HashMap<i64, ProducerEntry>,
}

#[derive(Default)]
struct Log {
    topics: BTreeMap<String, Vec<Partition>>,
    next_producer_id: i64,
    stats: ProduceStats,
    /// As brokers before Kafka 2.5: a producer the partition does not know
    /// must start at sequence 0, else `UNKNOWN_PRODUCER_ID`.
    refuse_unknown_producers: bool,
}

struct Shared {
    log: Mutex<Log>,
    /// The address Metadata gives for this broker (a proxy in front of it).
    advertised: Mutex<SocketAddr>,
    connections_closed: AtomicU64,
    /// Requests handled, per API key.
    handled: Mutex<HashMap<i16, u64>>,
}

/// A running broker on 127.0.0.1 (port chosen by the system).
pub struct KafkaBroker {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl KafkaBroker {
    /// Partitions of an auto-created topic.
    pub const PARTITIONS: usize = 4;

    pub fn start() -> KafkaBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            log: Mutex::new(Log {
                next_producer_id: 1_000,
                ..Log::default()
            }),
            advertised: Mutex::new(addr),
            connections_closed: AtomicU64::new(0),
            handled: Mutex::new(HashMap::new()),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || {
                    serve(stream, &shared);
                    shared.connections_closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        KafkaBroker { addr, shared }
    }

    /// Makes Metadata name `addr` as this broker's address.
    pub fn advertise(&self, addr: SocketAddr) {
        *self.shared.advertised.lock().unwrap() = addr;
    }

    /// Connections that ended (after every request they carried was
    /// handled).
    pub fn connections_closed(&self) -> u64 {
        self.shared.connections_closed.load(Ordering::SeqCst)
    }

    /// Forgets every producer (as Kafka does once a producer id expires),
    /// and from now on refuses unknown producers that do not start at
    /// sequence 0, as brokers before Kafka 2.5 did.
    pub fn forget_producers_as_an_old_broker(&self) {
        let mut log = self.shared.log.lock().unwrap();
        log.refuse_unknown_producers = true;
        for partition in log.topics.values_mut().flatten() {
            partition.producers.clear();
        }
    }

    /// Requests of `key` answered so far.
    pub fn handled(&self, key: ApiKey) -> u64 {
        self.shared
            .handled
            .lock()
            .unwrap()
            .get(&(key as i16))
            .copied()
            .unwrap_or(0)
    }

    pub fn stats(&self) -> ProduceStats {
        self.shared.log.lock().unwrap().stats
    }

    /// Every record of `topic`, partition by partition.
    pub fn records(&self, topic: &str) -> Vec<Seen> {
        let log = self.shared.log.lock().unwrap();
        let mut out = Vec::new();
        for (p, partition) in log.topics.get(topic).into_iter().flatten().enumerate() {
            for (_, batch) in &partition.batches {
                let mut buf = batch.clone();
                for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
                    for r in set.records {
                        out.push(Seen {
                            partition: p as u32,
                            offset: r.offset as u64,
                            key: r.key.map(|k| k.to_vec()).unwrap_or_default(),
                            value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                            headers: r
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        v.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                                    )
                                })
                                .collect(),
                            timestamp_ms: r.timestamp,
                        });
                    }
                }
            }
        }
        out
    }
}

/// The versions this broker speaks (within the mirror's ranges).
const APIS: [(ApiKey, i16, i16); 6] = [
    (ApiKey::ApiVersions, 0, 0),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::Produce, 3, 9),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Fetch, 4, 11),
];

fn serve(mut stream: TcpStream, shared: &Shared) {
    loop {
        let mut prefix = [0u8; 4];
        if stream.read_exact(&mut prefix).is_err() {
            return;
        }
        let mut body = vec![0u8; i32::from_be_bytes(prefix).max(0) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let mut buf = Bytes::from(body);
        let response = match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => handle::<ApiVersionsRequest, _>(&mut buf, version, |_| {
                let mut answer = ApiVersionsResponse::default();
                answer.api_keys = APIS
                    .iter()
                    .map(|(key, min, max)| {
                        let mut api = ApiVersion::default();
                        api.api_key = *key as i16;
                        api.min_version = *min;
                        api.max_version = *max;
                        api
                    })
                    .collect();
                answer
            }),
            Ok(ApiKey::Metadata) => handle(&mut buf, version, |r| metadata(shared, r)),
            Ok(ApiKey::InitProducerId) => {
                handle::<InitProducerIdRequest, _>(&mut buf, version, |_| {
                    let mut log = shared.log.lock().unwrap();
                    let mut answer = InitProducerIdResponse::default();
                    answer.producer_id = log.next_producer_id.into();
                    answer.producer_epoch = 0;
                    log.next_producer_id += 1;
                    answer
                })
            }
            Ok(ApiKey::Produce) => handle(&mut buf, version, |r| produce(shared, r)),
            Ok(ApiKey::ListOffsets) => handle(&mut buf, version, |r| list_offsets(shared, r)),
            Ok(ApiKey::Fetch) => handle(&mut buf, version, |r| fetch(shared, r)),
            _ => return,
        };
        *shared.handled.lock().unwrap().entry(key).or_default() += 1;
        if stream.write_all(&response).is_err() {
            return;
        }
    }
}

/// Decodes a request, answers it with `answer`, encodes the response in the
/// request's version (with its length prefix).
fn handle<Req, Resp>(buf: &mut Bytes, version: i16, answer: impl FnOnce(Req) -> Resp) -> Vec<u8>
where
    Req: Decodable + HeaderVersion,
    Resp: Encodable + HeaderVersion,
{
    let header = RequestHeader::decode(buf, Req::header_version(version)).unwrap();
    let request = Req::decode(buf, version).unwrap();
    let response = answer(request);
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    let mut response_header = ResponseHeader::default();
    response_header.correlation_id = header.correlation_id;
    response_header
        .encode(&mut out, Resp::header_version(version))
        .unwrap();
    response.encode(&mut out, version).unwrap();
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.to_vec()
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata(shared: &Shared, request: MetadataRequest) -> MetadataResponse {
    let advertised = *shared.advertised.lock().unwrap();
    let mut log = shared.log.lock().unwrap();
    let mut answer = MetadataResponse::default();
    let mut broker = metadata_response::MetadataResponseBroker::default();
    broker.node_id = BrokerId(0);
    broker.host = StrBytes::from_string(advertised.ip().to_string());
    broker.port = i32::from(advertised.port());
    answer.brokers = vec![broker];
    answer.controller_id = BrokerId(0);
    for t in request.topics.unwrap_or_default() {
        let Some(name) = t.name else { continue };
        let name = name.0.to_string();
        if !log.topics.contains_key(&name) && request.allow_auto_topic_creation {
            let partitions = (0..KafkaBroker::PARTITIONS)
                .map(|_| Partition::default())
                .collect();
            log.topics.insert(name.clone(), partitions);
        }
        let mut topic = metadata_response::MetadataResponseTopic::default();
        topic.name = Some(topic_name(&name));
        match log.topics.get(&name) {
            None => topic.error_code = UNKNOWN_TOPIC_OR_PARTITION,
            Some(partitions) => {
                topic.partitions = (0..partitions.len())
                    .map(|i| {
                        let mut p = metadata_response::MetadataResponsePartition::default();
                        p.partition_index = i as i32;
                        p.leader_id = BrokerId(0);
                        p.replica_nodes = vec![BrokerId(0)];
                        p.isr_nodes = vec![BrokerId(0)];
                        p
                    })
                    .collect();
            }
        }
        answer.topics.push(topic);
    }
    answer
}

fn produce(shared: &Shared, request: ProduceRequest) -> ProduceResponse {
    let mut log = shared.log.lock().unwrap();
    let mut answer = ProduceResponse::default();
    for t in request.topic_data {
        let mut topic = produce_response::TopicProduceResponse::default();
        topic.name = t.name.clone();
        for data in t.partition_data {
            let mut out = produce_response::PartitionProduceResponse::default();
            out.index = data.index;
            out.log_append_time_ms = -1;
            let records = data.records.unwrap_or_default();
            let Log {
                topics,
                stats,
                refuse_unknown_producers,
                ..
            } = &mut *log;
            match topics
                .get_mut(t.name.0.as_str())
                .and_then(|p| p.get_mut(data.index as usize))
            {
                None => out.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(partition) => {
                    match append(partition, records, stats, *refuse_unknown_producers) {
                        Ok(offset) => out.base_offset = offset,
                        Err(code) => {
                            out.error_code = code;
                            out.base_offset = -1;
                        }
                    }
                }
            }
            topic.partition_responses.push(out);
        }
        answer.responses.push(topic);
    }
    answer
}

/// Appends one record batch v2 under Kafka's idempotence rules; returns its
/// base offset (that of the earlier copy for a duplicate).
fn append(
    partition: &mut Partition,
    records: Bytes,
    stats: &mut ProduceStats,
    refuse_unknown_producers: bool,
) -> Result<i64, i16> {
    if records.len() < 61 {
        return Err(CORRUPT_MESSAGE);
    }
    let i64_at = |at: usize| i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
    let i32_at = |at: usize| i32::from_be_bytes(records[at..at + 4].try_into().unwrap());
    let last_offset_delta = i32_at(23);
    let producer_id = i64_at(43);
    let epoch = i16::from_be_bytes([records[51], records[52]]);
    let first_seq = i32_at(53);
    let last_seq = ((i64::from(first_seq) + i64::from(last_offset_delta)) % (1 << 31)) as i32;
    if producer_id >= 0 {
        if let Some(entry) = partition.producers.get(&producer_id) {
            if epoch < entry.epoch {
                stats.fenced += 1;
                return Err(INVALID_PRODUCER_EPOCH);
            }
            if epoch == entry.epoch {
                if let Some(&(_, _, offset)) = entry
                    .batches
                    .iter()
                    .find(|(first, last, _)| *first == first_seq && *last == last_seq)
                {
                    stats.duplicates += 1;
                    return Ok(offset);
                }
                let last = entry.batches.back().map_or(-1, |b| b.1);
                let next = if last == i32::MAX { 0 } else { last + 1 };
                if first_seq != next {
                    stats.out_of_order += 1;
                    return Err(OUT_OF_ORDER_SEQUENCE_NUMBER);
                }
            } else if first_seq != 0 {
                stats.out_of_order += 1;
                return Err(OUT_OF_ORDER_SEQUENCE_NUMBER);
            }
        } else if refuse_unknown_producers && first_seq != 0 {
            stats.unknown_producer += 1;
            return Err(UNKNOWN_PRODUCER_ID);
        }
    }
    let base = partition.end;
    let mut batch = records.to_vec();
    batch[..8].copy_from_slice(&base.to_be_bytes());
    partition.batches.push((base, Bytes::from(batch)));
    partition.end = base + i64::from(last_offset_delta) + 1;
    if producer_id >= 0 {
        let entry = partition
            .producers
            .entry(producer_id)
            .or_insert(ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            });
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back((first_seq, last_seq, base));
        if entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }
    stats.appended += 1;
    Ok(base)
}

fn list_offsets(shared: &Shared, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let log = shared.log.lock().unwrap();
    let mut answer = ListOffsetsResponse::default();
    for t in request.topics {
        let mut topic = list_offsets_response::ListOffsetsTopicResponse::default();
        topic.name = t.name.clone();
        for p in t.partitions {
            let mut out = list_offsets_response::ListOffsetsPartitionResponse::default();
            out.partition_index = p.partition_index;
            out.timestamp = -1;
            out.leader_epoch = -1;
            match log
                .topics
                .get(t.name.0.as_str())
                .and_then(|parts| parts.get(p.partition_index as usize))
            {
                None => out.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(partition) => out.offset = if p.timestamp == -2 { 0 } else { partition.end },
            }
            topic.partitions.push(out);
        }
        answer.topics.push(topic);
    }
    answer
}

fn fetch(shared: &Shared, request: FetchRequest) -> FetchResponse {
    let log = shared.log.lock().unwrap();
    let mut answer = FetchResponse::default();
    for t in request.topics {
        let mut topic = fetch_response::FetchableTopicResponse::default();
        topic.topic = t.topic.clone();
        for p in t.partitions {
            let mut out = fetch_response::PartitionData::default();
            out.partition_index = p.partition;
            match log
                .topics
                .get(t.topic.0.as_str())
                .and_then(|parts| parts.get(p.partition as usize))
            {
                None => out.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(partition) => {
                    out.high_watermark = partition.end;
                    out.last_stable_offset = partition.end;
                    out.log_start_offset = 0;
                    let mut bytes = BytesMut::new();
                    for (base, batch) in &partition.batches {
                        let last_delta =
                            i64::from(i32::from_be_bytes(batch[23..27].try_into().unwrap()));
                        if base + last_delta < p.fetch_offset {
                            continue;
                        }
                        // At least one batch, however large.
                        if !bytes.is_empty()
                            && bytes.len() + batch.len() > p.partition_max_bytes as usize
                        {
                            break;
                        }
                        bytes.extend_from_slice(batch);
                    }
                    out.records = Some(bytes.freeze());
                }
            }
            topic.partitions.push(out);
        }
        answer.responses.push(topic);
    }
    answer
}
